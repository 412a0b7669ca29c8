//! `AdmissionState` (`StateStorageType::InMemoryAdmission`, moka with TinyLFU admission) against
//! `InMemoryState` (`InMemory`, exact LRU), in the same run:
//! * keyed counter: 1,000,000 events over 10,000 keys, `stateful_map_rs2` get + set, store
//!   `max_size` 100,000 (no eviction), with the reference loop as the baseline;
//! * key flood: `tests/key_flood.rs`'s scenario (6,000 background keys, 1,000 steady keys used
//!   5 times, 100,000 one-off keys with 2 steady uses every 100, then a replay of every steady
//!   key: 114,000 events) through `stateful_deduplicate_rs2` on a store of `max_size` 10,000.
//!
//! Run: `cargo bench -p rs2-benches --bench admission`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{future, stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StateStorageType, StatefulStreamExt};
use rs2_benches::reference::{self, key, reference_loop, sum, Ev, EVENTS, KEYS};

const KINDS: [(&str, StateStorageType); 2] = [
    ("in_memory", StateStorageType::InMemory),
    ("in_memory_admission", StateStorageType::InMemoryAdmission),
];

async fn counter(events: Vec<Ev>, kind: StateStorageType) -> u64 {
    sum(stream::iter(events).stateful_map_rs2(
        StateConfig::new().max_size(100_000).storage_type(kind),
        key,
        |_e: Ev, state: StateAccess| async move {
            let n = state.get::<u64>().await.unwrap_or(0) + 1;
            state.set(&n).await.expect("in-memory set");
            n
        },
    ))
    .await
}

fn keyed_counter(c: &mut Criterion) {
    let events = reference::events(EVENTS, KEYS);
    let rt = reference::runtime();
    let want = rt.block_on(reference_loop(events.clone()));
    for (name, kind) in KINDS {
        assert_eq!(rt.block_on(counter(events.clone(), kind)), want, "{name}");
    }
    let mut group = c.benchmark_group("admission_keyed_counter");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("reference_loop", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(reference_loop(evs)),
            BatchSize::LargeInput,
        )
    });
    for (name, kind) in KINDS {
        group.bench_function(format!("stateful_map_rs2_get_set/{name}"), |b| {
            b.iter_batched(
                || events.clone(),
                |evs| rt.block_on(counter(evs, kind)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// `tests/key_flood.rs`'s events, the final replays included.
fn flood_events() -> Vec<String> {
    let steady = |i: usize| format!("steady-{i}");
    let mut keys: Vec<String> = (0..6_000).map(|i| format!("background-{i}")).collect();
    for _ in 0..5 {
        keys.extend((0..1_000).map(steady));
    }
    let mut next = 0;
    for i in 0..100_000 {
        keys.push(format!("flood-{i}"));
        if (i + 1) % 100 == 0 {
            for _ in 0..2 {
                keys.push(steady(next % 1_000));
                next += 1;
            }
        }
    }
    keys.extend((0..1_000).map(steady));
    keys
}

async fn dedup(events: Vec<String>, kind: StateStorageType) -> usize {
    stream::iter(events)
        .stateful_deduplicate_rs2(
            StateConfig::new().max_size(10_000).storage_type(kind),
            |k: &String| k.clone(),
            Duration::from_secs(3600),
        )
        .fold(0, |n, r| {
            black_box(r.expect("in-memory dedup"));
            future::ready(n + 1)
        })
        .await
}

fn key_flood(c: &mut Criterion) {
    let events = flood_events();
    let rt = reference::runtime();
    for (name, kind) in KINDS {
        let passed = rt.block_on(dedup(events.clone(), kind));
        eprintln!(
            "key flood, {name}: {passed} of {} events passed",
            events.len()
        );
    }
    let mut group = c.benchmark_group("admission_key_flood_dedup");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, kind) in KINDS {
        group.bench_function(name, |b| {
            b.iter_batched(
                || events.clone(),
                |evs| rt.block_on(dedup(evs, kind)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, keyed_counter, key_flood);
criterion_main!(benches);
