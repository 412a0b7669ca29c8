//! Operators under `FaultyStorage`: every event whose state call failed yields an error item,
//! no event disappears, state is never overwritten after a failed read, the stream goes on.
//! Retries are off (`RetryPolicy::none()`) so every injected fault reaches the operator, except
//! in `fold_with_retries_turns_failures_into_results`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{RetryPolicy, StateAccess, StateConfig, StatefulStreamExt};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::MapStore;

const KEYS: u64 = 5;
const EVENTS: u64 = 400;

fn faulty(seed: u64) -> Arc<FaultyStorage<MapStore>> {
    Arc::new(
        FaultyStorage::new(MapStore::default())
            .fail_fraction(0.15, seed)
            .garbage_fraction(0.1)
            .time_out_fraction(0.05, Duration::from_millis(50)),
    )
}

fn config(store: &Arc<FaultyStorage<MapStore>>) -> StateConfig {
    StateConfig::new()
        .with_custom_storage(store.clone())
        .retry(RetryPolicy::none())
}

fn key(i: &u64) -> String {
    format!("k{}", i % KEYS)
}

/// A fold's successful items for a key count 1, 2, 3, ...: a failed read or write never loses
/// an applied event, never applies one twice, and never overwrites the count with garbage.
#[tokio::test(start_paused = true)]
async fn fold_counts_stay_exact_under_faults() {
    for seed in [1, 7, 42] {
        let store = faulty(seed);
        let out: Vec<_> = stream::iter(0..EVENTS)
            .stateful_fold_rs2(
                config(&store),
                key,
                0u64,
                |n, _e, _s: StateAccess| async move { n + 1 },
            )
            .collect()
            .await;
        assert_eq!(out.len() as u64, EVENTS, "one item per event");
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut errors = 0;
        for (i, item) in (0..EVENTS).zip(&out) {
            match item {
                Ok(n) => {
                    let prev = last.insert(key(&i), *n).unwrap_or(0);
                    assert_eq!(
                        *n,
                        prev + 1,
                        "seed {seed}, event {i}: counts go 1, 2, 3, ..."
                    );
                }
                Err(err) => {
                    assert!(err.to_string().contains(&key(&i)), "names the key: {err}");
                    errors += 1;
                }
            }
        }
        assert!(
            errors > 0 && store.injected() > 0,
            "seed {seed}: faults happened"
        );
    }
}

/// Dedup of unique ids: every event is either passed or an error item, never dropped.
#[tokio::test(start_paused = true)]
async fn dedup_never_drops_an_event_it_could_not_check() {
    let store = faulty(3);
    let out: Vec<_> = stream::iter(0..EVENTS)
        .stateful_deduplicate_rs2(
            config(&store),
            |i: &u64| i.to_string(),
            Duration::from_secs(60),
        )
        .collect()
        .await;
    assert_eq!(out.len() as u64, EVENTS, "unique ids: one item each");
    assert!(out.iter().any(Result::is_err));
}

/// The closure of `stateful_map_rs2` sees the failures as `Err` from its `StateAccess` calls.
#[tokio::test(start_paused = true)]
async fn map_closures_see_failures_as_errors() {
    let store = faulty(5);
    let out: Vec<Result<u64, String>> = stream::iter(0..EVENTS)
        .stateful_map_rs2(config(&store), key, |_e, state: StateAccess| async move {
            let n = state.try_get::<u64>().await.map_err(|e| e.to_string())?;
            let n = n.unwrap_or(0) + 1;
            state.set(&n).await.map_err(|e| e.to_string())?;
            Ok(n)
        })
        .collect()
        .await;
    assert_eq!(out.len() as u64, EVENTS);
    assert!(out.iter().any(Result::is_err) && out.iter().any(Result::is_ok));
}

/// With the default retry policy the same faults cost far fewer error items: failed and
/// timed-out calls are retried, and what is left is undecodable reads (garbage bytes, never
/// retried) and the rare call that failed three times in a row. Counts stay exact.
#[tokio::test(start_paused = true)]
async fn fold_with_retries_turns_failures_into_results() {
    let run = |retry: RetryPolicy| async move {
        let store = faulty(1);
        let out: Vec<_> = stream::iter(0..EVENTS)
            .stateful_fold_rs2(
                config(&store).retry(retry),
                key,
                0u64,
                |n, _e, _s: StateAccess| async move { n + 1 },
            )
            .collect()
            .await;
        let mut last: HashMap<String, u64> = HashMap::new();
        for (i, item) in (0..EVENTS).zip(&out) {
            if let Ok(n) = item {
                let prev = last.insert(key(&i), *n).unwrap_or(0);
                assert_eq!(*n, prev + 1, "event {i}: counts go 1, 2, 3, ...");
            }
        }
        out.iter().filter(|r| r.is_err()).count()
    };
    let without = run(RetryPolicy::none()).await;
    let with = run(RetryPolicy::default()).await;
    assert!(without > 0, "faults happened");
    assert!(
        with * 2 < without,
        "retries hide most faults: {with} error items with retries, {without} without"
    );
}

#[tokio::test(start_paused = true)]
async fn the_nth_call_fails_and_latency_uses_paused_time() {
    let store = FaultyStorage::new(MapStore::default())
        .fail_call(2)
        .latency(Duration::from_secs(1));
    use rs2::state::StateStorage;
    let started = tokio::time::Instant::now();
    store.set("a", b"1").await.unwrap();
    assert!(store
        .get("a")
        .await
        .unwrap_err()
        .to_string()
        .contains("injected"));
    assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!((store.calls(), store.injected()), (3, 1));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "two calls waited"
    );
}

/// Reduce: as fold, successful sums go 1, 2, 3, ... per key.
#[tokio::test(start_paused = true)]
async fn reduce_sums_stay_exact_under_faults() {
    let store = faulty(11);
    let out: Vec<_> = stream::iter((0..EVENTS).map(|i| (i % KEYS, 1u64)))
        .stateful_reduce_rs2(
            config(&store),
            |e: &(u64, u64)| e.0.to_string(),
            |acc, e, _s: StateAccess| async move { (acc.0, acc.1 + e.1) },
        )
        .collect()
        .await;
    assert_eq!(out.len() as u64, EVENTS);
    let mut last: HashMap<u64, u64> = HashMap::new();
    for (k, n) in out.iter().flatten() {
        let prev = last.insert(*k, *n).unwrap_or(0);
        assert_eq!(*n, prev + 1, "key {k}");
    }
    assert!(out.iter().any(Result::is_err));
}

/// Throttle with room for every event, and sessions: one item per event, errors included.
#[tokio::test(start_paused = true)]
async fn throttle_and_session_yield_one_item_per_event() {
    let store = faulty(13);
    let out: Vec<_> = stream::iter(0..EVENTS)
        .stateful_throttle_rs2(config(&store), key, 10_000, Duration::from_secs(60))
        .collect()
        .await;
    assert_eq!(out.len() as u64, EVENTS, "throttle");
    assert!(out.iter().any(Result::is_err));

    let store = faulty(17);
    let out: Vec<_> = stream::iter(0..EVENTS)
        .stateful_session_rs2(
            config(&store),
            key,
            Duration::from_secs(60),
            |e, new_session, _s: StateAccess| async move { (e, new_session) },
        )
        .collect()
        .await;
    assert_eq!(out.len() as u64, EVENTS, "session");
    assert!(out.iter().any(Result::is_err));
}

/// Operators that buffer (window, pattern, group_by) run to the end under faults, report
/// errors as items, and never yield more than the input allows.
#[tokio::test(start_paused = true)]
async fn buffering_operators_run_to_the_end_under_faults() {
    let store = faulty(19);
    let windows: Vec<_> = stream::iter(0..EVENTS)
        .stateful_window_rs2(
            config(&store),
            key,
            4,
            |w: Vec<u64>, _s: StateAccess| async move { w.len() },
        )
        .collect()
        .await;
    assert!(windows.iter().any(Result::is_err));
    assert!(windows.iter().flatten().all(|len| *len == 4));
    assert!(windows.iter().flatten().count() as u64 <= EVENTS / 4);

    let store = faulty(23);
    let patterns: Vec<_> = stream::iter(0..EVENTS)
        .stateful_pattern_rs2(
            config(&store),
            key,
            3,
            |w: Vec<u64>, _s: StateAccess| async move { Some(w.len()) },
        )
        .collect()
        .await;
    assert!(patterns.iter().any(Result::is_err));
    assert!(patterns.iter().flatten().all(|len| *len == 3));

    let store = faulty(29);
    let groups: Vec<_> = stream::iter(0..EVENTS)
        .stateful_group_by_rs2(
            config(&store),
            key,
            |k, g: Vec<u64>, _s: StateAccess| async move { (k, g.len()) },
        )
        .collect()
        .await;
    assert!(groups.iter().any(Result::is_err));
    let grouped: usize = groups.iter().flatten().map(|(_, n)| n).sum();
    assert!(grouped as u64 <= EVENTS);
}
