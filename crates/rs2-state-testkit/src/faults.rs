//! [`FaultyStorage`]: a [`StateStorage`] wrapper that injects failures, for testing how a
//! pipeline behaves when its backend misbehaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rs2_state_core::{
    async_trait, KeyLock, LockedWrite, StateError, StateResult, StateStorage, UpdateFn,
};

/// Wraps a store and makes some of its calls fail, slow down, hang, or read garbage.
///
/// Every call to the wrapper counts as one call (numbered from 1), whatever the method. Faults
/// are chosen per call, in this order: [`fail_call`](Self::fail_call) (that call fails),
/// [`fail_fraction`](Self::fail_fraction) (a seeded, repeatable draw), then
/// [`time_out_fraction`](Self::time_out_fraction) (the call waits, then fails as a timeout);
/// a call that is not failed first waits [`latency`](Self::latency), then runs on the inner
/// store, and a read among them may come back as garbage bytes
/// ([`garbage_fraction`](Self::garbage_fraction)). An injected failure is a
/// `StateError::Storage` naming the key and saying it was injected; nothing is written by a
/// failed call. Time uses tokio's clock, so paused-time tests run without real waits.
///
/// The wrapper has no `as_local`: operators reach it through the async methods, where every
/// fault applies. A failed `write_and_release` still releases the inner lock.
///
/// ```
/// use std::sync::Arc;
/// use futures::{stream, StreamExt};
/// use rs2_operators::StatefulStreamExt;
/// use rs2_state_core::{RetryPolicy, StateAccess, StateConfig};
/// use rs2_state_testkit::FaultyStorage;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # #[derive(Default)] struct Map(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);
/// # #[rs2_state_core::async_trait] impl rs2_state_core::StateStorage for Map {
/// #   async fn get(&self, k: &str) -> rs2_state_core::StateResult<Option<Vec<u8>>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
/// #   async fn set(&self, k: &str, v: &[u8]) -> rs2_state_core::StateResult<()> { self.0.lock().unwrap().insert(k.into(), v.into()); Ok(()) }
/// #   async fn delete(&self, k: &str) -> rs2_state_core::StateResult<()> { self.0.lock().unwrap().remove(k); Ok(()) }
/// #   async fn exists(&self, k: &str) -> rs2_state_core::StateResult<bool> { Ok(self.0.lock().unwrap().contains_key(k)) }
/// #   async fn clear(&self) -> rs2_state_core::StateResult<()> { self.0.lock().unwrap().clear(); Ok(()) }
/// # }
/// let store = Arc::new(FaultyStorage::new(Map::default()).fail_call(3));
/// // Retries off, so the fault reaches the operator (by default it would be retried).
/// let config = StateConfig::new()
///     .with_custom_storage(store.clone())
///     .retry(RetryPolicy::none());
/// let out: Vec<_> = stream::iter(["a", "a", "a"])
///     .stateful_fold_rs2(config, |k: &&str| k.to_string(), 0u64,
///         |n, _k, _s: StateAccess| async move { n + 1 })
///     .collect()
///     .await;
/// // The second event's read (call 3) failed: an error item; the others counted.
/// assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
/// assert_eq!(out[2].as_ref().unwrap(), &2);
/// assert_eq!(store.injected(), 1);
/// # }
/// ```
pub struct FaultyStorage<S> {
    inner: S,
    fail_call: Option<u64>,
    fail_fraction: f64,
    time_out: Option<(f64, Duration)>,
    latency: Duration,
    garbage_fraction: f64,
    rng: Mutex<u64>,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl<S> std::fmt::Debug for FaultyStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("fail_call", &self.fail_call)
            .field("fail_fraction", &self.fail_fraction)
            .field("time_out", &self.time_out)
            .field("latency", &self.latency)
            .field("garbage_fraction", &self.garbage_fraction)
            .field("calls", &self.calls())
            .field("injected", &self.injected())
            .finish_non_exhaustive()
    }
}

/// What one call does.
enum Fault {
    None,
    Fail,
    TimeOut(Duration),
}

impl<S> FaultyStorage<S> {
    /// `inner`, with no faults until some are added.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            fail_call: None,
            fail_fraction: 0.0,
            time_out: None,
            latency: Duration::ZERO,
            garbage_fraction: 0.0,
            rng: Mutex::new(0x9E37_79B9_7F4A_7C15),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Call number `n` (from 1) fails.
    pub fn fail_call(mut self, n: u64) -> Self {
        self.fail_call = Some(n);
        self
    }

    /// Each call fails with probability `fraction` (0.0 to 1.0), drawn from a generator seeded
    /// by `seed`: the same seed and the same calls fail the same way every run.
    pub fn fail_fraction(mut self, fraction: f64, seed: u64) -> Self {
        self.fail_fraction = fraction.clamp(0.0, 1.0);
        *self.rng.get_mut().unwrap_or_else(|p| p.into_inner()) = seed | 1;
        self
    }

    /// Each call, with probability `fraction`, waits `after` and then fails as a timeout.
    pub fn time_out_fraction(mut self, fraction: f64, after: Duration) -> Self {
        self.time_out = Some((fraction.clamp(0.0, 1.0), after));
        self
    }

    /// Every call that is not failed waits `latency` first.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Each successful read returning a value returns, with probability `fraction`, that many
    /// bytes of garbage instead (what a store with a corrupted record would hand back).
    pub fn garbage_fraction(mut self, fraction: f64) -> Self {
        self.garbage_fraction = fraction.clamp(0.0, 1.0);
        self
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Faults injected so far (failures, timeouts and garbage reads).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// A draw in `[0, 1)` (xorshift64).
    fn draw(&self) -> f64 {
        let mut x = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick(&self) -> Fault {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_call == Some(n)
            || (self.fail_fraction > 0.0 && self.draw() < self.fail_fraction)
        {
            return Fault::Fail;
        }
        match self.time_out {
            Some((fraction, after)) if fraction > 0.0 && self.draw() < fraction => {
                Fault::TimeOut(after)
            }
            _ => Fault::None,
        }
    }

    /// Runs the call's fault: `Err` if it fails, after its wait.
    async fn enter(&self, key: &str, method: &str) -> StateResult<()> {
        match self.pick() {
            Fault::Fail => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                Err(StateError::storage_for(
                    key,
                    format!("injected failure of {method} (FaultyStorage)"),
                ))
            }
            Fault::TimeOut(after) => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(after).await;
                Err(StateError::storage_for(
                    key,
                    format!("injected timeout of {method} after {after:?} (FaultyStorage)"),
                ))
            }
            Fault::None => {
                if !self.latency.is_zero() {
                    tokio::time::sleep(self.latency).await;
                }
                Ok(())
            }
        }
    }

    fn spoil(&self, value: Option<Vec<u8>>) -> Option<Vec<u8>> {
        match value {
            Some(mut bytes)
                if self.garbage_fraction > 0.0 && self.draw() < self.garbage_fraction =>
            {
                self.injected.fetch_add(1, Ordering::Relaxed);
                let len = bytes.len().max(1);
                bytes.clear();
                bytes.extend((0..len).map(|_| (self.draw() * 256.0) as u8 | 0x80));
                Some(bytes)
            }
            other => other,
        }
    }
}

#[async_trait]
impl<S: StateStorage> StateStorage for FaultyStorage<S> {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.enter(key, "get").await?;
        Ok(self.spoil(self.inner.get(key).await?))
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.enter(key, "set").await?;
        self.inner.set(key, value).await
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.enter(key, "delete").await?;
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.enter(key, "exists").await?;
        self.inner.exists(key).await
    }

    async fn clear(&self) -> StateResult<()> {
        self.enter("*", "clear").await?;
        self.inner.clear().await
    }

    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        self.enter(key, "update").await?;
        self.inner.update(key, f).await
    }

    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        self.enter(key, "set_with_ttl").await?;
        self.inner.set_with_ttl(key, value, ttl).await
    }

    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        self.enter(key, "update_with_ttl").await?;
        self.inner.update_with_ttl(key, ttl, f).await
    }

    async fn lock_key(&self, key: &str, lease: Duration) -> StateResult<KeyLock> {
        self.enter(key, "lock_key").await?;
        self.inner.lock_key(key, lease).await
    }

    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        self.enter(key, "lock_and_get").await?;
        let (lock, value) = self.inner.lock_and_get(key, lease).await?;
        Ok((lock, self.spoil(value)))
    }

    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        if let Err(err) = self.enter(key, "write_and_release").await {
            // Nothing written; the lock is freed so the key is not blocked.
            let _ = self
                .inner
                .write_and_release(key, lock, LockedWrite::Keep, ttl)
                .await;
            return Err(err);
        }
        self.inner.write_and_release(key, lock, write, ttl).await
    }
}
