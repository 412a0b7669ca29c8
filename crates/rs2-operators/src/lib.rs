//! Stateful stream operators for rs2.
//!
//! Each operator is a pinned [`Stream`](futures::Stream) in its own module: the operator's
//! own rule (state type, transition, emission) on one engine shared by all (keyed state,
//! typed private state, clock, the per-event driver, the keyed-concurrency engine, yield
//! budget; see `docs/architecture.md`). Bring them into scope with [`StatefulStreamExt`].
#![warn(missing_docs)]

mod accumulate;
mod accumulate_par;
mod dedup;
mod engine;
mod event_time_window;
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

pub use dedup::StatefulDeduplicate;
pub use event_time_window::{
    EventTimeOutput, EventTimeWindow, StatefulEventTimeWindow, StatefulEventTimeWindowAdvanced,
    TimeWindow,
};
pub use ext::StatefulStreamExt;
pub use filter::StatefulFilter;
pub use filter_par::StatefulFilterPar;
pub use fold::{StatefulFold, StatefulFoldPar};
pub use group_by::{StatefulGroupBy, StatefulGroupByAdvanced};
pub use join::StatefulJoin;
pub use map::StatefulMap;
pub use map_par::StatefulMapPar;
pub use pattern::StatefulPattern;
pub use reduce::{StatefulReduce, StatefulReducePar};
pub use session::StatefulSession;
pub use throttle::{DroppedCounter, StatefulThrottle};
pub use window::StatefulWindow;
