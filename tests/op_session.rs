//! `stateful_session_rs2`: `is_new_session` is true for a key's first event and after a gap
//! longer than the timeout. Time rules run under tokio's paused time, with the gap before each
//! event applied by `tokio::time::advance` inside the input stream.
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
use rs2_suite::{by_user, Ev};

async fn no_hang<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("pipeline hung")
}

/// `(gap_ms, user)` pairs -> a stream that waits `gap_ms` of (paused) time before each event.
fn timed(events: Vec<(u64, &str)>) -> impl Stream<Item = Ev> {
    let events: Vec<(u64, Ev)> = events
        .into_iter()
        .enumerate()
        .map(|(i, (gap, user))| {
            (
                gap,
                Ev {
                    user: user.to_string(),
                    n: i as u32,
                },
            )
        })
        .collect();
    futures::stream::iter(events).then(|(gap_ms, e)| async move {
        tokio::time::advance(Duration::from_millis(gap_ms)).await;
        e
    })
}

/// Runs the operator and returns `(user, is_new_session)` per item.
async fn flags(
    config: StateConfig,
    timeout_ms: u64,
    input: impl Stream<Item = Ev>,
) -> Vec<Result<(String, bool), StateError>> {
    no_hang(
        input
            .stateful_session_rs2(
                config,
                by_user,
                Duration::from_millis(timeout_ms),
                |e, is_new, _state| async move { (e.user, is_new) },
            )
            .collect(),
    )
    .await
}

async fn ok_flags(timeout_ms: u64, events: Vec<(u64, &str)>) -> Vec<(String, bool)> {
    flags(roomy(), timeout_ms, timed(events))
        .await
        .into_iter()
        .map(|r| r.expect("no error expected"))
        .collect()
}

fn f(user: &str, is_new: bool) -> (String, bool) {
    (user.to_string(), is_new)
}

use rs2_suite::roomy;
/// A backend whose every call fails, naming the key.
use rs2_suite::FailingStore;

/// Reads work, every write fails.
#[derive(Default)]
struct ReadOnlyStore(Mutex<HashMap<String, Vec<u8>>>);

#[async_trait]
impl StateStorage for ReadOnlyStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, _value: &[u8]) -> StateResult<()> {
        Err(StateError::storage_for(key, "read-only replica"))
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        Err(StateError::storage_for(key, "read-only replica"))
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(self.0.lock().unwrap().contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        Ok(())
    }
}

// --- the session rules ------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_first_event_of_a_key_starts_a_session() {
    assert_eq!(ok_flags(1_000, vec![(0, "ann")]).await, [f("ann", true)]);
}

#[tokio::test(start_paused = true)]
async fn events_within_the_timeout_continue_the_session() {
    let out = ok_flags(
        1_000,
        vec![(0, "ann"), (10, "ann"), (999, "ann"), (500, "ann")],
    )
    .await;
    assert_eq!(
        out,
        [
            f("ann", true),
            f("ann", false),
            f("ann", false),
            f("ann", false)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_gap_of_exactly_the_timeout_continues_and_one_longer_starts_anew() {
    let out = ok_flags(1_000, vec![(0, "ann"), (1_000, "ann"), (1_001, "ann")]).await;
    assert_eq!(out, [f("ann", true), f("ann", false), f("ann", true)]);
}

#[tokio::test(start_paused = true)]
async fn the_gap_is_measured_from_the_previous_event_not_the_session_start() {
    // Events every 600 ms with a 1 s timeout: one long session, though it lasts 3 s.
    let out = ok_flags(
        1_000,
        vec![
            (0, "ann"),
            (600, "ann"),
            (600, "ann"),
            (600, "ann"),
            (600, "ann"),
            (600, "ann"),
        ],
    )
    .await;
    assert_eq!(out[0], f("ann", true));
    assert!(out[1..].iter().all(|(_, new)| !new), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn keys_have_independent_sessions() {
    let out = ok_flags(
        1_000,
        vec![
            (0, "ann"),
            (0, "bob"),
            (800, "ann"), // ann: 800 ms gap
            (800, "bob"), // bob: 1600 ms gap
            (0, "cat"),
            (1_500, "ann"), // ann: 2300 ms gap
        ],
    )
    .await;
    assert_eq!(
        out,
        [
            f("ann", true),
            f("bob", true),
            f("ann", false),
            f("bob", true),
            f("cat", true),
            f("ann", true)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn time_spent_in_the_closure_counts_toward_the_next_gap() {
    // The closure takes 2 s for ann's first event; her second event arrives right after, 2 s
    // after the first, so with a 1 s timeout it starts a new session.
    let out: Vec<(u32, bool)> = no_hang(
        timed(vec![(0, "ann"), (0, "ann")])
            .stateful_session_rs2(
                roomy(),
                by_user,
                Duration::from_secs(1),
                |e, is_new, _state| async move {
                    if e.n == 0 {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    (e.n, is_new)
                },
            )
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(out, [(0, true), (1, true)]);
}

#[tokio::test(start_paused = true)]
async fn empty_input_yields_nothing() {
    assert!(ok_flags(1_000, vec![]).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_zero_timeout_makes_every_later_event_new() {
    let out = ok_flags(0, vec![(0, "ann"), (0, "ann"), (1, "ann")]).await;
    // Same millisecond: not a gap; 1 ms later: longer than a zero timeout.
    assert_eq!(out, [f("ann", true), f("ann", false), f("ann", true)]);
}

#[tokio::test(start_paused = true)]
async fn the_closure_gets_the_keys_own_user_state() {
    // Count sessions per user in the closure's state.
    let out: Vec<(String, u64)> = no_hang(
        timed(vec![(0, "ann"), (5_000, "ann"), (0, "bob"), (100, "ann")])
            .stateful_session_rs2(
                roomy(),
                by_user,
                Duration::from_secs(1),
                |e, is_new, state| async move {
                    let sessions = state
                        .update(|n: Option<u64>| n.unwrap_or(0) + u64::from(is_new))
                        .await
                        .unwrap();
                    (e.user, sessions)
                },
            )
            .map(Result::unwrap)
            .collect(),
    )
    .await;
    assert_eq!(
        out,
        [
            ("ann".into(), 1),
            ("ann".into(), 2),
            ("bob".into(), 1),
            ("ann".into(), 2)
        ]
    );
}

// --- state in storage -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn expired_state_starts_a_new_session() {
    // TTL (1 s) shorter than the timeout (10 s): the key's last-seen time expires, so a 2 s gap
    // starts a new session. (The docs say: give the config a TTL of at least the timeout.)
    let config = StateConfig::new()
        .ttl(Duration::from_secs(1))
        .cleanup_interval(Duration::from_millis(100));
    let out: Vec<(String, bool)> = flags(config, 10_000, timed(vec![(0, "ann"), (2_000, "ann")]))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, [f("ann", true), f("ann", true)]);
}

#[tokio::test(start_paused = true)]
async fn a_shared_store_holds_the_sessions_of_two_pipelines() {
    // Two operators on one custom store and namespace see each other's last-seen times: the
    // session state really lives in the store.
    #[derive(Default)]
    struct MapStore(Mutex<HashMap<String, Vec<u8>>>);
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
    let store = Arc::new(MapStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let first: Vec<_> = flags(config.clone(), 1_000, timed(vec![(0, "ann")])).await;
    assert_eq!(first, [Ok(f("ann", true))]);
    assert!(store.0.lock().unwrap().contains_key("session:ann"));
    let second: Vec<_> = flags(config, 1_000, timed(vec![(500, "ann")])).await;
    assert_eq!(second, [Ok(f("ann", false))]);
}

#[tokio::test(start_paused = true)]
async fn fifty_thousand_keys_lose_nothing() {
    const KEYS: usize = 50_000;
    let users: Vec<String> = (0..KEYS).map(|k| format!("u{k}")).collect();
    // Round 1 at t=0, round 2 at t=500 ms (same sessions), round 3 at t=2 s (new sessions).
    let mut events: Vec<(u64, &str)> = Vec::with_capacity(3 * KEYS);
    for (round_gap, _) in [(0u64, 1), (500, 2), (1_500, 3)] {
        for (i, u) in users.iter().enumerate() {
            events.push((if i == 0 { round_gap } else { 0 }, u.as_str()));
        }
    }
    let out = ok_flags(1_000, events).await;
    assert_eq!(out.len(), 3 * KEYS);
    for (i, (user, is_new)) in out.iter().enumerate() {
        assert_eq!(user, &users[i % KEYS]);
        assert_eq!(*is_new, i / KEYS != 1, "event {i}");
    }
}

// --- errors -----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_failing_backend_yields_an_error_per_event_naming_the_key() {
    let config = StateConfig::new().with_custom_storage(Arc::new(FailingStore));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let out: Vec<Result<u32, StateError>> = no_hang(
        timed(vec![(0, "alice"), (10, "bob"), (10, "alice")])
            .stateful_session_rs2(
                config,
                by_user,
                Duration::from_secs(1),
                move |e, _is_new, _state| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    async move { e.n }
                },
            )
            .collect(),
    )
    .await;
    assert_eq!(out.len(), 3, "{out:?}");
    for (item, key) in out.iter().zip(["alice", "bob", "alice"]) {
        match item {
            Err(StateError::Storage(m)) => assert!(m.contains(key), "{m}"),
            other => panic!("expected a storage error naming {key}, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_an_error_item_not_a_silent_success() {
    let config = StateConfig::new().with_custom_storage(Arc::new(ReadOnlyStore::default()));
    let out = flags(config, 1_000, timed(vec![(0, "ann"), (0, "bob")])).await;
    assert_eq!(out.len(), 2);
    assert!(
        matches!(&out[0], Err(StateError::Storage(m)) if m.contains("ann") && m.contains("read-only")),
        "{out:?}"
    );
    assert!(matches!(&out[1], Err(StateError::Storage(m)) if m.contains("bob")));
}

#[tokio::test(start_paused = true)]
async fn invalid_config_yields_an_error_per_event() {
    let config = StateConfig::new().max_size(0);
    let out = flags(config, 1_000, timed(vec![(0, "ann"), (0, "bob")])).await;
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|r| matches!(r, Err(StateError::Validation(m)) if m.contains("max_size"))));
}

#[tokio::test(start_paused = true)]
async fn undecodable_state_is_an_error_naming_the_key_and_is_left_alone() {
    // A store holding garbage for ann (say, written by an incompatible version).
    let store = Arc::new(ReadOnlyStore::default());
    store
        .0
        .lock()
        .unwrap()
        .insert("session:ann".into(), vec![0xff; 11]);
    let config = StateConfig::new().with_custom_storage(store.clone());
    let out = flags(config, 1_000, timed(vec![(0, "ann")])).await;
    assert!(
        matches!(&out[..], [Err(StateError::Serialization(m))] if m.contains("ann")),
        "{out:?}"
    );
    assert_eq!(store.0.lock().unwrap()["session:ann"], vec![0xff; 11]);
}

// --- property test ----------------------------------------------------------------------------

/// The reference model: per key, the time of its previous event.
fn model(timeout_ms: u64, events: &[(u64, String)]) -> Vec<(String, bool)> {
    let mut now = 0u64;
    let mut last: HashMap<&str, u64> = HashMap::new();
    events
        .iter()
        .map(|(gap, user)| {
            now += gap;
            let is_new = last
                .get(user.as_str())
                .is_none_or(|&t| now - t > timeout_ms);
            last.insert(user, now);
            (user.clone(), is_new)
        })
        .collect()
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn session_flags_match_the_reference_model(
        timeout_ms in 0u64..2_000,
        events in prop::collection::vec(
            (prop_oneof![Just(0u64), 0u64..50, 0u64..3_000], 0u32..20),
            0..300,
        ),
    ) {
        let events: Vec<(u64, String)> =
            events.into_iter().map(|(gap, u)| (gap, format!("u{u}"))).collect();
        let input: Vec<(u64, &str)> = events.iter().map(|(g, u)| (*g, u.as_str())).collect();
        let got = paused_runtime().block_on(ok_flags(timeout_ms, input));
        prop_assert_eq!(got, model(timeout_ms, &events));
    }
}

#[tokio::test(start_paused = true)]
async fn the_stream_can_be_spawned() {
    let handle =
        tokio::spawn(async move { ok_flags(1_000, vec![(0, "ann"), (2_000, "ann")]).await });
    assert_eq!(handle.await.unwrap(), [f("ann", true), f("ann", true)]);
}

/// A map store that answers every call only after yielding to the runtime.
#[derive(Default)]
struct YieldingStore(Mutex<HashMap<String, Vec<u8>>>);

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
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_remote_store_gives_the_same_flags_as_the_in_memory_one() {
    let events = vec![
        (0, "ann"),
        (0, "bob"),
        (500, "ann"),
        (1_500, "ann"),
        (10, "bob"),
        (0, "cat"),
    ];
    let config = StateConfig::new().with_custom_storage(Arc::new(YieldingStore::default()));
    let slow = flags(config, 1_000, timed(events.clone())).await;
    let fast = flags(roomy(), 1_000, timed(events)).await;
    assert_eq!(slow, fast);
    assert_eq!(
        fast,
        [
            Ok(f("ann", true)),
            Ok(f("bob", true)),
            Ok(f("ann", false)),
            Ok(f("ann", true)),
            Ok(f("bob", true)),
            Ok(f("cat", true))
        ]
    );
}
