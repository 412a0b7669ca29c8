//! `stateful_fold_rs2_par`: up to `n` events of different keys at once, one key strictly in
//! order, items in input order; same items and state as `stateful_fold_rs2`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2_suite::{no_hang, roomy, stored, timed, Backend, MapStore, Overlap};

/// (key, how long the closure "does I/O" for, in ms)
type Ev = (u8, u8);

/// Final state per key: (accumulator in `fold`, user state in `fold.user`).
type Stored = Vec<(Option<u64>, Option<u64>)>;

/// Each event: read the key's user count, await its I/O, write count + 1, and fold the count
/// and the I/O time into the accumulator (order-sensitive).
async fn run(
    events: Vec<Ev>,
    backend: Backend,
    concurrency: Option<usize>,
) -> (Vec<Result<u64, StateError>>, Stored) {
    let (config, store) = backend.config();
    let f = |acc: u64, (_, io_ms): Ev, state: StateAccess| async move {
        let n: u64 = state.get().await.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(u64::from(io_ms))).await;
        state.set(&(n + 1)).await.expect("set");
        (acc * 31 + n * 7 + u64::from(io_ms)) % 1_000_003
    };
    let by_key = |e: &Ev| e.0.to_string();
    let input = futures::stream::iter(events);
    let items = match concurrency {
        None => no_hang(input.stateful_fold_rs2(config, by_key, 1, f).collect()).await,
        Some(n) => {
            no_hang(
                input
                    .stateful_fold_rs2_par(config, by_key, n, 1, f)
                    .collect(),
            )
            .await
        }
    };
    let mut state = Vec::new();
    if let Some(store) = store {
        for k in 0..8 {
            let acc = stored(&store, &format!("fold:{k}")).await.expect("decodes");
            let user = stored(&store, &format!("fold.user:{k}"))
                .await
                .expect("decodes");
            state.push((acc, user));
        }
    }
    (items, state)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the concurrency, the backend and however long each closure takes, the items
    /// and the final state (accumulators and user state) are exactly the sequential operator's.
    #[test]
    fn equals_the_sequential_result(
        events in proptest::collection::vec((0u8..8, 0u8..20), 0..200),
        n in 1usize..=64,
        backend in proptest::sample::select(Backend::ALL.to_vec()),
    ) {
        let rt = runtime();
        let sequential = rt.block_on(run(events.clone(), backend, None));
        prop_assert!(sequential.0.iter().all(Result::is_ok));
        let concurrent = rt.block_on(run(events, backend, Some(n)));
        prop_assert_eq!(concurrent, sequential);
    }
}

/// A fold closure that sleeps 5 ms, counts how many closures run at once, and sums events.
fn counting(
    overlap: &Overlap,
) -> impl FnMut(u32, u32, StateAccess) -> futures::future::BoxFuture<'static, u32> {
    let overlap = overlap.clone();
    move |acc, e, _state| Box::pin(overlap.clone().hold(acc + e))
}

#[tokio::test(start_paused = true)]
async fn different_keys_overlap() {
    let overlap = Overlap::default();
    let start = tokio::time::Instant::now();
    let items: Vec<u32> = futures::stream::iter(0..32u32)
        .stateful_fold_rs2_par(roomy(), |e: &u32| e.to_string(), 8, 0, counting(&overlap))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, (0..32).collect::<Vec<_>>());
    assert_eq!(overlap.peak(), 8);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn one_key_never_runs_two_events_at_once() {
    for backend in Backend::ALL {
        let overlap = Overlap::default();
        let (config, _) = backend.config();
        let items: Vec<u32> = futures::stream::iter(1..=40u32)
            .stateful_fold_rs2_par(
                config,
                |e: &u32| (e % 2).to_string(),
                16,
                0,
                counting(&overlap),
            )
            .map(Result::unwrap)
            .collect()
            .await;
        // Two keys (odd, even), each a running sum.
        let expected: Vec<u32> = (1..=40u32).map(|e| (e % 2..=e).step_by(2).sum()).collect();
        assert_eq!(items, expected, "{backend:?}");
        assert_eq!(overlap.peak(), 2, "{backend:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn items_come_in_input_order_even_when_later_events_finish_first() {
    let events: Vec<Ev> = vec![(1, 50), (2, 1), (3, 10), (1, 0), (4, 0)];
    for backend in Backend::ALL {
        let (items, _) = run(events.clone(), backend, Some(5)).await;
        assert_eq!(items, run(events.clone(), backend, None).await.0);
        assert_eq!(items, [Ok(81), Ok(32), Ok(41), Ok(2518), Ok(31)]);
    }
}

#[tokio::test]
async fn empty_input_and_zero_concurrency() {
    let (items, _) = run(vec![], Backend::Private, Some(8)).await;
    assert!(items.is_empty());
    let events: Vec<Ev> = vec![(1, 0), (1, 0), (2, 0), (1, 3)];
    let (items, _) = run(events.clone(), Backend::Private, Some(0)).await;
    assert_eq!(items, run(events, Backend::Private, None).await.0);
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_accumulator_gives_err_items_and_stays_untouched() {
    for backend in [Backend::SharedMemory, Backend::Remote, Backend::SlowRemote] {
        let (config, store) = backend.config();
        let store = store.expect("shared");
        // An unterminated varint: not a u64.
        let garbage = vec![0xFF, 0xFF, 0xFF];
        store.set("fold:a", &garbage).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let items: Vec<Result<u64, StateError>> = no_hang(
            futures::stream::iter([("a", 1u64), ("b", 2), ("a", 3), ("b", 4)])
                .stateful_fold_rs2_par(config, |e: &(&str, u64)| e.0.to_string(), 4, 0u64, {
                    let calls = calls.clone();
                    move |acc, e, _state: StateAccess| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async move { acc + e.1 }
                    }
                })
                .collect(),
        )
        .await;
        assert_eq!(items.len(), 4, "{backend:?}");
        for i in [0, 2] {
            assert!(
                matches!(&items[i], Err(StateError::Serialization(m)) if m.contains("'a'")),
                "{backend:?}: {:?}",
                items[i]
            );
        }
        assert_eq!(items[1], Ok(2), "{backend:?}");
        assert_eq!(items[3], Ok(6), "{backend:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "only b's events ran the closure"
        );
        assert_eq!(
            store.get("fold:a").await.unwrap(),
            Some(garbage),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn key_extraction_and_config_errors_are_err_items() {
    let items: Vec<Result<u64, StateError>> = futures::stream::iter(vec![1u32, 2])
        .stateful_fold_rs2_par(
            roomy(),
            FieldKeyExtractor::new("missing"),
            4,
            0u64,
            |acc, _e, _state: StateAccess| async move { acc + 1 },
        )
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_err), "{items:?}");
    let items: Vec<Result<u64, StateError>> = futures::stream::iter(vec![1u32, 2, 3])
        .stateful_fold_rs2_par(
            StateConfig::new().ttl(Duration::ZERO),
            |e: &u32| e.to_string(),
            4,
            0u64,
            |acc, _e, _state: StateAccess| async move { acc + 1 },
        )
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| matches!(i, Err(StateError::Validation(m)) if m.contains("fold"))),
        "{items:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_accumulator_starts_again() {
    let config = StateConfig::new()
        .ttl(Duration::from_millis(100))
        .cleanup_interval(Duration::from_millis(10));
    // (ms before the event, (key, amount))
    let input = || {
        timed(vec![
            (0, ("a", 1u64)),
            (0, ("b", 10)),
            (50, ("a", 2)),
            (200, ("a", 4)),
            (0, ("b", 20)),
        ])
    };
    let f = |acc: u64, e: (&str, u64), _state: StateAccess| async move { acc + e.1 };
    let by_key = |e: &(&str, u64)| e.0.to_string();
    let par: Vec<u64> = input()
        .stateful_fold_rs2_par(config.clone(), by_key, 4, 0, f)
        .map(Result::unwrap)
        .collect()
        .await;
    let sequential: Vec<u64> = input()
        .stateful_fold_rs2(config, by_key, 0, f)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(par, [1, 10, 3, 4, 20]);
    assert_eq!(par, sequential);
}

#[tokio::test]
async fn state_lives_in_the_fold_namespaces() {
    let store = Arc::new(MapStore::default());
    let config = roomy().with_custom_storage(store.clone());
    let items: Vec<u64> = futures::stream::iter([("a", 1u64), ("b", 2), ("a", 3)])
        .stateful_fold_rs2_par(
            config,
            |e: &(&str, u64)| e.0.to_string(),
            4,
            0,
            |acc, e, state: StateAccess| async move {
                state.set(&e.1).await.unwrap();
                acc + e.1
            },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [1, 2, 4]);
    let mut keys: Vec<String> = store.0.lock().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["fold.user:a", "fold.user:b", "fold:a", "fold:b"]);
}

/// A `SlowStore` that counts transitions (`lock_and_get`) and can fail every
/// `write_and_release` after the first `ok_writes`.
#[derive(Default)]
struct TransitionCounter {
    store: rs2_suite::SlowStore,
    locks: AtomicUsize,
    writes: AtomicUsize,
    ok_writes: Option<usize>,
}

#[rs2::state::async_trait]
impl StateStorage for TransitionCounter {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.store.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.store.set(key, value).await
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.store.delete(key).await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.store.exists(key).await
    }
    async fn clear(&self) -> StateResult<()> {
        self.store.clear().await
    }
    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(rs2::state::KeyLock, Option<Vec<u8>>)> {
        self.locks.fetch_add(1, Ordering::SeqCst);
        let lock = self.lock_key(key, lease).await?;
        Ok((lock, self.store.get(key).await?))
    }
    async fn write_and_release(
        &self,
        key: &str,
        lock: rs2::state::KeyLock,
        write: rs2::state::LockedWrite<'_>,
        _ttl: Option<Duration>,
    ) -> StateResult<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        let written = match write {
            _ if self.ok_writes.is_some_and(|ok| n >= ok) => {
                Err(StateError::storage_for(key, "write refused"))
            }
            rs2::state::LockedWrite::Set(bytes) => self.store.set(key, bytes).await,
            rs2::state::LockedWrite::Delete => self.store.delete(key).await,
            rs2::state::LockedWrite::Keep => Ok(()),
        };
        lock.release().await?;
        written
    }
}

/// Twelve events of one key, all waiting at once behind the first: they run as one
/// transition (one locked read, one write) instead of eleven, and yield what the sequential
/// fold yields.
#[tokio::test(start_paused = true)]
async fn waiting_events_of_one_key_share_one_transition() {
    let store = Arc::new(TransitionCounter::default());
    let config = roomy().with_custom_storage(store.clone());
    let items: Vec<u32> = futures::stream::iter(1..=12u32)
        .stateful_fold_rs2_par(
            config,
            |_: &u32| "k".to_string(),
            16,
            0u32,
            |acc, e, _s: StateAccess| async move { acc + e },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    let want: Vec<u32> = (1..=12)
        .scan(0, |s, e| {
            *s += e;
            Some(*s)
        })
        .collect();
    assert_eq!(items, want);
    assert_eq!(
        store.locks.load(Ordering::SeqCst),
        2,
        "the first event, then the other eleven"
    );
    assert_eq!(store.writes.load(Ordering::SeqCst), 2);
    let sum: Option<u32> = stored(&(store.clone() as rs2::state::SharedStorage), "fold:k")
        .await
        .unwrap();
    assert_eq!(sum, Some(78));
}

/// When a group's write fails, none of its events is acknowledged: each yields the error and
/// the stored value stays what the last successful write left.
#[tokio::test(start_paused = true)]
async fn a_failed_group_write_fails_every_event_of_the_group() {
    let store = Arc::new(TransitionCounter {
        ok_writes: Some(1),
        ..Default::default()
    });
    let config = roomy().with_custom_storage(store.clone());
    let items: Vec<StateResult<u32>> = futures::stream::iter(1..=5u32)
        .stateful_fold_rs2_par(
            config,
            |_: &u32| "k".to_string(),
            8,
            0u32,
            |acc, e, _s: StateAccess| async move { acc + e },
        )
        .collect()
        .await;
    assert_eq!(items[0], Ok(1));
    for item in &items[1..] {
        let err = item.clone().expect_err("the group's write failed");
        assert!(err.to_string().contains("write refused"), "{err}");
    }
    let sum: Option<u32> = stored(&(store.clone() as rs2::state::SharedStorage), "fold:k")
        .await
        .unwrap();
    assert_eq!(sum, Some(1));
}
