//! The figures an application reads while its streams run (issue 11, observability): each one
//! proved by a pipeline whose exact figures are known.

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{
    AdmissionState, InMemoryState, StateAccess, StateConfig, StateStats, StateStorage,
    StateStorageType, StatefulStreamExt, StatsSnapshot,
};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::{timed, FailingStore, MapStore};

/// `n` events over `keys` keys: key `i % keys`.
fn events(n: usize, keys: usize) -> Vec<String> {
    (0..n).map(|i| format!("k{}", i % keys)).collect()
}

#[allow(clippy::ptr_arg)] // a key extractor takes `&T`, and `T` is `String` here
fn key(e: &String) -> String {
    e.clone()
}

#[tokio::test]
async fn map_counts_a_write_per_event_and_a_miss_per_new_key() {
    let pipeline = stream::iter(events(100, 10)).stateful_map_rs2(
        StateConfig::new(),
        key,
        |e, state: StateAccess| async move {
            state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap();
            e
        },
    );
    let stats = pipeline.stats();
    let empty = StatsSnapshot {
        bytes: Some(0),
        ..StatsSnapshot::default()
    };
    assert_eq!(stats.snapshot(), empty, "nothing before the first event");
    assert_eq!(pipeline.count().await, 100);
    let s = stats.snapshot();
    assert_eq!(
        (s.writes, s.entries),
        (100, 0),
        "the store went with the stream: {s}"
    );
    // Each update read the key first: a miss for each key's first event, a hit after.
    assert_eq!((s.misses, s.hits, s.errors), (10, 90, 0), "{s}");
    assert_eq!(s.hit_rate(), Some(0.9));
}

#[tokio::test]
async fn entries_are_what_the_store_holds_while_it_runs() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let input = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let pipeline =
        input.stateful_fold_rs2(
            StateConfig::new(),
            key,
            0u64,
            |n, _e, _s| async move { n + 1 },
        );
    let stats = pipeline.stats();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(pipeline.for_each(move |item| {
        let done_tx = done_tx.clone();
        async move {
            let _ = done_tx.send(item);
        }
    }));
    for e in events(30, 3) {
        tx.send(e).unwrap();
    }
    for _ in 0..30 {
        done_rx.recv().await.unwrap().unwrap();
    }
    // Read from this task while the pipeline's task is still running.
    let s = stats.snapshot();
    assert_eq!(
        (s.entries, s.writes, s.misses, s.hits),
        (3, 30, 3, 27),
        "{s}"
    );
    assert_eq!(s.bytes, None, "typed accumulators have no byte size");
    for e in events(10, 5) {
        tx.send(e).unwrap();
    }
    for _ in 0..10 {
        done_rx.recv().await.unwrap().unwrap();
    }
    let s = stats.snapshot();
    assert_eq!((s.entries, s.writes), (5, 40), "{s}");
    drop(tx);
    task.await.unwrap();
    let s = stats.snapshot();
    assert_eq!(
        (s.entries, s.writes),
        (0, 40),
        "counts outlive the pipeline: {s}"
    );
}

#[tokio::test]
async fn a_size_bound_counts_each_eviction() {
    let config = StateConfig::new().max_size(10);
    let pipeline =
        stream::iter(events(25, 25))
            .stateful_fold_rs2(config, key, 0u64, |n, _, _| async move { n + 1 });
    let stats = pipeline.stats();
    let counts: Vec<_> = pipeline.collect().await;
    assert!(counts.iter().all(Result::is_ok));
    let s = stats.snapshot();
    assert_eq!((s.evictions, s.writes, s.misses), (15, 25, 25), "{s}");
}

#[tokio::test]
async fn the_in_memory_store_counts_evictions_and_expirations_exactly() {
    let store = InMemoryState::new(
        &StateConfig::new()
            .max_size(4)
            .ttl(Duration::from_secs(10))
            .cleanup_interval(Duration::from_secs(10)),
    );
    for i in 0..10 {
        store.set(&format!("k{i}"), b"v").await.unwrap();
    }
    let s = store.stats();
    assert_eq!((s.entries, s.writes, s.evictions), (4, 10, 6), "{s}");
    store.cleanup();
    assert_eq!(store.stats().expirations, 0);
    assert_eq!(store.get("k9").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(store.get("k0").await.unwrap(), None);
    let s = store.stats();
    assert_eq!((s.hits, s.misses), (1, 1), "{s}");
}

#[tokio::test(start_paused = true)]
async fn expired_state_is_counted_once_by_a_cleanup_pass_or_by_the_write_replacing_it() {
    let config = StateConfig::new()
        .ttl(Duration::from_secs(1))
        .cleanup_interval(Duration::from_secs(1));
    // a, b, c at 0 s; their markers expire at 1 s. At 2 s "a" again: its expired marker is
    // dropped by the cleanup pass that access runs (with b's and c's), and "a" passes again.
    let input = timed(vec![(0, "a"), (0, "b"), (0, "c"), (2_000, "a")]);
    let pipeline = input.stateful_deduplicate_rs2(
        config.clone(),
        |e: &&str| e.to_string(),
        Duration::from_secs(60),
    );
    let stats = pipeline.stats();
    let out: Vec<&str> = pipeline.map(Result::unwrap).collect().await;
    assert_eq!(
        out,
        ["a", "b", "c", "a"],
        "the markers expired with the config's TTL"
    );
    let s = stats.snapshot();
    assert_eq!((s.expirations, s.writes), (3, 4), "{s}");

    // In a store without a cleanup pass due, a write over an expired value counts it.
    let store = InMemoryState::new(
        &StateConfig::new()
            .ttl(Duration::from_secs(1))
            .cleanup_interval(Duration::from_secs(60)),
    );
    store.set("k", b"1").await.unwrap();
    tokio::time::advance(Duration::from_millis(1_500)).await;
    store.set("k", b"2").await.unwrap();
    assert_eq!(store.stats().expirations, 1);
    assert_eq!(store.len(), 1, "replaced, not dropped by a cleanup pass");
    store.cleanup();
    assert_eq!(store.stats().expirations, 1, "not counted again");
}

#[tokio::test]
async fn a_failing_store_is_counted_as_errors_per_event_and_per_closure_call() {
    let failing = StateConfig::new().with_custom_storage(Arc::new(FailingStore));
    let fold = stream::iter(events(7, 3)).stateful_fold_rs2(
        failing.clone(),
        key,
        0u64,
        |n, _, _| async move { n + 1 },
    );
    let stats = fold.stats();
    let items: Vec<_> = fold.collect().await;
    assert!(items.iter().all(Result::is_err));
    let s = stats.snapshot();
    assert_eq!((s.errors, s.writes, s.hits), (7, 0, 0), "{s}");

    // map yields no Err items: its closure's failed StateAccess calls are the errors, `get`
    // (which fails open, reading `None`) included.
    let map = stream::iter(events(5, 5)).stateful_map_rs2(
        failing,
        key,
        |_e, state: StateAccess| async move {
            let seen: Option<u64> = state.get().await;
            (seen, state.set(&1u64).await.is_err())
        },
    );
    let stats = map.stats();
    let out: Vec<_> = map.collect().await;
    assert!(out.iter().all(|(seen, failed)| seen.is_none() && *failed));
    assert_eq!(stats.snapshot().errors, 10, "5 failed gets, 5 refused sets");
}

#[tokio::test]
async fn a_store_without_figures_of_its_own_is_counted_by_the_operator() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let fold = stream::iter(events(20, 4)).stateful_fold_rs2(
        config,
        key,
        0u64,
        |n, _, _| async move { n + 1 },
    );
    let stats = fold.stats();
    assert_eq!(
        fold.filter(|r| std::future::ready(r.is_ok())).count().await,
        20
    );
    let s = stats.snapshot();
    assert_eq!((s.writes, s.misses, s.hits), (20, 4, 16), "{s}");
    assert_eq!(
        (s.entries, s.bytes),
        (0, None),
        "not known for such a store"
    );
}

#[tokio::test]
async fn a_closures_update_on_a_store_without_figures_counts_its_read_and_its_write() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let map =
        stream::iter(events(20, 4)).stateful_map_rs2(config, key, |_, s: StateAccess| async move {
            s.update(|n: Option<u64>| n.unwrap_or(0) + 1).await.unwrap()
        });
    let stats = map.stats();
    let counts: Vec<u64> = map.collect().await;
    assert_eq!(counts.iter().sum::<u64>(), 4 * (1 + 2 + 3 + 4 + 5));
    let s = stats.snapshot();
    assert_eq!((s.writes, s.misses, s.hits), (20, 4, 16), "{s}");
}

#[tokio::test(start_paused = true)]
async fn retries_are_counted_once_each_and_a_retried_call_counts_once() {
    // Call n fails once: the config's default policy retries it, so no event fails, and the
    // figures count logical calls (one read and one write per event), not attempts.
    for n in [1u64, 2, 3, 7, 12] {
        let store = Arc::new(FaultyStorage::new(MapStore::default()).fail_call(n));
        let config = StateConfig::new().with_custom_storage(store.clone());
        let fold = stream::iter(events(20, 4)).stateful_fold_rs2(
            config,
            key,
            0u64,
            |n, _, _| async move { n + 1 },
        );
        let stats = fold.stats();
        let out: Vec<_> = fold.collect().await;
        assert!(out.iter().all(Result::is_ok), "call {n}: {out:?}");
        assert_eq!(store.injected(), 1);
        let s = stats.snapshot();
        assert_eq!((s.retries, s.errors), (1, 0), "call {n}: {s}");
        assert_eq!((s.writes, s.misses, s.hits), (20, 4, 16), "call {n}: {s}");
    }
}

#[tokio::test]
async fn a_shared_store_is_counted_once_and_pipelines_sharing_a_handle_add_up() {
    let store = Arc::new(InMemoryState::new(&StateConfig::new()));
    let stats = StateStats::new();
    let config = StateConfig::new()
        .stats(stats.clone())
        .with_custom_storage(store.clone());
    let fold = stream::iter(events(12, 4)).stateful_fold_rs2(
        config.clone(),
        key,
        0u64,
        |n, _, _| async move { n + 1 },
    );
    let dedup =
        stream::iter(events(12, 6)).stateful_deduplicate_rs2(config, key, Duration::from_secs(60));
    assert!(fold.stats().same_handle(&stats) && dedup.stats().same_handle(&stats));
    let (a, b) = futures::join!(fold.count(), dedup.count());
    assert_eq!((a, b), (12, 6));
    // Two operators, one store: the handle's figures are the store's, not twice them.
    assert_eq!(stats.snapshot(), store.stats());
    let s = stats.snapshot();
    assert_eq!(
        s.entries, 10,
        "4 fold accumulators and 6 dedup markers: {s}"
    );
    assert_eq!(s.writes, 12 + 6, "{s}");

    // Two pipelines with private stores, one handle: their figures add.
    let stats = StateStats::new();
    let config = StateConfig::new().stats(stats.clone());
    let map = stream::iter(events(10, 10)).stateful_map_rs2(
        config.clone(),
        key,
        |e, state: StateAccess| async move {
            state.set(&1u8).await.unwrap();
            e
        },
    );
    let fold = stream::iter(events(5, 5)).stateful_fold_rs2(
        config,
        key,
        0u64,
        |n, _, _| async move { n + 1 },
    );
    let (a, b) = futures::join!(map.count(), fold.count());
    assert_eq!((a, b), (10, 5));
    assert_eq!(stats.snapshot().writes, 15);
}

#[tokio::test]
async fn keyed_concurrency_operators_report_too() {
    let failing = StateConfig::new().with_custom_storage(Arc::new(FailingStore));
    let fold = stream::iter(events(6, 3)).stateful_fold_rs2_par(
        failing,
        key,
        4,
        0u64,
        |n, _, _| async move { n + 1 },
    );
    let stats = fold.stats();
    assert_eq!(
        fold.filter(|r| std::future::ready(r.is_err()))
            .count()
            .await,
        6
    );
    assert_eq!(stats.snapshot().errors, 6);

    let map = stream::iter(events(8, 2)).stateful_map_rs2_par(
        StateConfig::new(),
        key,
        4,
        |e, state: StateAccess| async move {
            state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap();
            e
        },
    );
    let stats = map.stats();
    assert_eq!(map.count().await, 8);
    let s = stats.snapshot();
    assert_eq!((s.writes, s.misses, s.hits), (8, 2, 6), "{s}");
}

#[tokio::test]
async fn the_admission_store_counts_refusals_and_its_byte_budget() {
    let store = AdmissionState::new(&StateConfig::new().max_size(100));
    for i in 0..1_000 {
        store.set(&format!("k{i}"), b"v").await.unwrap();
    }
    store.run_pending_tasks();
    let s = store.stats();
    assert_eq!((s.writes, s.entries, s.evictions), (1_000, 100, 900), "{s}");
    assert_eq!(
        s.bytes, None,
        "an entry-bounded store does not weigh its entries"
    );

    let budget = 10_000;
    let store = AdmissionState::with_byte_budget(&StateConfig::new(), budget);
    for i in 0..1_000 {
        store.set(&format!("k{i:04}"), &[0u8; 100]).await.unwrap();
    }
    store.run_pending_tasks();
    let s = store.stats();
    let bytes = s.bytes.expect("a byte budget is reported");
    assert_eq!(bytes, store.weighted_size());
    assert!(bytes <= budget, "{s}");
    assert_eq!(s.entries + s.evictions, 1_000, "{s}");

    // Selected from the config, the store feeds the operator's handle.
    let config = StateConfig::new()
        .storage_type(StateStorageType::InMemoryAdmission)
        .max_size(100);
    let fold = stream::iter(events(50, 5)).stateful_fold_rs2(
        config,
        key,
        0u64,
        |n, _, _| async move { n + 1 },
    );
    let stats = fold.stats();
    assert_eq!(fold.count().await, 50);
    let s = stats.snapshot();
    assert_eq!((s.writes, s.misses + s.hits), (50, 50), "{s}");
}

/// One call on a store, on one of a few keys.
#[derive(Debug, Clone)]
enum Call {
    Get(u8),
    Exists(u8),
    /// A value of this many bytes (values over 22 bytes live on the heap).
    Set(u8, usize),
    Update(u8),
    Delete(u8),
    /// An in-place edit appending this many bytes, keeping (0), storing (1) or removing (2).
    Modify(u8, usize, u8),
}

fn calls() -> impl proptest::strategy::Strategy<Value = Vec<Call>> {
    use proptest::prelude::*;
    let key = 0u8..12;
    let call = prop_oneof![
        key.clone().prop_map(Call::Get),
        key.clone().prop_map(Call::Exists),
        (key.clone(), 0usize..60).prop_map(|(k, n)| Call::Set(k, n)),
        key.clone().prop_map(Call::Update),
        key.clone().prop_map(Call::Delete),
        (key, 0usize..40, 0u8..3).prop_map(|(k, n, c)| Call::Modify(k, n, c)),
    ];
    proptest::collection::vec(call, 0..200)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// After every call, each figure of an `InMemoryState` moved exactly as the call's own
    /// result says it must: a read that found a value is one hit (none: one miss), a set or
    /// update is one write, a new key into a full store is one eviction, and `entries` is
    /// the store's length, and `bytes` its fixed cost per key plus its heap bytes.
    #[test]
    fn in_memory_figures_follow_every_call(max_size in 1usize..6, calls in calls()) {
        use futures::executor::block_on;
        use rs2::state::{LocalStorage, ValueChange};
        let store = InMemoryState::new(&StateConfig::new().max_size(max_size));
        let mut want = StatsSnapshot::default();
        for call in calls {
            let key = |k: u8| format!("k{k}");
            match call {
                Call::Get(k) => {
                    let found = block_on(store.get(&key(k))).unwrap().is_some();
                    if found { want.hits += 1 } else { want.misses += 1 }
                }
                Call::Exists(k) => {
                    let found = block_on(StateStorage::exists(&store, &key(k))).unwrap();
                    if found { want.hits += 1 } else { want.misses += 1 }
                }
                Call::Set(k, _) | Call::Update(k) => {
                    // A counted read first, to know whether the key is new.
                    let held = block_on(StateStorage::exists(&store, &key(k))).unwrap();
                    if held { want.hits += 1 } else { want.misses += 1 }
                    let full = store.len() == max_size;
                    if let Call::Set(_, n) = call {
                        block_on(store.set(&key(k), &vec![7u8; n])).unwrap();
                    } else {
                        let seen = std::sync::Mutex::new(None);
                        block_on(StateStorage::update(&store, &key(k), Box::new(|cur| {
                            *seen.lock().unwrap() = Some(cur.is_some());
                            Ok(b"u".to_vec())
                        }))).unwrap();
                        proptest::prop_assert_eq!(*seen.lock().unwrap(), Some(held));
                        if held { want.hits += 1 } else { want.misses += 1 }
                    }
                    want.writes += 1;
                    if !held && full {
                        want.evictions += 1;
                    }
                }
                Call::Delete(k) => block_on(store.delete(&key(k))).unwrap(),
                Call::Modify(k, n, c) => {
                    let (key, now) = (key(k), store.now_ms());
                    let full = store.len() == max_size;
                    let mut held = false;
                    let change = [ValueChange::Keep, ValueChange::Store, ValueChange::Remove][c as usize];
                    store.modify(store.hash_key(&key), &key, now, &mut Vec::new(), &mut |buf, existed| {
                        held = existed;
                        if change == ValueChange::Store {
                            buf.extend(std::iter::repeat_n(1u8, n));
                        }
                        Ok(change)
                    }).unwrap();
                    if held { want.hits += 1 } else { want.misses += 1 }
                    if change == ValueChange::Store {
                        want.writes += 1;
                        if !held && full {
                            want.evictions += 1;
                        }
                    }
                }
            }
            want.entries = store.len() as u64;
            want.bytes = Some(88 * want.entries + store.heap_bytes() as u64);
            proptest::prop_assert_eq!(store.stats(), want, "after {:?}", call);
        }
    }
}
