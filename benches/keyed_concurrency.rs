//! `stateful_map_rs2_par` against `stateful_map_rs2` when the closure awaits I/O: 400 events
//! over 400 keys, each closure awaiting 1 ms (tokio's timer resolution) of simulated I/O.
//! Run: `cargo bench -p rs2-benches --bench keyed_concurrency`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};

const EVENTS: u32 = 400;
const IO: Duration = Duration::from_millis(1);

async fn io_closure(e: u32, state: StateAccess) -> u32 {
    tokio::time::sleep(IO).await;
    let n = state
        .update(|n: Option<u32>| n.unwrap_or(0) + e)
        .await
        .expect("in-memory update");
    n
}

fn keyed_concurrency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("keyed_concurrency_1ms_io");
    group.throughput(Throughput::Elements(u64::from(EVENTS)));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sequential", |b| {
        b.iter(|| {
            rt.block_on(
                stream::iter(0..EVENTS)
                    .stateful_map_rs2(StateConfig::new(), |e: &u32| e.to_string(), io_closure)
                    .count(),
            )
        })
    });
    for n in [8usize, 64] {
        group.bench_function(format!("par_{n}"), |b| {
            b.iter(|| {
                rt.block_on(
                    stream::iter(0..EVENTS)
                        .stateful_map_rs2_par(
                            StateConfig::new(),
                            |e: &u32| e.to_string(),
                            n,
                            io_closure,
                        )
                        .count(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, keyed_concurrency);
criterion_main!(benches);
