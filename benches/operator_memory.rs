//! Bytes of state per live key, per operator, counted exactly by a counting global allocator
//! (not the resident set): each operator runs over 100,000 keys (`user-0` ... `user-99999`,
//! round-robin, generated lazily so no input is held) with an unbounded store, the stream is
//! held after its input ends, and the live bytes it added are divided by the key count.
//! Beside a `HashMap<String, u64>` holding the same keys.
//!
//! * map: a `u64` counter (`update`); fold: a `u64` accumulator; dedup (ttl 1 h); throttle
//!   (100 per minute; one timestamp per key); session (30 min); window(100) holding a partial
//!   window of 10 events per key (`UserEvent`s, 1,000,000 events in all); filter: a `u64`
//!   counter (get + set); reduce: one `UserEvent` running value; pattern(3): the key's last 3
//!   events; group by (`max_group_size` 100): an open group of 10 events per key, measured
//!   while the input is still open (at its end the groups are emitted); join (window 1 h): 3
//!   events buffered per side and key.
//! * "requested" counts the bytes asked of the allocator; "malloc" the blocks as glibc holds
//!   them (usable size + 8-byte header: small blocks round up to 16 bytes, 32 at least).
//!   Per-key figures include each store's share of spare hash-table capacity, which depends on
//!   where the key count falls between two table sizes.
//!
//! Then memory bounded by `max_size`: 1,000,000 distinct keys through a store with
//! `max_size` 10,000 (map and dedup), live and peak bytes against 10,000 entries' worth, and
//! the same keys unbounded for contrast.
//!
//! Run: `cargo bench -p rs2-benches --bench operator_memory`.

use std::cell::Cell;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use futures::stream::LocalBoxStream;
use futures::{stream, Stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};
use rs2_benches::{CountingAlloc, Snapshot};
use rs2_suite::UserEvent;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KEYS: usize = 100_000;
const WINDOW: usize = 100;
const WINDOW_FILL: usize = 10;
const PATTERN: usize = 3;
const GROUP: usize = 100;
const GROUP_FILL: usize = 10;
const JOIN_FILL: usize = 3;
const BIG_KEYS: usize = 1_000_000;
const BOUND: usize = 10_000;

/// `keys * per_key` events whose keys go round-robin, made as they are taken.
fn events(keys: usize, per_key: usize) -> impl Stream<Item = UserEvent> {
    stream::iter((0..keys * per_key).map(move |i| UserEvent {
        user_id: format!("user-{}", i % keys),
        amount: (i % 100) as f64,
        timestamp: i as u64,
    }))
}

fn key(e: &UserEvent) -> String {
    e.user_id.clone()
}

fn unbounded() -> StateConfig {
    StateConfig::new().max_size(usize::MAX)
}

/// What a run added: live bytes, malloc footprint and blocks, and the peak footprint.
struct Held {
    bytes: usize,
    footprint: usize,
    blocks: usize,
    peak: usize,
}

fn held(before: Snapshot, after: Snapshot, peak: usize) -> Held {
    Held {
        bytes: after.live_bytes.saturating_sub(before.live_bytes),
        footprint: after.live_footprint.saturating_sub(before.live_footprint),
        blocks: after.live_blocks.saturating_sub(before.live_blocks),
        peak: peak.saturating_sub(before.live_footprint),
    }
}

/// Runs the stream `make` builds to its end and measures what it holds while still alive.
fn measure<S: Stream>(rt: &tokio::runtime::Runtime, make: impl FnOnce() -> S) -> Held {
    rt.block_on(async move {
        let before = CountingAlloc::snapshot();
        CountingAlloc::reset_peak();
        let mut stream = pin!(make());
        while let Some(item) = stream.next().await {
            drop(item);
        }
        let after = CountingAlloc::snapshot();
        let peak = CountingAlloc::peak_footprint();
        held(before, after, peak)
    })
}

/// As [`measure`], for an operator that holds its state only until its input ends (group by
/// emits its open groups then): its input yields `keys * per_key` events and then stays
/// pending, and the stream is polled until it has taken them all and waits for more.
fn measure_open<S: Stream>(
    rt: &tokio::runtime::Runtime,
    keys: usize,
    per_key: usize,
    make: impl FnOnce(LocalBoxStream<'static, UserEvent>) -> S,
) -> Held {
    rt.block_on(async move {
        let before = CountingAlloc::snapshot();
        CountingAlloc::reset_peak();
        let taken = Rc::new(Cell::new(0usize));
        let counter = Rc::clone(&taken);
        let input = events(keys, per_key)
            .inspect(move |_| counter.set(counter.get() + 1))
            .chain(stream::pending())
            .boxed_local();
        let mut stream = pin!(make(input));
        // A poll that starts after the last event was taken finishes it and then finds the
        // input pending: two pending polls in a row with every event taken.
        let mut idle = 0;
        while idle < 2 {
            match futures::poll!(stream.next()) {
                Poll::Ready(Some(item)) => drop(item),
                Poll::Ready(None) => panic!("the input never ends"),
                Poll::Pending if taken.get() == keys * per_key => idle += 1,
                Poll::Pending => idle = 0,
            }
        }
        let after = CountingAlloc::snapshot();
        let peak = CountingAlloc::peak_footprint();
        held(before, after, peak)
    })
}

fn row(name: &str, h: &Held, keys: usize) {
    let k = keys as f64;
    println!(
        "| {name} | {:.0} | {:.0} | {:.2} |",
        h.bytes as f64 / k,
        h.footprint as f64 / k,
        h.blocks as f64 / k
    );
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; this measurement takes no options.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    // Warm the runtime up (its first task, timer and thread-locals) outside the measurements.
    let _ = measure(&rt, || {
        events(10, 1).stateful_map_rs2(unbounded(), key, |e, s: StateAccess| async move {
            s.update(|n: Option<u64>| n.unwrap_or(0) + 1).await.ok();
            e
        })
    });

    println!(
        "Bytes per live key, {KEYS} keys (\"user-0\" ... \"user-99999\"), unbounded stores:\n"
    );
    println!("| state | bytes/key requested | bytes/key malloc | blocks/key |");
    println!("|---|---|---|---|");

    let before = CountingAlloc::snapshot();
    let mut map = std::collections::HashMap::<String, u64>::new();
    for i in 0..KEYS {
        map.insert(format!("user-{i}"), i as u64);
    }
    let baseline = held(before, CountingAlloc::snapshot(), 0);
    assert_eq!(map.len(), KEYS);
    drop(map);
    row("`HashMap<String, u64>` (baseline)", &baseline, KEYS);

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_map_rs2(unbounded(), key, |e, s: StateAccess| async move {
            let n = s.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
            (e.amount, n.expect("in-memory update"))
        })
    });
    row("`stateful_map_rs2`, `u64` counter", &h, KEYS);
    let map_per_key = h.footprint as f64 / KEYS as f64;

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_fold_rs2(
            unbounded(),
            key,
            0u64,
            |n, _e, _s: StateAccess| async move { n + 1 },
        )
    });
    row("`stateful_fold_rs2`, `u64`", &h, KEYS);

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_deduplicate_rs2(unbounded(), key, Duration::from_secs(3600))
    });
    row("`stateful_deduplicate_rs2`", &h, KEYS);
    let dedup_per_key = h.footprint as f64 / KEYS as f64;

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_throttle_rs2(unbounded(), key, 100, Duration::from_secs(60))
    });
    row("`stateful_throttle_rs2` (1 timestamp)", &h, KEYS);

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_session_rs2(
            unbounded(),
            key,
            Duration::from_secs(30 * 60),
            |_e, new: bool, _s: StateAccess| async move { new },
        )
    });
    row("`stateful_session_rs2`", &h, KEYS);

    let h = measure(&rt, || {
        events(KEYS, WINDOW_FILL).stateful_window_rs2(
            unbounded(),
            key,
            WINDOW,
            |w: Vec<UserEvent>, _s: StateAccess| async move { w.len() },
        )
    });
    row(
        &format!("`stateful_window_rs2` ({WINDOW}), {WINDOW_FILL} events buffered"),
        &h,
        KEYS,
    );

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_filter_rs2(
            unbounded(),
            key,
            |_e: &UserEvent, s: StateAccess| async move {
                let n = s.get::<u64>().await.unwrap_or(0) + 1;
                s.set(&n).await.expect("in-memory set");
                n <= 50
            },
        )
    });
    row("`stateful_filter_rs2`, `u64` counter", &h, KEYS);

    let h = measure(&rt, || {
        events(KEYS, 1).stateful_reduce_rs2(
            unbounded(),
            key,
            |a: UserEvent, e: UserEvent, _s: StateAccess| async move {
                UserEvent {
                    amount: a.amount + e.amount,
                    ..a
                }
            },
        )
    });
    row("`stateful_reduce_rs2`, one `UserEvent`", &h, KEYS);

    let h = measure(&rt, || {
        events(KEYS, PATTERN).stateful_pattern_rs2(
            unbounded(),
            key,
            PATTERN,
            |last: Vec<UserEvent>, _s: StateAccess| async move { Some(last.len()) },
        )
    });
    row(
        &format!("`stateful_pattern_rs2` ({PATTERN}), {PATTERN} events stored"),
        &h,
        KEYS,
    );

    let h = measure_open(&rt, KEYS, GROUP_FILL, |input| {
        input.stateful_group_by_advanced_rs2(
            unbounded(),
            key,
            Some(GROUP),
            None,
            false,
            |_k: String, g: Vec<UserEvent>, _s: StateAccess| async move { g.len() },
        )
    });
    row(
        &format!("`stateful_group_by_advanced_rs2` (max {GROUP}), {GROUP_FILL} events buffered"),
        &h,
        KEYS,
    );

    let h = measure(&rt, || {
        events(KEYS, JOIN_FILL).stateful_join_rs2(
            events(KEYS, JOIN_FILL),
            unbounded(),
            key,
            key,
            Duration::from_secs(3600),
            |a: UserEvent, b: UserEvent, _s: StateAccess| async move { a.amount + b.amount },
        )
    });
    row(
        &format!("`stateful_join_rs2` (1 h), {JOIN_FILL} events buffered per side"),
        &h,
        KEYS,
    );

    println!(
        "\nBounded by max_size: {BIG_KEYS} distinct keys through a store of max_size {BOUND} \
         (malloc footprint):\n"
    );
    println!("| operator | live after the run | peak during the run | {BOUND} entries' worth | unbounded, same keys |");
    println!("|---|---|---|---|---|");
    let map_op = |config: StateConfig| {
        move || {
            events(BIG_KEYS, 1).stateful_map_rs2(config, key, |e, s: StateAccess| async move {
                let n = s.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
                (e.amount, n.expect("in-memory update"))
            })
        }
    };
    let dedup_op = |config: StateConfig| {
        move || events(BIG_KEYS, 1).stateful_deduplicate_rs2(config, key, Duration::from_secs(3600))
    };
    for (name, per_key, bounded, all) in [
        (
            "`stateful_map_rs2`, `u64` counter",
            map_per_key,
            measure(&rt, map_op(StateConfig::new().max_size(BOUND))),
            measure(&rt, map_op(unbounded())),
        ),
        (
            "`stateful_deduplicate_rs2`",
            dedup_per_key,
            measure(&rt, dedup_op(StateConfig::new().max_size(BOUND))),
            measure(&rt, dedup_op(unbounded())),
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            mb(bounded.footprint),
            mb(bounded.peak),
            mb((per_key * BOUND as f64) as usize),
            mb(all.footprint),
        );
    }
}
