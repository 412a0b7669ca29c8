//! Core of rs2 keyed stream state: the storage contract, configuration, errors, key extractors,
//! codecs and typed [`StateAccess`].
//!
//! This crate has no async runtime dependency. A backend author implements [`StateStorage`]
//! against this crate alone; users depend on the `rs2` facade.
#![warn(missing_docs)]

mod access;
mod codec;
mod config;
mod error;
mod key;
mod retry;
mod stats;
mod storage;

pub use access::{SharedStorage, StateAccess};
pub use codec::{Codec, Postcard};
pub use config::{StateConfig, StateConfigBuilder, StateConfigs, StateStorageType};
pub use error::{KeyDisplay, StateError, StateResult};
pub use key::{CustomKeyExtractor, FieldKeyExtractor, KeyExtractor};
pub use retry::RetryPolicy;
pub use stats::{Counter, StateStats, StatsCounters, StatsSnapshot, StatsSource};
pub use storage::{
    HeldLock, KeyLock, LocalModifyFn, LocalStorage, LocalUpdateFn, LockedWrite, StateStorage,
    UpdateFn, ValueChange,
};

/// Re-exported so backend authors implement [`StateStorage`] with the same macro version.
pub use async_trait::async_trait;
