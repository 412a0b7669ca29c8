//! `AdmissionState` on its own: TTL from the last write (moka's clock is `std::time::Instant`,
//! which tokio's paused clock does not move, so TTLs here are short real ones), capacity in
//! entries and in bytes, refusal of a new key that is read less often than the store's
//! entries, and atomic `update`. The storage contract itself (rs2-state-testkit) runs in the
//! root package's `tests/admission_contract.rs`: the kit depends on rs2-operators, which
//! depends on this crate.

use std::sync::Arc;
use std::time::Duration;

use rs2_state_core::{StateConfig, StateError, StateStorage};
use rs2_state_memory::AdmissionState;

#[tokio::test]
async fn an_entry_expires_ttl_after_its_last_write() {
    let store = AdmissionState::new(&StateConfig::new().ttl(Duration::from_millis(200)));
    store.set("a", b"1").await.unwrap();
    store.set("b", b"1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    // A read does not extend the TTL; a write does.
    assert!(store.get("a").await.unwrap().is_some());
    store.set("b", b"2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    // 240 ms after a's write, 120 ms after b's second write.
    assert_eq!(store.get("a").await.unwrap(), None);
    assert!(!store.exists("a").await.unwrap());
    assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    store.run_pending_tasks();
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn a_ttl_past_moka_s_limit_is_clamped_not_a_panic() {
    let store = AdmissionState::new(&StateConfig::new().ttl(Duration::MAX));
    store.set("k", b"v").await.unwrap();
    assert!(store.exists("k").await.unwrap());
}

/// A full store refuses new keys read less often than its entries. The frequencies are
/// estimates (a count-min sketch, halved as it ages), so a few steady keys may lose to a
/// one-off key whose estimate collides upwards: at least 99% must stay. (Half the store is
/// other keys, as in a store in use; when steady keys fill it, every one-off key is weighed
/// against a steady one and about 1% are lost.)
#[tokio::test]
async fn a_full_store_refuses_a_key_read_less_often_than_its_entries() {
    const N: usize = 500;
    let store = AdmissionState::new(&StateConfig::new().max_size(2 * N));
    for i in 0..N {
        store.set(&format!("other-{i}"), b"x").await.unwrap();
        store.set(&format!("steady-{i}"), b"x").await.unwrap();
    }
    // moka counts reads only once the store has been at least half full (at a maintenance
    // run): the steady keys' reads come after that.
    store.run_pending_tasks();
    assert_eq!(store.len(), 2 * N as u64);
    for _ in 0..5 {
        for i in 0..N {
            assert!(store.get(&format!("steady-{i}")).await.unwrap().is_some());
        }
    }
    store.run_pending_tasks();
    for i in 0..10 * N {
        let key = format!("flood-{i}");
        let _ = store.get(&key).await.unwrap();
        store.set(&key, b"x").await.unwrap();
    }
    store.run_pending_tasks();
    assert!(
        store.len() <= 2 * N as u64,
        "len {} over capacity",
        store.len()
    );
    let mut kept = 0;
    for i in 0..N {
        if store.exists(&format!("steady-{i}")).await.unwrap() {
            kept += 1;
        }
    }
    assert!(kept >= N * 99 / 100, "only {kept} of {N} steady keys kept");
}

#[tokio::test]
async fn unbounded_without_max_size() {
    let mut config = StateConfig::new();
    config.max_size = None;
    let store = AdmissionState::new(&config);
    for i in 0..5_000 {
        store.set(&format!("k{i}"), b"x").await.unwrap();
    }
    store.run_pending_tasks();
    assert_eq!(store.len(), 5_000);
    let store = AdmissionState::new(&StateConfig::new().max_size(usize::MAX));
    for i in 0..5_000 {
        store.set(&format!("k{i}"), b"x").await.unwrap();
    }
    store.run_pending_tasks();
    assert_eq!(store.len(), 5_000);
}

#[tokio::test]
async fn a_byte_budget_weighs_key_value_and_overhead() {
    // Each entry: 4-byte key + 100-byte value + overhead. Room for 10 of them; max_size 1
    // is ignored.
    let weight = 4 + 100 + u64::from(AdmissionState::ENTRY_OVERHEAD_BYTES);
    let store = AdmissionState::with_byte_budget(&StateConfig::new().max_size(1), 10 * weight);
    for i in 0..10 {
        store.set(&format!("k{i:03}"), &[0u8; 100]).await.unwrap();
    }
    store.run_pending_tasks();
    assert_eq!(store.len(), 10);
    assert_eq!(store.weighted_size(), 10 * weight);
    // One more never brings the store over its budget once maintenance has run.
    let _ = store.get("k999").await.unwrap();
    store.set("k999", &[0u8; 100]).await.unwrap();
    store.run_pending_tasks();
    assert!(store.weighted_size() <= 10 * weight);
}

#[tokio::test]
async fn clear_and_delete_remove_entries() {
    let store = AdmissionState::new(&StateConfig::new());
    store.set("a", b"1").await.unwrap();
    store.set("b", b"1").await.unwrap();
    store.delete("a").await.unwrap();
    store.delete("absent").await.unwrap();
    assert!(!store.exists("a").await.unwrap());
    assert!(store.exists("b").await.unwrap());
    store.clear().await.unwrap();
    assert_eq!(store.get("b").await.unwrap(), None);
    store.run_pending_tasks();
    assert!(store.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_key_lose_no_write() {
    let store = Arc::new(AdmissionState::new(&StateConfig::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                store
                    .update(
                        "n",
                        Box::new(|cur| {
                            let n = cur.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
                            Ok((n + 1).to_le_bytes().to_vec())
                        }),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let bytes = store.get("n").await.unwrap().unwrap();
    assert_eq!(u64::from_le_bytes(bytes.try_into().unwrap()), 4_000);
}

#[tokio::test]
async fn a_failed_update_writes_nothing() {
    let store = AdmissionState::new(&StateConfig::new());
    store.set("k", b"old").await.unwrap();
    let err = store
        .update("k", Box::new(|_| Err(StateError::Storage("no".into()))))
        .await
        .unwrap_err();
    assert_eq!(err, StateError::Storage("no".into()));
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"old"[..]));
}
