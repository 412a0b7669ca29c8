//! The default rs2 state store, [`InMemoryState`], and the clock every operator reads.
//!
//! moka governs which keys the store holds (a size bound with LRU eviction); each key's value
//! lives in a [`Slot`](rs2_state_core::Slot) that readers and writers update in place, so an
//! access to an existing key never pays a moka write. Expiry is exact: every read checks the
//! value's stamp against [`StateClock`].
#![warn(missing_docs)]

mod clock;
mod create;
mod store;

pub use clock::StateClock;
pub use create::CreateStorage;
pub use store::{InMemoryState, TOUCH_INTERVAL_MS};
