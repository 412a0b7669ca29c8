//! `stateful_filter_rs2_par`: up to `n` events of different keys at once, one key strictly in
//! order, kept events in input order; same output and state as `stateful_filter_rs2`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2_suite::{no_hang, roomy, stored, Backend, MapStore, Overlap};

/// (key, how long the predicate "does I/O" for in ms, index)
type Ev = (u8, u8, u16);

/// Each event: read the key's number, await its I/O, decide from it, write a new number.
/// Returns the kept events and each key's final number (when the store can be read).
async fn run(
    events: Vec<Ev>,
    backend: Backend,
    concurrency: Option<usize>,
) -> (Vec<Ev>, Vec<Option<u64>>) {
    let (config, store) = backend.config();
    let f = |e: &Ev, state: StateAccess| {
        let (_, io_ms, idx) = *e;
        async move {
            let n: u64 = state.get().await.unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(u64::from(io_ms))).await;
            state
                .set(&((n * 7 + u64::from(io_ms) + 1) % 1_000_003))
                .await
                .expect("set");
            (n + u64::from(idx)) % 3 != 0
        }
    };
    let by_key = |e: &Ev| e.0.to_string();
    let input = futures::stream::iter(events);
    let kept: Vec<Ev> = match concurrency {
        None => no_hang(input.stateful_filter_rs2(config, by_key, f).collect()).await,
        Some(n) => {
            no_hang(
                input
                    .stateful_filter_rs2_par(config, by_key, n, f)
                    .collect(),
            )
            .await
        }
    };
    let mut state = Vec::new();
    if let Some(store) = store {
        for k in 0..8 {
            state.push(
                stored(&store, &format!("filter:{k}"))
                    .await
                    .expect("decodes"),
            );
        }
    }
    (kept, state)
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

    /// Whatever the concurrency, the backend and however long each predicate takes, the kept
    /// events and the final state are exactly the sequential operator's.
    #[test]
    fn equals_the_sequential_result(
        events in proptest::collection::vec((0u8..8, 0u8..20), 0..200),
        n in 1usize..=64,
        backend in proptest::sample::select(Backend::ALL.to_vec()),
    ) {
        let events: Vec<Ev> = events
            .into_iter()
            .enumerate()
            .map(|(i, (k, io))| (k, io, i as u16))
            .collect();
        let rt = runtime();
        let sequential = rt.block_on(run(events.clone(), backend, None));
        let concurrent = rt.block_on(run(events, backend, Some(n)));
        prop_assert_eq!(concurrent, sequential);
    }
}

/// A predicate that sleeps `ms` and counts how many predicates run at once.
fn counting(
    overlap: &Overlap,
) -> impl FnMut(&u32, StateAccess) -> futures::future::BoxFuture<'static, bool> {
    let overlap = overlap.clone();
    move |_e, _state| Box::pin(overlap.clone().hold(true))
}

#[tokio::test(start_paused = true)]
async fn different_keys_overlap() {
    let overlap = Overlap::default();
    let start = tokio::time::Instant::now();
    let kept: Vec<u32> = futures::stream::iter(0..32u32)
        .stateful_filter_rs2_par(roomy(), |e: &u32| e.to_string(), 8, counting(&overlap))
        .collect()
        .await;
    assert_eq!(kept, (0..32).collect::<Vec<_>>());
    assert_eq!(overlap.peak(), 8);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn one_key_never_runs_two_events_at_once() {
    let overlap = Overlap::default();
    let kept: Vec<u32> = futures::stream::iter(0..40u32)
        .stateful_filter_rs2_par(
            roomy(),
            |e: &u32| (e % 2).to_string(),
            16,
            counting(&overlap),
        )
        .collect()
        .await;
    assert_eq!(kept, (0..40).collect::<Vec<_>>());
    // Two keys: never more than one event of each at once.
    assert_eq!(overlap.peak(), 2);
}

#[tokio::test(start_paused = true)]
async fn kept_events_come_in_input_order_even_when_later_ones_finish_first() {
    let events: Vec<Ev> = vec![(1, 50, 0), (2, 1, 1), (3, 10, 2), (1, 0, 3), (4, 0, 4)];
    let (kept, _) = run(events.clone(), Backend::Private, Some(5)).await;
    let (sequential, _) = run(events, Backend::Private, None).await;
    assert_eq!(kept, sequential);
    assert_eq!(kept, [(2, 1, 1), (3, 10, 2), (4, 0, 4)]);
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
    // Drops the odd events: a dropped event counts against the bound until it is passed.
    let mut out = Box::pin(input.stateful_filter_rs2_par(
        roomy(),
        |e: &u32| e.to_string(),
        4,
        |e, _state: StateAccess| {
            let even = e % 2 == 0;
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                even
            }
        },
    ));
    assert_eq!(out.next().await, Some(0));
    assert!(taken.load(Ordering::SeqCst) <= 5, "took {taken:?}");
    assert_eq!(out.next().await, Some(2));
    assert!(taken.load(Ordering::SeqCst) <= 7, "took {taken:?}");
    let rest: Vec<u32> = out.collect().await;
    assert_eq!(rest, (4..1_000).step_by(2).collect::<Vec<_>>());
}

#[tokio::test]
async fn empty_input_and_zero_concurrency() {
    let (kept, _) = run(vec![], Backend::Private, Some(8)).await;
    assert!(kept.is_empty());
    let events: Vec<Ev> = vec![(1, 0, 0), (1, 0, 1), (2, 0, 2), (1, 0, 3)];
    let (kept, _) = run(events.clone(), Backend::Private, Some(0)).await;
    assert_eq!(kept, run(events, Backend::Private, None).await.0);
}

#[tokio::test]
async fn a_failing_key_extractor_or_invalid_config_reaches_the_predicate() {
    let kept: Vec<u32> = futures::stream::iter(vec![1u32, 2])
        .stateful_filter_rs2_par(
            roomy(),
            FieldKeyExtractor::new("missing"),
            4,
            |_e, state: StateAccess| async move { state.try_get::<u64>().await.is_err() },
        )
        .collect()
        .await;
    assert_eq!(kept, [1, 2]);
    let kept: Vec<u32> =
        futures::stream::iter(vec![1u32, 2, 3])
            .stateful_filter_rs2_par(
                StateConfig::new().ttl(Duration::ZERO),
                |e: &u32| e.to_string(),
                4,
                |e, state: StateAccess| {
                    let e = *e;
                    async move {
                        matches!(state.set(&1u8).await, Err(StateError::Validation(_))) && e != 2
                    }
                },
            )
            .collect()
            .await;
    assert_eq!(kept, [1, 3]);
}

#[tokio::test]
async fn state_lives_in_the_filter_namespace() {
    let store = Arc::new(MapStore::default());
    let config = roomy()
        .with_custom_storage(store.clone())
        .namespace("tenant");
    let kept: Vec<&str> = futures::stream::iter(["a", "b", "a"])
        .stateful_filter_rs2_par(
            config,
            |e: &&str| e.to_string(),
            4,
            |_e, state: StateAccess| async move {
                state
                    .update(|n: Option<u8>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap()
                    == 1
            },
        )
        .collect()
        .await;
    assert_eq!(kept, ["a", "b"]);
    let mut keys: Vec<String> = store.0.lock().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["tenant/filter:a", "tenant/filter:b"]);
}
