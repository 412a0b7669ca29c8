//! What a durable store promises across a restart: state back as it was, expiry that runs
//! on, one owner per directory, unreadable state reported and left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use proptest::prelude::*;
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{StateAccess, StateConfig, StateStorage};
use rs2_state_durable::{Durability, DurableState};

fn open(dir: &std::path::Path, durability: Durability) -> DurableState {
    DurableState::builder(dir)
        .durability(durability)
        .open()
        .expect("open store")
}

const MODES: [Durability; 3] = [
    Durability::Batched {
        interval: Duration::from_millis(100),
    },
    Durability::Strict,
    Durability::Synced,
];

#[tokio::test]
async fn reopening_restores_every_key_in_every_mode() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), mode);
        for i in 0..1_000u32 {
            store.set(&format!("k{i}"), &i.to_le_bytes()).await.unwrap();
        }
        for i in (0..1_000u32).step_by(3) {
            store.delete(&format!("k{i}")).await.unwrap();
        }
        store
            .update("k1", Box::new(|_| Ok(b"updated".to_vec())))
            .await
            .unwrap();
        // No flush: dropping the last handle writes what is pending.
        drop(store);

        let store = open(dir.path(), mode);
        for i in 0..1_000u32 {
            let want = match i {
                1 => Some(b"updated".to_vec()),
                i if i % 3 == 0 => None,
                i => Some(i.to_le_bytes().to_vec()),
            };
            assert_eq!(
                store.get(&format!("k{i}")).await.unwrap(),
                want,
                "{mode:?} k{i}"
            );
        }
        assert_eq!(store.keys().unwrap().len(), 1_000 - 334, "{mode:?}");
    }
}

#[tokio::test]
async fn a_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::default());
    let err = DurableState::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    // A clone shares the open store instead.
    let clone = store.clone();
    clone.set("a", b"1").await.unwrap();
    assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
    drop((store, clone));
    assert!(DurableState::open(dir.path()).is_ok(), "free once closed");
}

#[tokio::test]
async fn bad_settings_are_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let zero = Durability::Batched {
        interval: Duration::ZERO,
    };
    let err = DurableState::builder(dir.path())
        .durability(zero)
        .open()
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
    let err = DurableState::builder(dir.path())
        .ttl(Duration::ZERO)
        .open()
        .unwrap_err();
    assert!(err.is_validation(), "{err}");
}

#[tokio::test]
async fn a_key_too_long_for_the_store_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::default());
    let key = format!("user-{}", "x".repeat(70_000));
    let err = store.set(&key, b"1").await.unwrap_err().to_string();
    assert!(err.contains("user-xxx") && err.contains("65536"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn values_expire_by_the_ttl_their_write_carries() {
    let dir = tempfile::tempdir().unwrap();
    let store = DurableState::builder(dir.path())
        .ttl(Duration::from_secs(60))
        .open()
        .unwrap();
    store
        .set_with_ttl("short", b"s", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    store.set("default", b"d").await.unwrap();
    store.set_with_ttl("forever", b"f", None).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(store.get("short").await.unwrap(), None);
    assert!(!store.exists("short").await.unwrap());
    assert_eq!(store.get("default").await.unwrap(), Some(b"d".to_vec()));
    store.flush().unwrap();
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(store.get("default").await.unwrap(), None, "the store's ttl");
    assert_eq!(store.get("forever").await.unwrap(), Some(b"f".to_vec()));
    assert_eq!(store.keys().unwrap(), ["forever"]);
}

#[tokio::test]
async fn expiry_runs_on_while_the_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::default());
    store
        .set_with_ttl("brief", b"b", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    store
        .set_with_ttl("lasting", b"l", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    drop(store);
    // Wall-clock expiry stamps: time spent closed counts (a short real sleep).
    std::thread::sleep(Duration::from_millis(250));
    let store = open(dir.path(), Durability::default());
    assert_eq!(store.get("brief").await.unwrap(), None);
    assert_eq!(store.get("lasting").await.unwrap(), Some(b"l".to_vec()));
}

#[tokio::test(start_paused = true)]
async fn operators_write_the_config_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::default());
    let config = StateConfig::new()
        .ttl(Duration::from_secs(30))
        .cleanup_interval(Duration::from_secs(10))
        .with_custom_storage(Arc::new(store.clone()));
    let counts: Vec<u64> = stream::iter(["a", "a"])
        .stateful_fold_rs2(config.clone(), |k: &&str| k.to_string(), 0u64, {
            |n, _k, _s: StateAccess| async move { n + 1 }
        })
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert_eq!(counts, [1, 2]);
    assert_eq!(store.keys().unwrap(), ["fold:a"]);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(
        store.keys().unwrap().is_empty(),
        "expired with the config's TTL"
    );
}

/// Plants `bytes` as the raw record of `key` (as a foreign or damaged writer would).
fn plant_raw(dir: &std::path::Path, key: &str, bytes: &[u8]) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace("rs2-state", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    ks.insert(key, bytes).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

fn read_raw(dir: &std::path::Path, key: &str) -> Option<Vec<u8>> {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace("rs2-state", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    ks.get(key).unwrap().map(|v| v.to_vec())
}

#[tokio::test]
async fn unreadable_state_is_an_error_and_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), Durability::default()));
    plant_raw(dir.path(), "fold:bad", &[9, 1, 2, 3]);
    let store = open(dir.path(), Durability::default());
    let err = store.get("fold:bad").await.unwrap_err().to_string();
    assert!(
        err.contains("fold:bad") && err.contains("layout 9"),
        "{err}"
    );

    let config = StateConfig::new().with_custom_storage(Arc::new(store.clone()));
    let out: Vec<_> = stream::iter(["bad", "good"])
        .stateful_fold_rs2(config, |k: &&str| k.to_string(), 0u64, {
            |n, _k, _s: StateAccess| async move { n + 1 }
        })
        .collect()
        .await;
    let err = out[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("bad") && err.contains("not readable"), "{err}");
    assert_eq!(out[1].as_ref().unwrap(), &1);
    drop(store);
    assert_eq!(read_raw(dir.path(), "fold:bad"), Some(vec![9, 1, 2, 3]));
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8),
    Delete(u8),
    Add(u8, u8),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12u8, any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        2 => (0..12u8).prop_map(Op::Delete),
        4 => (0..12u8, any::<u8>()).prop_map(|(k, v)| Op::Add(k, v)),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn mode() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Batched {
            interval: Duration::from_millis(5)
        }),
        Just(Durability::Batched {
            interval: Duration::from_secs(3600)
        }),
        Just(Durability::Strict),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any sequence of writes, flushes and restarts reads back as a `HashMap` would, with a
    /// pending bound small enough that writers flush too.
    #[test]
    fn the_store_behaves_as_a_map_across_restarts(
        ops in proptest::collection::vec(op(), 1..80),
        mode in mode(),
        max_pending in 1usize..6,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let reopen = || DurableState::builder(dir.path())
                .durability(mode)
                .max_pending(max_pending)
                .open()
                .unwrap();
            let mut store = reopen();
            let mut model: HashMap<String, Vec<u8>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Set(k, v) => {
                        store.set(&format!("k{k}"), &[v]).await.unwrap();
                        model.insert(format!("k{k}"), vec![v]);
                    }
                    Op::Delete(k) => {
                        store.delete(&format!("k{k}")).await.unwrap();
                        model.remove(&format!("k{k}"));
                    }
                    Op::Add(k, v) => {
                        let key = format!("k{k}");
                        let next = store.update(&key, Box::new(move |cur| {
                            let cur = cur.and_then(|c| c.first().copied()).unwrap_or(0);
                            Ok(vec![cur.wrapping_add(v)])
                        })).await.unwrap();
                        let cur = model.get(&key).and_then(|c| c.first().copied()).unwrap_or(0);
                        assert_eq!(next, vec![cur.wrapping_add(v)]);
                        model.insert(key, next);
                    }
                    Op::Flush => store.flush().unwrap(),
                    Op::Reopen => {
                        drop(store);
                        store = reopen();
                    }
                }
                for k in 0..12u8 {
                    let key = format!("k{k}");
                    assert_eq!(store.get(&key).await.unwrap(), model.get(&key).cloned(), "{key}");
                }
            }
            let mut keys: Vec<String> = model.keys().cloned().collect();
            keys.sort();
            assert_eq!(store.keys().unwrap(), keys);
        });
    }
}
