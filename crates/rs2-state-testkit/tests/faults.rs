//! Operators under `FaultyStorage`: every event whose state call failed yields an error item,
//! no event disappears, state is never overwritten after a failed read, the stream goes on.
//! Retries are off (`RetryPolicy::none()`) so every injected fault reaches the operator, except
//! in `fold_with_retries_turns_failures_into_results`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{Codec, Postcard, RetryPolicy, StateAccess, StateConfig, StatefulStreamExt};
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

/// The key an error names (each names one).
fn key_of(err: &impl ToString) -> String {
    let text = err.to_string();
    let named: Vec<String> = (0..KEYS)
        .map(|k| key(&k))
        .filter(|k| text.contains(k.as_str()))
        .collect();
    assert_eq!(named.len(), 1, "an error names its key: {text}");
    named[0].clone()
}

/// Errors per key.
fn errors_by_key<'a, T: 'a, E: ToString + 'a>(
    items: impl IntoIterator<Item = &'a Result<T, E>>,
) -> HashMap<String, u64> {
    let mut errors = HashMap::new();
    for err in items.into_iter().filter_map(|r| r.as_ref().err()) {
        *errors.entry(key_of(err)).or_insert(0) += 1;
    }
    errors
}

/// Groups of events (windows, patterns, groups) are each of one key, in input order, and no
/// event is in two of them unless `overlap` (patterns share events).
fn check_groups<'a>(what: &str, groups: impl IntoIterator<Item = &'a Vec<u64>>, overlap: bool) {
    let mut seen = std::collections::HashSet::new();
    for g in groups {
        assert!(
            g.windows(2)
                .all(|w| w[0] < w[1] && key(&w[0]) == key(&w[1])),
            "{what}: one key, in input order: {g:?}"
        );
        if !overlap {
            assert!(
                g.iter().all(|e| seen.insert(*e)),
                "{what}: no event twice: {g:?}"
            );
        }
    }
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
        // What is stored is the last acknowledged count: no failed write landed.
        for (k, n) in &last {
            let map = store.inner().0.lock().unwrap();
            let bytes = map.get(&format!("fold:{k}")).expect("stored");
            assert_eq!(
                Postcard::decode::<u64>(bytes).ok(),
                Some(*n),
                "seed {seed}, {k}"
            );
        }
    }
}

/// Dedup of unique ids: every event is either passed or an error item, never dropped; run
/// again over the same ids, none that passed passes again (its marker was stored before it
/// passed: an outage never lets a replay through).
#[tokio::test(start_paused = true)]
async fn dedup_never_drops_an_event_it_could_not_check() {
    let store = faulty(3);
    let dedup = || {
        stream::iter(0..EVENTS)
            .stateful_deduplicate_rs2(
                config(&store),
                |i: &u64| i.to_string(),
                Duration::from_secs(60),
            )
            .collect::<Vec<_>>()
    };
    let out = dedup().await;
    assert_eq!(out.len() as u64, EVENTS, "unique ids: one item each");
    for (i, item) in (0..EVENTS).zip(&out) {
        if let Ok(e) = item {
            assert_eq!(*e, i, "item {i} is event {i}");
        }
    }
    assert!(out.iter().any(Result::is_err));
    let passed: std::collections::HashSet<u64> = out.iter().flatten().copied().collect();
    let replay = dedup().await;
    assert!(
        replay.iter().any(Result::is_err),
        "faults on the replay too"
    );
    for e in replay.iter().flatten() {
        assert!(!passed.contains(e), "event {e} passed twice");
    }
}

/// The closure of `stateful_map_rs2` sees the failures as `Err` from its `StateAccess` calls;
/// its successful counts go 1, 2, 3, ... per key (a garbage read is an `Err`, never a reset).
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
    let mut last: HashMap<String, u64> = HashMap::new();
    for (i, item) in (0..EVENTS).zip(&out) {
        match item {
            Ok(n) => {
                let prev = last.insert(key(&i), *n).unwrap_or(0);
                assert_eq!(*n, prev + 1, "event {i}: counts go 1, 2, 3, ...");
            }
            Err(err) => assert_eq!(key_of(err), key(&i)),
        }
    }
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

/// Throttle with room for every event, and sessions: one item per event, errors included;
/// each `Ok` item is its own event, and a key's session starts once: a failed read never
/// makes a later event look like a key's first.
#[tokio::test(start_paused = true)]
async fn throttle_and_session_yield_one_item_per_event() {
    let store = faulty(13);
    let out: Vec<_> = stream::iter(0..EVENTS)
        .stateful_throttle_rs2(config(&store), key, 10_000, Duration::from_secs(60))
        .collect()
        .await;
    assert_eq!(out.len() as u64, EVENTS, "throttle");
    assert!(out.iter().any(Result::is_err));
    for (i, item) in (0..EVENTS).zip(&out) {
        match item {
            Ok(e) => assert_eq!(*e, i, "throttle: item {i} is event {i}"),
            Err(err) => assert_eq!(key_of(err), key(&i)),
        }
    }

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
    let mut started = std::collections::HashSet::new();
    for (i, item) in (0..EVENTS).zip(&out) {
        match item {
            Ok((e, new_session)) => {
                assert_eq!(*e, i, "session: item {i} is event {i}");
                assert_eq!(
                    *new_session,
                    started.insert(key(&i)),
                    "event {i}: a new session only at the key's first stored event"
                );
            }
            Err(err) => assert_eq!(key_of(err), key(&i)),
        }
    }
}

/// Operators that buffer (window, pattern, group_by) run to the end under faults, report
/// errors as items, and account for every event: each is in its key's windows or groups (in
/// input order, never twice) or reported in an `Err`, or still buffered (fewer than a window).
#[tokio::test(start_paused = true)]
async fn buffering_operators_run_to_the_end_under_faults() {
    let per_key = EVENTS / KEYS;

    let store = faulty(19);
    let windows: Vec<_> = stream::iter(0..EVENTS)
        .stateful_window_rs2(
            config(&store),
            key,
            4,
            |w: Vec<u64>, _s: StateAccess| async move { w },
        )
        .collect()
        .await;
    assert!(windows.iter().any(Result::is_err));
    assert!(windows.iter().flatten().all(|w| w.len() == 4));
    check_groups("window", windows.iter().flatten(), false);
    let errors = errors_by_key(&windows);
    for k in 0..KEYS {
        // An event whose read or write failed is an `Err` and is not buffered; the others
        // fill the key's windows in turn.
        let stored = per_key - errors.get(&key(&k)).copied().unwrap_or(0);
        let windowed = windows
            .iter()
            .flatten()
            .filter(|w| key(&w[0]) == key(&k))
            .count() as u64;
        assert_eq!(windowed, stored / 4, "window: key {k}");
    }

    let store = faulty(23);
    let patterns: Vec<_> = stream::iter(0..EVENTS)
        .stateful_pattern_rs2(
            config(&store),
            key,
            3,
            |w: Vec<u64>, _s: StateAccess| async move { Some(w) },
        )
        .collect()
        .await;
    assert!(patterns.iter().any(Result::is_err));
    assert!(patterns.iter().flatten().all(|w| w.len() == 3));
    check_groups("pattern", patterns.iter().flatten(), true);
    let errors = errors_by_key(&patterns);
    for k in 0..KEYS {
        let of_key: Vec<&Vec<u64>> = patterns
            .iter()
            .flatten()
            .filter(|w| key(&w[0]) == key(&k))
            .collect();
        let stored = per_key - errors.get(&key(&k)).copied().unwrap_or(0);
        assert_eq!(
            of_key.len() as u64,
            stored.saturating_sub(2),
            "pattern: key {k}"
        );
        // Each match is the previous one moved on by one stored event.
        for pair in of_key.windows(2) {
            assert_eq!(pair[0][1..], pair[1][..2], "pattern: key {k}");
        }
    }

    let store = faulty(29);
    let groups: Vec<_> = stream::iter(0..EVENTS)
        .stateful_group_by_rs2(
            config(&store),
            key,
            |k, g: Vec<u64>, _s: StateAccess| async move { (k, g) },
        )
        .collect()
        .await;
    assert!(groups.iter().any(Result::is_err));
    assert!(groups
        .iter()
        .flatten()
        .all(|(k, g)| g.iter().all(|e| key(e) == *k)));
    check_groups("group_by", groups.iter().flatten().map(|(_, g)| g), false);
    let errors = errors_by_key(&groups);
    for (k, g) in groups.iter().flatten() {
        // A group emitted whole: every event of its key is in it or was reported.
        let reported = errors.get(k).copied().unwrap_or(0);
        assert_eq!(g.len() as u64 + reported, per_key, "group_by: key {k}");
    }
}
