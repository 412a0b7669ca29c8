//! `stateful_window_rs2` and `stateful_window_rs2_advanced`: per-key count windows (tumbling,
//! sliding, hopping), partial windows at end of input, state in storage, bad input and failing
//! backends, and a property test against a plain reference model.
//!
//! Every pipeline runs under a timeout so a hang fails the test instead of stalling it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2::state::async_trait;
use rs2_suite::roomy;
use serde::{Deserialize, Serialize};

async fn no_hang<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("pipeline hung")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ev {
    key: String,
    v: u32,
}

fn ev(key: &str, v: u32) -> Ev {
    Ev {
        key: key.to_string(),
        v,
    }
}

fn by_key(e: &Ev) -> String {
    e.key.clone()
}

/// `"a1 b1 a2"` -> events (a, 1), (b, 1), (a, 2).
fn evs(spec: &str) -> Vec<Ev> {
    spec.split_whitespace()
        .map(|t| ev(&t[..1], t[1..].parse().unwrap()))
        .collect()
}

/// A window rendered as `"a:1,2,3"`.
fn show(window: &[Ev]) -> String {
    let key = window.first().map_or("?", |e| e.key.as_str());
    let vals: Vec<String> = window.iter().map(|e| e.v.to_string()).collect();
    format!("{key}:{}", vals.join(","))
}

/// Runs the advanced window over `events` and renders every item.
async fn run(
    config: StateConfig,
    events: Vec<Ev>,
    size: usize,
    slide: Option<usize>,
    partial: bool,
) -> Vec<Result<String, StateError>> {
    no_hang(
        futures::stream::iter(events)
            .stateful_window_rs2_advanced(
                config,
                by_key,
                size,
                slide,
                partial,
                |w, _state| async move { show(&w) },
            )
            .collect(),
    )
    .await
}

async fn run_ok(events: Vec<Ev>, size: usize, slide: Option<usize>, partial: bool) -> Vec<String> {
    run(roomy(), events, size, slide, partial)
        .await
        .into_iter()
        .map(|r| r.expect("no error expected"))
        .collect()
}

/// A well-behaved map store, shared through the config.
#[derive(Default)]
struct MapStore(Mutex<HashMap<String, Vec<u8>>>);

impl MapStore {
    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.0.lock().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[async_trait]
impl StateStorage for MapStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(self.0.lock().unwrap().contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

/// A backend whose every call fails, naming the key.
#[derive(Default)]
struct FailingStore {
    calls: AtomicUsize,
}

#[async_trait]
impl StateStorage for FailingStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn set(&self, key: &str, _value: &[u8]) -> StateResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn clear(&self) -> StateResult<()> {
        Err(StateError::Storage("connection refused".into()))
    }
}

// --- tumbling (the basic operator) ------------------------------------------------------------

#[tokio::test]
async fn basic_emits_per_key_tumbling_windows_in_input_order() {
    let out: Vec<String> = no_hang(
        futures::stream::iter(evs("a1 b1 a2 b2 a3 c1 b3 a4 b4"))
            .stateful_window_rs2(roomy(), by_key, 2, |w, _state| async move { show(&w) })
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    // Each window is emitted on the event that completes it; a3 and c1 stay incomplete and
    // b3 starts b's second window, completed by b4.
    assert_eq!(out, ["a:1,2", "b:1,2", "a:3,4", "b:3,4"]);
}

#[tokio::test]
async fn basic_never_emits_a_partial_window() {
    let out: Vec<Result<String, StateError>> = no_hang(
        futures::stream::iter(evs("a1 a2 a3 b1 b2"))
            .stateful_window_rs2(roomy(), by_key, 3, |w, _state| async move { show(&w) })
            .collect(),
    )
    .await;
    assert_eq!(out, [Ok("a:1,2,3".to_string())]);
}

#[tokio::test]
async fn basic_equals_advanced_with_no_slide_and_no_partial() {
    let events = evs("a1 b1 a2 a3 b2 a4 a5 b3 c1 a6 b4");
    let basic: Vec<String> = futures::stream::iter(events.clone())
        .stateful_window_rs2(roomy(), by_key, 2, |w, _state| async move { show(&w) })
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(basic, run_ok(events.clone(), 2, None, false).await);
    // A slide equal to the size is tumbling too.
    assert_eq!(basic, run_ok(events, 2, Some(2), false).await);
}

#[tokio::test]
async fn empty_input_yields_nothing() {
    for partial in [false, true] {
        assert!(run_ok(Vec::new(), 3, None, partial).await.is_empty());
        assert!(run_ok(Vec::new(), 3, Some(1), partial).await.is_empty());
    }
}

#[tokio::test]
async fn window_of_one_emits_every_event_alone() {
    let out = run_ok(evs("a1 a2 b1"), 1, None, true).await;
    assert_eq!(out, ["a:1", "a:2", "b:1"]);
}

#[tokio::test]
async fn one_key_many_windows() {
    let events: Vec<Ev> = (1..=10).map(|v| ev("a", v)).collect();
    let out = run_ok(events, 3, None, false).await;
    assert_eq!(out, ["a:1,2,3", "a:4,5,6", "a:7,8,9"]);
}

// --- sliding and hopping ----------------------------------------------------------------------

#[tokio::test]
async fn sliding_by_one_overlaps_by_size_minus_one() {
    let events: Vec<Ev> = (1..=5).map(|v| ev("a", v)).collect();
    let out = run_ok(events, 3, Some(1), false).await;
    assert_eq!(out, ["a:1,2,3", "a:2,3,4", "a:3,4,5"]);
}

#[tokio::test]
async fn sliding_by_two_keeps_the_last_size_minus_slide_events() {
    let events: Vec<Ev> = (1..=8).map(|v| ev("a", v)).collect();
    let out = run_ok(events, 3, Some(2), false).await;
    // Windows start at events 1, 3, 5, 7 (every 2nd); the one starting at 7 never completes.
    assert_eq!(out, ["a:1,2,3", "a:3,4,5", "a:5,6,7"]);
}

#[tokio::test]
async fn sliding_keys_are_independent() {
    let out = run_ok(evs("a1 b1 a2 b2 a3 b3 a4"), 2, Some(1), false).await;
    assert_eq!(out, ["a:1,2", "b:1,2", "a:2,3", "b:2,3", "a:3,4"]);
}

#[tokio::test]
async fn hopping_skips_the_events_between_windows() {
    // size 2, slide 3: windows start at a key's events 1, 4, 7, ...; events 3, 6, ... are in
    // no window.
    let events: Vec<Ev> = (1..=8).map(|v| ev("a", v)).collect();
    assert_eq!(
        run_ok(events.clone(), 2, Some(3), false).await,
        ["a:1,2", "a:4,5", "a:7,8"]
    );
    // size 2, slide 5: three events skipped after each window.
    assert_eq!(run_ok(events, 2, Some(5), false).await, ["a:1,2", "a:6,7"]);
}

#[tokio::test]
async fn hopping_skipped_events_are_not_in_the_partial_window() {
    let events = |n: u32| (1..=n).map(|v| ev("a", v)).collect::<Vec<_>>();
    // 7 events: [1,2], 3 skipped, [4,5], 6 skipped, then 7 opens the next window.
    assert_eq!(
        run_ok(events(7), 2, Some(3), true).await,
        ["a:1,2", "a:4,5", "a:7"]
    );
    // 6 events: the last one was skipped, so there is no partial window.
    assert_eq!(
        run_ok(events(6), 2, Some(3), true).await,
        ["a:1,2", "a:4,5"]
    );
}

// --- partial windows --------------------------------------------------------------------------

#[tokio::test]
async fn partial_windows_follow_the_order_their_buffers_started() {
    // Tumbling size 3. a's first window completes at a3, so a's open buffer is started by a4,
    // after b's (b1) and c's (c1).
    let out = run_ok(evs("a1 b1 a2 c1 a3 b2 a4"), 3, None, true).await;
    assert_eq!(out, ["a:1,2,3", "b:1,2", "c:1", "a:4"]);
}

#[tokio::test]
async fn partial_of_a_sliding_window_is_the_next_window_so_far() {
    let events: Vec<Ev> = (1..=5).map(|v| ev("a", v)).collect();
    let out = run_ok(events, 3, Some(1), true).await;
    assert_eq!(out, ["a:1,2,3", "a:2,3,4", "a:3,4,5", "a:4,5"]);

    // A sliding key never empties its buffer: its partial keeps the place of its first event.
    let out = run_ok(evs("a1 b1 a2"), 2, Some(1), true).await;
    assert_eq!(out, ["a:1,2", "a:2", "b:1"]);
}

#[tokio::test]
async fn keys_that_completed_their_window_have_no_partial() {
    let out = run_ok(evs("a1 a2 b1 b2"), 2, None, true).await;
    assert_eq!(out, ["a:1,2", "b:1,2"]);
}

#[tokio::test]
async fn many_keys_emit_their_partials_in_first_event_order() {
    // Keys in a scrambled order: partials must come out in the order each key first appeared.
    let keys: Vec<String> = (0..500).map(|i| format!("k{}", (i * 7919) % 500)).collect();
    let events: Vec<Ev> = keys.iter().map(|k| ev(k, 1)).collect();
    let out: Vec<String> = futures::stream::iter(events)
        .stateful_window_rs2_advanced(roomy(), by_key, 2, None, true, |w, _state| async move {
            w[0].key.clone()
        })
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(out, keys);
}

// --- bad arguments ----------------------------------------------------------------------------

#[tokio::test]
async fn zero_window_size_is_one_validation_error_then_the_end() {
    // An endless input: the operator must not read it.
    let endless = futures::stream::repeat(ev("a", 1));
    let out: Vec<Result<String, StateError>> = no_hang(
        endless
            .stateful_window_rs2(roomy(), by_key, 0, |w, _state| async move { show(&w) })
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 1);
    assert!(
        matches!(&out[0], Err(StateError::Validation(m)) if m.contains("window_size")),
        "{out:?}"
    );
    let out = run(roomy(), evs("a1 a2"), 0, Some(1), true).await;
    assert_eq!(out.len(), 1);
    assert!(out[0].as_ref().is_err_and(StateError::is_validation));
}

#[tokio::test]
async fn zero_slide_is_one_validation_error_then_the_end() {
    let endless = futures::stream::repeat(ev("a", 1));
    let out: Vec<Result<String, StateError>> = no_hang(
        endless
            .stateful_window_rs2_advanced(
                roomy(),
                by_key,
                3,
                Some(0),
                true,
                |w, _state| async move { show(&w) },
            )
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 1);
    assert!(
        matches!(&out[0], Err(StateError::Validation(m)) if m.contains("slide_size")),
        "{out:?}"
    );
}

#[tokio::test]
async fn invalid_config_yields_an_error_per_event() {
    let config = StateConfig::new().ttl(Duration::ZERO);
    let out = run(config, evs("a1 a2 b1"), 2, None, true).await;
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out
        .iter()
        .all(|r| matches!(r, Err(StateError::Validation(m)) if m.contains("TTL"))));
}

/// Fails for events whose value is 0, as an extractor that cannot find a field would.
struct PickyExtractor;

impl KeyExtractor<Ev> for PickyExtractor {
    fn extract_key(&self, e: &Ev) -> String {
        e.key.clone()
    }
    fn try_extract_key(&self, e: &Ev) -> StateResult<String> {
        if e.v == 0 {
            Err(StateError::KeyExtraction("event has no key".into()))
        } else {
            Ok(e.key.clone())
        }
    }
}

#[tokio::test]
async fn a_failing_key_extractor_yields_an_error_item_and_the_stream_goes_on() {
    let out: Vec<Result<String, StateError>> = no_hang(
        futures::stream::iter(evs("a1 a0 a3 a4"))
            .stateful_window_rs2(
                roomy(),
                PickyExtractor,
                2,
                |w, _state| async move { show(&w) },
            )
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        matches!(out[0], Err(StateError::KeyExtraction(_))),
        "{out:?}"
    );
    assert_eq!(out[1], Ok("a:1,3".to_string()));
}

// --- state lives in storage -------------------------------------------------------------------

#[tokio::test]
async fn buffers_live_in_the_configured_store_and_are_removed_when_empty() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let mut windows = Box::pin(
        futures::stream::iter(evs("a1 b1 a2 b2")).stateful_window_rs2(
            config,
            by_key,
            2,
            |w, _state| async move { show(&w) },
        ),
    );
    assert_eq!(windows.next().await, Some(Ok("a:1,2".into())));
    // a's window completed and its buffer was removed; b's buffer is open.
    assert_eq!(store.keys(), ["window:b"]);
    assert_eq!(windows.next().await, Some(Ok("b:1,2".into())));
    assert_eq!(windows.next().await, None);
    assert!(store.keys().is_empty(), "{:?}", store.keys());
}

#[tokio::test]
async fn partial_windows_are_taken_out_of_the_store() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let out = run(config, evs("a1 b1 a2 a3"), 2, None, true).await;
    assert_eq!(
        out,
        [Ok("a:1,2".into()), Ok("b:1".into()), Ok("a:3".into())]
    );
    assert!(store.keys().is_empty(), "{:?}", store.keys());
}

#[tokio::test]
async fn the_closure_gets_the_keys_own_user_state() {
    let out: Vec<(String, u64)> = futures::stream::iter(evs("a1 a2 b1 a3 a4 b2"))
        .stateful_window_rs2(roomy(), by_key, 2, |w, state| async move {
            let n = state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap();
            (w[0].key.clone(), n)
        })
        .map(Result::unwrap)
        .collect()
        .await;
    // Windows a:1,2 and a:3,4 see a's count go 1, 2; b's own count starts at 1.
    assert_eq!(out, [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_buffer_starts_again() {
    let config = StateConfig::new()
        .ttl(Duration::from_secs(1))
        .cleanup_interval(Duration::from_millis(500));
    let events = futures::stream::iter(vec![
        (0u64, ev("a", 1)),
        (2_000, ev("a", 2)),
        (0, ev("a", 3)),
    ])
    .then(|(wait_ms, e)| async move {
        tokio::time::advance(Duration::from_millis(wait_ms)).await;
        e
    });
    let out: Vec<String> = events
        .stateful_window_rs2(config, by_key, 2, |w, _state| async move { show(&w) })
        .map(Result::unwrap)
        .collect()
        .await;
    // a1's buffer expired before a2 arrived.
    assert_eq!(out, ["a:2,3"]);
}

#[tokio::test]
async fn max_size_bounds_the_buffers_and_the_partial_index() {
    // Three keys with open buffers but room for two: the least recently used buffer (a) is
    // evicted by the store, and its partial window with it; the loss is reported, naming a.
    let config = StateConfig::new().max_size(2);
    let out = run(config, evs("a1 b1 c1"), 5, None, true).await;
    assert_eq!(out.len(), 3, "{out:?}");
    let err = format!("{:?}", out[0]);
    assert!(out[0].is_err() && err.contains("'a'"), "{err}");
    assert_eq!(out[1..], [Ok("b:1".into()), Ok("c:1".into())]);
}

#[tokio::test]
async fn fifty_thousand_keys_lose_nothing() {
    const KEYS: u32 = 50_000;
    // Each key gets three events: one full window of two, and a partial of one.
    let mut events = Vec::with_capacity(3 * KEYS as usize);
    for round in 1..=3 {
        for k in 0..KEYS {
            events.push(Ev {
                key: format!("k{k}"),
                v: round,
            });
        }
    }
    let out: Vec<(String, Vec<u32>)> = no_hang(
        futures::stream::iter(events)
            .stateful_window_rs2_advanced(roomy(), by_key, 2, None, true, |w, _state| async move {
                (w[0].key.clone(), w.iter().map(|e| e.v).collect())
            })
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 2 * KEYS as usize);
    for (i, (key, vals)) in out.iter().enumerate() {
        let k = i % KEYS as usize;
        assert_eq!(key, &format!("k{k}"));
        if i < KEYS as usize {
            assert_eq!(vals, &[1, 2]);
        } else {
            assert_eq!(vals, &[3]);
        }
    }
}

// --- failing backend --------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_backend_yields_an_error_per_event_naming_the_key() {
    let store = Arc::new(FailingStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let out: Vec<Result<String, StateError>> = no_hang(
        futures::stream::iter(vec![
            ev("alice", 1),
            ev("bob", 1),
            ev("alice", 2),
            ev("carol", 1),
        ])
        .stateful_window_rs2_advanced(config, by_key, 2, Some(1), true, move |w, _s| {
            seen.fetch_add(1, Ordering::Relaxed);
            async move { show(&w) }
        })
        .collect(),
    )
    .await;
    assert_eq!(out.len(), 4, "one error item per event: {out:?}");
    for (item, key) in out.iter().zip(["alice", "bob", "alice", "carol"]) {
        match item {
            Err(StateError::Storage(m)) => assert!(m.contains(key), "{m}"),
            other => panic!("expected a storage error naming {key}, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0, "no window was formed");
    assert!(store.calls.load(Ordering::Relaxed) >= 4);
}

// --- property test ----------------------------------------------------------------------------

/// The reference model: windows start at each key's events 0, slide, 2*slide, ...; a window
/// is emitted when complete; with `partial`, each key's unfinished next window is emitted at
/// the end, in the order those buffers were started.
fn model(events: &[Ev], size: usize, slide: Option<usize>, partial: bool) -> Vec<String> {
    let slide = slide.unwrap_or(size);
    struct Key {
        seen: usize,
        buf: Vec<Ev>,
        started: usize,
    }
    let mut keys: HashMap<String, Key> = HashMap::new();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let k = keys.entry(e.key.clone()).or_insert(Key {
            seen: 0,
            buf: Vec::new(),
            started: 0,
        });
        let n = k.seen;
        k.seen += 1;
        // Event n is in the window starting at s if s % slide == 0 and s <= n < s + size;
        // it is buffered if the window that would next start has started by n.
        let next_start = if n < size {
            0
        } else {
            // The first window start whose window is not complete before n.
            (n + 1 - size).div_ceil(slide) * slide
        };
        if n < next_start {
            continue; // skipped (hopping)
        }
        if k.buf.is_empty() {
            k.started = i;
        }
        k.buf.push(e.clone());
        // The buffer holds events next_start..=n.
        if n + 1 == next_start + size {
            out.push(show(&k.buf));
            let keep = size.saturating_sub(slide);
            k.buf = k.buf[size - keep..].to_vec();
            // A sliding buffer keeps its original start position.
        }
    }
    if partial {
        let mut open: Vec<(&usize, &Vec<Ev>)> = keys
            .values()
            .filter(|k| !k.buf.is_empty())
            .map(|k| (&k.started, &k.buf))
            .collect();
        open.sort_by_key(|(started, _)| **started);
        out.extend(open.into_iter().map(|(_, buf)| show(buf)));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn key_events() -> impl Strategy<Value = Vec<Ev>> {
    prop_oneof![1u32..=3, 1u32..=40, 1u32..=2_000]
        .prop_flat_map(|keys| prop::collection::vec((0..keys, 0u32..100), 0..400))
        .prop_map(|raw| {
            raw.into_iter()
                .map(|(k, v)| Ev {
                    key: format!("k{k}"),
                    v,
                })
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn window_matches_the_reference_model(
        events in key_events(),
        size in 1usize..=5,
        slide in prop::option::of(1usize..=7),
        partial in any::<bool>(),
    ) {
        let got = runtime().block_on(run_ok(events.clone(), size, slide, partial));
        prop_assert_eq!(got, model(&events, size, slide, partial));
    }
}

#[test]
fn the_model_agrees_with_the_hand_worked_cases() {
    let seq = |n: u32| (1..=n).map(|v| ev("a", v)).collect::<Vec<_>>();
    assert_eq!(
        model(&seq(5), 3, Some(1), true),
        ["a:1,2,3", "a:2,3,4", "a:3,4,5", "a:4,5"]
    );
    assert_eq!(model(&seq(7), 2, Some(3), true), ["a:1,2", "a:4,5", "a:7"]);
    assert_eq!(
        model(&evs("a1 b1 a2 c1 a3 b2 a4"), 3, None, true),
        ["a:1,2,3", "b:1,2", "c:1", "a:4"]
    );
}

#[tokio::test]
async fn the_stream_can_be_spawned() {
    // Send + 'static: the pipeline can run on another task.
    let handle = tokio::spawn(async move {
        futures::stream::iter(evs("a1 a2 b1"))
            .stateful_window_rs2_advanced(roomy(), by_key, 2, None, true, |w, _state| async move {
                show(&w)
            })
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .await
    });
    assert_eq!(handle.await.unwrap(), ["a:1,2", "b:1"]);
}

/// A map store that answers every call only after yielding to the runtime, so every state
/// read and write of the operator is really pending once.
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
async fn a_slow_remote_store_gives_the_same_windows_as_the_in_memory_one() {
    let events = evs("a1 b1 a2 c1 a3 b2 a4 b3 c2 a5 a6 a7 b4");
    for (size, slide) in [(3, None), (3, Some(1)), (2, Some(3))] {
        let store = Arc::new(YieldingStore::default());
        let config = StateConfig::new().with_custom_storage(store.clone());
        let slow: Vec<String> = run(config, events.clone(), size, slide, true)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(slow, run_ok(events.clone(), size, slide, true).await);
        // Emitted partial windows were taken out of the store; only a hopping key's count of
        // events still to skip may remain (c's window [1, 2] was followed by no event).
        let left = store.0.keys();
        if slide.is_some_and(|s| s > size) {
            assert_eq!(left, ["window:c"]);
        } else {
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

#[tokio::test]
async fn a_later_pipeline_on_the_same_store_carries_on_with_open_windows() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new()
        .with_custom_storage(store.clone())
        .namespace("sensors");
    assert!(run(config.clone(), evs("a1 b1"), 2, None, false)
        .await
        .is_empty());
    assert_eq!(store.keys(), ["sensors/window:a", "sensors/window:b"]);
    let out = run(config, evs("b2 a2"), 2, None, false).await;
    assert_eq!(out, [Ok("b:1,2".into()), Ok("a:1,2".into())]);
    assert!(store.keys().is_empty());
}

// --- stored buffers that are not this operator's ----------------------------------------------

#[tokio::test]
async fn an_undecodable_buffer_is_an_error_naming_the_key_and_is_left_alone() {
    // A remote store, and an in-process one shared through the config.
    let stores: [Arc<dyn StateStorage>; 2] = [
        Arc::new(MapStore::default()),
        Arc::new(InMemoryState::new(&StateConfig::new())),
    ];
    for store in stores {
        let garbage = vec![0xff; 11];
        store.set("window:a", &garbage).await.unwrap();
        let config = StateConfig::new().with_custom_storage(store.clone());
        // a's events join no window (so a has no partial window either); b is unaffected.
        let out = run(config, evs("a1 b1 a2 b2"), 2, None, true).await;
        assert_eq!(out.len(), 3, "{out:?}");
        for item in &out[..2] {
            assert!(
                matches!(item, Err(StateError::Serialization(m)) if m.contains("'a'")),
                "{out:?}"
            );
        }
        assert_eq!(out[2], Ok("b:1,2".into()));
        assert_eq!(store.get("window:a").await.unwrap(), Some(garbage));
    }
}

/// Same field layout as `Ev` but a wider item: an `Ev` buffer's header reads fine as its
/// buffer, its events do not.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WideEv {
    key: String,
    v: u32,
    extra: [u8; 8],
}

#[tokio::test]
async fn a_buffer_of_another_item_type_is_an_error_before_anything_is_added_to_it() {
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    assert!(run(config.clone(), evs("a1 a2"), 3, None, false)
        .await
        .is_empty());
    let before = store.0.lock().unwrap()["window:a"].clone();
    let wide = WideEv {
        key: "a".into(),
        v: 3,
        extra: [0; 8],
    };
    let out: Vec<Result<usize, StateError>> = no_hang(
        futures::stream::iter(vec![wide.clone(), wide])
            // A window of 10: these events would only be appended, never decoded with a.
            .stateful_window_rs2(
                config,
                |e: &WideEv| e.key.clone(),
                10,
                |w, _s| async move { w.len() },
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
    assert_eq!(store.0.lock().unwrap()["window:a"], before);
}
