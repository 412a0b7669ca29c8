//! Keyed counter on the durable store (`DurableState`, fjall) beside the in-memory store and
//! the hand-written reference loop, over the same 1,000,000 pre-built events on 10,000 keys.
//!
//! * `durable_counter`: batched durability (the default: flushed and synced every 100 ms).
//!   Each iteration opens a fresh store in a new temp directory (not timed), counts every event
//!   and ends with `flush()` (timed), so the count is on disk when the clock stops.
//! * `durable_counter_strict`: strict durability (every acknowledged write is in the OS, so it
//!   survives `kill -9`), on the first 100,000 events.
//! * `durable_distinct_keys`: 1,000,000 distinct keys, each counted once (every event a new
//!   key, 1M keys on disk at the end).
//!
//! Run: `cargo bench -p rs2-benches --bench durable_counter`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{stream, StreamExt};
use rs2::state::{Durability, DurableState, StateAccess, StateConfig, StatefulStreamExt};
use rs2_benches::reference::{self, key, op_fold, reference_loop, sum, Ev, EVENTS, KEYS};

/// A fresh store in a new temp directory (the directory goes when the pair is dropped).
fn fresh(durability: Durability) -> (DurableState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DurableState::builder(dir.path())
        .durability(durability)
        .open()
        .expect("open durable store");
    (store, dir)
}

fn config(store: &DurableState) -> StateConfig {
    StateConfig::new()
        .ttl(Duration::from_secs(24 * 3600))
        .with_custom_storage(Arc::new(store.clone()))
}

/// `stateful_map_rs2` as a keyed counter (`get`, add one, `set`) on `store`, flushed at the end.
async fn durable_map(store: &DurableState, events: Vec<Ev>) -> u64 {
    let total = sum(stream::iter(events).stateful_map_rs2(
        config(store),
        key,
        |_e: Ev, state: StateAccess| async move {
            let n = state.get::<u64>().await.unwrap_or(0) + 1;
            state.set(&n).await.expect("durable set");
            n
        },
    ))
    .await;
    store.flush().expect("flush");
    total
}

/// `stateful_fold_rs2` as a keyed counter on `store`, flushed at the end.
async fn durable_fold(store: &DurableState, events: Vec<Ev>) -> u64 {
    let total = sum(stream::iter(events)
        .stateful_fold_rs2(
            config(store),
            key,
            0u64,
            |n, _e: Ev, _s: StateAccess| async move { n + 1 },
        )
        .map(|n| n.expect("durable fold")))
    .await;
    store.flush().expect("flush");
    total
}

fn bench_counter(c: &mut Criterion, group_name: &str, durability: Durability, n: usize) {
    let events = reference::events(n, KEYS);
    let rt = reference::runtime();
    let want = rt.block_on(reference_loop(events.clone()));
    for (name, got) in [
        ("map", {
            let (store, _dir) = fresh(durability);
            rt.block_on(durable_map(&store, events.clone()))
        }),
        ("fold", {
            let (store, _dir) = fresh(durability);
            rt.block_on(durable_fold(&store, events.clone()))
        }),
    ] {
        assert_eq!(got, want, "durable {name} counts as the reference loop");
    }
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("reference_loop", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(reference_loop(evs)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("in_memory_fold", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(op_fold(evs)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("durable_map_get_set", |b| {
        b.iter_batched(
            || (events.clone(), fresh(durability)),
            |(evs, (store, dir))| {
                black_box(rt.block_on(durable_map(&store, evs)));
                (store, dir)
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("durable_fold", |b| {
        b.iter_batched(
            || (events.clone(), fresh(durability)),
            |(evs, (store, dir))| {
                black_box(rt.block_on(durable_fold(&store, evs)));
                (store, dir)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn durable_counter(c: &mut Criterion) {
    bench_counter(c, "durable_counter", Durability::default(), EVENTS);
}

fn durable_counter_strict(c: &mut Criterion) {
    bench_counter(c, "durable_counter_strict", Durability::Strict, 100_000);
}

/// Every event a new key: 1,000,000 keys written and flushed.
fn durable_distinct_keys(c: &mut Criterion) {
    let events: Vec<Ev> = (0..EVENTS as u64)
        .map(|i| Ev {
            id: i,
            key: i,
            v: i % 100,
        })
        .collect();
    let rt = reference::runtime();
    let mut group = c.benchmark_group("durable_distinct_keys");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("reference_loop", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(reference_loop(evs)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("durable_map_get_set", |b| {
        b.iter_batched(
            || (events.clone(), fresh(Durability::default())),
            |(evs, (store, dir))| {
                black_box(rt.block_on(durable_map(&store, evs)));
                (store, dir)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    durable_counter,
    durable_counter_strict,
    durable_distinct_keys
);
criterion_main!(benches);
