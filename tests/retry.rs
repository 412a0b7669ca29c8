//! The config's `RetryPolicy` around a custom store: transient failures are retried and cost
//! nothing, a hanging call is cut, decode errors are not retried, exhausted retries yield an
//! error item naming the key, and a transition's failed write is retried as a compare-and-set.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use proptest::prelude::*;
use rs2::state::{
    async_trait, Codec, KeyLock, LockedWrite, Postcard, RetryPolicy, StateAccess, StateConfig,
    StateError, StateResult, StateStorage, StatefulStreamExt,
};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::{no_hang, MapStore};

fn config(store: Arc<dyn StateStorage + Send + Sync>, retry: RetryPolicy) -> StateConfig {
    StateConfig::new().with_custom_storage(store).retry(retry)
}

/// A fold counting events per key.
async fn count(
    config: StateConfig,
    events: impl IntoIterator<Item = &'static str>,
) -> Vec<StateResult<u64>> {
    no_hang(
        stream::iter(events.into_iter().collect::<Vec<_>>())
            .stateful_fold_rs2(
                config,
                |k: &&str| k.to_string(),
                0u64,
                |n, _k, _s: StateAccess| async move { n + 1 },
            )
            .collect(),
    )
    .await
}

fn encoded(n: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    Postcard::encode(&n, &mut buf).unwrap();
    buf
}

/// What the next `write_and_release` calls of a [`Scripted`] store do.
#[derive(Debug, Clone)]
enum WriteFault {
    /// The write is applied and the lock released, but the reply is lost: an error.
    LoseReply,
    /// Nothing is written (the lock is released): an error.
    Refuse,
    /// Another writer stores these bytes under the key, then this write fails unapplied.
    OtherWriterFirst(Vec<u8>),
}

/// A map whose key locks are the provided in-process ones, with scripted faults: `get`s that
/// hang, `get`s of some keys that always fail, and `write_and_release`s that fail as told.
#[derive(Default)]
struct Scripted {
    map: MapStore,
    writes: Mutex<VecDeque<WriteFault>>,
    /// `get` calls (lock_and_get reads through it) that hang before one succeeds.
    hanging_gets: AtomicU32,
    /// `get`s of keys containing this fail, always.
    broken: Mutex<Option<String>>,
    gets: AtomicU64,
    writes_attempted: AtomicU64,
}

impl Scripted {
    fn stored(&self, key: &str) -> Option<Vec<u8>> {
        self.map.0.lock().unwrap().get(key).cloned()
    }
}

#[async_trait]
impl StateStorage for Scripted {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if matches!(&*self.broken.lock().unwrap(), Some(b) if key.contains(b.as_str())) {
            return Err(StateError::storage_for(key, "connection refused"));
        }
        let hang = self
            .hanging_gets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hang {
            futures::future::pending::<()>().await;
        }
        self.map.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.map.set(key, value).await
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.map.delete(key).await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.map.exists(key).await
    }
    async fn clear(&self) -> StateResult<()> {
        self.map.clear().await
    }
    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        _ttl: Option<Duration>,
    ) -> StateResult<()> {
        self.writes_attempted.fetch_add(1, Ordering::SeqCst);
        let fault = self.writes.lock().unwrap().pop_front();
        let apply = |store: &Scripted| match write {
            LockedWrite::Set(bytes) => {
                store.map.0.lock().unwrap().insert(key.into(), bytes.into());
            }
            LockedWrite::Delete => {
                store.map.0.lock().unwrap().remove(key);
            }
            LockedWrite::Keep => {}
        };
        match &fault {
            None => apply(self),
            Some(WriteFault::LoseReply) => apply(self),
            Some(WriteFault::Refuse) => {}
            Some(WriteFault::OtherWriterFirst(bytes)) => {
                self.map.0.lock().unwrap().insert(key.into(), bytes.clone());
            }
        }
        lock.release().await?;
        match fault {
            None => Ok(()),
            Some(f) => Err(StateError::storage_for(
                key,
                format!("connection reset ({f:?})"),
            )),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_and_the_fold_is_exact() {
    // 15% of calls fail; 6 retries make a call fail for good with odds of 0.15^7 (1 in 6
    // million), and the seed makes the run repeatable.
    let store = Arc::new(FaultyStorage::new(MapStore::default()).fail_fraction(0.15, 9));
    let retry = RetryPolicy::new(6, Duration::from_millis(5), Duration::from_millis(100));
    let events: Vec<&str> = (0..300).map(|i| ["a", "b", "c"][i % 3]).collect();
    let out = count(config(store.clone(), retry), events).await;
    let want: Vec<u64> = (0..300).map(|i| i / 3 + 1).collect();
    let got: Vec<u64> = out.into_iter().map(|r| r.expect("retried")).collect();
    assert_eq!(got, want);
    assert!(
        store.injected() > 50,
        "faults happened: {}",
        store.injected()
    );
}

#[tokio::test(start_paused = true)]
async fn without_retries_the_first_failure_is_an_err_item() {
    for (retry, errors) in [(RetryPolicy::none(), 1), (RetryPolicy::default(), 0)] {
        // Call 3 is the second event's lock_and_get.
        let store = Arc::new(FaultyStorage::new(MapStore::default()).fail_call(3));
        let out = count(config(store.clone(), retry), ["a", "a", "a"]).await;
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), errors, "{out:?}");
        assert_eq!(store.injected(), 1);
        let last = out[2].as_ref().unwrap();
        assert_eq!(*last, 3 - errors as u64, "{retry:?}: {out:?}");
        if errors == 1 {
            let err = out[1].as_ref().unwrap_err().to_string();
            assert!(err.contains("fold:a") && err.contains("injected"), "{err}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_call_is_cut_by_the_call_timeout_and_retried() {
    let store = Arc::new(Scripted::default());
    store.hanging_gets.store(1, Ordering::SeqCst);
    let retry = RetryPolicy::default().with_call_timeout(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let out = count(config(store.clone(), retry), ["a", "a"]).await;
    assert_eq!(out, [Ok(1), Ok(2)]);
    // Cut after 2 s, retried after 10 ms; the lock the cut attempt held was freed.
    assert_eq!(started.elapsed(), Duration::from_millis(2010));
    assert_eq!(store.gets.load(Ordering::SeqCst), 3);

    // Without retries the cut call is the event's error, naming the key and the timeout.
    let store = Arc::new(Scripted::default());
    store.hanging_gets.store(1, Ordering::SeqCst);
    let retry = RetryPolicy::none().with_call_timeout(Duration::from_secs(2));
    let out = count(config(store, retry), ["a", "a"]).await;
    let err = out[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("fold:a") && err.contains("timed out after 2s"),
        "{err}"
    );
    assert_eq!(out[1], Ok(1), "the stream goes on");
}

#[tokio::test(start_paused = true)]
async fn decode_errors_are_not_retried_and_the_bytes_are_kept() {
    let store = Arc::new(FaultyStorage::new(MapStore::default()));
    let garbage = vec![0xff; 12];
    store
        .inner()
        .0
        .lock()
        .unwrap()
        .insert("fold:a".into(), garbage.clone());
    let retry = RetryPolicy::new(5, Duration::from_millis(1), Duration::from_millis(1));
    let out = count(config(store.clone(), retry), ["a"]).await;
    assert!(
        matches!(&out[0], Err(StateError::Serialization(m)) if m.contains("'a'")),
        "{out:?}"
    );
    assert_eq!(store.calls(), 1, "one lock_and_get, not retried");
    assert_eq!(store.inner().0.lock().unwrap()["fold:a"], garbage);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_yield_an_err_naming_the_key_and_the_stream_goes_on() {
    let store = Arc::new(Scripted::default());
    *store.broken.lock().unwrap() = Some("bad".into());
    let started = tokio::time::Instant::now();
    let out = count(
        config(store.clone(), RetryPolicy::default()),
        ["good", "bad", "good"],
    )
    .await;
    assert_eq!(out[0], Ok(1));
    let err = out[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("fold:bad") && err.contains("after 2 retries"),
        "{err}"
    );
    assert_eq!(out[2], Ok(2));
    // Two good reads, three tries of the bad one, 10 + 20 ms apart.
    assert_eq!(store.gets.load(Ordering::SeqCst), 5);
    assert_eq!(started.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn a_write_whose_reply_was_lost_counts_once() {
    let store = Arc::new(Scripted::default());
    store
        .writes
        .lock()
        .unwrap()
        .push_back(WriteFault::LoseReply);
    let out = count(config(store.clone(), RetryPolicy::default()), ["a", "a"]).await;
    assert_eq!(out, [Ok(1), Ok(2)], "applied once, reported once");
    assert_eq!(store.stored("fold:a"), Some(encoded(2)));
    // The lost write was not sent again: the re-read found it applied.
    assert_eq!(store.writes_attempted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_write_that_failed_unapplied_is_made_again() {
    let store = Arc::new(Scripted::default());
    store.writes.lock().unwrap().push_back(WriteFault::Refuse);
    let out = count(config(store.clone(), RetryPolicy::default()), ["a", "a"]).await;
    assert_eq!(out, [Ok(1), Ok(2)]);
    assert_eq!(store.stored("fold:a"), Some(encoded(2)));
    assert_eq!(store.writes_attempted.load(Ordering::SeqCst), 3);

    // Retries off: the failure is the event's error and nothing was written.
    let store = Arc::new(Scripted::default());
    store.writes.lock().unwrap().push_back(WriteFault::Refuse);
    let out = count(config(store.clone(), RetryPolicy::none()), ["a", "a"]).await;
    assert!(out[0].is_err());
    assert_eq!(out[1], Ok(1));
}

#[tokio::test(start_paused = true)]
async fn a_write_retried_after_another_writer_changed_the_key_errs_and_keeps_its_value() {
    let store = Arc::new(Scripted::default());
    store
        .writes
        .lock()
        .unwrap()
        .push_back(WriteFault::OtherWriterFirst(encoded(100)));
    let out = count(config(store.clone(), RetryPolicy::default()), ["a"]).await;
    let err = out[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("fold:a") && err.contains("another writer changed it"),
        "{err}"
    );
    assert_eq!(
        store.stored("fold:a"),
        Some(encoded(100)),
        "the other writer's value is never overwritten"
    );
    // The next event starts from the other writer's value.
    let out = count(config(store.clone(), RetryPolicy::default()), ["a"]).await;
    assert_eq!(out, [Ok(101)]);
}

/// A user closure's `StateAccess` calls go through the policy too: `try_get`, `set` and
/// `update` (whose function runs once even though its first attempt failed).
#[tokio::test(start_paused = true)]
async fn state_access_calls_are_retried() {
    let store = Arc::new(FaultyStorage::new(MapStore::default()).fail_fraction(0.3, 5));
    let retry = RetryPolicy::new(10, Duration::from_millis(1), Duration::from_millis(10));
    let runs = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let out: Vec<StateResult<(u64, u64)>> = no_hang(
        stream::iter(0..60u64)
            .stateful_map_rs2(
                config(store.clone(), retry),
                |i: &u64| format!("k{}", i % 2),
                move |_i, state: StateAccess| {
                    let counted = Arc::clone(&counted);
                    async move {
                        let seen = state.try_get::<u64>().await?.unwrap_or(0);
                        let n = state
                            .update(|n: Option<u64>| {
                                counted.fetch_add(1, Ordering::SeqCst);
                                n.unwrap_or(0) + 1
                            })
                            .await?;
                        Ok((seen, n))
                    }
                },
            )
            .collect(),
    )
    .await;
    let want: Vec<(u64, u64)> = (0..60).map(|i| (i / 2, i / 2 + 1)).collect();
    let got: Vec<(u64, u64)> = out.into_iter().map(|r| r.expect("retried")).collect();
    assert_eq!(got, want);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        60,
        "each update ran its function once"
    );
    assert!(store.injected() > 10);
}

/// Reference: the running count of each key.
fn running_counts(keys: &[u8]) -> Vec<u64> {
    let mut seen: HashMap<u8, u64> = HashMap::new();
    keys.iter()
        .map(|k| {
            let n = seen.entry(*k).or_default();
            *n += 1;
            *n
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Under up to 20% failed calls, a fold and a keyed-concurrency fold with 12 retries give
    /// exactly the reference's counts (a call failing 13 times in a row has odds below 1e-9).
    #[test]
    fn folds_under_faults_with_retries_match_the_reference(
        keys in proptest::collection::vec(0u8..4, 1..80),
        fraction in 0.0f64..0.2,
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let retry = RetryPolicy::new(12, Duration::from_millis(1), Duration::from_millis(50));
        let want = running_counts(&keys);
        for par in [false, true] {
            let store = Arc::new(
                FaultyStorage::new(MapStore::default()).fail_fraction(fraction, seed),
            );
            let cfg = config(store, retry);
            let events = keys.clone();
            let out: Vec<StateResult<u64>> = rt.block_on(async move {
                let key = |k: &u8| k.to_string();
                let add = |n: u64, _k: u8, _s: StateAccess| async move { n + 1 };
                if par {
                    stream::iter(events)
                        .stateful_fold_rs2_par(cfg, key, 8, 0u64, add)
                        .collect()
                        .await
                } else {
                    stream::iter(events)
                        .stateful_fold_rs2(cfg, key, 0u64, add)
                        .collect()
                        .await
                }
            });
            let got: Vec<u64> = out.into_iter().map(|r| r.expect("retried")).collect();
            prop_assert_eq!(&got, &want, "par: {}", par);
        }
    }
}
