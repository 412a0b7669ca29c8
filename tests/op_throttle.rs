//! `stateful_throttle_rs2`: per key at most `rate_limit` events in any sliding `window`; the
//! excess is dropped in place and counted, never delayed, so one busy key never holds back
//! another. Time rules run under tokio's paused clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2::state::async_trait;
use rs2_suite::{by_user, ev, no_hang, roomy, timed, Ev};

/// The `n`s let through, and the dropped count.
async fn throttle_timed(input: Vec<(u64, Ev)>, rate: u32, window: Duration) -> (Vec<u32>, u64) {
    let mut stream = Box::pin(timed(input).stateful_throttle_rs2(roomy(), by_user, rate, window));
    let mut out = Vec::new();
    while let Some(item) = no_hang(stream.next()).await {
        out.push(item.expect("no state error").n);
    }
    (out, stream.dropped())
}

struct FailingStore;

#[async_trait]
impl StateStorage for FailingStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Err(StateError::Storage(format!("key '{key}': timed out")))
    }
    async fn set(&self, key: &str, _value: &[u8]) -> StateResult<()> {
        Err(StateError::Storage(format!("key '{key}': timed out")))
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        Err(StateError::Storage(format!("key '{key}': timed out")))
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Err(StateError::Storage(format!("key '{key}': timed out")))
    }
    async fn clear(&self) -> StateResult<()> {
        Err(StateError::Storage("timed out".into()))
    }
}

// --- behaviour ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn excess_events_in_one_window_are_dropped_and_counted() {
    let input = (0..5).map(|n| (0, ev("a", n))).collect();
    let (out, dropped) = throttle_timed(input, 2, Duration::from_secs(1)).await;
    assert_eq!(out, [0, 1]);
    assert_eq!(dropped, 3);
}

#[tokio::test]
async fn empty_input_ends_at_once() {
    let (out, dropped) = throttle_timed(vec![], 3, Duration::from_secs(1)).await;
    assert!(out.is_empty());
    assert_eq!(dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn windows_of_a_second_and_more_are_enforced() {
    // One event per 5 s. Times (ms): 0 pass, 1_000 drop, 4_999 drop, 5_000 pass, 6_000 drop,
    // 10_000 pass.
    let input = vec![
        (0, ev("a", 0)),
        (1_000, ev("a", 1)),
        (3_999, ev("a", 2)),
        (1, ev("a", 3)),
        (1_000, ev("a", 4)),
        (4_000, ev("a", 5)),
    ];
    let (out, dropped) = throttle_timed(input, 1, Duration::from_secs(5)).await;
    assert_eq!(out, [0, 3, 5]);
    assert_eq!(dropped, 3);
}

#[tokio::test(start_paused = true)]
async fn the_window_slides() {
    // Two events per 10 s, at (s): 0 pass, 3 pass, 9 drop, 10 pass (0 left the window),
    // 12 drop (3 and 10 are in it), 13 pass (3 left), 19 drop, 20 pass, 22 drop (13 and 20).
    let at = [0u64, 3, 9, 10, 12, 13, 19, 20, 22];
    let mut prev = 0;
    let input = at
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let delay = (s - prev) * 1_000;
            prev = s;
            (delay, ev("a", i as u32))
        })
        .collect();
    let (out, dropped) = throttle_timed(input, 2, Duration::from_secs(10)).await;
    let passed: Vec<u64> = out.iter().map(|&i| at[i as usize]).collect();
    assert_eq!(passed, [0, 3, 10, 13, 20]);
    assert_eq!(dropped, 4);
}

#[tokio::test(start_paused = true)]
async fn the_seed_sample_allows_a_hundred_per_minute() {
    #[derive(Debug, Clone)]
    struct Click {
        user_id: String,
    }
    let events = futures::stream::iter((0..250).map(|i| Click {
        user_id: if i % 2 == 0 { "even" } else { "odd" }.to_string(),
    }));
    let throttled = events.stateful_throttle_rs2(
        StateConfigs::high_performance(),
        CustomKeyExtractor::new(|event: &Click| event.user_id.clone()),
        100,                     // 100 events per window
        Duration::from_secs(60), // 1 minute window
    );
    let dropped = throttled.dropped_counter();
    let out: Vec<Click> = throttled.map(Result::unwrap).collect().await;
    assert_eq!(out.len(), 200);
    assert_eq!(out.iter().filter(|c| c.user_id == "even").count(), 100);
    assert_eq!(dropped.get(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_busy_key_never_delays_another_key() {
    // A producer sends 10,000 events of "busy" (limit 1 per minute) with one "quiet" event
    // in the middle, then one more "quiet" event an hour later. Every event passes or is
    // dropped the moment it arrives: no time passes until the producer sleeps.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Ev>(16);
    let producer = tokio::spawn(async move {
        use futures::SinkExt;
        for n in 0..10_000 {
            tx.send(ev("busy", n)).await.unwrap();
            if n == 5_000 {
                tx.send(ev("quiet", n)).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        tx.send(ev("quiet", 99_999)).await.unwrap();
    });
    let start = tokio::time::Instant::now();
    let mut stream = rx.stateful_throttle_rs2(roomy(), by_user, 1, Duration::from_secs(60));
    let mut seen = Vec::new();
    while let Some(item) = no_hang(stream.next()).await {
        let e = item.unwrap();
        seen.push((e.user, e.n, start.elapsed()));
    }
    producer.await.unwrap();
    assert_eq!(
        seen,
        [
            ("busy".to_string(), 0, Duration::ZERO),
            ("quiet".to_string(), 5_000, Duration::ZERO),
            ("quiet".to_string(), 99_999, Duration::from_secs(3600)),
        ]
    );
    assert_eq!(stream.dropped(), 9_999);
}

#[tokio::test]
async fn fifty_thousand_keys_each_within_the_limit_all_pass() {
    let events: Vec<Ev> = (0..50_000)
        .flat_map(|n| [ev(&format!("k{n}"), n), ev(&format!("k{n}"), n + 1_000_000)])
        .collect();
    let expected: Vec<u32> = events.iter().map(|e| e.n).collect();
    let throttled = futures::stream::iter(events).stateful_throttle_rs2(
        roomy(),
        by_user,
        2,
        Duration::from_secs(60),
    );
    let dropped = throttled.dropped_counter();
    let out: Vec<u32> = no_hang(throttled.map(|r| r.unwrap().n).collect()).await;
    assert_eq!(out, expected, "no event lost, order kept");
    assert_eq!(dropped.get(), 0);
}

// --- errors ------------------------------------------------------------------------------------

#[tokio::test]
async fn zero_rate_limit_or_zero_window_is_one_validation_error_then_the_end() {
    for (rate, window) in [(0, Duration::from_secs(1)), (5, Duration::ZERO)] {
        let items: Vec<Result<Ev, StateError>> = no_hang(
            futures::stream::iter(vec![ev("a", 0), ev("a", 1)])
                .stateful_throttle_rs2(roomy(), by_user, rate, window)
                .collect(),
        )
        .await;
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(
            matches!(&items[0], Err(StateError::Validation(m)) if m.contains("zero")),
            "{items:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_backend_gives_err_items_naming_the_key_and_the_stream_goes_on() {
    let mut stream = futures::stream::iter(vec![ev("alice", 0), ev("bob", 1), ev("alice", 2)])
        .stateful_throttle_rs2(
            StateConfig::new().with_custom_storage(Arc::new(FailingStore)),
            by_user,
            1,
            Duration::from_secs(1),
        );
    let mut items = Vec::new();
    while let Some(item) = no_hang(stream.next()).await {
        items.push(item);
    }
    assert_eq!(items.len(), 3, "{items:?}");
    for (item, user) in items.iter().zip(["alice", "bob", "alice"]) {
        assert!(
            matches!(item, Err(StateError::Storage(m)) if m.contains(user)),
            "{item:?}"
        );
    }
    assert_eq!(stream.dropped(), 0, "errors are not counted as dropped");
}

#[tokio::test]
async fn an_invalid_config_is_an_error_per_event() {
    let items: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(vec![ev("a", 0), ev("b", 1)])
            .stateful_throttle_rs2(
                StateConfig::new().max_size(0),
                by_user,
                1,
                Duration::from_secs(1),
            )
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|r| matches!(r, Err(e) if e.is_validation())));
}

// --- property: against a reference model -------------------------------------------------------

/// Indices let through, and the dropped count.
fn model(events: &[(u64, usize)], rate: usize, window_ms: u64) -> (Vec<usize>, u64) {
    let mut admitted: HashMap<usize, Vec<u64>> = HashMap::new();
    let (mut now, mut out, mut dropped) = (0, Vec::new(), 0);
    for (i, &(delay, key)) in events.iter().enumerate() {
        now += delay;
        let times = admitted.entry(key).or_default();
        let in_window = times.iter().filter(|&&t| now - t < window_ms).count();
        if in_window < rate {
            times.push(now);
            out.push(i);
        } else {
            dropped += 1;
        }
    }
    (out, dropped)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn matches_the_reference_model(
        events in prop::collection::vec((prop_oneof![3 => Just(0u64), 2 => 0u64..300, 1 => 0u64..3_000], 0usize..6), 0..300),
        rate in 1u32..5,
        window_ms in 1u64..3_000,
    ) {
        rs2::state::StateClock::new(); // anchor the clock before the paused runtime
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let input: Vec<(u64, (usize, usize))> =
            events.iter().enumerate().map(|(i, &(d, k))| (d, (i, k))).collect();
        let (got, dropped) = runtime.block_on(async {
            let throttled = timed(input).stateful_throttle_rs2(
                roomy(), |e: &(usize, usize)| e.1.to_string(), rate, Duration::from_millis(window_ms));
            let counter = throttled.dropped_counter();
            let got: Vec<usize> = throttled.map(|r| r.unwrap().0).collect().await;
            (got, counter.get())
        });
        let (want, want_dropped) = model(&events, rate as usize, window_ms);
        prop_assert_eq!(got, want);
        prop_assert_eq!(dropped, want_dropped);
    }
}

#[tokio::test(start_paused = true)]
async fn undecodable_state_is_an_error_naming_the_key_and_is_left_alone() {
    // An in-process store shared through the config, holding garbage for ann.
    let store = InMemoryState::new(&StateConfig::new());
    let garbage = vec![0xff; 11];
    store.set("throttle:ann", &garbage).await.unwrap();
    let config = StateConfig::new().with_custom_storage(Arc::new(store.clone()));
    let mut stream = Box::pin(
        futures::stream::iter(vec![ev("ann", 1), ev("bob", 2), ev("ann", 3)])
            .stateful_throttle_rs2(config, by_user, 5, Duration::from_secs(1)),
    );
    let mut out = Vec::new();
    while let Some(item) = no_hang(stream.next()).await {
        out.push(item.map(|e| e.n));
    }
    assert_eq!(out.len(), 3, "{out:?}");
    for item in [&out[0], &out[2]] {
        assert!(
            matches!(item, Err(StateError::Serialization(m)) if m.contains("'ann'")),
            "{out:?}"
        );
    }
    assert_eq!(out[1], Ok(2));
    assert_eq!(stream.dropped(), 0, "errors are not counted as dropped");
    assert_eq!(store.get("throttle:ann").await.unwrap(), Some(garbage));
}

/// A remote map store that answers every call only after yielding to the runtime.
#[derive(Default)]
struct YieldingStore(std::sync::Mutex<HashMap<String, Vec<u8>>>);

#[async_trait]
impl StateStorage for YieldingStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        tokio::task::yield_now().await;
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        tokio::task::yield_now().await;
        self.0
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        tokio::task::yield_now().await;
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

#[tokio::test(start_paused = true)]
async fn a_slow_remote_store_holds_the_limit_and_a_later_pipeline_carries_on() {
    let store = Arc::new(YieldingStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let run = |input: Vec<(u64, Ev)>| {
        let mut stream = Box::pin(timed(input).stateful_throttle_rs2(
            config.clone(),
            by_user,
            2,
            Duration::from_secs(10),
        ));
        async move {
            let mut out = Vec::new();
            while let Some(item) = no_hang(stream.next()).await {
                out.push(item.expect("no state error").n);
            }
            (out, stream.dropped())
        }
    };
    // a at 0 s, 1 s (pass), 2 s (drop); b at 2 s (pass).
    let first = vec![
        (0, ev("a", 0)),
        (1_000, ev("a", 1)),
        (1_000, ev("a", 2)),
        (0, ev("b", 3)),
    ];
    assert_eq!(run(first).await, (vec![0, 1, 3], 1));
    // A new pipeline on the same store, at 9.5 s: a's two times still hold (drop), b has room;
    // at 10.5 s a's first time (0 s) has left the window.
    let second = vec![
        (7_500, ev("a", 4)),
        (0, ev("b", 5)),
        (1_000, ev("a", 6)),
        (0, ev("a", 7)),
    ];
    assert_eq!(run(second).await, (vec![5, 6], 2));
}
