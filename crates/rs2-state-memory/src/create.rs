//! `config.create_storage()`: the backend a config describes.

use std::sync::Arc;

use rs2_state_core::{StateConfig, StateResult, StateStorage, StateStorageType};

use crate::{AdmissionState, InMemoryState};

/// Creates the storage a [`StateConfig`] describes.
///
/// This is an extension trait because `rs2-state-core` (where `StateConfig` lives) depends on
/// no runtime and so cannot build the default store; it is in `rs2::state` and
/// `rs2::prelude`, so `config.create_storage()` works after either import.
///
/// For `InMemory` (an `InMemoryState`) and `InMemoryAdmission` (an `AdmissionState`), each
/// call makes a new, independent store. With a custom store set, both
/// methods hand back that store.
///
/// ```
/// use std::sync::Arc;
/// use rs2_state_core::{StateConfigs, StateStorage};
/// use rs2_state_memory::CreateStorage;
///
/// let config = StateConfigs::session();
/// let storage: Box<dyn StateStorage + Send + Sync> = config.create_storage();
/// let shared: Arc<dyn StateStorage + Send + Sync> = config.create_storage_arc();
/// ```
pub trait CreateStorage {
    /// The configured storage in a `Box`.
    fn create_storage(&self) -> Box<dyn StateStorage + Send + Sync>;

    /// The configured storage in an `Arc`, for sharing across tasks.
    fn create_storage_arc(&self) -> Arc<dyn StateStorage + Send + Sync>;

    /// Like [`create_storage_arc`](Self::create_storage_arc), after validating the config.
    fn try_create_storage(&self) -> StateResult<Arc<dyn StateStorage + Send + Sync>>;
}

impl CreateStorage for StateConfig {
    fn create_storage(&self) -> Box<dyn StateStorage + Send + Sync> {
        match (&self.storage_type, &self.custom_storage) {
            (StateStorageType::Custom, Some(custom)) => Box::new(Arc::clone(custom)),
            (StateStorageType::InMemoryAdmission, _) => Box::new(AdmissionState::new(self)),
            _ => Box::new(InMemoryState::new(self)),
        }
    }

    fn create_storage_arc(&self) -> Arc<dyn StateStorage + Send + Sync> {
        match (&self.storage_type, &self.custom_storage) {
            (StateStorageType::Custom, Some(custom)) => Arc::clone(custom),
            (StateStorageType::InMemoryAdmission, _) => Arc::new(AdmissionState::new(self)),
            _ => Arc::new(InMemoryState::new(self)),
        }
    }

    fn try_create_storage(&self) -> StateResult<Arc<dyn StateStorage + Send + Sync>> {
        self.validate()?;
        Ok(self.create_storage_arc())
    }
}
