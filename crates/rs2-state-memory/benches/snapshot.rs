//! `InMemoryState::snapshot_to` and `restore_from` for 100,000 entries (keys `key-N`, 8-byte
//! values), beside the baseline of writing the same 100,000 new keys with `set`, so the
//! snapshot's cost reads as a multiple of filling the store. Each snapshot iteration writes
//! over the same file (atomic replace, fsync); each restore loads into a fresh store.
//!
//! Run: `cargo bench -p rs2-state-memory --bench snapshot`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rs2_state_core::{StateConfig, StateStorage};
use rs2_state_memory::InMemoryState;

const ENTRIES: usize = 100_000;

fn empty() -> InMemoryState {
    InMemoryState::new(
        &StateConfig::new()
            .ttl(Duration::from_secs(3600))
            .max_size(ENTRIES),
    )
}

fn filled() -> InMemoryState {
    let store = empty();
    for i in 0..ENTRIES {
        futures::executor::block_on(store.set(&format!("key-{i}"), &(i as u64).to_le_bytes()))
            .expect("in-memory set");
    }
    store
}

fn snapshot(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.snap");
    let source = filled();
    assert_eq!(source.snapshot_to(&path).expect("snapshot"), ENTRIES);

    let mut group = c.benchmark_group("snapshot_100k");
    group.throughput(Throughput::Elements(ENTRIES as u64));
    group.sample_size(10);
    group.bench_function("baseline_set_new_keys", |b| b.iter(filled));
    group.bench_function("snapshot_to", |b| {
        b.iter(|| source.snapshot_to(&path).expect("snapshot"))
    });
    group.bench_function("restore_from", |b| {
        b.iter_batched(
            empty,
            |store| {
                store.restore_from(&path).expect("restore");
                store
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
