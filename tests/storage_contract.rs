//! The storage contract's provided methods: the config's TTL reaches a custom backend with
//! every write (operators' own state and `StateAccess` writes), batched reads and writes, and
//! key locks that exclude each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::{async_trait, StateResult};
use rs2_suite::{by_user, ev, Ev};

/// A map store that records the TTL each write carried (it overrides `set_with_ttl` as a
/// backend with expiry would).
#[derive(Default)]
struct TtlStore {
    values: Mutex<HashMap<String, Vec<u8>>>,
    ttls: Mutex<HashMap<String, Option<Duration>>>,
}

impl TtlStore {
    fn ttl_of(&self, key: &str) -> Option<Option<Duration>> {
        self.ttls.lock().unwrap().get(key).copied()
    }
}

#[async_trait]
impl StateStorage for TtlStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self.values.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.set_with_ttl(key, value, None).await
    }
    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        self.values
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        self.ttls.lock().unwrap().insert(key.to_string(), ttl);
        Ok(())
    }
    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: rs2::state::UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        let next = self.update(key, f).await?;
        self.ttls.lock().unwrap().insert(key.to_string(), ttl);
        Ok(next)
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.values.lock().unwrap().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(self.values.lock().unwrap().contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        self.values.lock().unwrap().clear();
        Ok(())
    }
}

const TTL: Duration = Duration::from_secs(42);

#[tokio::test]
async fn operator_state_writes_carry_the_config_ttl() {
    let store = Arc::new(TtlStore::default());
    let config = StateConfig::new()
        .ttl(TTL)
        .cleanup_interval(Duration::from_secs(1))
        .with_custom_storage(store.clone());
    let events = || futures::stream::iter([ev("a", 1), ev("b", 2), ev("a", 3)]);

    let folded: Vec<_> = events()
        .stateful_fold_rs2(config.clone(), by_user, 0u32, |n, _e: Ev, _s| async move {
            n + 1
        })
        .collect()
        .await;
    assert!(folded.iter().all(Result::is_ok), "{folded:?}");
    let deduped: Vec<_> = events()
        .stateful_deduplicate_rs2(config.clone(), by_user, Duration::from_secs(60))
        .collect()
        .await;
    assert_eq!(deduped.len(), 2);
    let windows: Vec<_> = events()
        .stateful_window_rs2(config.clone(), by_user, 5, |w: Vec<Ev>, _s| async move {
            w.len()
        })
        .collect()
        .await;
    assert!(windows.is_empty());

    for key in ["fold:a", "fold:b", "dedup:a", "dedup:b", "window:a"] {
        assert_eq!(
            store.ttl_of(key),
            Some(Some(TTL)),
            "the write of {key} should carry the config's TTL"
        );
    }
}

#[tokio::test]
async fn state_access_writes_carry_the_config_ttl() {
    let store = Arc::new(TtlStore::default());
    let config = StateConfig::new()
        .ttl(TTL)
        .cleanup_interval(Duration::from_secs(1))
        .with_custom_storage(store.clone());
    let out: Vec<u32> = futures::stream::iter([ev("a", 1), ev("b", 2)])
        .stateful_map_rs2(config, by_user, |e: Ev, state: StateAccess| async move {
            if e.user == "a" {
                state.set(&e.n).await.unwrap();
            } else {
                state
                    .update(|n: Option<u32>| n.unwrap_or(0) + e.n)
                    .await
                    .unwrap();
            }
            e.n
        })
        .collect()
        .await;
    assert_eq!(out, [1, 2]);
    assert_eq!(store.ttl_of("map:a"), Some(Some(TTL)), "set");
    assert_eq!(store.ttl_of("map:b"), Some(Some(TTL)), "update");

    // A hand-built access asks for no expiry unless told.
    let shared: rs2::state::SharedStorage = store.clone();
    let access: StateAccess = StateAccess::new(shared.clone(), "plain".into());
    access.set(&1u8).await.unwrap();
    assert_eq!(store.ttl_of("plain"), Some(None));
    let access: StateAccess =
        StateAccess::new(shared, "timed".into()).with_ttl(Some(Duration::from_secs(7)));
    access.set(&1u8).await.unwrap();
    assert_eq!(store.ttl_of("timed"), Some(Some(Duration::from_secs(7))));
}

#[tokio::test]
async fn batched_methods_default_to_one_call_per_key() {
    let store = TtlStore::default();
    store
        .set_many(&[("x", b"1"), ("y", b"22")], Some(TTL))
        .await
        .unwrap();
    assert_eq!(
        store.get_many(&["y", "missing", "x"]).await.unwrap(),
        [Some(b"22".to_vec()), None, Some(b"1".to_vec())]
    );
    assert_eq!(store.ttl_of("x"), Some(Some(TTL)));
    assert_eq!(
        store.get_many(&[]).await.unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_locks_exclude_each_other_per_key() {
    let store = Arc::new(TtlStore::default());
    let held = store.lock_key("k", Duration::from_secs(1)).await.unwrap();
    // Another key is free.
    store
        .lock_key("other", Duration::from_secs(1))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    // The same key waits until the holder releases it.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let lock = store.lock_key("k", Duration::from_secs(1)).await.unwrap();
            lock.release().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "a second lock of a held key must wait"
    );
    held.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter gets the lock once it is released")
        .unwrap();
}
