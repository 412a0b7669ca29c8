//! Allocations per event, per operator, counted by a counting global allocator: 1,000,000
//! pre-built events over 10,000 keys (`keyed_events`, the input of `operators.rs`), each
//! operator run once to warm up and then once measured, on a fresh operator each time.
//! The input is cloned before counting starts, so its allocations are not counted (freeing it
//! as the run consumes it is not an allocation). Beside the hand-written `HashMap<String, u64>`
//! counting loop of `keyed_counter.rs`.
//!
//! "allocations" counts `alloc` and `realloc` calls, "bytes" the sizes they asked for. The key
//! extractor in these benches (`|e| e.user_id.clone()`) allocates the key's `String`: that is
//! one allocation per event that belongs to the extractor, as the loop's `entry(key.clone())`
//! does. What an operator must hand its closure or yield is counted too: window and pattern
//! decode their `UserEvent`s (one `String` each, and the `Vec`) for the closure; reduce yields
//! its running `UserEvent`.
//!
//! Run: `cargo bench -p rs2-benches --bench allocations`.

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use futures::{future, stream, Stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};
use rs2_benches::CountingAlloc;
use rs2_suite::{keyed_events, UserEvent};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const EVENTS: usize = 1_000_000;
const KEYS: usize = 10_000;
const TTL: Duration = Duration::from_secs(3600);

fn roomy() -> StateConfig {
    StateConfig::new().max_size(100_000)
}

fn key(e: &UserEvent) -> String {
    e.user_id.clone()
}

/// Drains a stream, counting its items.
async fn drain<S: Stream>(s: S) -> usize {
    s.fold(0usize, |n, x| {
        black_box(x);
        future::ready(n + 1)
    })
    .await
}

fn hand_written(events: Vec<UserEvent>) -> usize {
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let out = stream::iter(events).then(|e| {
        let count = counts.entry(e.user_id.clone()).or_insert(0);
        *count += 1;
        let n = *count;
        async move { (e.user_id, n) }
    });
    futures::executor::block_on(drain(out))
}

type Run<'a> = Box<dyn Fn(Vec<UserEvent>) -> usize + 'a>;

/// A run of `make`'s stream on the runtime, over the events it is given.
fn on<'a, S, M>(rt: &'a tokio::runtime::Runtime, make: M) -> Run<'a>
where
    S: Stream,
    M: Fn(stream::Iter<std::vec::IntoIter<UserEvent>>) -> S + 'a,
{
    Box::new(move |evs| rt.block_on(drain(make(stream::iter(evs)))))
}

async fn counter(e: UserEvent, state: StateAccess) -> (String, u64) {
    let n = state.get::<u64>().await.unwrap_or(0) + 1;
    state.set(&n).await.expect("in-memory set");
    (e.user_id, n)
}

fn first_50(_e: &UserEvent, state: StateAccess) -> impl Future<Output = bool> {
    async move {
        state
            .update(|n: Option<u32>| n.unwrap_or(0) + 1)
            .await
            .expect("in-memory update")
            <= 50
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this measurement takes no options.
    let events = keyed_events(EVENTS, KEYS);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");

    let runs: Vec<(&str, Run<'_>)> =
        vec![
            (
                "hand-written `HashMap<String, u64>` loop",
                Box::new(hand_written),
            ),
            (
                "`stateful_map_rs2` (get + set counter)",
                on(&rt, |s| s.stateful_map_rs2(roomy(), key, counter)),
            ),
            (
                "`stateful_map_rs2_par` (get + set counter, n = 8)",
                on(&rt, |s| s.stateful_map_rs2_par(roomy(), key, 8, counter)),
            ),
            (
                "`stateful_fold_rs2` (u64 counter)",
                on(&rt, |s| {
                    s.stateful_fold_rs2(roomy(), key, 0u64, |n, _e, _s: StateAccess| async move {
                        n + 1
                    })
                }),
            ),
            (
                "`stateful_reduce_rs2` (sum of amounts, yields the `UserEvent`)",
                on(&rt, |s| {
                    s.stateful_reduce_rs2(
                        roomy(),
                        key,
                        |a: UserEvent, e, _s: StateAccess| async move {
                            UserEvent {
                                amount: a.amount + e.amount,
                                ..a
                            }
                        },
                    )
                }),
            ),
            (
                "`stateful_filter_rs2` (first 50 per key)",
                on(&rt, |s| s.stateful_filter_rs2(roomy(), key, first_50)),
            ),
            (
                "`stateful_deduplicate_rs2` (ttl 1 h)",
                on(&rt, |s| s.stateful_deduplicate_rs2(roomy(), key, TTL)),
            ),
            (
                "`stateful_throttle_rs2` (100 per minute)",
                on(&rt, |s| {
                    s.stateful_throttle_rs2(roomy(), key, 100, Duration::from_secs(60))
                }),
            ),
            (
                "`stateful_session_rs2` (30 min)",
                on(&rt, |s| {
                    s.stateful_session_rs2(
                        roomy(),
                        key,
                        Duration::from_secs(30 * 60),
                        |e: UserEvent, new: bool, _s: StateAccess| async move { (e, new) },
                    )
                }),
            ),
            (
                "`stateful_window_rs2` (100; decodes 100 events per window)",
                on(&rt, |s| {
                    s.stateful_window_rs2(
                        roomy(),
                        key,
                        100,
                        |w: Vec<UserEvent>, _s: StateAccess| async move {
                            w.iter().map(|e| e.amount).sum::<f64>()
                        },
                    )
                }),
            ),
            (
                "`stateful_pattern_rs2` (3; decodes 3 events per event)",
                on(&rt, |s| {
                    s.stateful_pattern_rs2(
                        roomy(),
                        key,
                        3,
                        |last: Vec<UserEvent>, _s: StateAccess| async move {
                            let rising = last.windows(2).all(|w| w[0].amount < w[1].amount);
                            rising.then_some(last.len())
                        },
                    )
                }),
            ),
        ];

    println!("{EVENTS} pre-built events over {KEYS} keys; per event, after a warm-up run:\n");
    println!("| pipeline | allocations/event | bytes allocated/event | items out |");
    println!("|---|---|---|---|");
    for (name, run) in &runs {
        run(events.clone()); // warm-up
        let input = events.clone();
        let before = CountingAlloc::snapshot();
        let items = run(input);
        let after = CountingAlloc::snapshot();
        let allocations = after.allocations() - before.allocations();
        let bytes = after.bytes_allocated - before.bytes_allocated;
        println!(
            "| {name} | {:.3} | {:.1} | {items} |",
            allocations as f64 / EVENTS as f64,
            bytes as f64 / EVENTS as f64,
        );
    }
}
