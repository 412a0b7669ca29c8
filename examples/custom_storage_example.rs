//! Custom state backends: implementing `StateStorage` and plugging it into the operators.
//!
//! * `AtomicMemoryStorage`: a `Mutex<HashMap<String, Vec<u8>>>` store whose own `update` holds
//!   the lock around read-modify-write, so concurrent updates of a key never lose a write.
//! * `RedisLikeStorage`: a simulated remote store. Every operation is a "round trip" (1 ms of
//!   `tokio::time::sleep`, counted), and `update` takes a server-side per-key lock the way a
//!   Redis backend would (`SET lock:key token NX PX ..`, then get, set, delete-if-token), so it
//!   stays atomic even when several processes share the server; `lock_key` hands the same lock
//!   to the operators for their own state transitions. It can also simulate an outage.
//!
//! Both are plugged in with `StateConfig::new().with_custom_storage(Arc::new(..))` and used by
//! `stateful_map_rs2` and `stateful_fold_rs2`, which share the store under a namespace each.
//!
//! Run: `cargo run --example custom_storage_example` (about two seconds). Expected output
//! (the naive count in part 3 varies from run to run; the round-trip count in part 4 depends on
//! how the operators talk to the store):
//!
//! ```text
//! == 1. AtomicMemoryStorage with stateful_map_rs2 and stateful_fold_rs2 ==
//! map  (orders per user): alice 1, bob 1, alice 2, bob 2, alice 3
//! fold (total per user):  alice $10.00, bob $5.00, alice $30.00, bob $12.50, alice $60.00
//! expected map:  [1, 1, 2, 2, 3]  ok
//! expected fold: [10.0, 5.0, 30.0, 12.5, 60.0]  ok
//! stored keys (each operator under its own namespace): ["fold:alice", "fold:bob", "map:alice", "map:bob"]
//!   map:alice  = 3 (decoded as u64)
//!   fold:alice = 60.00 (decoded as f64)
//! map updates that went through the backend's own atomic update: 5 (expected 5)
//!
//! == 2. Concurrent atomic updates (AtomicMemoryStorage) ==
//! 8 tasks x 1000 updates of one key: expected 8000, actual 8000  ok
//!
//! == 3. Concurrent updates against RedisLikeStorage (1 ms per round trip) ==
//! atomic update:   4 tasks x 25 increments: expected 100, actual 100  ok
//! naive get + set: 4 tasks x 25 increments: actual 25 (75 lost: why update exists)
//!
//! == 4. RedisLikeStorage in a pipeline, namespace "shop" ==
//! map  (orders per user): alice 1, bob 1, alice 2, bob 2, alice 3
//! fold (total per user):  alice $10.00, bob $5.00, alice $30.00, bob $12.50, alice $60.00
//! results as expected  ok
//! stored keys: ["shop/fold:alice", "shop/fold:bob", "shop/map:alice", "shop/map:bob"]
//! round trips to the simulated server: 35 for 10 events
//!
//! == 5. RedisLikeStorage outage: errors reach the caller, nothing panics ==
//! map:  alice not counted: state storage error: key 'shop/map:alice': connection refused (simulated outage)
//! fold: Err(state storage error: key 'shop/fold:alice': connection refused (simulated outage))
//! after recovery, map counts alice again: 4 (expected 4)  ok
//! ```
//!
//! The two stores live in `custom_storage/stores.rs`, which the storage conformance kit's
//! tests also include: `cargo test -p rs2-state-testkit` runs every check of the storage
//! contract against them.
//!
//! The example exits with status 1 if a checked result differs.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{
        CustomKeyExtractor, StateAccess, StateConfig, StateError, StateResult, StateStorage,
        StatefulStreamExt,
    },
};
use serde::{Deserialize, Serialize};

#[path = "custom_storage/stores.rs"]
mod stores;
use stores::{AtomicMemoryStorage, RedisLikeStorage};

// ---------------------------------------------------------------------------------------------
// The pipelines.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    user_id: String,
    amount: f64,
}

fn orders() -> Vec<Order> {
    [
        ("alice", 10.0),
        ("bob", 5.0),
        ("alice", 20.0),
        ("bob", 7.5),
        ("alice", 30.0),
    ]
    .into_iter()
    .map(|(user, amount)| Order {
        user_id: user.to_string(),
        amount,
    })
    .collect()
}

const EXPECTED_COUNTS: [u64; 5] = [1, 1, 2, 2, 3];
const EXPECTED_TOTALS: [f64; 5] = [10.0, 5.0, 30.0, 12.5, 60.0];

fn by_user() -> CustomKeyExtractor<impl Fn(&Order) -> String> {
    CustomKeyExtractor::new(|order: &Order| order.user_id.clone())
}

/// Orders per user with `stateful_map_rs2` (through `StateAccess::update`, which calls the
/// backend's `update`). A state failure is reported in the result, not panicked on.
async fn count_orders(config: StateConfig) -> Vec<(String, Result<u64, StateError>)> {
    futures::stream::iter(orders())
        .stateful_map_rs2(config, by_user(), |order, state| async move {
            let count = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
            (order.user_id, count)
        })
        .collect()
        .await
}

/// Running total per user with `stateful_fold_rs2`: the operator stores the accumulator itself
/// and yields `Err` for an event whose state could not be loaded or saved.
async fn total_per_user(config: StateConfig) -> Vec<(String, Result<f64, StateError>)> {
    let users: Vec<String> = orders().into_iter().map(|o| o.user_id).collect();
    let totals: Vec<Result<f64, StateError>> = futures::stream::iter(orders())
        .stateful_fold_rs2(config, by_user(), 0.0, |total, order, _state| async move {
            total + order.amount
        })
        .collect()
        .await;
    users.into_iter().zip(totals).collect()
}

/// Prints both pipelines' results and checks them against the expected values.
fn check_results(
    counts: &[(String, Result<u64, StateError>)],
    totals: &[(String, Result<f64, StateError>)],
) -> (bool, bool) {
    let show = |r: Result<String, &StateError>| r.unwrap_or_else(|e| format!("Err({e})"));
    let line: Vec<String> = counts
        .iter()
        .map(|(u, c)| format!("{u} {}", show(c.as_ref().map(|n| n.to_string()))))
        .collect();
    println!("map  (orders per user): {}", line.join(", "));
    let line: Vec<String> = totals
        .iter()
        .map(|(u, t)| format!("{u} {}", show(t.as_ref().map(|x| format!("${x:.2}")))))
        .collect();
    println!("fold (total per user):  {}", line.join(", "));

    let counts_ok = counts.len() == EXPECTED_COUNTS.len()
        && counts
            .iter()
            .zip(EXPECTED_COUNTS)
            .all(|((_, c), e)| c.as_ref().ok() == Some(&e));
    let totals_ok = totals.len() == EXPECTED_TOTALS.len()
        && totals
            .iter()
            .zip(EXPECTED_TOTALS)
            .all(|((_, t), e)| t.as_ref().is_ok_and(|x| (x - e).abs() < 1e-9));
    (counts_ok, totals_ok)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISMATCH"
    }
}

async fn part1_atomic_memory() -> bool {
    println!("== 1. AtomicMemoryStorage with stateful_map_rs2 and stateful_fold_rs2 ==");
    let store = Arc::new(AtomicMemoryStorage::new());
    let config = StateConfig::new().with_custom_storage(store.clone());

    let counts = count_orders(config.clone()).await;
    // Every StateAccess::update in the map closure went through the backend's own update.
    let updates = store.updates.load(Ordering::Relaxed);
    let totals = total_per_user(config).await;
    let (counts_ok, totals_ok) = check_results(&counts, &totals);
    println!("expected map:  {EXPECTED_COUNTS:?}  {}", verdict(counts_ok));
    println!("expected fold: {EXPECTED_TOTALS:?}  {}", verdict(totals_ok));

    let keys = store.keys();
    let keys_ok = keys == ["fold:alice", "fold:bob", "map:alice", "map:bob"];
    println!(
        "stored keys (each operator under its own namespace): {keys:?}{}",
        if keys_ok { "" } else { "  MISMATCH" }
    );

    // Any key can be read back by hand through a StateAccess on the same store.
    // (`StateAccess` alone names the default postcard codec; Rust needs it spelled out here.)
    let visits_access: StateAccess = StateAccess::new(store.clone(), "map:alice".to_string());
    let total_access: StateAccess = StateAccess::new(store.clone(), "fold:alice".to_string());
    let visits = visits_access.try_get::<u64>().await;
    let total = total_access.try_get::<f64>().await;
    let read_ok = matches!(visits, Ok(Some(3))) && matches!(total, Ok(Some(t)) if t == 60.0);
    match (visits, total) {
        (Ok(Some(v)), Ok(Some(t))) => {
            println!("  map:alice  = {v} (decoded as u64)");
            println!("  fold:alice = {t:.2} (decoded as f64)");
        }
        (v, t) => println!("  reading back failed: {v:?} / {t:?}  MISMATCH"),
    }
    println!(
        "map updates that went through the backend's own atomic update: {updates} (expected 5)"
    );

    counts_ok && totals_ok && keys_ok && read_ok && updates == 5
}

/// `tasks` tasks each increment `key` `per_task` times with `StateAccess::update`; returns the
/// final value (errors are counted and reported, not unwrapped).
async fn concurrent_increments(
    storage: Arc<dyn StateStorage + Send + Sync>,
    key: &str,
    tasks: u64,
    per_task: u64,
) -> StateResult<u64> {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let access: StateAccess = StateAccess::new(Arc::clone(&storage), key.to_string());
            tokio::spawn(async move {
                let mut failures = 0u64;
                for _ in 0..per_task {
                    if let Err(e) = access.update(|n: Option<u64>| n.unwrap_or(0) + 1).await {
                        eprintln!("  increment failed: {e}");
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    for handle in handles {
        match handle.await {
            Ok(0) => {}
            Ok(n) => eprintln!("  a task had {n} failed increments"),
            Err(e) => eprintln!("  a task panicked: {e}"),
        }
    }
    let reader: StateAccess = StateAccess::new(storage, key.to_string());
    let value = reader.try_get::<u64>().await?;
    Ok(value.unwrap_or(0))
}

async fn part2_concurrency() -> bool {
    println!("\n== 2. Concurrent atomic updates (AtomicMemoryStorage) ==");
    let store = Arc::new(AtomicMemoryStorage::new());
    let (tasks, per_task) = (8, 1000);
    let expected = tasks * per_task;
    match concurrent_increments(store, "counter", tasks, per_task).await {
        Ok(actual) => {
            println!(
                "{tasks} tasks x {per_task} updates of one key: expected {expected}, actual {actual}  {}",
                verdict(actual == expected)
            );
            actual == expected
        }
        Err(e) => {
            println!("reading the counter failed: {e}  MISMATCH");
            false
        }
    }
}

async fn part3_redis_concurrency() -> bool {
    println!("\n== 3. Concurrent updates against RedisLikeStorage (1 ms per round trip) ==");
    let redis = Arc::new(RedisLikeStorage::new(Duration::from_millis(1)));
    let (tasks, per_task) = (4, 25);
    let expected = tasks * per_task;
    let ok = match concurrent_increments(redis.clone(), "counter", tasks, per_task).await {
        Ok(actual) => {
            println!(
                "atomic update:   {tasks} tasks x {per_task} increments: expected {expected}, actual {actual}  {}",
                verdict(actual == expected)
            );
            actual == expected
        }
        Err(e) => {
            println!("reading the counter failed: {e}  MISMATCH");
            false
        }
    };

    // The same with a separate get and set: tasks overwrite each other's increments.
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let access: StateAccess = StateAccess::new(redis.clone(), "naive".to_string());
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let n: u64 = access.get().await.unwrap_or(0);
                    if let Err(e) = access.set(&(n + 1)).await {
                        eprintln!("  naive set failed: {e}");
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        if let Err(e) = handle.await {
            eprintln!("  a task panicked: {e}");
        }
    }
    let reader: StateAccess = StateAccess::new(redis, "naive".to_string());
    match reader.try_get::<u64>().await {
        Ok(n) => {
            let n = n.unwrap_or(0);
            println!(
                "naive get + set: {tasks} tasks x {per_task} increments: actual {n} ({} lost: why update exists)",
                expected.saturating_sub(n)
            );
        }
        Err(e) => println!("naive get + set: reading failed: {e}"),
    }
    ok
}

async fn part4_redis_pipeline(redis: &Arc<RedisLikeStorage>) -> bool {
    println!("\n== 4. RedisLikeStorage in a pipeline, namespace \"shop\" ==");
    let config = StateConfig::new()
        .with_custom_storage(redis.clone())
        .namespace("shop");
    let before = redis.round_trips();
    let counts = count_orders(config.clone()).await;
    let totals = total_per_user(config).await;
    let (counts_ok, totals_ok) = check_results(&counts, &totals);
    println!("results as expected  {}", verdict(counts_ok && totals_ok));
    let keys = redis.keys();
    let keys_ok = keys
        == [
            "shop/fold:alice",
            "shop/fold:bob",
            "shop/map:alice",
            "shop/map:bob",
        ];
    println!(
        "stored keys: {keys:?}{}",
        if keys_ok { "" } else { "  MISMATCH" }
    );
    println!(
        "round trips to the simulated server: {} for {} events",
        redis.round_trips() - before,
        counts.len() + totals.len()
    );
    counts_ok && totals_ok && keys_ok
}

async fn part5_outage(redis: &Arc<RedisLikeStorage>) -> bool {
    println!("\n== 5. RedisLikeStorage outage: errors reach the caller, nothing panics ==");
    let config = StateConfig::new()
        .with_custom_storage(redis.clone())
        .namespace("shop");
    let one_order = || {
        futures::stream::iter(vec![Order {
            user_id: "alice".to_string(),
            amount: 1.0,
        }])
    };

    redis.set_available(false);
    let mapped: Vec<String> = one_order()
        .stateful_map_rs2(config.clone(), by_user(), |order, state| async move {
            match state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await {
                Ok(n) => format!("{} counted: {n}", order.user_id),
                Err(e) => format!("{} not counted: {e}", order.user_id),
            }
        })
        .collect()
        .await;
    let folded: Vec<Result<f64, StateError>> = one_order()
        .stateful_fold_rs2(config.clone(), by_user(), 0.0, |t, o, _state| async move {
            t + o.amount
        })
        .collect()
        .await;
    redis.set_available(true);

    for line in &mapped {
        println!("map:  {line}");
    }
    for item in &folded {
        match item {
            Ok(total) => println!("fold: Ok({total:.2})"),
            Err(e) => println!("fold: Err({e})"),
        }
    }
    let errors_seen = mapped.iter().all(|l| l.contains("not counted"))
        && folded
            .iter()
            .all(|r| matches!(r, Err(StateError::Storage(_))));

    // The failed update wrote nothing: alice had 3 orders, this one makes 4.
    let after: Vec<Result<u64, StateError>> = one_order()
        .stateful_map_rs2(config, by_user(), |_order, state| async move {
            state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await
        })
        .collect()
        .await;
    let recovered = matches!(after.as_slice(), [Ok(4)]);
    match after.first() {
        Some(Ok(n)) => println!(
            "after recovery, map counts alice again: {n} (expected 4)  {}",
            verdict(recovered)
        ),
        other => println!("after recovery: {other:?}  MISMATCH"),
    }
    errors_seen && recovered
}

#[tokio::main]
async fn main() {
    let mut ok = part1_atomic_memory().await;
    ok &= part2_concurrency().await;
    ok &= part3_redis_concurrency().await;
    let redis = Arc::new(RedisLikeStorage::new(Duration::from_millis(1)));
    ok &= part4_redis_pipeline(&redis).await;
    ok &= part5_outage(&redis).await;
    if !ok {
        eprintln!("custom_storage_example: output differs from the expected output");
        std::process::exit(1);
    }
}
