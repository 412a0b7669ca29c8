//! "No cliffs": throughput as the number of distinct keys grows, 10 → 10,000 → 1,000,000.
//!
//! For each key count, 1,000,000 pre-built events whose keys go **round-robin** (`user-{i % keys}`),
//! so the 1,000,000-key run sees every key exactly once (every event inserts a new key). Each
//! operator runs twice over the same events:
//! * `unbounded`: `max_size` = 2 × keys, nothing is ever evicted;
//! * `bounded`: `max_size` below the key count (10 keys: 5; 10,000: 5,000; 1,000,000: 10,000).
//!   Round-robin over more keys than the store holds is the LRU's worst case: every event misses,
//!   inserts its key and evicts the least recently used one.
//!
//! Operators: `stateful_map_rs2` keyed counter (`get` + `set` of a `u64`), `stateful_fold_rs2`
//! counter, `stateful_deduplicate_rs2` (ttl 1 h), and, per key count, the hand-written
//! `HashMap<String, u64>` counting loop of `keyed_counter.rs` (`loop/keys=K/unbounded`).
//!
//! Benchmark ids are `cardinality/{map,fold,dedup,loop}/keys={10,10000,1000000}/{bounded,unbounded}`;
//! `scripts/plot_cardinality.py` reads them back from criterion's output and draws
//! `docs/img/throughput-vs-keys.svg`. The criterion: every rate within 4× of the same
//! operator's 10,000-key rate.
//!
//! Run: `cargo bench -p rs2-benches --bench cardinality` (about 3 minutes), then
//! `python3 scripts/plot_cardinality.py`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use futures::{future, stream, Stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};
use rs2_suite::UserEvent;

const EVENTS: usize = 1_000_000;
/// (distinct keys, `max_size` of the bounded runs).
const CASES: [(usize, usize); 3] = [(10, 5), (10_000, 5_000), (1_000_000, 10_000)];
const TTL: Duration = Duration::from_secs(3600);

/// `n` events whose keys go round-robin over `keys` users.
fn round_robin_events(n: usize, keys: usize) -> Vec<UserEvent> {
    (0..n)
        .map(|i| UserEvent {
            user_id: format!("user-{}", i % keys),
            amount: (i % 100) as f64,
            timestamp: i as u64,
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn key(e: &UserEvent) -> String {
    e.user_id.clone()
}

/// Drains a stream, counting its items.
async fn drain<S: Stream>(s: S) -> usize {
    s.fold(0usize, |n, x| {
        black_box(x);
        future::ready(n + 1)
    })
    .await
}

/// The hand-written loop of `keyed_counter.rs`.
fn hand_written(events: Vec<UserEvent>) -> usize {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let out = stream::iter(events).then(|e| {
        let count = counts.entry(e.user_id.clone()).or_insert(0);
        *count += 1;
        let n = *count;
        async move { (e.user_id, n) }
    });
    futures::executor::block_on(drain(out))
}

async fn with_map(events: Vec<UserEvent>, config: StateConfig) -> usize {
    drain(
        stream::iter(events).stateful_map_rs2(config, key, |e, state: StateAccess| async move {
            let n = state.get::<u64>().await.unwrap_or(0) + 1;
            state.set(&n).await.expect("in-memory set");
            (e.user_id, n)
        }),
    )
    .await
}

async fn with_fold(events: Vec<UserEvent>, config: StateConfig) -> usize {
    drain(stream::iter(events).stateful_fold_rs2(
        config,
        key,
        0u64,
        |n, _e, _state: StateAccess| async move { n + 1 },
    ))
    .await
}

async fn with_dedup(events: Vec<UserEvent>, config: StateConfig) -> usize {
    drain(stream::iter(events).stateful_deduplicate_rs2(config, key, TTL)).await
}

fn bench_key_count(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    keys: usize,
    bounded_max: usize,
) {
    let events = round_robin_events(EVENTS, keys);
    let batch = || events.clone();
    group.bench_function(format!("loop/keys={keys}/unbounded"), |b| {
        b.iter_batched(batch, hand_written, BatchSize::LargeInput)
    });
    for (mode, max_size) in [("unbounded", 2 * keys), ("bounded", bounded_max)] {
        let config = || StateConfig::new().ttl(TTL).max_size(max_size);
        group.bench_function(format!("map/keys={keys}/{mode}"), |b| {
            b.iter_batched(
                batch,
                |evs| rt.block_on(with_map(evs, config())),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("fold/keys={keys}/{mode}"), |b| {
            b.iter_batched(
                batch,
                |evs| rt.block_on(with_fold(evs, config())),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("dedup/keys={keys}/{mode}"), |b| {
            b.iter_batched(
                batch,
                |evs| rt.block_on(with_dedup(evs, config())),
                BatchSize::LargeInput,
            )
        });
    }
}

fn cardinality(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("cardinality");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (keys, bounded_max) in CASES {
        // One key count's events at a time: built once, cloned per iteration.
        bench_key_count(&mut group, &rt, keys, bounded_max);
    }
    group.finish();
}

criterion_group!(benches, cardinality);
criterion_main!(benches);
