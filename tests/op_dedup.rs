//! `stateful_deduplicate_rs2`: a key's first event passes, its repeats within `ttl` of that
//! event are dropped in place, and the first one at or after `ttl` passes again and restarts
//! the window. Time rules run under tokio's paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2::state::async_trait;
use rs2_suite::{by_user, ev, no_hang, roomy, timed, Ev};
use serde::Serialize;

async fn dedup(events: Vec<Ev>, ttl: Duration) -> Vec<Ev> {
    no_hang(
        futures::stream::iter(events)
            .stateful_deduplicate_rs2(roomy(), by_user, ttl)
            .map(|r| r.expect("no state error"))
            .collect(),
    )
    .await
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
        Err(StateError::Storage(format!(
            "key '{key}': connection refused"
        )))
    }
    async fn set(&self, key: &str, _value: &[u8]) -> StateResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(StateError::Storage(format!(
            "key '{key}': connection refused"
        )))
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        Err(StateError::Storage(format!(
            "key '{key}': connection refused"
        )))
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Err(StateError::Storage(format!(
            "key '{key}': connection refused"
        )))
    }
    async fn clear(&self) -> StateResult<()> {
        Err(StateError::Storage("connection refused".into()))
    }
}

// --- behaviour ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn first_event_of_each_key_passes_repeats_are_dropped_in_place() {
    let out = dedup(
        vec![
            ev("a", 1),
            ev("b", 2),
            ev("a", 3),
            ev("c", 4),
            ev("b", 5),
            ev("a", 6),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out, [ev("a", 1), ev("b", 2), ev("c", 4)]);
}

#[tokio::test]
async fn empty_input_ends_at_once() {
    assert!(dedup(vec![], Duration::from_secs(1)).await.is_empty());
}

#[tokio::test]
async fn one_key_passes_once() {
    let events = (0..1_000).map(|n| ev("only", n)).collect();
    assert_eq!(
        dedup(events, Duration::from_secs(60)).await,
        [ev("only", 0)]
    );
}

#[tokio::test]
async fn fifty_thousand_keys_all_pass_then_all_repeats_are_dropped() {
    let mut events: Vec<Ev> = (0..50_000).map(|n| ev(&format!("k{n}"), n)).collect();
    let firsts = events.clone();
    events.extend(firsts.iter().cloned().map(|mut e| {
        e.n += 1_000_000;
        e
    }));
    let out = dedup(events, Duration::from_secs(3600)).await;
    assert_eq!(out.len(), 50_000, "no key lost its marker");
    assert_eq!(out, firsts, "input order kept");
}

#[tokio::test(start_paused = true)]
async fn after_ttl_the_next_event_passes_and_restarts_the_window() {
    // ttl 10 s. Times (ms): 0 pass, 5_000 drop, 9_999 drop, 10_000 pass (exactly ttl after the
    // first), 15_000 drop (within 10 s of the event at 10_000, not of the first), 19_999 drop,
    // 20_000 pass. Dropped repeats do not extend the window.
    let input = vec![
        (0, ev("a", 0)),
        (5_000, ev("a", 1)),
        (4_999, ev("a", 2)),
        (1, ev("a", 3)),
        (5_000, ev("a", 4)),
        (4_999, ev("a", 5)),
        (1, ev("a", 6)),
    ];
    let out: Vec<u32> = no_hang(
        timed(input)
            .stateful_deduplicate_rs2(roomy(), by_user, Duration::from_secs(10))
            .map(|r| r.unwrap().n)
            .collect(),
    )
    .await;
    assert_eq!(out, [0, 3, 6]);
}

#[tokio::test(start_paused = true)]
async fn keys_have_independent_windows() {
    // ttl 1 s: a@0 pass, b@600 pass, a@1000 pass, b@1200 drop, b@1600 pass.
    let input = vec![
        (0, ev("a", 0)),
        (600, ev("b", 1)),
        (400, ev("a", 2)),
        (200, ev("b", 3)),
        (400, ev("b", 4)),
    ];
    let out: Vec<u32> = no_hang(
        timed(input)
            .stateful_deduplicate_rs2(roomy(), by_user, Duration::from_secs(1))
            .map(|r| r.unwrap().n)
            .collect(),
    )
    .await;
    assert_eq!(out, [0, 1, 2, 4]);
}

#[tokio::test(start_paused = true)]
async fn the_seed_sample_compiles_and_dedups_requests() {
    #[derive(Debug, Clone)]
    struct Request {
        user_id: String,
        request_id: u32,
    }
    let req = |user: &str, id| Request {
        user_id: user.into(),
        request_id: id,
    };
    let events = futures::stream::iter(vec![
        req("u1", 1),
        req("u1", 1),
        req("u2", 1),
        req("u1", 2),
        req("u2", 1),
    ]);
    let out: Vec<(String, u32)> = events
        .stateful_deduplicate_rs2(
            StateConfigs::short_lived(),
            CustomKeyExtractor::new(|event: &Request| {
                format!("{}:{}", event.user_id, event.request_id)
            }),
            Duration::from_secs(300), // 5 minute TTL
        )
        .map(|r| r.map(|e| (e.user_id, e.request_id)).unwrap())
        .collect()
        .await;
    assert_eq!(out, [("u1".into(), 1), ("u2".into(), 1), ("u1".into(), 2)]);
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_marker_was_evicted_passes_again() {
    // max_size 2: the third key evicts the least recently used marker ("a").
    let out: Vec<u32> = no_hang(
        futures::stream::iter(vec![ev("a", 0), ev("b", 1), ev("c", 2), ev("a", 3)])
            .stateful_deduplicate_rs2(
                StateConfig::new().max_size(2),
                by_user,
                Duration::from_secs(60),
            )
            .map(|r| r.unwrap().n)
            .collect(),
    )
    .await;
    assert_eq!(out, [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_long_run_of_repeats_yields_to_the_executor_instead_of_hogging_it() {
    let events: Vec<Ev> = (0..10_000).map(|n| ev("a", n)).collect();
    let mut stream = Box::pin(futures::stream::iter(events).stateful_deduplicate_rs2(
        roomy(),
        by_user,
        Duration::from_secs(60),
    ));
    assert_eq!(stream.next().await.unwrap().unwrap(), ev("a", 0));
    // 9,999 repeats to drop: the operator returns Pending (having woken itself) part way.
    assert!(futures::poll!(stream.next()).is_pending());
    assert!(no_hang(stream.next()).await.is_none());
}

// --- errors ------------------------------------------------------------------------------------

#[tokio::test]
async fn zero_ttl_is_one_validation_error_then_the_end() {
    let items: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(vec![ev("a", 0), ev("a", 1)])
            .stateful_deduplicate_rs2(roomy(), by_user, Duration::ZERO)
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        matches!(&items[0], Err(StateError::Validation(m)) if m.contains("ttl")),
        "{items:?}"
    );
}

#[tokio::test]
async fn an_invalid_config_is_an_error_per_event() {
    let items: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(vec![ev("a", 0), ev("b", 1)])
            .stateful_deduplicate_rs2(
                StateConfig::new().ttl(Duration::ZERO),
                by_user,
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

#[tokio::test]
async fn a_failing_backend_gives_err_items_naming_the_key_and_the_stream_goes_on() {
    let store = Arc::new(FailingStore::default());
    let items: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(vec![ev("alice", 0), ev("bob", 1), ev("alice", 2)])
            .stateful_deduplicate_rs2(
                StateConfig::new().with_custom_storage(store.clone()),
                by_user,
                Duration::from_secs(1),
            )
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 3, "one Err per event: {items:?}");
    for (item, user) in items.iter().zip(["alice", "bob", "alice"]) {
        match item {
            Err(StateError::Storage(m)) => assert!(m.contains(user), "{m}"),
            other => panic!("expected a storage error, got {other:?}"),
        }
    }
    assert!(store.calls.load(Ordering::Relaxed) >= 3);
}

#[tokio::test]
async fn a_failing_key_extractor_is_an_err_item_and_the_stream_goes_on() {
    #[derive(Debug, Clone, Serialize)]
    struct Tagged {
        id: u32,
        user: Option<String>,
    }
    let items: Vec<Result<u32, StateError>> = no_hang(
        futures::stream::iter(vec![
            Tagged {
                id: 0,
                user: Some("a".into()),
            },
            Tagged { id: 1, user: None },
            Tagged {
                id: 2,
                user: Some("a".into()),
            },
            Tagged {
                id: 3,
                user: Some("b".into()),
            },
        ])
        .stateful_deduplicate_rs2(
            roomy(),
            FieldKeyExtractor::new("user"),
            Duration::from_secs(60),
        )
        .map(|r| r.map(|t| t.id))
        .collect(),
    )
    .await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0], Ok(0));
    assert!(items[1].is_err(), "{items:?}");
    assert_eq!(items[2], Ok(3));
}

// --- property: against a reference model -------------------------------------------------------

fn model(events: &[(u64, usize)], ttl_ms: u64) -> Vec<usize> {
    let mut opened: HashMap<usize, u64> = HashMap::new();
    let mut now = 0;
    let mut out = Vec::new();
    for (i, &(delay, key)) in events.iter().enumerate() {
        now += delay;
        match opened.get(&key) {
            Some(&t) if now - t < ttl_ms => {}
            _ => {
                opened.insert(key, now);
                out.push(i);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn matches_the_reference_model(
        events in prop::collection::vec((prop_oneof![3 => Just(0u64), 2 => 0u64..300, 1 => 0u64..3_000], 0usize..8), 0..300),
        ttl_ms in 1u64..2_000,
    ) {
        rs2::state::StateClock::new(); // anchor the clock before the paused runtime
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let input: Vec<(u64, (usize, usize))> =
            events.iter().enumerate().map(|(i, &(d, k))| (d, (i, k))).collect();
        let got: Vec<usize> = runtime.block_on(async {
            timed(input)
                .stateful_deduplicate_rs2(roomy(), |e: &(usize, usize)| e.1.to_string(), Duration::from_millis(ttl_ms))
                .map(|r| r.unwrap().0)
                .collect()
                .await
        });
        prop_assert_eq!(got, model(&events, ttl_ms));
    }
}
