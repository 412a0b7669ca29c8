//! Regression tests for defects found while writing the suite.
//!
//! 1. Operators judged time by a clock of their own, not the clock of the store they write to:
//!    a store and a pipeline created an hour of (paused) time apart disagreed about "now", so
//!    state the operator had just written was already expired for the store. Now every clock in
//!    a process shares one anchor and operators read an in-process store's clock.
//! 2. Backend errors that did not name the key reached the user without it; `StateAccess` and
//!    the operators now add the key (DESIGN.md §5).
//! 3. Concurrent writers into a full store: a key may be evicted right after its write only
//!    once at least `max_size` newer keys were written (LRU), which an OS preemption between a
//!    write and the next read can legitimately allow on a loaded machine. The test counts the
//!    writes in between, so it fails only on a real early eviction.

use std::sync::Arc;
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::async_trait;

const TTL: Duration = Duration::from_secs(10);

fn config() -> StateConfig {
    StateConfig::new()
        .ttl(TTL)
        .cleanup_interval(Duration::from_secs(1))
}

async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// A store created an hour (of paused time) before the pipeline that writes to it.
async fn store_then_pipeline_an_hour_later() -> (InMemoryState, Arc<dyn StateStorage + Send + Sync>)
{
    let store = InMemoryState::new(&config());
    settle().await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    settle().await;
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    (store, storage)
}

#[tokio::test(start_paused = true)]
async fn value_written_by_operator_is_visible_in_its_shared_store() {
    let (store, storage) = store_then_pipeline_an_hour_later().await;
    let out: Vec<u64> = futures::stream::iter(vec!["a"])
        .stateful_map_rs2(
            config().with_custom_storage(storage.clone()),
            |k: &&str| k.to_string(),
            |_k, state| async move {
                state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap()
            },
        )
        .collect()
        .await;
    assert_eq!(out, vec![1]);

    // Written 0 s ago with a 10 s TTL: it must be there.
    let reader: StateAccess = StateAccess::new(storage, "map:a".into());
    assert_eq!(
        reader.get::<u64>().await,
        Some(1),
        "the store's clock says the operator's fresh write has already expired"
    );
    assert_eq!(store.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn operator_state_is_not_cleaned_up_before_its_ttl() {
    let (store, storage) = store_then_pipeline_an_hour_later().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut out = Box::pin(events.stateful_map_rs2(
        config().with_custom_storage(storage),
        |k: &&'static str| k.to_string(),
        |_k, state| async move {
            state
                .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .unwrap()
        },
    ));

    tx.send("a").unwrap();
    assert_eq!(out.next().await, Some(1));
    // Two seconds later (TTL is 10 s) the store's cleanup has run twice.
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(store.len(), 1, "the store's cleanup removed live state");
    tx.send("a").unwrap();
    assert_eq!(out.next().await, Some(2), "the key's count was reset");
}

/// Two pipelines sharing one store, built an hour of paused time apart, see the same state.
#[tokio::test(start_paused = true)]
async fn pipelines_built_at_different_times_agree_on_expiry() {
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(InMemoryState::new(&config()));
    let counter = |storage: Arc<dyn StateStorage + Send + Sync>| {
        futures::stream::iter(vec!["a"]).stateful_map_rs2(
            config().with_custom_storage(storage),
            |k: &&str| k.to_string(),
            |_k, state| async move {
                state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap()
            },
        )
    };
    let early = counter(storage.clone());
    tokio::time::advance(Duration::from_secs(3600)).await;
    let late = counter(storage.clone());
    // The late pipeline writes now; the early one reads it one second later.
    assert_eq!(late.collect::<Vec<_>>().await, vec![1]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        early.collect::<Vec<_>>().await,
        vec![2],
        "the early pipeline saw a 1-second-old value as expired (or a stale one as live)"
    );
}

/// A backend that fails without naming the key, as a network client library often does.
struct DownWithoutKey;

#[async_trait]
impl StateStorage for DownWithoutKey {
    async fn get(&self, _key: &str) -> StateResult<Option<Vec<u8>>> {
        Err(StateError::Storage("connection refused".into()))
    }
    async fn set(&self, _key: &str, _value: &[u8]) -> StateResult<()> {
        Err(StateError::Storage("connection refused".into()))
    }
    async fn delete(&self, _key: &str) -> StateResult<()> {
        Err(StateError::Storage("connection refused".into()))
    }
    async fn exists(&self, _key: &str) -> StateResult<bool> {
        Err(StateError::Storage("connection refused".into()))
    }
    async fn clear(&self) -> StateResult<()> {
        Err(StateError::Storage("connection refused".into()))
    }
}

#[tokio::test]
async fn backend_errors_reach_the_user_with_the_key() {
    let config = StateConfig::new().with_custom_storage(Arc::new(DownWithoutKey));

    let folded: Vec<Result<u64, StateError>> =
        futures::stream::iter(vec![("user-42".to_string(), 1u64)])
            .stateful_fold_rs2(
                config.clone(),
                |e: &(String, u64)| e.0.clone(),
                0u64,
                |s, e: (String, u64), _state| async move { s + e.1 },
            )
            .collect()
            .await;
    let fold_err = folded[0].as_ref().unwrap_err().to_string();

    let mapped: Vec<String> = futures::stream::iter(vec!["user-42".to_string()])
        .stateful_map_rs2(
            config,
            |e: &String| e.clone(),
            |_e, state| async move { state.try_get::<u64>().await.unwrap_err().to_string() },
        )
        .collect()
        .await;

    assert!(fold_err.contains("user-42"), "fold error: {fold_err}");
    assert!(mapped[0].contains("user-42"), "map error: {}", mapped[0]);
}

const MAX: usize = 100;
const WRITERS: usize = 4;

/// Writes completed by all writers so far (to tell a legitimate LRU eviction from a lost key).
static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_are_evicted_only_after_max_size_newer_keys() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = InMemoryState::new(&StateConfig::new().max_size(MAX));
    let mut handles = Vec::new();
    for t in 0..WRITERS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut lost_early = Vec::new();
            let mut evicted_late = 0;
            for i in 0..5_000u32 {
                let key = format!("{t}-{i}");
                let before = WRITES.load(SeqCst);
                store.set(&key, &i.to_le_bytes()).await.unwrap();
                WRITES.fetch_add(1, SeqCst);
                assert!(store.len() <= MAX, "len {} > {MAX}", store.len());
                if store.get(&key).await.unwrap() != Some(i.to_le_bytes().to_vec()) {
                    // Writes that may have landed after ours: all completed since `before`
                    // (ours included) plus those in flight on the other writers.
                    let newer = WRITES.load(SeqCst) - before - 1 + (WRITERS - 1);
                    if newer < MAX {
                        lost_early.push((key, newer));
                    } else {
                        evicted_late += 1;
                    }
                }
            }
            (lost_early, evicted_late)
        }));
    }
    for h in handles {
        let (lost_early, evicted_late) = h.await.expect("writer did not panic");
        assert!(
            lost_early.is_empty(),
            "keys gone before {MAX} newer keys were written: {lost_early:?} \
             ({evicted_late} legitimate LRU evictions)"
        );
    }
    assert!(store.len() <= MAX);
}

/// The user-visible side: with room for every key, two pipelines sharing one store on a
/// multi-thread runtime never lose a key's state between its two back-to-back events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_sharing_a_store_keep_every_keys_state() {
    let store = InMemoryState::new(&StateConfig::new().max_size(20_000));
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    let mut handles = Vec::new();
    for p in 0..2 {
        let config = StateConfig::new().with_custom_storage(storage.clone());
        handles.push(tokio::spawn(async move {
            let events = (0..5_000u32).flat_map(move |i| {
                let key = format!("{p}-{i}");
                [key.clone(), key]
            });
            futures::stream::iter(events)
                .stateful_map_rs2(
                    config,
                    |k: &String| k.clone(),
                    |k, state| async move {
                        let n = state
                            .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                            .await
                            .unwrap();
                        (k, n)
                    },
                )
                .collect::<Vec<(String, u64)>>()
                .await
        }));
    }
    for h in handles {
        let out = h.await.unwrap();
        assert_eq!(out.len(), 10_000);
        for pair in out.chunks(2) {
            assert_eq!((pair[0].1, pair[1].1), (1, 2), "key {}", pair[0].0);
        }
    }
    assert_eq!(store.len(), 10_000);
}
