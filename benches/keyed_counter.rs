//! Keyed counter: 1,000,000 pre-built events over 10,000 keys, counted per key.
//!
//! Compares `stateful_map_rs2` (get + set through `StateAccess`) and `stateful_fold_rs2` with a
//! hand-written `HashMap<String, u64>` loop over the same events, in the same run.
//! Run: `cargo bench -p rs2-benches --bench keyed_counter`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{future, stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};
use rs2_suite::{keyed_events, UserEvent};

const EVENTS: usize = 1_000_000;
const KEYS: usize = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Room for every key: the bench measures the hot path, not eviction.
fn roomy() -> StateConfig {
    StateConfig::new().max_size(100_000)
}

fn hand_written(events: Vec<UserEvent>) -> usize {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let out = stream::iter(events).then(|e| {
        let count = counts.entry(e.user_id.clone()).or_insert(0);
        *count += 1;
        let n = *count;
        async move { (e.user_id, n) }
    });
    futures::executor::block_on(out.fold(0, |acc, x| {
        black_box(x);
        future::ready(acc + 1)
    }))
}

async fn with_map(events: Vec<UserEvent>) -> usize {
    stream::iter(events)
        .stateful_map_rs2(
            roomy(),
            |e: &UserEvent| e.user_id.clone(),
            |e, state: StateAccess| async move {
                let n = state.get::<u64>().await.unwrap_or(0) + 1;
                state.set(&n).await.expect("in-memory set");
                (e.user_id, n)
            },
        )
        .fold(0, |acc, x| {
            black_box(x);
            future::ready(acc + 1)
        })
        .await
}

async fn with_fold(events: Vec<UserEvent>) -> usize {
    stream::iter(events)
        .stateful_fold_rs2(
            roomy(),
            |e: &UserEvent| e.user_id.clone(),
            0u64,
            |n, _e, _state: StateAccess| async move { n + 1 },
        )
        .fold(0, |acc, x| {
            black_box(x.expect("in-memory fold"));
            future::ready(acc + 1)
        })
        .await
}

fn keyed_counter(c: &mut Criterion) {
    let events = keyed_events(EVENTS, KEYS);
    let rt = runtime();
    let mut group = c.benchmark_group("keyed_counter");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("hand_written_hashmap", |b| {
        b.iter_batched(|| events.clone(), hand_written, BatchSize::LargeInput)
    });
    group.bench_function("stateful_map_rs2_get_set", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(with_map(evs)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("stateful_fold_rs2", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(with_fold(evs)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// 1,000,000 distinct keys through a store bounded at 10,000: every event inserts a key and
/// evicts the least recently used one.
fn distinct_keys_bounded(c: &mut Criterion) {
    let events = keyed_events_distinct(EVENTS);
    let rt = runtime();
    let mut group = c.benchmark_group("distinct_keys_max_size_10k");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("stateful_map_rs2_get_set", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| {
                rt.block_on(async {
                    stream::iter(evs)
                        .stateful_map_rs2(
                            StateConfig::new().max_size(10_000),
                            |e: &UserEvent| e.user_id.clone(),
                            |e, state: StateAccess| async move {
                                let n = state.get::<u64>().await.unwrap_or(0) + 1;
                                state.set(&n).await.expect("in-memory set");
                                (e.user_id, n)
                            },
                        )
                        .fold(0, |acc, x| {
                            black_box(x);
                            future::ready(acc + 1)
                        })
                        .await
                })
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn keyed_events_distinct(n: usize) -> Vec<UserEvent> {
    (0..n)
        .map(|i| UserEvent {
            user_id: format!("user-{i}"),
            amount: (i % 100) as f64,
            timestamp: i as u64,
        })
        .collect()
}

criterion_group!(benches, keyed_counter, distinct_keys_bounded);
criterion_main!(benches);
