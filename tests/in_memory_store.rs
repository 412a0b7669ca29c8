//! `InMemoryState`: TTL expiry, the cleanup interval, the `max_size` bound with LRU eviction and
//! its recency rule (by list order, not time: a model of it is checked by proptest), admission
//! of new keys into a full store, delete and clear.
//!
//! Time-dependent tests run on tokio's paused clock and move it with `tokio::time::advance`;
//! recency tests run with the clock standing still, since the rule must not need time to pass.

use std::sync::Arc;
use std::time::Duration;

use rs2::prelude::*;
use serde::{Deserialize, Serialize};

const TTL: Duration = Duration::from_secs(10);
const CLEANUP: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn ttl_config() -> StateConfig {
    StateConfig::new().ttl(TTL).cleanup_interval(CLEANUP)
}

async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// TTL
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn raw_value_expires_exactly_after_ttl() {
    let store = InMemoryState::new(&ttl_config());
    store.set("a", b"1").await.unwrap();

    tokio::time::advance(TTL - MS).await;
    assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
    assert!(store.exists("a").await.unwrap());

    tokio::time::advance(2 * MS).await;
    assert_eq!(
        store.get("a").await.unwrap(),
        None,
        "expired value returned"
    );
    assert!(!store.exists("a").await.unwrap());

    // Writing again restarts the TTL.
    store.set("a", b"2").await.unwrap();
    tokio::time::advance(TTL - MS).await;
    assert_eq!(store.get("a").await.unwrap(), Some(b"2".to_vec()));
    tokio::time::advance(2 * MS).await;
    assert_eq!(store.get("a").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn rewriting_before_expiry_restarts_the_ttl_and_reads_do_not() {
    let store = InMemoryState::new(&ttl_config());
    store.set("written", b"1").await.unwrap();
    store.set("read", b"1").await.unwrap();

    tokio::time::advance(TTL / 2).await;
    store.set("written", b"2").await.unwrap();
    // A read is not a write: it does not extend the TTL.
    assert!(store.get("read").await.unwrap().is_some());

    // Past the first write's expiry, before the rewrite's.
    tokio::time::advance(TTL / 2 + Duration::from_secs(1)).await;
    assert_eq!(store.get("written").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.get("read").await.unwrap(), None);

    tokio::time::advance(TTL / 2).await;
    assert_eq!(store.get("written").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn update_restarts_the_ttl_and_sees_nothing_after_expiry() {
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(InMemoryState::new(&ttl_config()));
    let access: StateAccess = StateAccess::new(storage.clone(), "n".into());
    assert_eq!(
        access.update(|n: Option<u64>| n.unwrap_or(0) + 1).await,
        Ok(1)
    );
    tokio::time::advance(TTL - MS).await;
    assert_eq!(
        access.update(|n: Option<u64>| n.unwrap_or(0) + 1).await,
        Ok(2)
    );
    tokio::time::advance(TTL - MS).await;
    assert_eq!(access.get::<u64>().await, Some(2));
    tokio::time::advance(2 * MS).await;
    assert_eq!(access.get::<u64>().await, None);
    assert!(!access.exists().await);
    assert_eq!(access.try_get::<u64>().await, Ok(None));
    // The expired value is not fed to the next update.
    assert_eq!(
        access.update(|n: Option<u64>| n.unwrap_or(0) + 1).await,
        Ok(1)
    );

    // A fresh access (as the next event would get) sees the same.
    let fresh: StateAccess = StateAccess::new(storage, "n".into());
    assert_eq!(fresh.get::<u64>().await, Some(1));
}

/// Sends events one at a time into an operator so time can be moved between them.
struct Feeder<T> {
    tx: tokio::sync::mpsc::UnboundedSender<T>,
}

impl<T> Feeder<T> {
    fn new() -> (Self, impl Stream<Item = T>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (Self { tx }, stream)
    }

    async fn push<S: Stream + Unpin>(&self, out: &mut S, event: T) -> S::Item {
        assert!(self.tx.send(event).is_ok(), "receiver alive");
        out.next().await.expect("one output per event")
    }
}

#[tokio::test(start_paused = true)]
async fn map_counter_restarts_after_ttl_between_events() {
    let (feed, events) = Feeder::<&'static str>::new();
    let mut out = Box::pin(events.stateful_map_rs2(
        ttl_config(),
        |k: &&'static str| k.to_string(),
        |k, state| async move {
            let n = state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap();
            (k, n)
        },
    ));

    assert_eq!(feed.push(&mut out, "a").await, ("a", 1));
    assert_eq!(feed.push(&mut out, "b").await, ("b", 1));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(feed.push(&mut out, "a").await, ("a", 2)); // a's TTL restarts at t=5s
    tokio::time::advance(Duration::from_secs(9)).await; // t=14s: b expired at 10s
    assert_eq!(feed.push(&mut out, "a").await, ("a", 3));
    assert_eq!(feed.push(&mut out, "b").await, ("b", 1));
    tokio::time::advance(TTL + MS).await; // a last written at 14s: gone
    assert_eq!(feed.push(&mut out, "a").await, ("a", 1));
    assert_eq!(feed.push(&mut out, "b").await, ("b", 1));
    assert_eq!(feed.push(&mut out, "b").await, ("b", 2));
}

#[tokio::test(start_paused = true)]
async fn map_get_set_counter_restarts_after_ttl() {
    let (feed, events) = Feeder::<&'static str>::new();
    let mut out = Box::pin(events.stateful_map_rs2(
        ttl_config(),
        |k: &&'static str| k.to_string(),
        |_k, state| async move {
            let existed = state.exists().await;
            let n: u64 = state.get().await.unwrap_or(0) + 1;
            state.set(&n).await.unwrap();
            (existed, n)
        },
    ));
    assert_eq!(feed.push(&mut out, "a").await, (false, 1));
    tokio::time::advance(TTL - MS).await;
    assert_eq!(feed.push(&mut out, "a").await, (true, 2));
    tokio::time::advance(TTL + MS).await;
    assert_eq!(feed.push(&mut out, "a").await, (false, 1));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hit {
    key: String,
    n: u64,
}

fn hit(key: &str, n: u64) -> Hit {
    Hit {
        key: key.to_string(),
        n,
    }
}

#[tokio::test(start_paused = true)]
async fn fold_and_reduce_restart_after_ttl() {
    let (fold_feed, fold_events) = Feeder::<Hit>::new();
    let mut folded = Box::pin(fold_events.stateful_fold_rs2(
        ttl_config(),
        |h: &Hit| h.key.clone(),
        0u64,
        |sum, h: Hit, _state| async move { sum + h.n },
    ));
    let (reduce_feed, reduce_events) = Feeder::<Hit>::new();
    let mut reduced = Box::pin(reduce_events.stateful_reduce_rs2(
        ttl_config(),
        |h: &Hit| h.key.clone(),
        |a, b, _state| async move { hit(&a.key, a.n + b.n) },
    ));

    assert_eq!(fold_feed.push(&mut folded, hit("a", 5)).await, Ok(5));
    assert_eq!(
        reduce_feed.push(&mut reduced, hit("a", 5)).await,
        Ok(hit("a", 5))
    );
    tokio::time::advance(TTL - MS).await;
    assert_eq!(fold_feed.push(&mut folded, hit("a", 2)).await, Ok(7));
    assert_eq!(
        reduce_feed.push(&mut reduced, hit("a", 2)).await,
        Ok(hit("a", 7))
    );
    tokio::time::advance(TTL + MS).await;
    assert_eq!(fold_feed.push(&mut folded, hit("a", 3)).await, Ok(3));
    assert_eq!(
        reduce_feed.push(&mut reduced, hit("a", 3)).await,
        Ok(hit("a", 3))
    );
}

// ---------------------------------------------------------------------------------------------
// Cleanup interval
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cleanup_task_removes_expired_entries_every_interval() {
    let store = InMemoryState::new(&ttl_config());
    settle().await; // let the store's cleanup task start its timer now
    for i in 0..100 {
        store.set(&format!("k{i}"), b"v").await.unwrap();
    }
    assert_eq!(store.len(), 100);

    // Several cleanup intervals pass, but nothing has expired yet: nothing is removed.
    for _ in 0..9 {
        tokio::time::advance(CLEANUP).await;
        settle().await;
    }
    assert_eq!(store.len(), 100, "cleanup removed live entries");
    assert_eq!(store.get("k7").await.unwrap(), Some(b"v".to_vec()));

    // Refresh one key so it outlives the others.
    store.set("k7", b"fresh").await.unwrap();

    // Past the TTL and one more cleanup interval, with no access to the store at all.
    tokio::time::advance(Duration::from_secs(1) + CLEANUP + MS).await;
    settle().await;
    assert_eq!(
        store.len(),
        1,
        "expired entries must be removed by the background cleanup"
    );
    assert_eq!(store.get("k7").await.unwrap(), Some(b"fresh".to_vec()));

    tokio::time::advance(TTL).await;
    settle().await;
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn expired_entries_wait_for_the_cleanup_interval() {
    // Cleanup every 10 s (t = 10, 20, ...); entries written at t = 2 s expire at t = 12 s.
    let config = StateConfig::new().ttl(TTL).cleanup_interval(TTL);
    let store = InMemoryState::new(&config);
    settle().await; // let the store's cleanup task start its timer now
    tokio::time::advance(Duration::from_secs(2)).await;
    for i in 0..10 {
        store.set(&format!("k{i}"), b"v").await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(9)).await; // t = 11: the t = 10 cleanup ran
    settle().await;
    assert_eq!(store.len(), 10, "cleanup removed live entries");

    tokio::time::advance(Duration::from_secs(4)).await; // t = 15: expired, not yet cleaned
    settle().await;
    assert_eq!(
        store.get("k1").await.unwrap(),
        None,
        "expired value returned"
    );
    assert_eq!(store.len(), 10, "removed before the cleanup interval");

    tokio::time::advance(Duration::from_secs(6)).await; // t = 21: the t = 20 cleanup ran
    settle().await;
    assert_eq!(store.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn explicit_cleanup_removes_only_expired_entries() {
    let store = InMemoryState::new(&StateConfig::new().ttl(TTL).cleanup_interval(TTL));
    store.set("old", b"1").await.unwrap();
    tokio::time::advance(TTL / 2).await;
    store.set("new", b"2").await.unwrap();
    tokio::time::advance(TTL / 2 + MS).await;
    store.cleanup();
    assert_eq!(store.len(), 1);
    assert_eq!(store.get("new").await.unwrap(), Some(b"2".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// max_size
// ---------------------------------------------------------------------------------------------

const MAX: usize = 100;

#[tokio::test(start_paused = true)]
async fn max_size_holds_after_every_write_and_hot_key_survives() {
    let store = InMemoryState::new(&StateConfig::new().max_size(MAX));
    store.set("hot", b"0").await.unwrap();

    let mut next = 0usize;
    for round in 1..=50u64 {
        for _ in 0..10 {
            store.set(&format!("cold-{next}"), b"c").await.unwrap();
            next += 1;
            assert!(store.len() <= MAX, "len {} > {MAX}", store.len());
        }
        // Use the hot key: read it back and rewrite it.
        let hot = store.get("hot").await.unwrap();
        assert_eq!(
            hot,
            Some((round - 1).to_string().into_bytes()),
            "hot key lost in round {round}"
        );
        store
            .set("hot", round.to_string().as_bytes())
            .await
            .unwrap();
        assert!(store.len() <= MAX);
        // Time passing changes nothing about recency (it used to be tracked per second).
        tokio::time::advance(Duration::from_millis(1_100)).await;
    }
    assert_eq!(next, 5 * MAX);
    assert_eq!(store.get("hot").await.unwrap(), Some(b"50".to_vec()));
    // The store is full (not over-evicted) and the oldest cold keys are the ones gone.
    assert!(store.len() >= MAX - 1, "len {}", store.len());
    assert_eq!(store.get("cold-0").await.unwrap(), None);
    assert_eq!(
        store.get(&format!("cold-{}", next - 1)).await.unwrap(),
        Some(b"c".to_vec())
    );
}

/// The same through an operator: the hot key's counter is never reset, and the shared store
/// stays within bounds.
#[tokio::test(start_paused = true)]
async fn max_size_through_map_operator_keeps_hot_key_state() {
    let config = StateConfig::new().max_size(MAX);
    let store = InMemoryState::new(&config);
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    let (feed, events) = Feeder::<String>::new();
    let mut out = Box::pin(events.stateful_map_rs2(
        config.with_custom_storage(storage),
        |k: &String| k.clone(),
        |k, state| async move {
            let n = state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap();
            (k, n)
        },
    ));

    let mut next = 0usize;
    for round in 1..=50u64 {
        for _ in 0..10 {
            let key = format!("cold-{next}");
            next += 1;
            assert_eq!(feed.push(&mut out, key.clone()).await, (key, 1));
            assert!(store.len() <= MAX, "len {} > {MAX}", store.len());
        }
        assert_eq!(
            feed.push(&mut out, "hot".to_string()).await,
            ("hot".to_string(), round),
            "hot key's state lost"
        );
        assert!(store.len() <= MAX);
        tokio::time::advance(Duration::from_millis(1_100)).await;
    }
    // An early cold key was evicted and starts again.
    assert_eq!(
        feed.push(&mut out, "cold-0".to_string()).await,
        ("cold-0".to_string(), 1)
    );
}

/// Issue 8 item 5's test: with max_size N, one key read on every event while 10 × N new keys
/// are written, all within one millisecond of (paused) time. Recency used to be recorded once
/// per key per second, so the hot key was evicted after N new keys however often it was read.
#[tokio::test(start_paused = true)]
async fn hot_key_read_every_event_survives_ten_times_max_size_new_keys_in_one_millisecond() {
    const N: usize = 1_000;
    let store = InMemoryState::new(&StateConfig::new().max_size(N));
    let start = store.clock().now_ms();
    store.set("hot", b"session").await.unwrap();
    for i in 0..10 * N {
        assert_eq!(
            store.get("hot").await.unwrap(),
            Some(b"session".to_vec()),
            "hot key lost after {i} new keys"
        );
        store.set(&format!("new-{i}"), b"n").await.unwrap();
        assert!(store.len() <= N, "len {} > {N}", store.len());
    }
    assert_eq!(store.get("hot").await.unwrap(), Some(b"session".to_vec()));
    assert_eq!(store.clock().now_ms(), start, "the clock moved");
    assert_eq!(store.len(), N);
}

/// The same through an operator, the way a busy user's session meets a flood of new users:
/// the busy key's count is never reset.
#[tokio::test(start_paused = true)]
async fn busy_key_counter_survives_a_flood_of_new_keys_through_map_in_one_millisecond() {
    const N: usize = 1_000;
    let config = StateConfig::new().max_size(N);
    let store = InMemoryState::new(&config);
    let start = store.clock().now_ms();
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    let events = (0..10 * N).flat_map(|i| ["busy".to_string(), format!("new-{i}")]);
    let counts: Vec<(String, u64)> = futures::stream::iter(events)
        .stateful_map_rs2(
            config.with_custom_storage(storage),
            |k: &String| k.clone(),
            |k, state| async move {
                let n = state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                (k, n)
            },
        )
        .collect()
        .await;
    let busy: Vec<u64> = counts
        .iter()
        .filter(|(k, _)| k == "busy")
        .map(|&(_, n)| n)
        .collect();
    assert_eq!(busy, (1..=(10 * N) as u64).collect::<Vec<_>>());
    assert!(counts.iter().all(|(k, n)| k == "busy" || *n == 1));
    assert_eq!(store.clock().now_ms(), start, "the clock moved");
    assert!(store.len() <= N);
}

/// Plain LRU cases (small stores, where every use of a key not already at the back moves it).
#[tokio::test(start_paused = true)]
async fn the_least_recently_used_key_goes_first() {
    // Without uses, keys leave in the order they were written.
    let store = InMemoryState::new(&StateConfig::new().max_size(3));
    for k in ["a", "b", "c", "d", "e"] {
        store.set(k, b"v").await.unwrap();
    }
    for (k, kept) in [
        ("a", false),
        ("b", false),
        ("c", true),
        ("d", true),
        ("e", true),
    ] {
        assert_eq!(store.exists(k).await.unwrap(), kept, "{k}");
    }

    // A read, an exists, a rewrite and an update each count as a use.
    let store = InMemoryState::new(&StateConfig::new().max_size(2));
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    for how in ["get", "exists", "set", "update"] {
        store.clear().await.unwrap();
        store.set("old", b"v").await.unwrap();
        store.set("new", b"v").await.unwrap();
        match how {
            "get" => assert!(store.get("old").await.unwrap().is_some()),
            "exists" => assert!(store.exists("old").await.unwrap()),
            "set" => store.set("old", b"w").await.unwrap(),
            _ => {
                storage
                    .update("old", Box::new(|v| Ok(v.unwrap_or_default())))
                    .await
                    .unwrap();
            }
        }
        store.set("newest", b"v").await.unwrap();
        assert!(
            store.exists("old").await.unwrap(),
            "{how}: used key evicted"
        );
        // `exists` is a use itself, so check "new" last.
        assert!(
            !store.exists("new").await.unwrap(),
            "{how}: wrong key evicted"
        );
    }
}

#[tokio::test]
async fn new_keys_keep_their_state_in_a_full_store() {
    let store = InMemoryState::new(&StateConfig::new().max_size(1_000));
    for i in 0..50_000u32 {
        let key = format!("new-{i}");
        store.set(&key, &i.to_le_bytes()).await.unwrap();
        assert_eq!(
            store.get(&key).await.unwrap(),
            Some(i.to_le_bytes().to_vec()),
            "new key {key} was not admitted into the full store"
        );
    }
    assert!(store.len() <= 1_000);
}

#[tokio::test]
async fn new_keys_keep_their_state_in_a_full_store_through_fold() {
    // Each key's two events come back to back; the second must see the first's accumulator.
    let events: Vec<u32> = (0..20_000u32).flat_map(|i| [i, i]).collect();
    let out: Vec<u64> = futures::stream::iter(events)
        .stateful_fold_rs2(
            StateConfig::new().max_size(1_000),
            |i: &u32| i.to_string(),
            0u64,
            |n, _i, _state| async move { n + 1 },
        )
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(out.len(), 40_000);
    let wrong = out
        .chunks(2)
        .enumerate()
        .find(|(_, pair)| pair != &[1u64, 2]);
    assert_eq!(wrong, None, "a new key lost its state in a full store");
}

// ---------------------------------------------------------------------------------------------
// delete and clear
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_and_clear() {
    let store = InMemoryState::new(&StateConfig::new());
    store.set("a", b"1").await.unwrap();
    store.set("b", b"2").await.unwrap();
    store.set("c", b"3").await.unwrap();
    assert_eq!(store.len(), 3);

    store.delete("a").await.unwrap();
    assert_eq!(store.get("a").await.unwrap(), None);
    assert!(!store.exists("a").await.unwrap());
    assert_eq!(store.len(), 2);
    assert_eq!(store.get("b").await.unwrap(), Some(b"2".to_vec()));
    // Deleting an absent key is not an error.
    store.delete("a").await.unwrap();
    store.delete("never").await.unwrap();
    assert_eq!(store.len(), 2);

    // Through StateAccess, and a handle held before the delete sees it.
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    let b: StateAccess = StateAccess::new(storage.clone(), "b".into());
    b.set(&41u32).await.unwrap();
    assert_eq!(b.get::<u32>().await, Some(41));
    store.delete("b").await.unwrap();
    assert_eq!(b.get::<u32>().await, None);
    assert!(!b.exists().await);
    b.set(&42u32).await.unwrap();
    assert!(store.get("b").await.unwrap().is_some());
    assert_eq!(b.get::<u32>().await, Some(42));
    b.delete().await.unwrap();
    assert!(!store.exists("b").await.unwrap());

    store.set("x", b"x").await.unwrap();
    store.clear().await.unwrap();
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
    for k in ["a", "b", "c", "x"] {
        assert_eq!(store.get(k).await.unwrap(), None, "{k} survived clear");
    }
    let c: StateAccess = StateAccess::new(storage, "c".into());
    assert_eq!(c.get::<u32>().await, None);

    // The store works normally after a clear.
    store.set("after", b"1").await.unwrap();
    assert_eq!(store.get("after").await.unwrap(), Some(b"1".to_vec()));
    c.set(&7u32).await.unwrap();
    assert_eq!(c.get::<u32>().await, Some(7));
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn clones_of_a_store_share_state() {
    let store = InMemoryState::new(&StateConfig::new());
    let clone = store.clone();
    store.set("k", b"v").await.unwrap();
    assert_eq!(clone.get("k").await.unwrap(), Some(b"v".to_vec()));
    clone.delete("k").await.unwrap();
    assert!(!store.exists("k").await.unwrap());
}

/// After the cleanup removed an operator's key, the operator's next write lands in the store
/// (not in the slot the store let go of).
#[tokio::test(start_paused = true)]
async fn operator_writes_after_cleanup_land_in_the_store() {
    let config = ttl_config();
    let store = InMemoryState::new(&config);
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    let (feed, events) = Feeder::<&'static str>::new();
    let mut out = Box::pin(events.stateful_map_rs2(
        config.with_custom_storage(storage.clone()),
        |k: &&'static str| k.to_string(),
        |_k, state| async move {
            state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap()
        },
    ));
    settle().await;

    assert_eq!(feed.push(&mut out, "a").await, 1);
    assert_eq!(feed.push(&mut out, "a").await, 2);
    tokio::time::advance(TTL + 2 * CLEANUP).await;
    settle().await;
    assert_eq!(store.len(), 0, "cleanup did not run");

    assert_eq!(feed.push(&mut out, "a").await, 1);
    assert_eq!(store.len(), 1, "the write went to a detached slot");
    let reader: StateAccess = StateAccess::new(storage, "map:a".into());
    assert_eq!(reader.get::<u64>().await, Some(1));
    assert_eq!(feed.push(&mut out, "a").await, 2);
    assert_eq!(reader.get::<u64>().await, Some(2));
}

// ---------------------------------------------------------------------------------------------
// In-place modify (the path window, pattern and throttle take)
// ---------------------------------------------------------------------------------------------

mod in_place {
    use super::*;
    use rs2::state::{LocalStorage, LocalUpdateFn, StateResult, ValueChange};

    /// A `LocalStorage` that forwards everything except `modify` to an `InMemoryState`, so it runs
    /// the trait's provided `modify` (copy in, copy out) against the same store.
    struct ProvidedModify(InMemoryState);

    impl LocalStorage for ProvidedModify {
        fn hash_key(&self, key: &str) -> u64 {
            self.0.hash_key(key)
        }
        fn read(&self, hash: u64, key: &str, now_ms: u64, f: &mut dyn FnMut(&[u8])) -> bool {
            self.0.read(hash, key, now_ms, f)
        }
        fn write(&self, hash: u64, key: &str, now_ms: u64, value: &[u8]) -> StateResult<()> {
            self.0.write(hash, key, now_ms, value)
        }
        fn update(
            &self,
            hash: u64,
            key: &str,
            now_ms: u64,
            buf: &mut Vec<u8>,
            f: &mut LocalUpdateFn<'_>,
        ) -> StateResult<()> {
            LocalStorage::update(&self.0, hash, key, now_ms, buf, f)
        }
        fn exists(&self, hash: u64, key: &str, now_ms: u64) -> bool {
            LocalStorage::exists(&self.0, hash, key, now_ms)
        }
        fn remove(&self, hash: u64, key: &str) {
            self.0.remove(hash, key)
        }
        fn now_ms(&self) -> u64 {
            self.0.now_ms()
        }
    }

    fn value_of(store: &dyn LocalStorage, key: &str) -> Option<Vec<u8>> {
        let mut value = None;
        store.read(store.hash_key(key), key, store.now_ms(), &mut |b| {
            value = Some(b.to_vec())
        });
        value
    }

    /// Appends `extra` to `key`'s value; returns what `modify` was handed.
    fn append(store: &dyn LocalStorage, key: &str, extra: &[u8]) -> (Vec<u8>, bool) {
        let mut seen = None;
        let change = store
            .modify(
                store.hash_key(key),
                key,
                store.now_ms(),
                &mut Vec::new(),
                &mut |bytes, existed| {
                    seen = Some((bytes.clone(), existed));
                    bytes.extend_from_slice(extra);
                    Ok(ValueChange::Store)
                },
            )
            .unwrap();
        assert_eq!(change, ValueChange::Store);
        seen.unwrap()
    }

    fn change(store: &dyn LocalStorage, key: &str, to: ValueChange) -> StateResult<ValueChange> {
        store.modify(
            store.hash_key(key),
            key,
            store.now_ms(),
            &mut Vec::new(),
            &mut |_, _| Ok(to),
        )
    }

    /// Appends grow the value across the inline/heap boundary; `Keep` leaves it and does not
    /// restart its TTL; `Store` does; an error writes nothing; `Remove` removes; an expired value
    /// is handed over as absent.
    async fn modify_scenario(store: &dyn LocalStorage) {
        assert_eq!(append(store, "k", &[1; 20]), (vec![], false));
        assert_eq!(append(store, "k", &[2; 20]), (vec![1; 20], true));
        let grown: Vec<u8> = [[1; 20], [2; 20]].concat();
        assert_eq!(append(store, "k", &[3]).0, grown);
        let full: Vec<u8> = [&grown[..], &[3]].concat();
        assert_eq!(value_of(store, "k"), Some(full.clone()));

        tokio::time::advance(TTL - 2 * MS).await;
        assert_eq!(change(store, "k", ValueChange::Keep), Ok(ValueChange::Keep));
        let err = store.modify(
            store.hash_key("k"),
            "k",
            store.now_ms(),
            &mut Vec::new(),
            &mut |_, _| Err(StateError::Validation("no thanks".into())),
        );
        assert_eq!(err, Err(StateError::Validation("no thanks".into())));
        assert_eq!(value_of(store, "k"), Some(full));
        tokio::time::advance(2 * MS).await;
        // Neither `Keep` nor the failed modify restarted the TTL.
        assert_eq!(value_of(store, "k"), None);
        assert_eq!(append(store, "k", &[9]), (vec![], false));
        assert_eq!(value_of(store, "k"), Some(vec![9]));
        // `Store` on an existing key restarts its TTL.
        tokio::time::advance(TTL - MS).await;
        append(store, "k", &[8]);
        tokio::time::advance(2 * MS).await;
        assert_eq!(value_of(store, "k"), Some(vec![9, 8]));

        assert_eq!(
            change(store, "k", ValueChange::Remove),
            Ok(ValueChange::Remove)
        );
        assert_eq!(value_of(store, "k"), None);
        assert!(!store.exists(store.hash_key("k"), "k", store.now_ms()));
    }

    #[tokio::test(start_paused = true)]
    async fn modify_edits_values_in_place_with_the_rules_of_update() {
        modify_scenario(&InMemoryState::new(&ttl_config())).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_provided_modify_follows_the_same_rules() {
        modify_scenario(&ProvidedModify(InMemoryState::new(&ttl_config()))).await;
    }

    #[tokio::test]
    async fn modify_adding_keys_keeps_max_size() {
        let store = InMemoryState::new(&StateConfig::new().max_size(3));
        for i in 0..10 {
            append(&store, &format!("key-{i}"), &[i as u8; 40]);
            assert!(store.len() <= 3, "after key {i}: {} keys", store.len());
        }
        assert_eq!(value_of(&store, "key-9"), Some(vec![9; 40]));
        assert_eq!(value_of(&store, "key-0"), None);
    }
}

// ---------------------------------------------------------------------------------------------
// The recency rule against a model of it
// ---------------------------------------------------------------------------------------------

mod recency_model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8),
        Get(u8),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..24u8).prop_map(Op::Set),
            3 => (0..24u8).prop_map(Op::Get),
            1 => (0..24u8).prop_map(Op::Delete),
        ]
    }

    /// The rule as documented on `InMemoryState`, written the obvious way: a list, front
    /// evicted first; a count of operations that put a key at the back; a use moves a key to
    /// the back when its age in operations is at least `max(1, max_size / 2)`.
    struct Model {
        max: usize,
        move_after: u64,
        /// Front (next to be evicted) first: (key, value, stamp).
        list: Vec<(u8, u32, u64)>,
        ops: u64,
    }

    impl Model {
        fn new(max: usize) -> Self {
            Self {
                max,
                move_after: (max as u64 / 2).max(1),
                list: Vec::new(),
                ops: 0,
            }
        }

        fn position(&self, key: u8) -> Option<usize> {
            self.list.iter().position(|&(k, _, _)| k == key)
        }

        fn use_at(&mut self, i: usize) {
            if self.ops - self.list[i].2 >= self.move_after {
                // The store stamps with the count before the move; a key already at the back
                // does not move, and that is not an operation.
                self.list[i].2 = self.ops;
                if i + 1 < self.list.len() {
                    let entry = self.list.remove(i);
                    self.list.push(entry);
                    self.ops += 1;
                }
            }
        }

        fn set(&mut self, key: u8, value: u32) {
            match self.position(key) {
                Some(i) => {
                    self.list[i].1 = value;
                    self.use_at(i);
                }
                None => {
                    self.ops += 1;
                    self.list.push((key, value, self.ops));
                    while self.list.len() > self.max {
                        self.list.remove(0);
                    }
                }
            }
        }

        fn get(&mut self, key: u8) -> Option<u32> {
            let i = self.position(key)?;
            let value = self.list[i].1;
            self.use_at(i);
            Some(value)
        }

        fn delete(&mut self, key: u8) {
            if let Some(i) = self.position(key) {
                self.list.remove(i);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every read returns what the model holds, and the store holds exactly the model's
        /// keys, after every step.
        #[test]
        fn the_store_follows_the_documented_recency_rule(
            max in 1..10usize,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let store = InMemoryState::new(&StateConfig::new().max_size(max));
            let mut model = Model::new(max);
            for (step, op) in ops.iter().enumerate() {
                match *op {
                    Op::Set(k) => {
                        let value = step as u32;
                        futures::executor::block_on(store.set(&k.to_string(), &value.to_le_bytes()))
                            .unwrap();
                        model.set(k, value);
                    }
                    Op::Get(k) => {
                        let got = futures::executor::block_on(store.get(&k.to_string())).unwrap();
                        let want = model.get(k).map(|v| v.to_le_bytes().to_vec());
                        prop_assert_eq!(got, want, "step {}: get {}", step, k);
                    }
                    Op::Delete(k) => {
                        futures::executor::block_on(store.delete(&k.to_string())).unwrap();
                        model.delete(k);
                    }
                }
                prop_assert_eq!(store.len(), model.list.len(), "step {}", step);
                prop_assert!(store.len() <= max);
            }
        }
    }
}
