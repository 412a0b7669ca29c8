//! Property tests: the stateful operators against a `HashMap` reference model.
//!
//! Over random event sequences (up to 50,000 distinct keys, a roomy store so no key may lose
//! its state), every operator's full output sequence must equal what a plain fold over a
//! `HashMap` produces.

use std::collections::HashMap;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2_suite::roomy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ev {
    key: String,
    amount: i64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Key counts from tiny (many repeats per key) to 50,000 (mostly distinct keys).
fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop_oneof![1usize..=4, 1usize..=200, 1usize..=50_000]
        .prop_flat_map(|keys| {
            prop::collection::vec((0..keys, -1_000i64..1_000), 0..1_500).prop_map(|raw| {
                raw.into_iter()
                    .map(|(k, amount)| Ev {
                        key: format!("k{k}"),
                        amount,
                    })
                    .collect::<Vec<_>>()
            })
        })
        .boxed()
}

// --- the operators under test -----------------------------------------------------------------

async fn map_counter(events: Vec<Ev>) -> Vec<(String, u64)> {
    futures::stream::iter(events)
        .stateful_map_rs2(
            roomy(),
            |e: &Ev| e.key.clone(),
            |e, state| async move {
                let n: u64 = state.get().await.unwrap_or(0) + 1;
                state.set(&n).await.unwrap();
                (e.key, n)
            },
        )
        .collect()
        .await
}

async fn map_sum(events: Vec<Ev>) -> Vec<(String, i64)> {
    futures::stream::iter(events)
        .stateful_map_rs2(
            roomy(),
            CustomKeyExtractor::new(|e: &Ev| e.key.clone()),
            |e, state| async move {
                let total = state
                    .update(|t: Option<i64>| t.unwrap_or(0) + e.amount)
                    .await
                    .unwrap();
                (e.key, total)
            },
        )
        .collect()
        .await
}

/// Fold keeps (count, sum) per key.
async fn fold_count_sum(events: Vec<Ev>) -> Vec<(u64, i64)> {
    futures::stream::iter(events)
        .stateful_fold_rs2(
            roomy(),
            FieldKeyExtractor::new("key"),
            (0u64, 0i64),
            |(n, sum), e: Ev, _state| async move { (n + 1, sum + e.amount) },
        )
        .map(|r| r.expect("no state error with a roomy in-memory store"))
        .collect()
        .await
}

async fn reduce_sum(events: Vec<Ev>) -> Vec<Ev> {
    futures::stream::iter(events)
        .stateful_reduce_rs2(
            roomy(),
            |e: &Ev| e.key.clone(),
            |acc, e, _state| async move {
                assert_eq!(acc.key, e.key, "reduce combines events of one key only");
                Ev {
                    key: acc.key,
                    amount: acc.amount + e.amount,
                }
            },
        )
        .map(|r| r.expect("no state error with a roomy in-memory store"))
        .collect()
        .await
}

/// Keeps an event when its amount is above every earlier amount of its key (and counts it).
async fn filter_new_max(events: Vec<Ev>) -> Vec<Ev> {
    futures::stream::iter(events)
        .stateful_filter_rs2(
            roomy(),
            |e: &Ev| e.key.clone(),
            |e, state| {
                let amount = e.amount;
                async move {
                    match state.get::<i64>().await {
                        Some(max) if max >= amount => false,
                        _ => {
                            state.set(&amount).await.unwrap();
                            true
                        }
                    }
                }
            },
        )
        .collect()
        .await
}

// --- the reference models ---------------------------------------------------------------------

fn model_counter(events: &[Ev]) -> Vec<(String, u64)> {
    let mut m: HashMap<&str, u64> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let n = m.entry(&e.key).or_default();
            *n += 1;
            (e.key.clone(), *n)
        })
        .collect()
}

fn model_sum(events: &[Ev]) -> Vec<(String, i64)> {
    let mut m: HashMap<&str, i64> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let t = m.entry(&e.key).or_default();
            *t += e.amount;
            (e.key.clone(), *t)
        })
        .collect()
}

fn model_fold(events: &[Ev]) -> Vec<(u64, i64)> {
    let mut m: HashMap<&str, (u64, i64)> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let acc = m.entry(&e.key).or_insert((0, 0));
            *acc = (acc.0 + 1, acc.1 + e.amount);
            *acc
        })
        .collect()
}

fn model_reduce(events: &[Ev]) -> Vec<Ev> {
    let mut m: HashMap<&str, i64> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let amount = match m.get(e.key.as_str()) {
                Some(prev) => prev + e.amount,
                None => e.amount,
            };
            m.insert(&e.key, amount);
            Ev {
                key: e.key.clone(),
                amount,
            }
        })
        .collect()
}

fn model_filter(events: &[Ev]) -> Vec<Ev> {
    let mut m: HashMap<&str, i64> = HashMap::new();
    events
        .iter()
        .filter(|e| match m.get(e.key.as_str()) {
            Some(&max) if max >= e.amount => false,
            _ => {
                m.insert(&e.key, e.amount);
                true
            }
        })
        .cloned()
        .collect()
}

// --- properties -------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn map_get_set_counter_matches_model(events in events()) {
        let got = runtime().block_on(map_counter(events.clone()));
        prop_assert_eq!(got, model_counter(&events));
    }

    #[test]
    fn map_update_sum_matches_model(events in events()) {
        let got = runtime().block_on(map_sum(events.clone()));
        prop_assert_eq!(got, model_sum(&events));
    }

    #[test]
    fn fold_matches_model(events in events()) {
        let got = runtime().block_on(fold_count_sum(events.clone()));
        prop_assert_eq!(got, model_fold(&events));
    }

    #[test]
    fn reduce_matches_model(events in events()) {
        let got = runtime().block_on(reduce_sum(events.clone()));
        prop_assert_eq!(got, model_reduce(&events));
    }

    #[test]
    fn filter_matches_model(events in events()) {
        let got = runtime().block_on(filter_new_max(events.clone()));
        prop_assert_eq!(got, model_filter(&events));
    }
}

// --- deterministic: 50,000 distinct keys x 3 events -----------------------------------------

/// Three rounds over 50,000 keys: every key's state must survive the 49,999 other keys written
/// between two of its events. The first and third rounds go up, the second goes down.
fn fifty_thousand_keys_three_times() -> Vec<Ev> {
    const KEYS: i64 = 50_000;
    let round = |r: i64| {
        let order: Box<dyn Iterator<Item = i64>> = if r == 1 {
            Box::new((0..KEYS).rev())
        } else {
            Box::new(0..KEYS)
        };
        order.map(move |k| Ev {
            key: format!("user-{k}"),
            amount: k * 10 + r,
        })
    };
    (0..3).flat_map(round).collect()
}

#[tokio::test]
async fn fifty_thousand_keys_times_three_map_and_fold_match_model() {
    let events = fifty_thousand_keys_three_times();
    assert_eq!(events.len(), 150_000);

    let counts = map_counter(events.clone()).await;
    assert_eq!(counts.len(), 150_000);
    assert!(counts[..50_000].iter().all(|(_, n)| *n == 1));
    assert!(counts[50_000..100_000].iter().all(|(_, n)| *n == 2));
    assert!(counts[100_000..].iter().all(|(_, n)| *n == 3));
    assert_eq!(counts, model_counter(&events));

    let folded = fold_count_sum(events.clone()).await;
    assert_eq!(folded, model_fold(&events));
    // user-49999's last total: 3 events of 499_990 + r for r in 0..3.
    assert_eq!(folded.last(), Some(&(3, 3 * 499_990 + 3)));
}

#[tokio::test]
async fn fifty_thousand_keys_times_three_sum_reduce_and_filter_match_model() {
    let events = fifty_thousand_keys_three_times();
    assert_eq!(map_sum(events.clone()).await, model_sum(&events));
    assert_eq!(reduce_sum(events.clone()).await, model_reduce(&events));
    let kept = filter_new_max(events.clone()).await;
    // Amounts grow with the round for every key, so every event is a new maximum.
    assert_eq!(kept.len(), 150_000);
    assert_eq!(kept, model_filter(&events));
}

/// The model itself would reject an operator that dropped or reset state: a sanity check that
/// a store too small for the keys shows up as a mismatch (so the properties above can fail).
#[tokio::test]
async fn a_store_too_small_for_the_keys_is_detected_by_the_model() {
    let events: Vec<Ev> = (0..2)
        .flat_map(|_| {
            (0..500).map(|k| Ev {
                key: format!("k{k}"),
                amount: 1,
            })
        })
        .collect();
    let got: Vec<(String, u64)> = futures::stream::iter(events.clone())
        .stateful_map_rs2(
            StateConfig::new().max_size(10),
            |e: &Ev| e.key.clone(),
            |e, state| async move {
                let n: u64 = state.get().await.unwrap_or(0) + 1;
                state.set(&n).await.unwrap();
                (e.key, n)
            },
        )
        .collect()
        .await;
    assert_ne!(got, model_counter(&events));
}

/// The `StateAccess` a fold or reduce closure gets is the key's own, persistent user state,
/// separate from the accumulator.
#[tokio::test]
async fn fold_and_reduce_closures_get_persistent_per_key_state() {
    let events: Vec<Ev> = ["a", "b", "a", "a", "b"]
        .iter()
        .map(|k| Ev {
            key: k.to_string(),
            amount: 10,
        })
        .collect();

    let folded: Vec<(i64, u64)> = futures::stream::iter(events.clone())
        .stateful_fold_rs2(
            roomy(),
            |e: &Ev| e.key.clone(),
            (0i64, 0u64),
            |(sum, _), e: Ev, state| async move {
                let seen = state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                (sum + e.amount, seen)
            },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(folded, vec![(10, 1), (10, 1), (20, 2), (30, 3), (20, 2)]);

    // reduce runs its closure from a key's second event on.
    let calls: Vec<i64> = futures::stream::iter(events)
        .stateful_reduce_rs2(
            roomy(),
            |e: &Ev| e.key.clone(),
            |acc, e, state| async move {
                let n = state
                    .update(|n: Option<i64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                Ev {
                    key: acc.key,
                    amount: acc.amount + e.amount + 1000 * n,
                }
            },
        )
        .map(|r| r.unwrap().amount)
        .collect()
        .await;
    assert_eq!(calls, vec![10, 10, 1020, 3030, 1020]);
}
