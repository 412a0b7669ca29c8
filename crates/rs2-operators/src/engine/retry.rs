//! [`RetryingStorage`]: the config's [`RetryPolicy`] applied to a custom store, so every
//! operator (and the `StateAccess` it hands its closure) rides out a backend's transient
//! failures the same way.
//!
//! What is retried, and why each call is safe to repeat, is the user-facing list in
//! `StateConfig`'s docs ("Retries"); this file is its implementation.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use rs2_state_core::{
    async_trait, HeldLock, KeyLock, LocalStorage, LockedWrite, RetryPolicy, SharedStorage,
    StateError, StateResult, StateStorage, StatsSource, UpdateFn,
};

/// Called before each retry with the key and the failure being retried (the stats handle
/// counts retries through it; a tracing hook may log it).
pub(crate) type OnRetry = Arc<dyn Fn(&str, &StateError) + Send + Sync>;

/// A store whose calls are retried and bounded by a [`RetryPolicy`].
pub(crate) struct RetryingStorage {
    inner: SharedStorage,
    policy: RetryPolicy,
    on_retry: Option<OnRetry>,
}

impl RetryingStorage {
    /// `inner`, its calls retried as `policy` says. A store whose values live in this process
    /// (`as_local`) is returned as it is: the engine reaches it synchronously, with no network
    /// to ride out, and its fast path must stay.
    /// `on_retry` is called before each retry (the operator's figures and log).
    pub fn wrap(
        inner: SharedStorage,
        policy: RetryPolicy,
        on_retry: Option<OnRetry>,
    ) -> SharedStorage {
        if inner.as_local().is_some() {
            return inner;
        }
        let mut store = Self::new(inner, policy);
        store.on_retry = on_retry;
        Arc::new(store)
    }

    fn new(inner: SharedStorage, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            on_retry: None,
        }
    }

    /// This wrapper calling `hook` before each retry.
    #[cfg(test)]
    pub fn on_retry(mut self, hook: OnRetry) -> Self {
        self.on_retry = Some(hook);
        self
    }

    /// One attempt of a call, cut after the policy's call timeout. Outside a tokio runtime
    /// there is no timer: the call is made once, unbounded.
    async fn attempt<T>(
        &self,
        key: &str,
        what: &str,
        call: impl Future<Output = StateResult<T>>,
    ) -> StateResult<T> {
        // A call done on its first poll (an in-process store behind the async methods) needs
        // no timer: skip the runtime lookup and the clock read.
        let mut call = std::pin::pin!(call);
        if let Poll::Ready(result) = futures::poll!(call.as_mut()) {
            return result;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return call.await;
        }
        let limit = self.policy.call_timeout();
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(StateError::storage_for(
                key,
                format!(
                    "{what} timed out after {limit:?} (the call timeout of the config's \
                     RetryPolicy)"
                ),
            )),
        }
    }

    /// Whether a failed attempt is worth another after `retries_done` retries: a transient
    /// (`Storage`) failure, retries left, and a timer to wait with.
    fn may_retry(&self, err: &StateError, retries_done: u32) -> bool {
        transient(err)
            && retries_done < self.policy.max_retries()
            && tokio::runtime::Handle::try_current().is_ok()
    }

    /// Reports retry number `n` (0-based) of a call on `key` that failed with `err`, then
    /// waits its backoff.
    async fn back_off(&self, key: &str, err: &StateError, n: u32) {
        if let Some(hook) = &self.on_retry {
            hook(key, err);
        }
        let wait = self.policy.backoff(n);
        // tokio rounds even a zero sleep up to its next millisecond tick.
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Makes `call` until it succeeds, fails for good, or the retries run out.
    async fn run<T, F, Fut>(&self, key: &str, what: &str, mut call: F) -> StateResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StateResult<T>>,
    {
        let mut n = 0;
        loop {
            match self.attempt(key, what, call()).await {
                Err(err) if self.may_retry(&err, n) => {
                    self.back_off(key, &err, n).await;
                    n += 1;
                }
                Err(err) => return Err(gave_up(err, n)),
                ok => return ok,
            }
        }
    }

    /// `update` / `update_with_ttl` (per `with_ttl`): the function runs once, so an attempt
    /// is retried only while it has not run (the inner store failed before calling it, and so
    /// wrote nothing).
    async fn update_once(
        &self,
        key: &str,
        with_ttl: Option<Option<Duration>>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        if self.policy.max_retries() == 0 {
            let call = match with_ttl {
                Some(ttl) => self.inner.update_with_ttl(key, ttl, f),
                None => self.inner.update(key, f),
            };
            return self.attempt(key, "update", call).await;
        }
        let slot = Arc::new(Mutex::new(Some(f)));
        let mut n = 0;
        loop {
            let this_try = Arc::clone(&slot);
            let g: UpdateFn<'_> = Box::new(move |current| {
                let f = this_try
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                match f {
                    Some(f) => f(current),
                    None => Err(StateError::storage_for(
                        "",
                        "the update function was called twice; an update runs it once",
                    )),
                }
            });
            let call = match with_ttl {
                Some(ttl) => self.inner.update_with_ttl(key, ttl, g),
                None => self.inner.update(key, g),
            };
            let result = self.attempt(key, "update", call).await;
            let unrun = slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some();
            match result {
                Err(err) if unrun && self.may_retry(&err, n) => {
                    self.back_off(key, &err, n).await;
                    n += 1;
                }
                Err(err) => return Err(gave_up(err, n)),
                ok => return ok,
            }
        }
    }

    /// Takes the key's lock and reads it (retried), wrapping the lock with what was read so
    /// that a failed `write_and_release` can be retried as a compare-and-set.
    async fn lock_reading(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        let (lock, value) = self
            .run(key, "lock_and_get", || self.inner.lock_and_get(key, lease))
            .await?;
        // Without retries the write is never compared: no copy of what was read.
        let read = (self.policy.max_retries() > 0).then(|| value.clone());
        Ok((RetryLock::wrap(lock, read, lease), value))
    }

    /// The retries of a locked write whose first attempt failed with `err` (its lock is
    /// gone: released by the failed write, dropped with a cut attempt, or ended with its
    /// lease): lock and read the key again; if it holds the transition's result, the failed
    /// attempt's write was applied (only its reply was lost); if it still holds what the
    /// transition read (`read`), write again; else another writer changed it, and its value
    /// is kept.
    async fn write_compare_and_set(
        &self,
        key: &str,
        read: Option<Vec<u8>>,
        lease: Duration,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
        mut err: StateError,
    ) -> StateResult<()> {
        let result: Option<&[u8]> = match write {
            LockedWrite::Set(bytes) => Some(bytes),
            LockedWrite::Delete => None,
            LockedWrite::Keep => read.as_deref(),
        };
        let mut n = 0;
        while self.may_retry(&err, n) {
            self.back_off(key, &err, n).await;
            n += 1;
            let relocked = self
                .attempt(key, "lock_and_get", self.inner.lock_and_get(key, lease))
                .await;
            let (lock, current) = match relocked {
                Ok(got) => got,
                Err(e) => {
                    err = e;
                    continue;
                }
            };
            if current.as_deref() == result {
                // Done already. A failed release only delays the key until its lease ends.
                let _ = lock.release().await;
                return Ok(());
            }
            if current != read {
                let _ = lock.release().await;
                return Err(StateError::storage_for(
                    key,
                    format!(
                        "the write ending this event's state transition failed ({err}), and \
                         by the time it could be retried the key held neither the value the \
                         transition read nor its result: another writer changed it, so its \
                         value was kept and not overwritten. Whether this event's write landed \
                         first (and the other writer built on it) is unknown: check the key's \
                         state before replaying the event"
                    ),
                ));
            }
            let again = self
                .attempt(
                    key,
                    "write_and_release",
                    self.inner.write_and_release(key, lock, write, ttl),
                )
                .await;
            match again {
                Ok(()) => return Ok(()),
                Err(e) => err = e,
            }
        }
        Err(gave_up(err, n))
    }
}

/// Whether `err` may pass if the call is made again: a backend failure (the call timeout's
/// too). Decode, validation and key errors give the same answer every time.
fn transient(err: &StateError) -> bool {
    matches!(err, StateError::Storage(_))
}

/// The error of a call that failed for good after `retries` retries.
fn gave_up(err: StateError, retries: u32) -> StateError {
    match err {
        StateError::Storage(msg) if retries > 0 => StateError::Storage(format!(
            "{msg} (still failing after {retries} retries, all the config's RetryPolicy allows)"
        )),
        other => other,
    }
}

/// The inner store's key lock, as handed out by the wrapper until `write_and_release` takes it.
struct RetryLock {
    held: Mutex<Option<Held>>,
}

/// What a [`RetryLock`] holds.
struct Held {
    lock: KeyLock,
    /// What the transition read under the lock (`None` when it was taken without a read, by
    /// `lock_key`: its write cannot be compared, so it is not retried).
    read: Option<Option<Vec<u8>>>,
    lease: Duration,
}

impl RetryLock {
    fn wrap(lock: KeyLock, read: Option<Option<Vec<u8>>>, lease: Duration) -> KeyLock {
        KeyLock::new(RetryLock {
            held: Mutex::new(Some(Held { lock, read, lease })),
        })
    }

    fn take(&self) -> Option<Held> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[async_trait]
impl HeldLock for RetryLock {
    async fn release(self: Box<Self>) -> StateResult<()> {
        match self.take() {
            Some(held) => held.lock.release().await,
            None => Ok(()),
        }
    }

    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        Some(self)
    }
}

#[async_trait]
impl StateStorage for RetryingStorage {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.run(key, "get", || self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.run(key, "set", || self.inner.set(key, value)).await
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.run(key, "delete", || self.inner.delete(key)).await
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.run(key, "exists", || self.inner.exists(key)).await
    }

    async fn clear(&self) -> StateResult<()> {
        self.run("*", "clear", || self.inner.clear()).await
    }

    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        self.update_once(key, None, f).await
    }

    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        self.run(key, "set", || self.inner.set_with_ttl(key, value, ttl))
            .await
    }

    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        self.update_once(key, Some(ttl), f).await
    }

    async fn get_many(&self, keys: &[&str]) -> StateResult<Vec<Option<Vec<u8>>>> {
        let first = keys.first().copied().unwrap_or("");
        self.run(first, "get_many", || self.inner.get_many(keys))
            .await
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> StateResult<()> {
        let first = entries.first().map_or("", |(key, _)| key);
        self.run(first, "set_many", || self.inner.set_many(entries, ttl))
            .await
    }

    async fn lock_key(&self, key: &str, lease: Duration) -> StateResult<KeyLock> {
        let lock = self
            .run(key, "lock_key", || self.inner.lock_key(key, lease))
            .await?;
        Ok(RetryLock::wrap(lock, None, lease))
    }

    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        self.lock_reading(key, lease).await
    }

    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let taken = lock.downcast_ref::<RetryLock>().map(RetryLock::take);
        let Held {
            lock: inner,
            read,
            lease,
        } = match taken {
            Some(Some(held)) => held,
            Some(None) => {
                return Err(StateError::storage_for(
                    key,
                    "write_and_release was given a lock that was already used",
                ))
            }
            // A lock this wrapper did not hand out: pass it on, once.
            None => {
                let call = self.inner.write_and_release(key, lock, write, ttl);
                return self.attempt(key, "write_and_release", call).await;
            }
        };
        drop(lock);
        let call = self.inner.write_and_release(key, inner, write, ttl);
        match self.attempt(key, "write_and_release", call).await {
            Ok(()) => Ok(()),
            Err(err) => match read {
                Some(read) if transient(&err) => {
                    self.write_compare_and_set(key, read, lease, write, ttl, err)
                        .await
                }
                _ => Err(err),
            },
        }
    }

    fn as_local(&self) -> Option<&dyn LocalStorage> {
        self.inner.as_local()
    }

    fn stats_source(&self) -> Option<Arc<dyn StatsSource>> {
        self.inner.stats_source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A map whose `get` fails the first `fail` times.
    #[derive(Default)]
    struct Flaky {
        map: Mutex<HashMap<String, Vec<u8>>>,
        fail: AtomicU32,
    }

    #[async_trait]
    impl StateStorage for Flaky {
        async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
            let left = self.fail.load(Ordering::SeqCst);
            if left > 0 {
                self.fail.store(left - 1, Ordering::SeqCst);
                return Err(StateError::storage_for(key, "flaky"));
            }
            Ok(self.map.lock().unwrap().get(key).cloned())
        }
        async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
            self.map.lock().unwrap().insert(key.into(), value.into());
            Ok(())
        }
        async fn delete(&self, key: &str) -> StateResult<()> {
            self.map.lock().unwrap().remove(key);
            Ok(())
        }
        async fn exists(&self, key: &str) -> StateResult<bool> {
            Ok(self.map.lock().unwrap().contains_key(key))
        }
        async fn clear(&self) -> StateResult<()> {
            self.map.lock().unwrap().clear();
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_hook_sees_each_retry_and_waits_follow_the_backoff() {
        let inner = Arc::new(Flaky::default());
        inner.fail.store(2, Ordering::SeqCst);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let policy = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_secs(1));
        let store = RetryingStorage::new(inner.clone(), policy).on_retry(Arc::new(
            move |key: &str, err: &StateError| {
                log.lock().unwrap().push((key.to_string(), err.to_string()))
            },
        ));
        inner.set("k", b"v").await.unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(start.elapsed(), Duration::from_millis(10 + 20));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|(k, e)| k == "k" && e.contains("flaky")));
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_whose_read_failed_is_retried_and_runs_its_function_once() {
        let inner = Arc::new(Flaky::default());
        inner.fail.store(1, Ordering::SeqCst);
        let store = RetryingStorage::new(inner.clone(), RetryPolicy::default());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let out = store
            .update(
                "k",
                Box::new(move |cur| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(cur, None);
                    Ok(b"1".to_vec())
                }),
            )
            .await
            .unwrap();
        assert_eq!(out, b"1");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(inner.get("k").await.unwrap(), Some(b"1".to_vec()));
    }

    #[tokio::test]
    async fn an_in_process_store_is_not_wrapped() {
        let local: SharedStorage = Arc::new(rs2_state_memory::InMemoryState::new(
            &rs2_state_core::StateConfig::default(),
        ));
        let wrapped = RetryingStorage::wrap(Arc::clone(&local), RetryPolicy::default(), None);
        assert!(Arc::ptr_eq(&local, &wrapped));
    }
}
