//! The original rs2 (crates.io `rs2-stream` 0.3.3, library `rs2_stream`, here renamed
//! `rs2_orig`) against this project's operators and issue 8's reference loop, on the same
//! 1,000,000 pre-built events over 10,000 keys (`rs2_benches::Ev`, keyed by
//! `e.key.to_string()`), on a current-thread tokio runtime, in one criterion group.
//!
//! Opt-in, outside the workspace (the original pulls in rdkafka, jsonschema and tokio's `full`
//! feature, minutes of compiling that CI should not pay):
//!
//! ```sh
//! cargo bench --manifest-path benches/orig-rs2/Cargo.toml
//! ```
//!
//! The original's workloads are written the way its API asks: its closures return boxed futures
//! of `Result`, and its `StateAccess` stores bytes, so the map counter keeps its count as JSON
//! (`serde_json`, which the original uses for its own state). Its fold keeps the accumulator in
//! the operator's own `HashMap`, as the original does. Before timing, every pipeline's sum is
//! checked against this project's.

use std::future::Future;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use futures::{stream, Stream, StreamExt};
use rs2_benches::reference::{
    self, key, op_dedup, op_fold, op_map, op_window, reference_loop, Ev, DEDUP_TTL, EVENTS, KEYS,
    WINDOW,
};
use rs2_orig::state::stream_ext::StateAccess;
use rs2_orig::state::{CustomKeyExtractor, StateConfig, StateError, StatefulStreamExt as _};

fn roomy() -> StateConfig {
    StateConfig::new().max_size(100_000)
}

fn ok<T>(r: Result<T, StateError>) -> T {
    r.expect("original rs2 in-memory operator")
}

async fn sum(s: impl Stream<Item = Result<u64, StateError>>) -> u64 {
    reference::sum(s.map(ok)).await
}

/// The original's `stateful_map_rs2` as a keyed counter: get, add one, set.
async fn orig_map(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events).stateful_map_rs2(
        roomy(),
        CustomKeyExtractor::new(key),
        |_e: Ev, state: StateAccess| {
            Box::pin(async move {
                let n = match state.get().await {
                    Some(bytes) => serde_json::from_slice::<u64>(&bytes)?,
                    None => 0,
                } + 1;
                state
                    .set(&serde_json::to_vec(&n)?)
                    .await
                    .map_err(|e| StateError::Storage(e.to_string()))?;
                Ok(n)
            })
        },
    ))
    .await
}

/// The original's `stateful_fold_rs2` as a keyed counter.
async fn orig_fold(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events).stateful_fold_rs2(
        roomy(),
        CustomKeyExtractor::new(key),
        0u64,
        |n, _e: Ev, _s: StateAccess| Box::pin(async move { Ok(n + 1) }),
    ))
    .await
}

/// The original's `stateful_deduplicate_rs2`: the sum of the kept events' `v`.
async fn orig_dedup(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events)
        .stateful_deduplicate_rs2(roomy(), CustomKeyExtractor::new(key), DEDUP_TTL, |e| e)
        .map(|e| e.map(|e| e.v)))
    .await
}

/// The original's `stateful_window_rs2` (tumbling, 100): each full window's `v`s summed.
async fn orig_window(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events).stateful_window_rs2(
        roomy(),
        CustomKeyExtractor::new(key),
        WINDOW,
        |w: Vec<Ev>, _s: StateAccess| {
            Box::pin(async move { Ok(w.iter().map(|e| e.v).sum::<u64>()) })
        },
    ))
    .await
}

/// `run` once over a copy of `events`, untimed.
fn run_once<F: Future<Output = u64>>(
    rt: &tokio::runtime::Runtime,
    events: &[Ev],
    run: fn(Vec<Ev>) -> F,
) -> u64 {
    rt.block_on(run(events.to_vec()))
}

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

fn original_vs_this(c: &mut Criterion) {
    let events = reference::events(EVENTS, KEYS);
    let rt = reference::runtime();
    let want = run_once(&rt, &events, reference_loop);
    assert_eq!(
        run_once(&rt, &events, orig_map),
        want,
        "original map counter"
    );
    assert_eq!(
        run_once(&rt, &events, orig_fold),
        want,
        "original fold counter"
    );
    assert_eq!(
        run_once(&rt, &events, orig_dedup),
        run_once(&rt, &events, op_dedup),
        "dedup: original and this project differ"
    );
    assert_eq!(
        run_once(&rt, &events, orig_window),
        run_once(&rt, &events, op_window),
        "window: original and this project differ"
    );

    let mut group = c.benchmark_group("original_rs2_1m_events_10k_keys");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let g = &mut group;
    bench(g, &rt, &events, "reference_loop", reference_loop);
    bench(g, &rt, &events, "map_get_set/rs2_0.3.3", orig_map);
    bench(g, &rt, &events, "map_get_set/this_project", op_map);
    bench(g, &rt, &events, "fold/rs2_0.3.3", orig_fold);
    bench(g, &rt, &events, "fold/this_project", op_fold);
    bench(g, &rt, &events, "dedup/rs2_0.3.3", orig_dedup);
    bench(g, &rt, &events, "dedup/this_project", op_dedup);
    bench(g, &rt, &events, "window_100/rs2_0.3.3", orig_window);
    bench(g, &rt, &events, "window_100/this_project", op_window);
    group.finish();
}

criterion_group!(benches, original_vs_this);
criterion_main!(benches);
