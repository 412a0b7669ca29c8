//! Stateful stream operators for rs2.
//!
//! Each operator is a hand-written pinned [`Stream`](futures::Stream) in its own module, built
//! on one keyed-state helper (storage, key namespacing, codec, clock). Bring them into scope
//! with [`StatefulStreamExt`].
#![warn(missing_docs)]

mod accumulate;
mod ext;
mod filter;
mod fold;
mod join;
mod keyed;
mod map;
mod reduce;

pub use accumulate::{Accumulate, Seed};
pub use ext::StatefulStreamExt;
pub use filter::StatefulFilter;
pub use fold::{FoldSeed, StatefulFold};
pub use join::StatefulJoin;
pub use map::StatefulMap;
pub use reduce::{ReduceSeed, StatefulReduce};
