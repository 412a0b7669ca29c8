//! The default rs2 state store, [`InMemoryState`], and the clock every operator reads.
//!
//! Values live in a sharded hash table that readers and writers update in place, so an access
//! to an existing key is a lock and a lookup; a recency list bounds the store exactly, evicting
//! the least recently used key, with recency measured in list operations rather than time
//! (`docs/decisions/005-recency-by-list-order.md`). Expiry is exact: every read checks the
//! value's stamp against [`StateClock`]. Why this is not a moka cache:
//! `docs/decisions/001-in-memory-hot-path.md`.
//!
//! [`AdmissionState`] is the alternative for key floods: a moka cache whose TinyLFU admission
//! keeps frequently used keys when the store is full (selected with
//! `StateStorageType::InMemoryAdmission`; see its docs for when to choose it).
//!
//! [`InMemoryState::snapshot_to`] and [`InMemoryState::restore_from`] carry a store's live
//! entries, with their remaining TTLs and recency order, across a restart in one file.
#![warn(missing_docs)]

mod admission;
mod clock;
mod create;
mod recency;
mod snapshot;
mod store;
mod typed;
mod value;

pub use admission::AdmissionState;
pub use clock::StateClock;
pub use create::CreateStorage;
pub use store::InMemoryState;
pub use typed::TypedTable;
