//! `stateful_reduce_rs2_par`: up to `n` events of different keys at once, one key strictly in
//! order, items in input order; same items and state as `stateful_reduce_rs2`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2_suite::{no_hang, roomy, stored, Backend, Overlap};

/// (key, how long the closure "does I/O" for in ms, a value)
type Ev = (u8, u8, u32);

/// Final state per key: (running value in `reduce`, user state in `reduce.user`).
type Stored = Vec<(Option<Ev>, Option<u64>)>;

/// Each later event of a key: read the key's user count, await the event's I/O, write
/// count + 1, and combine (order-sensitive).
async fn run(
    events: Vec<Ev>,
    backend: Backend,
    concurrency: Option<usize>,
) -> (Vec<Result<Ev, StateError>>, Stored) {
    let (config, store) = backend.config();
    let f = |run: Ev, e: Ev, state: StateAccess| async move {
        let n: u64 = state.get().await.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(u64::from(e.1))).await;
        state.set(&(n + 1)).await.expect("set");
        let mixed = (u64::from(run.2) * 31 + u64::from(e.2) + n) % 1_000_003;
        (run.0, e.1, mixed as u32)
    };
    let by_key = |e: &Ev| e.0.to_string();
    let input = futures::stream::iter(events);
    let items = match concurrency {
        None => no_hang(input.stateful_reduce_rs2(config, by_key, f).collect()).await,
        Some(n) => {
            no_hang(
                input
                    .stateful_reduce_rs2_par(config, by_key, n, f)
                    .collect(),
            )
            .await
        }
    };
    let mut state = Vec::new();
    if let Some(store) = store {
        for k in 0..8 {
            let value = stored(&store, &format!("reduce:{k}"))
                .await
                .expect("decodes");
            let user = stored(&store, &format!("reduce.user:{k}"))
                .await
                .expect("decodes");
            state.push((value, user));
        }
    }
    (items, state)
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

    /// Whatever the concurrency, the backend and however long each closure takes, the items
    /// and the final state (running values and user state) are exactly the sequential
    /// operator's.
    #[test]
    fn equals_the_sequential_result(
        events in proptest::collection::vec((0u8..8, 0u8..20, 0u32..1000), 0..200),
        n in 1usize..=64,
        backend in proptest::sample::select(Backend::ALL.to_vec()),
    ) {
        let rt = runtime();
        let sequential = rt.block_on(run(events.clone(), backend, None));
        prop_assert!(sequential.0.iter().all(Result::is_ok));
        let concurrent = rt.block_on(run(events, backend, Some(n)));
        prop_assert_eq!(concurrent, sequential);
    }
}

/// A reduce closure that sleeps 5 ms, counts how many closures run at once, and sums.
fn counting(
    overlap: &Overlap,
) -> impl FnMut(u32, u32, StateAccess) -> futures::future::BoxFuture<'static, u32> {
    let overlap = overlap.clone();
    move |acc, e, _state| Box::pin(overlap.clone().hold(acc + e))
}

#[tokio::test(start_paused = true)]
async fn different_keys_overlap() {
    let overlap = Overlap::default();
    let start = tokio::time::Instant::now();
    // 8 keys, 4 events each: the first of each key seeds it without the closure.
    let items: Vec<u32> = futures::stream::iter(0..32u32)
        .stateful_reduce_rs2_par(
            roomy(),
            |e: &u32| (e % 8).to_string(),
            8,
            counting(&overlap),
        )
        .map(Result::unwrap)
        .collect()
        .await;
    let expected: Vec<u32> = (0..32u32).map(|e| (e % 8..=e).step_by(8).sum()).collect();
    assert_eq!(items, expected);
    assert_eq!(overlap.peak(), 8);
    assert_eq!(start.elapsed(), Duration::from_millis(15));
}

#[tokio::test(start_paused = true)]
async fn one_key_never_runs_two_events_at_once() {
    for backend in Backend::ALL {
        let overlap = Overlap::default();
        let (config, _) = backend.config();
        let items: Vec<u32> = futures::stream::iter(1..=40u32)
            .stateful_reduce_rs2_par(
                config,
                |e: &u32| (e % 2).to_string(),
                16,
                counting(&overlap),
            )
            .map(Result::unwrap)
            .collect()
            .await;
        let expected: Vec<u32> = (1..=40u32)
            .map(|e| (2 - e % 2..=e).step_by(2).sum())
            .collect();
        assert_eq!(items, expected, "{backend:?}");
        assert_eq!(overlap.peak(), 2, "{backend:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn items_come_in_input_order_even_when_later_events_finish_first() {
    let events: Vec<Ev> = vec![(1, 0, 1), (1, 50, 2), (2, 0, 3), (2, 1, 4), (1, 0, 5)];
    for backend in Backend::ALL {
        let (items, _) = run(events.clone(), backend, Some(5)).await;
        assert_eq!(items, run(events.clone(), backend, None).await.0);
        assert_eq!(
            items,
            [
                Ok((1, 0, 1)),
                Ok((1, 50, 33)),
                Ok((2, 0, 3)),
                Ok((2, 1, 97)),
                Ok((1, 0, 1029))
            ]
        );
    }
}

#[tokio::test]
async fn empty_input_and_zero_concurrency() {
    let (items, _) = run(vec![], Backend::Private, Some(8)).await;
    assert!(items.is_empty());
    let events: Vec<Ev> = vec![(1, 0, 1), (1, 0, 2), (2, 0, 3), (1, 3, 4)];
    let (items, _) = run(events.clone(), Backend::Private, Some(0)).await;
    assert_eq!(items, run(events, Backend::Private, None).await.0);
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_running_value_gives_err_items_and_stays_untouched() {
    for backend in [Backend::SharedMemory, Backend::Remote, Backend::SlowRemote] {
        let (config, store) = backend.config();
        let store = store.expect("shared");
        // One byte: not a (String, u32).
        let garbage = vec![0x05];
        store.set("reduce:a", &garbage).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let items: Vec<Result<(String, u32), StateError>> = no_hang(
            futures::stream::iter([("a", 1u32), ("b", 2), ("a", 3), ("b", 4)])
                .map(|(k, v)| (k.to_string(), v))
                .stateful_reduce_rs2_par(config, |e: &(String, u32)| e.0.clone(), 4, {
                    let calls = calls.clone();
                    move |run, e, _state: StateAccess| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async move { (run.0, run.1 + e.1) }
                    }
                })
                .collect(),
        )
        .await;
        assert_eq!(items.len(), 4, "{backend:?}");
        for i in [0, 2] {
            assert!(
                matches!(&items[i], Err(StateError::Serialization(m)) if m.contains("'a'")),
                "{backend:?}: {:?}",
                items[i]
            );
        }
        assert_eq!(items[1], Ok(("b".into(), 2)), "{backend:?}");
        assert_eq!(items[3], Ok(("b".into(), 6)), "{backend:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "only b's second event ran it"
        );
        assert_eq!(
            store.get("reduce:a").await.unwrap(),
            Some(garbage),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn key_extraction_and_config_errors_are_err_items() {
    let items: Vec<Result<u32, StateError>> = futures::stream::iter(vec![1u32, 2])
        .stateful_reduce_rs2_par(
            roomy(),
            FieldKeyExtractor::new("missing"),
            4,
            |a, b, _state: StateAccess| async move { a + b },
        )
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_err), "{items:?}");
    let items: Vec<Result<u32, StateError>> = futures::stream::iter(vec![1u32, 2, 3])
        .stateful_reduce_rs2_par(
            StateConfig::new().max_size(0),
            |e: &u32| e.to_string(),
            4,
            |a, b, _state: StateAccess| async move { a + b },
        )
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| matches!(i, Err(StateError::Validation(m)) if m.contains("reduce"))),
        "{items:?}"
    );
}
