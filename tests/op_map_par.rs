//! `stateful_map_rs2_par`: up to `n` events of different keys at once, one key strictly in
//! order, outputs in input order, nothing lost or duplicated.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2_suite::roomy;

/// (key, how long the closure "does I/O" for, in ms)
type Ev = (u8, u8);

/// Each event: read the key's count, await its I/O, write count + 1; output (key, count).
async fn run(events: Vec<Ev>, concurrency: Option<usize>) -> Vec<(u8, u64)> {
    let f = |(key, io_ms): Ev, state: StateAccess| async move {
        let n: u64 = state.get().await.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(u64::from(io_ms))).await;
        state.set(&(n + 1)).await.expect("in-memory set");
        (key, n + 1)
    };
    let by_key = |e: &Ev| e.0.to_string();
    let input = futures::stream::iter(events);
    match concurrency {
        None => input.stateful_map_rs2(roomy(), by_key, f).collect().await,
        Some(n) => {
            input
                .stateful_map_rs2_par(roomy(), by_key, n, f)
                .collect()
                .await
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the concurrency and however long each closure takes, the output is exactly the
    /// sequential operator's: per-key read-modify-write never interleaves within a key.
    #[test]
    fn equals_the_sequential_result(
        events in proptest::collection::vec((0u8..8, 0u8..20), 0..200),
        n in 1usize..=64,
    ) {
        let rt = runtime();
        let sequential = rt.block_on(run(events.clone(), None));
        let concurrent = rt.block_on(run(events, Some(n)));
        prop_assert_eq!(concurrent, sequential);
    }
}

#[tokio::test(start_paused = true)]
async fn different_keys_overlap_and_finish_sooner() {
    // 64 keys, one event each, 100 ms of I/O: sequentially 6.4 s, at 64 at once 0.1 s.
    let events: Vec<Ev> = (0..64).map(|k| (k, 100)).collect();
    let start = tokio::time::Instant::now();
    let out = run(events.clone(), Some(64)).await;
    assert_eq!(out.len(), 64);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    run(events, Some(8)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(800));
}

#[tokio::test(start_paused = true)]
async fn one_key_never_runs_two_events_at_once() {
    let running = Arc::new(AtomicUsize::new(0));
    let events: Vec<u32> = (0..50).collect();
    let out: Vec<u32> = futures::stream::iter(events)
        .stateful_map_rs2_par(roomy(), |_: &u32| "same".to_string(), 16, {
            let running = running.clone();
            move |e, _state: StateAccess| {
                let running = running.clone();
                async move {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "overlap at {e}");
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    e
                }
            }
        })
        .collect()
        .await;
    assert_eq!(out, (0..50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn outputs_come_in_input_order_even_when_later_events_finish_first() {
    let events: Vec<Ev> = vec![(1, 50), (2, 1), (3, 10), (1, 0)];
    let out = run(events, Some(4)).await;
    assert_eq!(out, [(1, 1), (2, 1), (3, 1), (1, 2)]);
}

#[tokio::test(start_paused = true)]
async fn at_most_n_events_are_taken_ahead_of_the_output() {
    let taken = Arc::new(AtomicUsize::new(0));
    let input = {
        let taken = taken.clone();
        futures::stream::iter(0..1_000u32).inspect(move |_| {
            taken.fetch_add(1, Ordering::SeqCst);
        })
    };
    let mut out = Box::pin(input.stateful_map_rs2_par(
        roomy(),
        |e: &u32| e.to_string(),
        4,
        |e, _state: StateAccess| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            e
        },
    ));
    assert_eq!(out.next().await, Some(0));
    assert!(
        taken.load(Ordering::SeqCst) <= 5,
        "took {}",
        taken.load(Ordering::SeqCst)
    );
    let rest: Vec<u32> = out.collect().await;
    assert_eq!(rest, (1..1_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn empty_input_and_zero_concurrency() {
    let out = run(vec![], Some(8)).await;
    assert!(out.is_empty());
    // 0 behaves as 1: still correct.
    let out = run(vec![(1, 0), (1, 0), (2, 0)], Some(0)).await;
    assert_eq!(out, [(1, 1), (1, 2), (2, 1)]);
}

#[tokio::test]
async fn a_failing_key_extractor_reaches_the_closure_as_an_error() {
    let out: Vec<bool> = futures::stream::iter(vec![1u32, 2])
        .stateful_map_rs2_par(
            roomy(),
            FieldKeyExtractor::new("missing"),
            4,
            |_e, state: StateAccess| async move { state.try_get::<u64>().await.is_err() },
        )
        .collect()
        .await;
    assert_eq!(out, [true, true]);
}
