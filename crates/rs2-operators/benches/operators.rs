//! The operator crate's own bench: `stateful_map_rs2` (get + set counter), `stateful_fold_rs2`
//! (counter), `stateful_deduplicate_rs2` and `stateful_window_rs2` (100) over issue 8's
//! 1,000,000 pre-built events and 10,000 keys, each beside issue 8's reference loop (a
//! `HashMap<String, u64>` counter, `e.key.to_string()` keys) in the same run.
//!
//! Run: `cargo bench -p rs2-operators`.
//!
//! The workloads and the reference loop are `benches/src/reference.rs` of the workspace,
//! compiled in here unchanged, so these figures and `cargo bench -p rs2-benches --bench
//! keyed_counter` / `--bench operators` measure the same code. They are not the same build:
//! this package's dev-dependencies turn on tokio's `test-util` (for the crate's paused-time
//! tests), with which every clock read takes a lock, and the operators read the clock once
//! per event. `docs/decisions/003-benches-without-tokio-test-util.md` gives the difference;
//! the figures users get are those of `rs2-benches`.

use std::future::Future;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};

#[path = "../../../benches/src/reference.rs"]
mod reference;

use reference::{op_dedup, op_fold, op_map, op_window, reference_loop, Ev, EVENTS, KEYS};

/// Times `run` over fresh copies of `events` (copied outside the timed part) on `rt`.
fn bench<F: Future<Output = u64>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    events: &[Ev],
    name: &str,
    run: fn(Vec<Ev>) -> F,
) {
    group.bench_function(name, |b| {
        b.iter_batched(
            || events.to_vec(),
            |evs| rt.block_on(run(evs)),
            BatchSize::LargeInput,
        )
    });
}

fn operators(c: &mut Criterion) {
    let events = reference::events(EVENTS, KEYS);
    let rt = reference::runtime();
    let want = rt.block_on(reference_loop(events.clone()));
    assert_eq!(rt.block_on(op_map(events.clone())), want, "map counter");
    assert_eq!(rt.block_on(op_fold(events.clone())), want, "fold counter");

    let mut group = c.benchmark_group("rs2_operators_1m_events_10k_keys");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let g = &mut group;
    bench(g, &rt, &events, "reference_loop", reference_loop);
    bench(g, &rt, &events, "stateful_map_rs2_get_set", op_map);
    bench(g, &rt, &events, "stateful_fold_rs2", op_fold);
    bench(g, &rt, &events, "dedup/stateful_deduplicate_rs2", op_dedup);
    bench(g, &rt, &events, "window_100/stateful_window_rs2", op_window);
    group.finish();
}

criterion_group!(benches, operators);
criterion_main!(benches);
