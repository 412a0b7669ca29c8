//! What operators report: their figures (a [`StateStats`] handle per operator, fed by its
//! stores and by the operator's own error count), a `tracing` span per operator, and events
//! for failed events.
//!
//! A store with figures of its own ([`StateStorage::stats_source`]) is registered with the
//! handle once; a custom store without them is wrapped in [`Counted`], which counts its reads
//! and writes into the handle's own counters.

use std::sync::Arc;
use std::time::Duration;

use rs2_state_core::{
    async_trait, KeyDisplay, KeyLock, LocalStorage, LockedWrite, SharedStorage, StateConfig,
    StateError, StateResult, StateStats, StateStorage, StatsSource, UpdateFn,
};

/// `config` with a stats handle: its own, or a new one for this operator, so every
/// `KeyedState` an operator makes from it feeds one handle.
pub(crate) fn with_stats(config: &StateConfig) -> StateConfig {
    let mut config = config.clone();
    config.stats.get_or_insert_with(StateStats::new);
    config
}

/// The span every poll of an operator runs in: `rs2.operator`, with the operator's name and
/// the config's namespace. Debug level, so an application logging at info pays nothing for it
/// (a disabled span is not entered); events inside it name the operator too.
pub(crate) fn operator_span(op: &str, namespace: Option<&str>) -> tracing::Span {
    tracing::debug_span!(
        "rs2.operator",
        operator = op,
        namespace = namespace.unwrap_or("")
    )
}

/// Counts a failed event (an `Err` item) and logs it: at warn when the backend failed (the
/// state could not be read or written), at debug otherwise (a key that could not be extracted,
/// undecodable state, an invalid config). The error's message names the key, escaped
/// (`KeyDisplay`).
#[cold]
pub(crate) fn note_error(stats: &StateStats, op: &str, err: &StateError) {
    stats.counters().errors.add(1);
    match err {
        StateError::Storage(_) => {
            tracing::warn!(target: "rs2::operator", operator = op, error = %err, "state backend call failed")
        }
        _ => tracing::debug!(target: "rs2::operator", operator = op, error = %err, "event failed"),
    }
}

/// What the retry wrapper calls before each retry: counts it and logs it at debug (the
/// message names the key, escaped, and the failure being retried).
pub(crate) fn retry_hook(stats: &StateStats, op: &str) -> super::retry::OnRetry {
    let stats = stats.clone();
    let op: Arc<str> = op.into();
    Arc::new(move |key: &str, err: &StateError| {
        stats.counters().retries.add(1);
        tracing::debug!(
            target: "rs2::operator",
            operator = &*op,
            key = %KeyDisplay(key),
            error = %err,
            "retrying a failed state backend call"
        );
    })
}

/// The store an operator uses for a custom store: the store itself if it has figures of its
/// own (registered with `stats`, once however many operators share it), else the store
/// wrapped in [`Counted`].
pub(crate) fn observed(custom: &SharedStorage, stats: &StateStats) -> SharedStorage {
    match custom.stats_source() {
        Some(source) => {
            stats.register(source);
            Arc::clone(custom)
        }
        None => {
            stats.register_unknown_bytes();
            Arc::new(Counted {
                inner: Arc::clone(custom),
                stats: stats.clone(),
            })
        }
    }
}

/// A custom store without figures of its own, counted by the operator: reads that found a
/// value (hits) or none (misses), and writes, into the handle's own counters. Every call goes
/// to the store as it is (its own `update`, locks and batch calls), so wrapping changes
/// nothing but the count. `entries` is not known. A store with
/// [`as_local`](StateStorage::as_local) is read synchronously by operators, past this
/// wrapper: give such a store figures of its own (`stats_source`).
pub(crate) struct Counted {
    inner: SharedStorage,
    stats: StateStats,
}

impl Counted {
    fn read(&self, found: bool) {
        let c = self.stats.counters();
        if found {
            c.hits.add(1);
        } else {
            c.misses.add(1);
        }
    }

    /// `f`, counting the value it is given as a hit or a miss (an update's read).
    fn reading<'a>(&'a self, f: UpdateFn<'a>) -> UpdateFn<'a> {
        Box::new(move |current| {
            self.read(current.is_some());
            f(current)
        })
    }

    fn wrote<T>(&self, result: StateResult<T>, n: u64) -> StateResult<T> {
        if result.is_ok() {
            self.stats.counters().writes.add(n);
        }
        result
    }
}

#[async_trait]
impl StateStorage for Counted {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let value = self.inner.get(key).await?;
        self.read(value.is_some());
        Ok(value)
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        let r = self.inner.set(key, value).await;
        self.wrote(r, 1)
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        let found = self.inner.exists(key).await?;
        self.read(found);
        Ok(found)
    }
    async fn clear(&self) -> StateResult<()> {
        self.inner.clear().await
    }
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let r = self.inner.update(key, self.reading(f)).await;
        self.wrote(r, 1)
    }
    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let r = self.inner.set_with_ttl(key, value, ttl).await;
        self.wrote(r, 1)
    }
    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        let r = self.inner.update_with_ttl(key, ttl, self.reading(f)).await;
        self.wrote(r, 1)
    }
    async fn get_many(&self, keys: &[&str]) -> StateResult<Vec<Option<Vec<u8>>>> {
        let values = self.inner.get_many(keys).await?;
        for v in &values {
            self.read(v.is_some());
        }
        Ok(values)
    }
    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> StateResult<()> {
        let r = self.inner.set_many(entries, ttl).await;
        self.wrote(r, entries.len() as u64)
    }
    async fn lock_key(&self, key: &str, lease: Duration) -> StateResult<KeyLock> {
        self.inner.lock_key(key, lease).await
    }
    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        let (lock, value) = self.inner.lock_and_get(key, lease).await?;
        self.read(value.is_some());
        Ok((lock, value))
    }
    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let n = u64::from(matches!(write, LockedWrite::Set(_)));
        let r = self.inner.write_and_release(key, lock, write, ttl).await;
        self.wrote(r, n)
    }
    fn as_local(&self) -> Option<&dyn LocalStorage> {
        self.inner.as_local()
    }
    fn stats_source(&self) -> Option<Arc<dyn StatsSource>> {
        None
    }
}
