//! `stateful_pattern_rs2`: a detector over each key's last `pattern_size` events (any size),
//! yielding only its `Some` results; state in storage, bad input, failing backends, and a
//! property test against a plain reference model.
//!
//! Every pipeline runs under a timeout so a hang fails the test instead of stalling it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2::state::async_trait;
use serde::{Deserialize, Serialize};

async fn no_hang<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("pipeline hung")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tx {
    card: String,
    amount: u32,
}

fn tx(card: &str, amount: u32) -> Tx {
    Tx {
        card: card.to_string(),
        amount,
    }
}

fn by_card(t: &Tx) -> String {
    t.card.clone()
}

/// `"a5 b1 a7"` -> transactions (a, 5), (b, 1), (a, 7).
fn txs(spec: &str) -> Vec<Tx> {
    spec.split_whitespace()
        .map(|t| tx(&t[..1], t[1..].parse().unwrap()))
        .collect()
}

/// A window rendered as `"a:5,7,9"`.
fn show(window: &[Tx]) -> String {
    let card = window.first().map_or("?", |t| t.card.as_str());
    let vals: Vec<String> = window.iter().map(|t| t.amount.to_string()).collect();
    format!("{card}:{}", vals.join(","))
}

fn rising(window: &[Tx]) -> bool {
    window.windows(2).all(|w| w[0].amount < w[1].amount)
}

/// Every window the closure sees (the detector always fires).
async fn all_windows(
    config: StateConfig,
    events: Vec<Tx>,
    size: usize,
) -> Vec<Result<String, StateError>> {
    no_hang(
        futures::stream::iter(events)
            .stateful_pattern_rs2(
                config,
                by_card,
                size,
                |w, _state| async move { Some(show(&w)) },
            )
            .collect(),
    )
    .await
}

async fn ok_windows(events: Vec<Tx>, size: usize) -> Vec<String> {
    all_windows(roomy(), events, size)
        .await
        .into_iter()
        .map(|r| r.expect("no error expected"))
        .collect()
}

use rs2_suite::MapStore;

use rs2_suite::roomy;
/// A backend whose every call fails, naming the key.
use rs2_suite::FailingStore;

// --- the pattern rules ------------------------------------------------------------------------

#[tokio::test]
async fn detects_three_rising_amounts_per_card() {
    let alerts: Vec<String> = no_hang(
        futures::stream::iter(txs("a5 b1 a7 b9 a9 b3 a2 a4 a8"))
            .stateful_pattern_rs2(roomy(), by_card, 3, |w, _state| async move {
                rising(&w).then(|| show(&w))
            })
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    // a: [5,7,9] rises; [7,9,2], [9,2,4] do not; [2,4,8] rises. b: [1,9,3] does not.
    assert_eq!(alerts, ["a:5,7,9", "a:2,4,8"]);
}

#[tokio::test]
async fn the_closure_sees_the_last_events_oldest_first_sliding_by_one() {
    let out = ok_windows(txs("a1 a2 a3 a4 a5"), 3).await;
    assert_eq!(out, ["a:1,2,3", "a:2,3,4", "a:3,4,5"]);
}

#[tokio::test]
async fn the_closure_is_not_called_before_a_key_has_enough_events() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let out: Vec<Result<usize, StateError>> = no_hang(
        futures::stream::iter(txs("a1 b1 a2 b2 c1 a3"))
            .stateful_pattern_rs2(roomy(), by_card, 3, move |w, _state| {
                seen.fetch_add(1, Ordering::Relaxed);
                async move { Some(w.len()) }
            })
            .collect(),
    )
    .await;
    assert_eq!(out, [Ok(3)]);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn none_results_yield_nothing_and_keys_are_independent() {
    let out: Vec<String> = no_hang(
        futures::stream::iter(txs("a1 b1 a2 b2 a3 b3"))
            .stateful_pattern_rs2(roomy(), by_card, 2, |w, _state| async move {
                (w[0].card == "b").then(|| show(&w))
            })
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(out, ["b:1,2", "b:2,3"]);
}

#[tokio::test]
async fn a_pattern_of_one_sees_every_event_alone() {
    assert_eq!(ok_windows(txs("a1 b2 a3"), 1).await, ["a:1", "b:2", "a:3"]);
}

#[tokio::test]
async fn empty_input_yields_nothing() {
    assert!(ok_windows(Vec::new(), 3).await.is_empty());
}

#[tokio::test]
async fn patterns_longer_than_a_thousand_events_fire() {
    // The original implementation silently never fired above 1,000.
    const SIZE: usize = 1_500;
    let events: Vec<Tx> = (0..SIZE as u32 + 2).map(|i| tx("a", i)).collect();
    let out: Vec<(u32, u32, usize)> = no_hang(
        futures::stream::iter(events)
            .stateful_pattern_rs2(roomy(), by_card, SIZE, |w, _state| async move {
                Some((w[0].amount, w[w.len() - 1].amount, w.len()))
            })
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(
        out,
        [
            (0, SIZE as u32 - 1, SIZE),
            (1, SIZE as u32, SIZE),
            (2, SIZE as u32 + 1, SIZE)
        ]
    );
}

#[tokio::test]
async fn the_closure_gets_the_keys_own_user_state() {
    // Count alerts per card in the closure's state.
    let out: Vec<(String, u64)> = no_hang(
        futures::stream::iter(txs("a1 a2 b5 a3 b6"))
            .stateful_pattern_rs2(roomy(), by_card, 2, |w, state| async move {
                let n = state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                Some((w[0].card.clone(), n))
            })
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(out, [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]);
}

// --- bad arguments ----------------------------------------------------------------------------

#[tokio::test]
async fn zero_pattern_size_is_one_validation_error_then_the_end() {
    let endless = futures::stream::repeat(tx("a", 1));
    let out: Vec<Result<String, StateError>> = no_hang(
        endless
            .stateful_pattern_rs2(
                roomy(),
                by_card,
                0,
                |w, _state| async move { Some(show(&w)) },
            )
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 1);
    assert!(
        matches!(&out[0], Err(StateError::Validation(m)) if m.contains("pattern_size")),
        "{out:?}"
    );
}

#[tokio::test]
async fn invalid_config_yields_an_error_per_event() {
    let config = StateConfig::new().ttl(Duration::ZERO);
    let out = all_windows(config, txs("a1 a2 b1"), 1).await;
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|r| r.as_ref().is_err_and(StateError::is_validation)));
}

// --- state lives in storage -------------------------------------------------------------------

#[tokio::test]
async fn the_last_events_live_in_the_configured_store() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new()
        .with_custom_storage(store.clone())
        .namespace("fraud");
    let out = all_windows(config.clone(), txs("a1 a2"), 3).await;
    assert!(out.is_empty());
    assert!(store.0.lock().unwrap().contains_key("fraud/pattern:a"));
    // A second pipeline on the same store and namespace continues where the first stopped.
    let out = all_windows(config, txs("a3"), 3).await;
    assert_eq!(out, [Ok("a:1,2,3".to_string())]);
}

#[tokio::test]
async fn max_size_applies_to_the_kept_events() {
    // Room for one key: alternating cards evict each other's events, so no card ever has two.
    let config = StateConfig::new().max_size(1);
    assert!(all_windows(config, txs("a1 b1 a2 b2 a3 b3"), 2)
        .await
        .is_empty());
}

#[tokio::test]
async fn fifty_thousand_keys_lose_nothing() {
    const KEYS: usize = 50_000;
    let mut events = Vec::with_capacity(3 * KEYS);
    for round in 1..=3u32 {
        for k in 0..KEYS {
            events.push(tx(&format!("k{k}"), round));
        }
    }
    let out: Vec<String> = no_hang(
        futures::stream::iter(events)
            .stateful_pattern_rs2(
                roomy(),
                by_card,
                2,
                |w, _state| async move { Some(show(&w)) },
            )
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 2 * KEYS);
    for (i, w) in out.iter().enumerate() {
        let (k, vals) = if i < KEYS {
            (i, "1,2")
        } else {
            (i - KEYS, "2,3")
        };
        assert_eq!(w, &format!("k{k}:{vals}"));
    }
}

// --- failing backend --------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_backend_yields_an_error_per_event_naming_the_key() {
    let config = StateConfig::new().with_custom_storage(Arc::new(FailingStore));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let events = vec![tx("alice", 1), tx("bob", 2), tx("alice", 3), tx("carol", 4)];
    let out: Vec<Result<String, StateError>> = no_hang(
        futures::stream::iter(events)
            .stateful_pattern_rs2(config, by_card, 1, move |w, _state| {
                seen.fetch_add(1, Ordering::Relaxed);
                async move { Some(show(&w)) }
            })
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 4, "{out:?}");
    for (item, key) in out.iter().zip(["alice", "bob", "alice", "carol"]) {
        match item {
            Err(StateError::Storage(m)) => assert!(m.contains(key), "{m}"),
            other => panic!("expected a storage error naming {key}, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

// --- property test ----------------------------------------------------------------------------

/// The reference model: a `VecDeque` of each key's last `size` events.
fn model(events: &[Tx], size: usize) -> Vec<String> {
    let mut last: HashMap<&str, VecDeque<Tx>> = HashMap::new();
    let mut out = Vec::new();
    for t in events {
        let ring = last.entry(t.card.as_str()).or_default();
        ring.push_back(t.clone());
        if ring.len() > size {
            ring.pop_front();
        }
        if ring.len() == size {
            let w: Vec<Tx> = ring.iter().cloned().collect();
            if w.iter().map(|t| t.amount).sum::<u32>() % 3 != 0 {
                out.push(show(&w));
            }
        }
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn card_events() -> impl Strategy<Value = Vec<Tx>> {
    prop_oneof![1u32..=3, 1u32..=40, 1u32..=2_000]
        .prop_flat_map(|cards| prop::collection::vec((0..cards, 0u32..100), 0..400))
        .prop_map(|raw| {
            raw.into_iter()
                .map(|(c, a)| tx(&format!("c{c}"), a))
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn pattern_matches_the_reference_model(events in card_events(), size in 1usize..=6) {
        let got: Vec<String> = runtime().block_on(async {
            futures::stream::iter(events.clone())
                .stateful_pattern_rs2(roomy(), by_card, size, |w, _state| async move {
                    (w.iter().map(|t| t.amount).sum::<u32>() % 3 != 0).then(|| show(&w))
                })
                .map(Result::unwrap)
                .collect()
                .await
        });
        prop_assert_eq!(got, model(&events, size));
    }
}

#[tokio::test]
async fn the_stream_can_be_spawned() {
    let handle = tokio::spawn(async move { ok_windows(txs("a1 a2 a3"), 2).await });
    assert_eq!(handle.await.unwrap(), ["a:1,2", "a:2,3"]);
}

/// A map store that answers every call only after yielding to the runtime.
#[derive(Default)]
struct YieldingStore(MapStore);

#[async_trait]
impl StateStorage for YieldingStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        tokio::task::yield_now().await;
        self.0.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        tokio::task::yield_now().await;
        self.0.set(key, value).await
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        tokio::task::yield_now().await;
        self.0.delete(key).await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        tokio::task::yield_now().await;
        self.0.exists(key).await
    }
    async fn clear(&self) -> StateResult<()> {
        self.0.clear().await
    }
}

#[tokio::test]
async fn a_slow_remote_store_gives_the_same_results_as_the_in_memory_one() {
    let events = txs("a1 b1 a2 c1 a3 b2 a4 b3 c2 a5");
    let config = StateConfig::new().with_custom_storage(Arc::new(YieldingStore::default()));
    let slow = all_windows(config, events.clone(), 3).await;
    let fast = all_windows(roomy(), events, 3).await;
    assert_eq!(slow, fast);
    assert_eq!(fast.len(), 4); // a: at a3, a4, a5; b: at b3; c has two events
}

// --- stored events that are not this operator's -----------------------------------------------

#[tokio::test]
async fn undecodable_stored_events_are_an_error_naming_the_key_and_are_left_alone() {
    // A remote store, and an in-process one shared through the config.
    let stores: [Arc<dyn StateStorage>; 2] = [
        Arc::new(MapStore::default()),
        Arc::new(InMemoryState::new(&StateConfig::new())),
    ];
    for store in stores {
        let garbage = vec![0xff; 11];
        store.set("pattern:a", &garbage).await.unwrap();
        let config = StateConfig::new().with_custom_storage(store.clone());
        let out = all_windows(config, txs("a1 b1 a2 b2"), 2).await;
        assert_eq!(out.len(), 3, "{out:?}");
        for item in &out[..2] {
            assert!(
                matches!(item, Err(StateError::Serialization(m)) if m.contains("'a'")),
                "{out:?}"
            );
        }
        assert_eq!(out[2], Ok("b:1,2".into()));
        assert_eq!(store.get("pattern:a").await.unwrap(), Some(garbage));
    }
}

/// Same field layout as `Tx` but a wider item: a `Tx` ring's header reads fine as its ring,
/// its events do not.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WideTx {
    card: String,
    amount: u32,
    extra: [u8; 8],
}

#[tokio::test]
async fn events_of_another_item_type_are_an_error_before_anything_is_added_to_them() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    assert!(all_windows(config.clone(), txs("a1 a2"), 5)
        .await
        .is_empty());
    let before = store.0.lock().unwrap()["pattern:a"].clone();
    let wide = WideTx {
        card: "a".into(),
        amount: 3,
        extra: [0; 8],
    };
    let out: Vec<Result<usize, StateError>> = no_hang(
        futures::stream::iter(vec![wide.clone(), wide])
            // A pattern of 10: these events would only be appended, never decoded with a's.
            .stateful_pattern_rs2(
                config,
                |t: &WideTx| t.card.clone(),
                10,
                |w, _s| async move { Some(w.len()) },
            )
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|r| matches!(r, Err(StateError::Serialization(m)) if m.contains("'a'"))),
        "{out:?}"
    );
    assert_eq!(store.0.lock().unwrap()["pattern:a"], before);
}
