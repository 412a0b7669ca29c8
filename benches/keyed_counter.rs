//! Keyed counter: 1,000,000 pre-built events over 10,000 keys, counted per key.
//!
//! Compares `stateful_map_rs2` (get + set through `StateAccess`) and `stateful_fold_rs2` with
//! issue 8's reference loop (`rs2_benches::reference_loop`: a `HashMap<String, u64>` counter
//! in `stream::iter(..).then(..)` on a current-thread tokio runtime) and with the same
//! hand-written loop on `futures`' executor, over the same events (`rs2_benches::Ev`, keyed by
//! `e.key.to_string()`), in the same run. All four yield each event's count and fold the counts
//! into a sum; the sums are checked equal before timing.
//! Run: `cargo bench -p rs2-benches --bench keyed_counter`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{future, stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};
use rs2_benches::reference::{self, op_fold, op_map, reference_loop, Ev, EVENTS, KEYS};
use rs2_suite::UserEvent;

/// The hand-written loop the earlier tables used as the baseline: the reference loop's body on
/// `futures`' executor instead of a tokio runtime.
fn hand_written(events: Vec<Ev>) -> u64 {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let out = stream::iter(events).then(|e| {
        let count = counts.entry(e.key.to_string()).or_insert(0);
        *count += 1;
        future::ready(*count)
    });
    futures::executor::block_on(reference::sum(out))
}

fn keyed_counter(c: &mut Criterion) {
    let events = reference::events(EVENTS, KEYS);
    let rt = reference::runtime();
    let want = rt.block_on(reference_loop(events.clone()));
    assert_eq!(hand_written(events.clone()), want, "hand-written loop");
    assert_eq!(
        rt.block_on(op_map(events.clone())),
        want,
        "stateful_map_rs2"
    );
    assert_eq!(
        rt.block_on(op_fold(events.clone())),
        want,
        "stateful_fold_rs2"
    );
    let mut group = c.benchmark_group("keyed_counter");
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
    group.bench_function("hand_written_hashmap", |b| {
        b.iter_batched(|| events.clone(), hand_written, BatchSize::LargeInput)
    });
    group.bench_function("stateful_map_rs2_get_set", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(op_map(evs)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("stateful_fold_rs2", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| rt.block_on(op_fold(evs)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// 1,000,000 distinct keys through a store bounded at 10,000: every event inserts a key and
/// evicts the least recently used one. The reference loop (10,000 keys, as everywhere) runs in
/// the same group for the "× reference loop" ratio.
fn distinct_keys_bounded(c: &mut Criterion) {
    let events = keyed_events_distinct(EVENTS);
    let reference_events = reference::events(EVENTS, KEYS);
    let rt = reference::runtime();
    let mut group = c.benchmark_group("distinct_keys_max_size_10k");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("reference_loop", |b| {
        b.iter_batched(
            || reference_events.clone(),
            |evs| rt.block_on(reference_loop(evs)),
            BatchSize::LargeInput,
        )
    });
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
