//! What every operator shares: the engine.
//!
//! * [`keyed`]: one operator's view of its state: storage choice (a private in-memory store,
//!   or a shared custom one under a namespace), key namespacing, the clock, codec-typed loads
//!   and saves, atomic read-modify-writes, and `StateAccess` recycling for the user's closure.
//! * [`own`]: where an operator's own state lives: typed in a
//!   [`TypedTable`](rs2_state_memory::TypedTable) of the operator's when its store is private
//!   (no encoding, no lock), else as bytes in the shared store through [`keyed`].
//! * [`driver`]: the one stream that runs a per-event operator: take an event, extract its
//!   key, run the operator's state transition, emit, run the user's closure, save.
//! * [`par`]: the keyed-concurrency engine behind the `_par` operators.
//! * [`event_log`]: append-in-place byte layouts for operators that buffer events.
//! * [`budget`]: the yield budget every operator loop spends from.
//! * [`timer`]: the processing-time timer of operators that act while the input is idle.
//! * [`retry`]: the config's retry policy around a custom store, applied by [`keyed`].
//! * [`observe`]: each operator's figures (a `StateStats` handle its stores feed; a custom
//!   store without figures of its own is counted by a wrapper), its `tracing` span and its
//!   error events.
//!
//! `docs/architecture.md` walks one event through these pieces.

pub(crate) mod budget;
pub(crate) mod driver;
pub(crate) mod event_log;
pub(crate) mod keyed;
pub(crate) mod observe;
pub(crate) mod own;
pub(crate) mod par;
pub(crate) mod retry;
pub(crate) mod timer;

pub(crate) use budget::YieldBudget;
pub(crate) use keyed::*;
pub(crate) use observe::with_stats;
pub(crate) use par::{KeyedPar, ParStart, ParStep, Turn};
