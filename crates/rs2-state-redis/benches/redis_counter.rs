//! Keyed counter over a local Redis: events over 1,000 keys, summed per key with
//! `stateful_fold_rs2` (one event at a time: each event's lock-and-read and
//! write-and-release round trips before the next event) and with `stateful_fold_rs2_par`
//! (many keys in flight, their requests batched into one script call; events of one key
//! waiting behind each other taken as one transition), against hand-written redis-rs loops in
//! the same run: `INCRBY` one request at a time, and `INCRBY` in pipelines. The sequential
//! runs and `_par` with up to 1,024 in flight count 20,000 events; `_par` with 4,096 and
//! 16,384 in flight count 100,000 (so that most of the input runs with the window full).
//!
//! Needs a server: `RS2_REDIS_URL=redis://127.0.0.1:16379 cargo bench -p rs2-state-redis`
//! (`scripts/redis-servers.sh start` prints the line). Without the variable it prints why and
//! measures nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{stream, StreamExt};
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{StateAccess, StateConfig, StateStorage};
use rs2_state_redis::RedisState;

const EVENTS: usize = 20_000;
/// The input of the runs with more events in flight than the short input has per key-round:
/// long enough that most of it runs with the window full.
const LONG_EVENTS: usize = 100_000;
const KEYS: usize = 1_000;

fn events(n: usize) -> Vec<(u32, u64)> {
    (0..n).map(|i| ((i * 7919 % KEYS) as u32, 1)).collect()
}

fn config(store: &RedisState) -> StateConfig {
    StateConfig::new()
        .ttl(Duration::from_secs(600))
        .with_custom_storage(Arc::new(store.clone()))
}

async fn fold_sequential(store: &RedisState, events: Vec<(u32, u64)>) -> u64 {
    stream::iter(events)
        .stateful_fold_rs2(
            config(store),
            |e: &(u32, u64)| e.0.to_string(),
            0u64,
            |sum, e, _s: StateAccess| async move { sum + e.1 },
        )
        .fold(0u64, |acc, n| async move { acc + n.expect("redis fold") })
        .await
}

async fn fold_par(store: &RedisState, events: Vec<(u32, u64)>, n: usize) -> u64 {
    stream::iter(events)
        .stateful_fold_rs2_par(
            config(store),
            |e: &(u32, u64)| e.0.to_string(),
            n,
            0u64,
            |sum, e, _s: StateAccess| async move { sum + e.1 },
        )
        .fold(0u64, |acc, n| async move { acc + n.expect("redis fold") })
        .await
}

async fn incr_sequential(
    conn: &mut redis::aio::MultiplexedConnection,
    events: &[(u32, u64)],
) -> u64 {
    let mut sum = 0;
    for (k, n) in events {
        let v: u64 = redis::cmd("INCRBY")
            .arg(format!("bench-incr:{k}"))
            .arg(n)
            .query_async(conn)
            .await
            .expect("incrby");
        sum += v;
    }
    sum
}

async fn incr_pipelined(
    conn: &mut redis::aio::MultiplexedConnection,
    events: &[(u32, u64)],
) -> u64 {
    let mut sum = 0;
    for chunk in events.chunks(256) {
        let mut p = redis::pipe();
        for (k, n) in chunk {
            p.cmd("INCRBY").arg(format!("bench-incr:{k}")).arg(n);
        }
        let vs: Vec<u64> = p.query_async(conn).await.expect("pipeline");
        sum += vs.iter().sum::<u64>();
    }
    sum
}

fn redis_counter(c: &mut Criterion) {
    let Ok(url) = std::env::var("RS2_REDIS_URL") else {
        eprintln!("redis_counter: RS2_REDIS_URL is not set; start a server (scripts/redis-servers.sh start) and set it");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(RedisState::connect(&url))
        .expect("connect")
        .with_prefix("rs2-bench:");
    let client = redis::Client::open(url.as_str()).unwrap();
    let conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let evs = events(EVENTS);
    let long = events(LONG_EVENTS);
    // Check: a fresh store's fold sums 1..=count per key.
    rt.block_on(store.clear()).unwrap();
    let per_key = (EVENTS / KEYS) as u64;
    let want = KEYS as u64 * per_key * (per_key + 1) / 2;
    assert_eq!(
        rt.block_on(fold_par(&store, evs.clone(), 256)),
        want,
        "fold_par sum"
    );

    let mut group = c.benchmark_group("redis_counter");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("fold_sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    fold_sequential(&store, evs.clone()).await;
                }
                start.elapsed()
            })
        })
    });
    for (n, input) in [
        (64, &evs),
        (256, &evs),
        (1024, &evs),
        (4096, &long),
        (16384, &long),
    ] {
        group.throughput(Throughput::Elements(input.len() as u64));
        group.bench_function(format!("fold_par_{n}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        fold_par(&store, input.clone(), n).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("hand_incrby_sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    incr_sequential(&mut conn.clone(), &evs).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("hand_incrby_pipelined", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    incr_pipelined(&mut conn.clone(), &evs).await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(store.clear()).unwrap();
}

criterion_group!(benches, redis_counter);
criterion_main!(benches);
