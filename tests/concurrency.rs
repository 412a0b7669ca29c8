//! `update` is atomic per key when many tasks share one storage.
//!
//! 8 tasks x 500 increments of ONE key must give exactly 4,000, whether through
//! `StateAccess::update` on `InMemoryState`, through the provided default `update` of a custom
//! backend that does not override it, through the raw `StateStorage::update`, or through two
//! operator streams sharing one store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rs2::prelude::*;
use rs2::state::async_trait;

const TASKS: u64 = 8;
const PER_TASK: u64 = 500;
const TOTAL: u64 = TASKS * PER_TASK;

/// A custom backend that only writes the five required methods (no `update` override).
///
/// `get` and `set` yield to the scheduler before touching the map, as a network backend would
/// await, so a read-modify-write that is not serialised really interleaves with other tasks.
#[derive(Default)]
struct YieldingMapStore(Mutex<HashMap<String, Vec<u8>>>);

#[async_trait]
impl StateStorage for YieldingMapStore {
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

/// Runs `TASKS` tasks, each doing `PER_TASK` `StateAccess::update` increments of key "k"
/// (a fresh access per increment, as separate events would get), and returns every value the
/// updates returned.
async fn hammer_with_state_access(storage: Arc<dyn StateStorage + Send + Sync>) -> Vec<u64> {
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let storage_arc = storage.clone();
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(PER_TASK as usize);
            for i in 0..PER_TASK {
                let access: StateAccess = StateAccess::new(storage_arc.clone(), "k".into());
                let n = access
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .expect("update succeeds");
                seen.push(n);
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task did not panic"));
    }
    all
}

fn assert_every_increment_counted(mut returned: Vec<u64>) {
    assert_eq!(returned.len() as u64, TOTAL);
    returned.sort_unstable();
    // Each update saw a distinct predecessor: the returned values are exactly 1..=4000.
    assert_eq!(returned, (1..=TOTAL).collect::<Vec<_>>());
}

async fn final_count(storage: &Arc<dyn StateStorage + Send + Sync>, key: &str) -> Option<u64> {
    let access: StateAccess = StateAccess::new(storage.clone(), key.to_string());
    access.try_get::<u64>().await.expect("readable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_access_update_on_shared_in_memory_state_is_atomic() {
    let storage_arc: Arc<dyn StateStorage + Send + Sync> =
        Arc::new(InMemoryState::new(&StateConfig::new()));
    let returned = hammer_with_state_access(storage_arc.clone()).await;
    assert_eq!(final_count(&storage_arc, "k").await, Some(TOTAL));
    assert_every_increment_counted(returned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_access_update_through_default_update_of_custom_backend_is_atomic() {
    let storage_arc: Arc<dyn StateStorage + Send + Sync> = Arc::new(YieldingMapStore::default());
    let returned = hammer_with_state_access(storage_arc.clone()).await;
    assert_eq!(final_count(&storage_arc, "k").await, Some(TOTAL));
    assert_every_increment_counted(returned);
}

/// Raw `StateStorage::update` (bytes in, bytes out) with a little-endian u64 counter.
async fn hammer_raw_update(storage: Arc<dyn StateStorage + Send + Sync>) -> u64 {
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                storage
                    .update(
                        "k",
                        Box::new(|current: Option<Vec<u8>>| {
                            let n = current
                                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                                .unwrap_or(0);
                            Ok((n + 1).to_le_bytes().to_vec())
                        }),
                    )
                    .await
                    .expect("update succeeds");
            }
        }));
    }
    for h in handles {
        h.await.expect("task did not panic");
    }
    let bytes = storage.get("k").await.unwrap().expect("counter stored");
    u64::from_le_bytes(bytes.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_storage_update_of_in_memory_state_is_atomic() {
    let storage: Arc<dyn StateStorage + Send + Sync> =
        Arc::new(InMemoryState::new(&StateConfigs::high_performance()));
    assert_eq!(hammer_raw_update(storage).await, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_default_update_of_custom_backend_is_atomic() {
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(YieldingMapStore::default());
    assert_eq!(hammer_raw_update(storage).await, TOTAL);
}

/// The raw update returns what it stored, and an `Err` from the function writes nothing.
#[tokio::test]
async fn raw_update_returns_stored_bytes_and_failed_function_writes_nothing() {
    for storage in [
        Arc::new(InMemoryState::new(&StateConfig::new())) as Arc<dyn StateStorage + Send + Sync>,
        Arc::new(YieldingMapStore::default()),
    ] {
        let stored = storage
            .update(
                "k",
                Box::new(|cur| Ok(cur.unwrap_or_default().into_iter().chain([7]).collect())),
            )
            .await
            .unwrap();
        assert_eq!(stored, vec![7]);
        let err = storage
            .update(
                "k",
                Box::new(|_| Err(StateError::Validation("no thanks".into()))),
            )
            .await;
        assert_eq!(err, Err(StateError::Validation("no thanks".into())));
        assert_eq!(storage.get("k").await.unwrap(), Some(vec![7]));
    }
}

/// Control: with this store, a plain get-then-set increment from 8 tasks loses updates, so the
/// atomicity tests above would catch a non-atomic `update`.
#[tokio::test(flavor = "current_thread")]
async fn control_plain_get_then_set_loses_updates_with_the_yielding_store() {
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(YieldingMapStore::default());
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                let access: StateAccess = StateAccess::new(storage.clone(), "k".into());
                let n: u64 = access.get().await.unwrap_or(0);
                access.set(&(n + 1)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let n = final_count(&storage, "k").await.unwrap();
    assert!(n < TOTAL, "expected lost updates without a lock, got {n}");
}

/// Two operator pipelines sharing one store (same config, so the same `map:` namespace) both
/// increment key "k": no increment is lost.
async fn two_pipelines_share_one_store(storage: Arc<dyn StateStorage + Send + Sync>) {
    let config = StateConfig::new().with_custom_storage(storage.clone());
    let mut handles = Vec::new();
    for _ in 0..2 {
        let config = config.clone();
        handles.push(tokio::spawn(async move {
            futures::stream::iter(0..TOTAL / 2)
                .stateful_map_rs2(
                    config,
                    |_: &u64| "k".to_string(),
                    |_, state| async move {
                        tokio::task::yield_now().await;
                        state
                            .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                            .await
                            .unwrap()
                    },
                )
                .collect::<Vec<u64>>()
                .await
        }));
    }
    let mut returned = Vec::new();
    for h in handles {
        let out = h.await.unwrap();
        // Within one pipeline the key's value only grows.
        assert!(out.windows(2).all(|w| w[0] < w[1]));
        returned.extend(out);
    }
    assert_eq!(final_count(&storage, "map:k").await, Some(TOTAL));
    assert_every_increment_counted(returned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_sharing_a_custom_backend_lose_no_update() {
    two_pipelines_share_one_store(Arc::new(YieldingMapStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_sharing_an_in_memory_store_lose_no_update() {
    two_pipelines_share_one_store(Arc::new(InMemoryState::new(&StateConfig::new()))).await;
}
