//! Failures that must stay boring (issue 11's review findings): a hostile key in an error
//! message, a duration past what milliseconds hold, a read check during an outage, a cleanup
//! task outliving its store, keys crafted to collide in a hash table.

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{
    InMemoryState, KeyDisplay, StateAccess, StateConfig, StateError, StateStorage,
    StatefulStreamExt,
};
use rs2_suite::FailingStore;

#[test]
fn error_messages_escape_control_characters_and_bound_long_keys() {
    let forged = "user-1\nINFO all good\u{1b}[0m";
    let msg = StateError::storage_for(forged, "connection refused").to_string();
    assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg}");
    assert!(msg.contains(r"user-1\nINFO all good\u{1b}[0m"), "{msg}");

    let huge = "k".repeat(1_000_000);
    let msg = StateError::storage_for(&huge, "connection refused").to_string();
    assert!(msg.len() < 400, "{} bytes", msg.len());
    assert!(msg.contains("(1000000 bytes)"), "{msg}");
    let msg = StateError::decode_for(&huge, "u64", "bad").to_string();
    assert!(msg.len() < 600, "{} bytes", msg.len());
    let msg = StateError::Storage("timeout".into())
        .with_key(&huge)
        .to_string();
    assert!(msg.len() < 400, "{} bytes", msg.len());
    assert_eq!(KeyDisplay("plain").to_string(), "'plain'");
}

#[tokio::test]
async fn an_operator_error_on_a_hostile_key_is_one_bounded_line() {
    let key = format!("evil\r\n{}", "x".repeat(10_000));
    let config = StateConfig::new().with_custom_storage(Arc::new(FailingStore));
    let out: Vec<_> = stream::iter([key])
        .stateful_fold_rs2(config, |k: &String| k.clone(), 0u64, {
            |n, _k, _s: StateAccess| async move { n + 1 }
        })
        .collect()
        .await;
    let msg = out[0].as_ref().unwrap_err().to_string();
    assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg}");
    assert!(msg.contains(r"evil\r\n") && msg.len() < 600, "{msg}");
}

#[tokio::test(start_paused = true)]
async fn a_ttl_past_u64_milliseconds_means_never_not_at_once() {
    let huge = Duration::from_secs(1 << 61);
    let config = StateConfig::new().ttl(huge);
    config.validate().unwrap();
    let store = InMemoryState::new(&config);
    store.set("k", b"v").await.unwrap();
    tokio::time::advance(Duration::from_secs(86_400)).await;
    assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));

    // An operator's private (typed) state too.
    let counts: Vec<u64> = stream::iter(["a", "a"])
        .then(|k| async move {
            tokio::time::advance(Duration::from_secs(86_400)).await;
            k
        })
        .stateful_fold_rs2(config, |k: &&str| k.to_string(), 0u64, {
            |n, _k, _s: StateAccess| async move { n + 1 }
        })
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert_eq!(counts, [1, 2]);
}

#[tokio::test]
async fn try_exists_reports_an_outage_that_exists_reads_as_false() {
    let access = StateAccess::new(Arc::new(FailingStore), "blocked:card-7".into());
    assert!(!access.exists().await, "exists fails open");
    let err = access.try_exists().await.unwrap_err().to_string();
    assert!(err.contains("card-7") && err.contains("refused"), "{err}");
    assert!(access.try_get::<u64>().await.is_err());

    let store = Arc::new(InMemoryState::new(&StateConfig::new()));
    store.set("present", b"\x01").await.unwrap();
    assert!(StateAccess::new(store.clone(), "present".into())
        .try_exists()
        .await
        .unwrap());
    assert!(!StateAccess::new(store, "absent".into())
        .try_exists()
        .await
        .unwrap());
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_a_store_ends_its_cleanup_task_at_once() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let store = InMemoryState::new(&StateConfig::new().cleanup_interval(Duration::from_secs(3600)));
    assert_eq!(metrics.num_alive_tasks(), before + 1, "the cleanup task");
    drop(store);
    // Not an hour: the task sees the store go on its next poll.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), before);
}

/// HashDoS: keys crafted to share a bucket in one store must not share one in another (a
/// fixed, unkeyed hash would collide everywhere, so an attacker could compute them offline).
/// The stores hash with SipHash-1-3 keyed from the OS random source (decision 010).
#[test]
fn keys_crafted_to_collide_in_one_store_spread_out_in_another() {
    use rs2::state::LocalStorage;
    let config = StateConfig::new();
    let (a, b) = (InMemoryState::new(&config), InMemoryState::new(&config));
    // The attacker's set: keys whose hash in store `a` has its low 12 bits zero (one bucket of
    // a 4,096-bucket table), found by trying 200,000 keys (about 49 of them).
    let crafted: Vec<String> = (0..200_000)
        .map(|i| format!("user-{i}"))
        .filter(|k| a.hash_key(k) & 0xfff == 0)
        .collect();
    assert!(crafted.len() >= 20, "{} keys", crafted.len());
    let buckets: std::collections::HashSet<u64> =
        crafted.iter().map(|k| b.hash_key(k) & 0xfff).collect();
    // Random placement of ~49 keys into 4,096 buckets leaves almost all apart.
    assert!(
        buckets.len() + 3 >= crafted.len(),
        "{} crafted keys fell into {} buckets of the other store",
        crafted.len(),
        buckets.len()
    );
}
