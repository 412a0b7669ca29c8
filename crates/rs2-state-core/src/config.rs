//! How keyed state is stored, how long it lives and how much of it there may be.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{StateError, StateResult};
use crate::retry::RetryPolicy;
use crate::stats::StateStats;
use crate::storage::StateStorage;

/// Which backend holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StateStorageType {
    /// `InMemoryState`: fastest, lost when the process ends. Every operator gets a store of its
    /// own.
    #[default]
    InMemory,
    /// The moka-based store with TinyLFU admission: key-flood resistant; see
    /// `rs2_state_memory::AdmissionState`. Every operator gets a store of its own and keeps its
    /// state in it (as bytes, through the store's key lock). When the store is full a new key is
    /// admitted only if it is used more often than the entries it would evict, so a new key's
    /// state may be dropped right after it is written: not for keyed counters that must count
    /// every new key. Same validation rules as `InMemory`.
    InMemoryAdmission,
    /// A backend supplied through [`StateConfig::with_custom_storage`]; operators given the same
    /// config share that one store (each under a namespace of its own).
    Custom,
}

/// Settings for a stateful operator's storage.
///
/// Build one from a preset ([`StateConfigs`]), with [`StateConfigBuilder`] (validated), or with
/// the chained setters below. Operators validate the config they are given and report an invalid
/// one as a [`StateError::Validation`].
///
/// Semantics of the fields for the default in-memory store:
/// * `ttl`: an entry expires `ttl` after it was last written; an expired entry is never returned.
/// * `cleanup_interval`: how often expired entries are removed from memory.
/// * `max_size`: the most entries the store holds; writing a new key into a full store evicts
///   the least recently used entry first. `None` means unbounded.
///
/// # Retries
///
/// `retry` ([`RetryPolicy`], set with [`retry`](Self::retry)) says how operators retry a
/// **custom store**'s calls that fail for a transient reason. The default: **2 retries, after
/// 10 ms then 20 ms, each call cut after 30 s** (use [`RetryPolicy::none`] to see every
/// failure). The in-memory stores, and any store whose values live in this process (one with
/// `as_local`, such as an `InMemoryState` or a durable store passed as custom storage), are
/// called directly: they have no network to ride out.
///
/// * **Retried:** a `StateError::Storage` error, or an attempt cut by the call timeout (which
///   becomes a `Storage` error naming the key and the timeout), of a call that is safe to
///   make again: `get`, `get_many`, `exists`, `delete`, `set`, `set_with_ttl`, `set_many`,
///   `clear`, `lock_key` and `lock_and_get` (a lock taken by an attempt whose reply was lost is
///   freed when that attempt is dropped, for an in-process lock, or when its lease ends, for a
///   server-held one: the retry waits for it, at most the operators' 30 s lease, so with the
///   default 30 s call timeout such a retry may itself be cut and the event fail after up to
///   a minute: raise the call timeout above the lease if that matters). Waiting for a lock
///   another pipeline holds counts toward the call timeout.
/// * **The write that ends a state transition** (`write_and_release`) is retried as a
///   compare-and-set: the key is locked and read again; if it still holds what the transition
///   read, the write is made again; if it already holds the transition's result (the failed
///   attempt's write was applied and only its reply lost), that counts as done; if another
///   writer changed it, the event gets an `Err` and the other writer's value is kept. (A
///   value equal to the transition's result is taken as this write's, whoever wrote it.)
/// * **`update` / `update_with_ttl`** (behind `StateAccess::update`) run their function once:
///   an attempt is retried only if it failed before the function ran; once it has run, a
///   failure (or a cut attempt, whose write may or may not have been applied) is returned.
/// * **Never retried:** `Serialization` (undecodable state is left as it is), `Validation` and
///   `KeyExtraction` errors: trying again gives the same answer.
///
/// Backoff waits and call timeouts use tokio's timer (they follow paused time in tests); a
/// custom store must be used on a tokio runtime with its timer enabled.
///
/// ```
/// use std::time::Duration;
/// use rs2_state_core::{StateConfig, StateStorageType};
///
/// let config = StateConfig::new()
///     .ttl(Duration::from_secs(600))
///     .cleanup_interval(Duration::from_secs(60))
///     .max_size(50_000);
/// assert_eq!(config.storage_type, StateStorageType::InMemory);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
pub struct StateConfig {
    /// Backend kind.
    pub storage_type: StateStorageType,
    /// Time-to-live of an entry, counted from its last write.
    pub ttl: Duration,
    /// How often expired entries are removed from memory.
    pub cleanup_interval: Duration,
    /// Most entries the store may hold (`None`: unbounded).
    pub max_size: Option<usize>,
    /// The backend used when `storage_type` is [`StateStorageType::Custom`].
    pub custom_storage: Option<Arc<dyn StateStorage + Send + Sync>>,
    /// Optional prefix for every key this config's operators write, so several pipelines can
    /// share one custom store without seeing each other's state.
    pub namespace: Option<String>,
    /// How operators retry a custom store's transient failures (see [Retries](#retries)).
    pub retry: RetryPolicy,
    /// Where this config's operators report their figures (`None`: each operator stream keeps
    /// a handle of its own, read with its `stats()`). See [`stats`](Self::stats).
    pub stats: Option<StateStats>,
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateConfig")
            .field("storage_type", &self.storage_type)
            .field("ttl", &self.ttl)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("max_size", &self.max_size)
            .field(
                "custom_storage",
                &self.custom_storage.as_ref().map(|_| "dyn StateStorage"),
            )
            .field("namespace", &self.namespace)
            .field("retry", &self.retry)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for StateConfig {
    /// In memory, 1 hour TTL, cleanup every 5 minutes, at most 100,000 entries, the default
    /// [`RetryPolicy`].
    fn default() -> Self {
        Self {
            storage_type: StateStorageType::InMemory,
            ttl: Duration::from_secs(3600),
            cleanup_interval: Duration::from_secs(300),
            max_size: Some(100_000),
            custom_storage: None,
            namespace: None,
            retry: RetryPolicy::default(),
            stats: None,
        }
    }
}

impl StateConfig {
    /// The default configuration (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the backend kind.
    pub fn storage_type(mut self, storage_type: StateStorageType) -> Self {
        self.storage_type = storage_type;
        self
    }

    /// Sets the time-to-live of an entry (counted from its last write).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets how often expired entries are removed from memory.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Sets the most entries the store may hold. `usize::MAX` means unbounded.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// Uses `storage` as the backend and sets `storage_type` to [`StateStorageType::Custom`].
    pub fn with_custom_storage(mut self, storage: Arc<dyn StateStorage + Send + Sync>) -> Self {
        self.storage_type = StateStorageType::Custom;
        self.custom_storage = Some(storage);
        self
    }

    /// Prefixes every key written through this config with `namespace` (useful when several
    /// pipelines share one custom store).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets how operators retry a custom store's transient failures (see
    /// [Retries](#retries)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use rs2_state_core::{RetryPolicy, StateConfig};
    ///
    /// let config = StateConfig::new().retry(
    ///     RetryPolicy::new(5, Duration::from_millis(20), Duration::from_secs(1))
    ///         .with_call_timeout(Duration::from_secs(2)),
    /// );
    /// assert_eq!(config.retry.max_retries(), 5);
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Reports the figures of every operator built with this config (and its clones) into
    /// `stats`, so pipelines given the same handle add into one set of figures (a store they
    /// share counts once). Without it, each operator stream keeps its own handle.
    ///
    /// ```
    /// use rs2_state_core::{StateConfig, StateStats};
    ///
    /// let stats = StateStats::new();
    /// let config = StateConfig::new().stats(stats.clone());
    /// assert!(config.stats.as_ref().is_some_and(|s| s.same_handle(&stats)));
    /// ```
    pub fn stats(mut self, stats: StateStats) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Checks the settings; the error says which one is wrong and what a valid one is.
    pub fn validate(&self) -> StateResult<()> {
        if self.ttl.is_zero() {
            return Err(StateError::Validation("TTL cannot be zero".into()));
        }
        if self.cleanup_interval.is_zero() {
            return Err(StateError::Validation(
                "Cleanup interval cannot be zero; use a fraction (1/10 to 1/100) of the TTL".into(),
            ));
        }
        if self.cleanup_interval > self.ttl {
            return Err(StateError::Validation(
                "Cleanup interval should be less than or equal to TTL".into(),
            ));
        }
        if self.max_size == Some(0) {
            return Err(StateError::Validation(
                "max_size cannot be zero; use None (or usize::MAX) for an unbounded store".into(),
            ));
        }
        if self.retry.call_timeout().is_zero() {
            return Err(StateError::Validation(
                "retry policy's call timeout cannot be zero (every call would time out); use \
                 RetryPolicy::with_call_timeout with a positive duration, e.g. 30 s"
                    .into(),
            ));
        }
        match (self.storage_type, self.custom_storage.is_some()) {
            (StateStorageType::Custom, false) => Err(StateError::Validation(
                "storage_type is Custom but no custom_storage is set; call with_custom_storage(..)"
                    .into(),
            )),
            (StateStorageType::InMemory, true) => Err(StateError::Validation(
                "a custom_storage is set but storage_type is InMemory; set the custom storage \
                 last, or drop it to use the in-memory store"
                    .into(),
            )),
            (StateStorageType::InMemoryAdmission, true) => Err(StateError::Validation(
                "a custom_storage is set but storage_type is InMemoryAdmission; set the custom \
                 storage last, or drop it to use the in-memory admission store"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Presets for common workloads.
///
/// | preset | TTL | cleanup | max size |
/// |---|---|---|---|
/// | [`high_performance`](Self::high_performance) | 1 h | 1 min | 10,000 |
/// | [`session`](Self::session) | 30 min | 5 min | 1,000 |
/// | [`short_lived`](Self::short_lived) | 5 min | 30 s | 100 |
/// | [`long_lived`](Self::long_lived) | 7 days | 1 h | 100,000 |
pub struct StateConfigs;

impl StateConfigs {
    fn preset(ttl: u64, cleanup: u64, max_size: usize) -> StateConfig {
        StateConfig {
            ttl: Duration::from_secs(ttl),
            cleanup_interval: Duration::from_secs(cleanup),
            max_size: Some(max_size),
            ..StateConfig::default()
        }
    }

    /// High-frequency updates: 1 hour TTL, cleanup every minute, 10,000 entries.
    pub fn high_performance() -> StateConfig {
        Self::preset(3600, 60, 10_000)
    }

    /// User sessions: 30 minute TTL, cleanup every 5 minutes, 1,000 entries.
    pub fn session() -> StateConfig {
        Self::preset(1800, 300, 1_000)
    }

    /// Very temporary state: 5 minute TTL, cleanup every 30 seconds, 100 entries.
    pub fn short_lived() -> StateConfig {
        Self::preset(300, 30, 100)
    }

    /// Long-lived analytics state: 7 day TTL, cleanup every hour, 100,000 entries.
    pub fn long_lived() -> StateConfig {
        Self::preset(7 * 24 * 3600, 3600, 100_000)
    }
}

/// Builds a validated [`StateConfig`].
///
/// ```
/// use std::time::Duration;
/// use rs2_state_core::{StateConfigBuilder, StateError};
///
/// let err = StateConfigBuilder::new().ttl(Duration::from_secs(0)).build().unwrap_err();
/// assert_eq!(err, StateError::Validation("TTL cannot be zero".into()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StateConfigBuilder {
    config: StateConfig,
}

impl StateConfigBuilder {
    /// Starts from [`StateConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the backend kind.
    pub fn storage_type(mut self, storage_type: StateStorageType) -> Self {
        self.config.storage_type = storage_type;
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Sets the cleanup interval.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.config.cleanup_interval = interval;
        self
    }

    /// Sets the maximum number of entries.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.config.max_size = Some(max_size);
        self
    }

    /// Uses a custom backend (sets `storage_type` to `Custom`).
    pub fn custom_storage(mut self, storage: Arc<dyn StateStorage + Send + Sync>) -> Self {
        self.config = self.config.with_custom_storage(storage);
        self
    }

    /// Prefixes every key with `namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }

    /// Sets how operators retry a custom store's transient failures (see
    /// [`StateConfig::retry`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Sets the handle the operators report their figures into (see [`StateConfig::stats`]).
    pub fn stats(mut self, stats: StateStats) -> Self {
        self.config.stats = Some(stats);
        self
    }

    /// Validates and returns the config; see [`StateConfig::validate`] for the rules.
    pub fn build(self) -> StateResult<StateConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_defaults_and_setters() {
        assert_eq!(StateConfig::new().retry, RetryPolicy::default());
        assert_eq!(StateConfigs::session().retry, RetryPolicy::default());
        let policy = RetryPolicy::new(4, Duration::from_millis(1), Duration::from_millis(8));
        assert_eq!(StateConfig::new().retry(policy).retry, policy);
        let built = StateConfigBuilder::new().retry(policy).build().unwrap();
        assert_eq!(built.retry, policy);
    }

    #[test]
    fn zero_call_timeout_is_a_validation_error() {
        let policy = RetryPolicy::default().with_call_timeout(Duration::ZERO);
        let err = StateConfigBuilder::new().retry(policy).build().unwrap_err();
        assert!(err.is_validation());
        assert!(err.to_string().contains("call timeout"), "{err}");
        assert!(StateConfig::new().retry(policy).validate().is_err());
    }
}
