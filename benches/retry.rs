//! Retries: a fold over a custom in-process map (`rs2_suite::MapStore`, reached through the
//! async remote path) under 15% injected call failures (`FaultyStorage`), with and without
//! retries, beside a hand-written get + set loop over the same store. 20,000 events over 100
//! keys. Before timing, each configuration's error items are counted and printed.
//!
//! Backoff waits are set to zero here, so the figures are the CPU cost of retrying; the
//! default policy's waits (10 ms, then 20 ms) add real time to each retried call on top.
//! Run: `cargo bench -p rs2-benches --bench retry -- --warm-up-time 1 --measurement-time 3`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{stream, StreamExt};
use rs2::state::{
    RetryPolicy, StateAccess, StateConfig, StateResult, StateStorage, StatefulStreamExt,
};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::MapStore;

const EVENTS: u64 = 20_000;
const KEYS: u64 = 100;

fn store(fail: f64) -> Arc<FaultyStorage<MapStore>> {
    Arc::new(FaultyStorage::new(MapStore::default()).fail_fraction(fail, 42))
}

/// The fold under test: (error items, sum of the counts emitted).
async fn fold(store: Arc<FaultyStorage<MapStore>>, retry: RetryPolicy) -> (u64, u64) {
    let config = StateConfig::new()
        .max_size(1_000_000)
        .with_custom_storage(store)
        .retry(retry);
    stream::iter(0..EVENTS)
        .stateful_fold_rs2(
            config,
            |i: &u64| format!("k{}", i % KEYS),
            0u64,
            |n, _i, _s: StateAccess| async move { n + 1 },
        )
        .fold((0, 0), |(errors, sum), item| async move {
            match item {
                Ok(n) => (errors, sum + n),
                Err(_) => (errors + 1, sum),
            }
        })
        .await
}

/// The baseline: the same counting as a hand-written loop of `get` + `set` on the store (no
/// lock, no retry).
async fn hand_written(store: Arc<FaultyStorage<MapStore>>) -> (u64, u64) {
    let mut errors = 0;
    let mut sum = 0;
    for i in 0..EVENTS {
        let key = format!("k{}", i % KEYS);
        let step: StateResult<u64> = async {
            let n = match store.get(&key).await? {
                Some(bytes) => u64::from_le_bytes(bytes.try_into().unwrap_or_default()),
                None => 0,
            } + 1;
            store.set(&key, &n.to_le_bytes()).await?;
            Ok(n)
        }
        .await;
        match step {
            Ok(n) => sum += n,
            Err(_) => errors += 1,
        }
    }
    (errors, sum)
}

fn retry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let zero = Duration::ZERO;
    let cases: Vec<(&str, f64, RetryPolicy)> = vec![
        ("fold_no_faults_no_retries", 0.0, RetryPolicy::none()),
        (
            "fold_no_faults_default_retries",
            0.0,
            RetryPolicy::default(),
        ),
        ("fold_15pct_faults_no_retries", 0.15, RetryPolicy::none()),
        (
            "fold_15pct_faults_2_retries",
            0.15,
            RetryPolicy::new(2, zero, zero),
        ),
        (
            "fold_15pct_faults_5_retries",
            0.15,
            RetryPolicy::new(5, zero, zero),
        ),
    ];
    let exact: u64 = KEYS * (EVENTS / KEYS) * (EVENTS / KEYS + 1) / 2;
    let (base_errors, base_sum) = rt.block_on(hand_written(store(0.0)));
    assert_eq!((base_errors, base_sum), (0, exact), "hand-written loop");
    for (name, fail, policy) in &cases {
        let (errors, sum) = rt.block_on(fold(store(*fail), *policy));
        eprintln!("{name}: {errors} error items of {EVENTS} events");
        if *fail == 0.0 {
            assert_eq!((errors, sum), (0, exact), "{name}");
        }
    }
    let (errors, _) = rt.block_on(hand_written(store(0.15)));
    eprintln!("hand_written_15pct_faults: {errors} failed events of {EVENTS}");

    let mut group = c.benchmark_group("retry");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function("hand_written_get_set", |b| {
        b.iter_batched(
            || store(0.0),
            |s| rt.block_on(hand_written(s)),
            BatchSize::LargeInput,
        )
    });
    for (name, fail, policy) in cases {
        group.bench_function(name, |b| {
            b.iter_batched(
                || store(fail),
                |s| rt.block_on(fold(s, policy)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, retry);
criterion_main!(benches);
