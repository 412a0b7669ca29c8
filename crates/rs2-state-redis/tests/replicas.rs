//! Replicas of one pipeline, each on its own tokio runtime (its own threads and connection,
//! as separate processes would be), sharing state in Redis: exact totals, one limit for all,
//! each id passed once; and TTL, prefix isolation and cluster routing.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{cluster, cluster_nodes, redis_url, standalone, unique_prefix};
use futures::{stream, StreamExt};
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{StateAccess, StateConfig, StateStorage};
use rs2_state_redis::RedisState;

const KEYS: usize = 20;
const PER_REPLICA: usize = 400;

/// Runs `f` on a fresh two-thread runtime of its own, on its own thread.
fn on_own_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

enum Target {
    Standalone(String),
    Cluster(Vec<String>),
}

impl Target {
    async fn connect(&self, prefix: &str) -> RedisState {
        match self {
            Target::Standalone(url) => standalone(url, prefix).await,
            Target::Cluster(nodes) => cluster(nodes, prefix).await,
        }
    }
}

fn config(store: RedisState) -> StateConfig {
    StateConfig::new()
        .ttl(Duration::from_secs(600))
        .with_custom_storage(Arc::new(store))
}

/// Two replicas fold the same keys at once (one sequentially, one with keyed concurrency):
/// every count from 1 to the key's total is emitted exactly once between them.
async fn replicas_count_exactly(target: Target) {
    let target = Arc::new(target);
    let prefix = unique_prefix("replicas");
    let replicas: Vec<_> = (0..2)
        .map(|replica| {
            let (target, prefix) = (Arc::clone(&target), prefix.clone());
            on_own_runtime(move || {
                Box::pin(async move {
                    let store = target.connect(&prefix).await;
                    let events = (0..PER_REPLICA).map(move |i| (i + replica) % KEYS);
                    let fold = |n: u64, _e: usize, _s: StateAccess| async move { n + 1 };
                    let key = |e: &usize| format!("user-{e}");
                    let counts: Vec<(usize, u64)> = if replica == 0 {
                        stream::iter(events.map(|e| (e, e)))
                            .stateful_fold_rs2(
                                config(store),
                                |e: &(usize, usize)| key(&e.0),
                                0u64,
                                move |n, e, s| fold(n, e.1, s),
                            )
                            .map(|r| r.expect("fold on redis"))
                            .collect::<Vec<_>>()
                            .await
                            .into_iter()
                            .zip(0..)
                            .map(|(n, i)| ((i + replica) % KEYS, n))
                            .collect()
                    } else {
                        let out: Vec<u64> = stream::iter(events)
                            .stateful_fold_rs2_par(config(store), key, 16, 0u64, fold)
                            .map(|r| r.expect("fold_par on redis"))
                            .collect()
                            .await;
                        out.into_iter()
                            .zip(0..)
                            .map(|(n, i)| ((i + replica) % KEYS, n))
                            .collect()
                    };
                    counts
                })
            })
        })
        .collect();
    let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
    for replica in replicas {
        for (key, n) in replica.join().expect("replica panicked") {
            seen.entry(key).or_default().push(n);
        }
    }
    assert_eq!(seen.len(), KEYS);
    for (key, mut counts) in seen {
        counts.sort_unstable();
        let want: Vec<u64> = (1..=(2 * PER_REPLICA / KEYS) as u64).collect();
        assert_eq!(counts, want, "key user-{key}: each count emitted once");
    }
    target.connect(&prefix).await.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_standalone_count_every_event_once() {
    let Some(url) = redis_url() else { return };
    replicas_count_exactly(Target::Standalone(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_cluster_count_every_event_once() {
    let Some(nodes) = cluster_nodes() else { return };
    replicas_count_exactly(Target::Cluster(nodes)).await;
}

/// Three replicas throttle the same users: together they pass exactly the limit per user,
/// and deduplicate the same ids: together they pass each id once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_rate_limit_and_one_seen_set() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("limits");
    const LIMIT: u32 = 7;
    let replicas: Vec<_> = (0..3)
        .map(|replica| {
            let (url, prefix) = (url.clone(), prefix.clone());
            on_own_runtime(move || {
                Box::pin(async move {
                    let store = standalone(&url, &prefix).await;
                    let users = (0..60).map(move |i| format!("user-{}", (i + replica) % 5));
                    let passed: Vec<String> = stream::iter(users)
                        .stateful_throttle_rs2(
                            config(store.clone()),
                            |u: &String| u.clone(),
                            LIMIT,
                            Duration::from_secs(60),
                        )
                        .map(|r| r.expect("throttle on redis"))
                        .collect()
                        .await;
                    let ids = (0..50).map(move |i| format!("order-{}", (i * 7 + replica) % 40));
                    let unique: Vec<String> = stream::iter(ids)
                        .stateful_deduplicate_rs2(
                            config(store),
                            |id: &String| id.clone(),
                            Duration::from_secs(60),
                        )
                        .map(|r| r.expect("dedup on redis"))
                        .collect()
                        .await;
                    (passed, unique)
                })
            })
        })
        .collect();
    let mut per_user: HashMap<String, u32> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    for replica in replicas {
        let (passed, unique) = replica.join().expect("replica panicked");
        for user in passed {
            *per_user.entry(user).or_default() += 1;
        }
        ids.extend(unique);
    }
    assert_eq!(per_user.len(), 5);
    for (user, n) in &per_user {
        assert_eq!(*n, LIMIT, "{user}: one limit for all replicas");
    }
    ids.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("order-{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "each id passed exactly once across replicas");
    standalone(&url, &prefix).await.clear().await.unwrap();
}

/// The config's TTL reaches Redis: operator state expires on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_state_carries_the_config_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("ttl");
    let store = standalone(&url, &prefix).await;
    let config = StateConfig::new()
        .ttl(Duration::from_millis(300))
        .cleanup_interval(Duration::from_millis(100))
        .with_custom_storage(Arc::new(store.clone()));
    let out: Vec<u64> = stream::iter(["a", "a"])
        .stateful_fold_rs2(
            config.clone(),
            |e: &&str| e.to_string(),
            0u64,
            |n, _e, _s: StateAccess| async move { n + 1 },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(out, [1, 2]);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let value_keys: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":lock")).collect();
    assert_eq!(value_keys.len(), 1, "one state key: {keys:?}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(value_keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 300,
        "PTTL {pttl} should be within the config's 300 ms"
    );
    // Real time: Redis expires by its own clock.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let out: Vec<u64> = stream::iter(["a"])
        .stateful_fold_rs2(
            config,
            |e: &&str| e.to_string(),
            0u64,
            |n, _e, _s: StateAccess| async move { n + 1 },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(out, [1], "the expired count starts again");
    store.clear().await.unwrap();
}

/// Two prefixes on one server keep separate state, and `clear` removes only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_state_and_clear() {
    let Some(url) = redis_url() else { return };
    let base = unique_prefix("iso");
    // One prefix extends the other: a pattern on the shorter must not match the longer.
    let a = standalone(&url, &base).await;
    let b = standalone(&url, &format!("{base}x")).await;
    let braces = standalone(&url, &format!("{base}{{tag}}*?")).await;
    for store in [&a, &b, &braces] {
        store.set("k", store.prefix().as_bytes()).await.unwrap();
    }
    assert_eq!(a.get("k").await.unwrap().unwrap(), a.prefix().as_bytes());
    assert_eq!(b.get("k").await.unwrap().unwrap(), b.prefix().as_bytes());
    a.clear().await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), None);
    assert!(
        b.exists("k").await.unwrap(),
        "clear of {base} removed {base}x's key"
    );
    assert!(braces.exists("k").await.unwrap());
    braces.clear().await.unwrap();
    assert!(!braces.exists("k").await.unwrap());
    assert!(b.exists("k").await.unwrap());
    b.clear().await.unwrap();
}

/// On a cluster, state keys spread over every primary, and each key's lock shares its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_keys_over_every_primary() {
    let Some(nodes) = cluster_nodes() else { return };
    let prefix = unique_prefix("slots");
    let store = cluster(&nodes, &prefix).await;
    let out: Vec<u64> = stream::iter(0..300u32)
        .stateful_fold_rs2_par(
            config(store.clone()),
            |e: &u32| format!("k{}", e % 100),
            32,
            0u64,
            |n, _e, _s: StateAccess| async move { n + 1 },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(out.iter().filter(|&&n| n == 3).count(), 100);
    let mut holding = 0;
    for node in &nodes {
        let client = redis::Client::open(node.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            holding += 1;
        }
    }
    assert_eq!(
        holding,
        nodes.len(),
        "every primary holds some of the 100 keys"
    );
    store.clear().await.unwrap();
    let left = store.get_many(&["fold:k1", "k1"]).await.unwrap();
    assert_eq!(left, [None, None]);
    let again: Vec<u64> = stream::iter(0..1u32)
        .stateful_fold_rs2(
            config(store.clone()),
            |e: &u32| format!("k{e}"),
            0u64,
            |n, _e, _s: StateAccess| async move { n + 1 },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(again, [1], "clear removed the state on every primary");
    store.clear().await.unwrap();
}
