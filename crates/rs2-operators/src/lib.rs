//! Stateful stream operators for rs2.
//!
//! Each operator is a hand-written pinned [`Stream`](futures::Stream) in its own module, built
//! on one keyed-state helper (storage, key namespacing, codec, clock). Bring them into scope
//! with [`StatefulStreamExt`].
#![warn(missing_docs)]

mod accumulate;
mod accumulate_par;
mod dedup;
mod engine;
mod ext;
mod filter;
mod filter_par;
mod fold;
mod group_by;
mod join;
mod map;
mod map_par;
mod pattern;
mod reduce;
mod session;
mod throttle;
mod window;

pub use accumulate::Seed;
pub use accumulate_par::{AccumulateParFut, AccumulateParResume, AccumulateParStep};
pub use dedup::StatefulDeduplicate;
pub use engine::par::{KeyedPar, ParStep, Turn};
pub use ext::StatefulStreamExt;
pub use filter::StatefulFilter;
pub use filter_par::{FilterParFut, FilterParStep, StatefulFilterPar};
pub use fold::{FoldSeed, StatefulFold, StatefulFoldPar};
pub use group_by::{StatefulGroupBy, StatefulGroupByAdvanced};
pub use join::StatefulJoin;
pub use map::StatefulMap;
pub use map_par::{MapParFut, MapParStep, StatefulMapPar};
pub use pattern::StatefulPattern;
pub use reduce::{ReduceSeed, StatefulReduce, StatefulReducePar};
pub use session::StatefulSession;
pub use throttle::{DroppedCounter, StatefulThrottle};
pub use window::StatefulWindow;
