//! Filter and the keyed-concurrency operators (`stateful_map_rs2_par`,
//! `stateful_filter_rs2_par`, `stateful_fold_rs2_par`, `stateful_reduce_rs2_par`) under
//! `FaultyStorage`, at several concurrencies and under several mixes of faults (failures,
//! timeouts, garbage reads, latency): every event yields one item or reaches the closure once,
//! an `Err` when its state call failed; successful counts go 1, 2, 3, … per key in input order
//! (nothing lost, doubled, or reset by a garbage read); what is left in the store is the last
//! count acknowledged; the stream goes on to the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{Codec, Postcard, RetryPolicy, StateAccess, StateConfig, StatefulStreamExt};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::{no_hang, MapStore};

const KEYS: u64 = 5;
const EVENTS: u64 = 300;
const SEEDS: [u64; 3] = [1, 7, 42];
const CONCURRENCY: [usize; 3] = [1, 4, 64];

type Store = Arc<FaultyStorage<MapStore>>;

/// The one place the tests' config is built (a retry policy, when there is one, must be off
/// here: these tests count the faults they inject).
fn config(store: &Store) -> StateConfig {
    // Retries off: every injected fault reaches the operator.
    StateConfig::new()
        .with_custom_storage(store.clone())
        .retry(RetryPolicy::none())
}

/// Each mix of faults, seeded by `seed`; every mix but the first adds latency, so events of
/// different keys really are in flight together.
fn mixes(seed: u64) -> Vec<(&'static str, Store)> {
    let base = || FaultyStorage::new(MapStore::default());
    let ms = Duration::from_millis;
    vec![
        ("failures", base().fail_fraction(0.2, seed)),
        (
            "timeouts",
            // A zero fraction of failures only seeds the draws.
            base()
                .fail_fraction(0.0, seed)
                .time_out_fraction(0.15, ms(50))
                .latency(ms(1)),
        ),
        (
            "garbage",
            base()
                .fail_fraction(0.0, seed)
                .garbage_fraction(0.25)
                .latency(ms(1)),
        ),
        (
            "mixed",
            base()
                .fail_fraction(0.1, seed)
                .garbage_fraction(0.1)
                .time_out_fraction(0.05, ms(50))
                .latency(ms(2)),
        ),
    ]
    .into_iter()
    .map(|(name, store)| (name, Arc::new(store)))
    .collect()
}

fn key(i: &u64) -> String {
    format!("k{}", i % KEYS)
}

/// The value under `storage_key` in the wrapped store, read past the faults.
fn stored_u64(store: &Store, storage_key: &str) -> Option<u64> {
    let map = store.inner().0.lock().unwrap();
    map.get(storage_key).map(|bytes| {
        Postcard::decode::<u64>(bytes)
            .unwrap_or_else(|e| panic!("{storage_key} holds no count ({e}): {bytes:?}"))
    })
}

/// Checks one run: `outcomes[i]` is event `i`'s result (`Ok(count)` or the error's text).
/// Successful counts go 1, 2, 3, … per key; every error names its key; faults happened and
/// were reported; `last_stored(key)` is the key's last successful count.
fn check_counts(
    what: &str,
    store: &Store,
    outcomes: &[Result<u64, String>],
    last_stored: impl Fn(&str) -> Option<u64>,
) {
    assert_eq!(
        outcomes.len() as u64,
        EVENTS,
        "{what}: one outcome per event"
    );
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut errors = 0;
    for (i, outcome) in (0..EVENTS).zip(outcomes) {
        match outcome {
            Ok(n) => {
                let prev = last.insert(key(&i), *n).unwrap_or(0);
                assert_eq!(*n, prev + 1, "{what}, event {i}: counts go 1, 2, 3, …");
            }
            Err(err) => {
                assert!(err.contains(&key(&i)), "{what}: names the key: {err}");
                errors += 1;
            }
        }
    }
    assert!(
        errors > 0 && store.injected() > 0,
        "{what}: faults happened and were reported"
    );
    assert!(
        last.len() as u64 == KEYS,
        "{what}: every key counted some events"
    );
    for k in 0..KEYS {
        let k = key(&k);
        assert_eq!(
            last_stored(&k),
            last.get(&k).copied(),
            "{what}: the store holds {k}'s last acknowledged count"
        );
    }
}

/// What a `get` then `set` closure does: the key's next count, or why not. A `get` that
/// failed (an outage or garbage bytes) reads as `None`, and the `set` after it is refused,
/// so a failed read never restarts the count at 1.
async fn count(state: StateAccess) -> Result<u64, String> {
    let n = state.get::<u64>().await.unwrap_or(0) + 1;
    state.set(&n).await.map_err(|e| e.to_string())?;
    Ok(n)
}

/// Fold with keyed concurrency: the successful accumulators go 1, 2, 3, … per key in input
/// order at every concurrency and under every mix, though events of a key waiting behind each
/// other share one locked read and one write.
#[tokio::test(start_paused = true)]
async fn fold_par_counts_stay_exact_under_faults() {
    for seed in SEEDS {
        for n in CONCURRENCY {
            for (mix, store) in mixes(seed) {
                let what = format!("fold_par, seed {seed}, n {n}, {mix}");
                let out: Vec<_> = no_hang(
                    stream::iter(0..EVENTS)
                        .stateful_fold_rs2_par(
                            config(&store),
                            key,
                            n,
                            0u64,
                            |acc, _e, _s: StateAccess| async move { acc + 1 },
                        )
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect(),
                )
                .await;
                check_counts(&what, &store, &out, |k| {
                    stored_u64(&store, &format!("fold:{k}"))
                });
            }
        }
    }
}

/// Reduce with keyed concurrency: a key's first stored event seeds it, so the successful sums
/// of ones go 1, 2, 3, … per key; a seed whose write failed is seeded again by the next event.
#[tokio::test(start_paused = true)]
async fn reduce_par_sums_stay_exact_under_faults() {
    for seed in SEEDS {
        for n in CONCURRENCY {
            for (mix, store) in mixes(seed) {
                let what = format!("reduce_par, seed {seed}, n {n}, {mix}");
                let out: Vec<_> = no_hang(
                    stream::iter((0..EVENTS).map(|i| (key(&i), 1u64)))
                        .stateful_reduce_rs2_par(
                            config(&store),
                            |e: &(String, u64)| e.0.clone(),
                            n,
                            |acc, e, _s: StateAccess| async move { (acc.0, acc.1 + e.1) },
                        )
                        .collect(),
                )
                .await;
                let out: Vec<_> = (0..EVENTS)
                    .zip(out)
                    .map(|(i, r)| match r {
                        Ok((k, sum)) => {
                            assert_eq!(k, key(&i), "{what}: item {i} is event {i}'s");
                            Ok(sum)
                        }
                        Err(e) => Err(e.to_string()),
                    })
                    .collect();
                check_counts(&what, &store, &out, |k| {
                    let map = store.inner().0.lock().unwrap();
                    map.get(&format!("reduce:{k}")).map(|bytes| {
                        Postcard::decode::<(String, u64)>(bytes)
                            .expect("a reduce value")
                            .1
                    })
                });
            }
        }
    }
}

/// Map with keyed concurrency: the closure sees each failure as an `Err` from its
/// `StateAccess` calls; its successful counts stay exact.
#[tokio::test(start_paused = true)]
async fn map_par_closures_see_failures_and_counts_stay_exact() {
    for seed in SEEDS {
        for n in CONCURRENCY {
            for (mix, store) in mixes(seed) {
                let what = format!("map_par, seed {seed}, n {n}, {mix}");
                let out: Vec<(u64, Result<u64, String>)> = no_hang(
                    stream::iter(0..EVENTS)
                        .stateful_map_rs2_par(config(&store), key, n, |e, state| async move {
                            (e, count(state).await)
                        })
                        .collect(),
                )
                .await;
                assert!(
                    out.iter().map(|(e, _)| *e).eq(0..EVENTS),
                    "{what}: one output per event, in input order"
                );
                let out: Vec<_> = out.into_iter().map(|(_, r)| r).collect();
                if mix == "garbage" {
                    assert!(
                        out.iter().any(|r| r
                            .as_ref()
                            .is_err_and(|e| e.contains("refusing to overwrite"))),
                        "{what}: a write after a garbage read is refused"
                    );
                }
                check_counts(&what, &store, &out, |k| {
                    stored_u64(&store, &format!("map:{k}"))
                });
            }
        }
    }
}

/// An event and what its closure's count did.
type Outcome = (u64, Result<u64, String>);

/// Runs a filter (sequential when `n` is `None`) whose closure counts each key's events and
/// keeps the even counts and the events whose count failed; checks that every event reached
/// the closure once, that exactly the events it kept came out, in input order, and that the
/// counts stay exact.
async fn check_filter(what: &str, store: &Store, n: Option<usize>) {
    let seen: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let record = seen.clone();
    let f = move |e: &u64, state: StateAccess| {
        let (e, record) = (*e, record.clone());
        async move {
            let outcome = count(state).await;
            let keep = outcome.as_ref().map_or(true, |n| n % 2 == 0);
            record.lock().unwrap().push((e, outcome));
            keep
        }
    };
    let input = stream::iter(0..EVENTS);
    let kept: Vec<u64> = match n {
        None => no_hang(input.stateful_filter_rs2(config(store), key, f).collect()).await,
        Some(n) => {
            no_hang(
                input
                    .stateful_filter_rs2_par(config(store), key, n, f)
                    .collect(),
            )
            .await
        }
    };
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    // With keyed concurrency keys interleave; each key's events still run in input order.
    seen.sort_by_key(|(e, _)| *e);
    assert!(
        seen.iter().map(|(e, _)| *e).eq(0..EVENTS),
        "{what}: every event reached the closure once"
    );
    let expected: Vec<u64> = seen
        .iter()
        .filter(|(_, r)| r.as_ref().map_or(true, |n| n % 2 == 0))
        .map(|(e, _)| *e)
        .collect();
    assert_eq!(kept, expected, "{what}: the kept events, in input order");
    let outcomes: Vec<_> = seen.into_iter().map(|(_, r)| r).collect();
    check_counts(what, store, &outcomes, |k| {
        stored_u64(store, &format!("filter:{k}"))
    });
}

/// Filter, sequential and with keyed concurrency: the predicate sees each failure as an `Err`
/// from its `StateAccess` calls, no event is lost or doubled, and counts stay exact.
#[tokio::test(start_paused = true)]
async fn filter_closures_see_failures_and_no_event_is_lost() {
    for seed in SEEDS {
        for (mix, store) in mixes(seed) {
            check_filter(&format!("filter, seed {seed}, {mix}"), &store, None).await;
        }
        for n in CONCURRENCY {
            for (mix, store) in mixes(seed) {
                let what = format!("filter_par, seed {seed}, n {n}, {mix}");
                check_filter(&what, &store, Some(n)).await;
            }
        }
    }
}

/// The checks above would pass if faults never reached a `_par` operator: with every call
/// failing, every event's item is an error and nothing is stored.
#[tokio::test(start_paused = true)]
async fn par_operators_report_an_outage_on_every_event() {
    let store = Arc::new(FaultyStorage::new(MapStore::default()).fail_fraction(1.0, 1));
    let out: Vec<_> = stream::iter(0..20u64)
        .stateful_fold_rs2_par(
            config(&store),
            key,
            4,
            0u64,
            |acc, _e, _s: StateAccess| async move { acc + 1 },
        )
        .collect()
        .await;
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(Result::is_err));
    let out: Vec<Result<u64, String>> = stream::iter(0..20u64)
        .stateful_map_rs2_par(config(&store), key, 4, |_e, state| count(state))
        .collect()
        .await;
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(Result::is_err));
    assert!(store.inner().0.lock().unwrap().is_empty());
}
