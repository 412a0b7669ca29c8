//! Throughput of `stateful_event_time_window_rs2` (issue 12): 1,000,000 events over 10,000
//! keys, one event per millisecond of event time (so about 17 one-minute windows per key, ~6
//! events each), every event up to 5 s out of order, 1-minute tumbling windows with
//! `max_out_of_orderness` 5 s; each window's closure sums its amounts. Beside it, in the same
//! group, a hand-written loop doing the same job: per-key windows in a `HashMap`, the same
//! watermark, an ordered index of windows by end to fire them, the same sums.
//!
//! Both are run once outside the timed part and their outputs checked equal (every
//! `(key, window start, sum)`, in emission order).
//! Run: `cargo bench -p rs2-benches --bench event_time_window`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{stream, StreamExt};
use rs2::state::{EventTimeWindow, StateAccess, StateConfig, StatefulStreamExt, TimeWindow};
use serde::{Deserialize, Serialize};

const EVENTS: usize = 1_000_000;
const KEYS: u64 = 10_000;
const WINDOW_MS: u64 = 60_000;
const DISORDER_MS: u64 = 5_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ev {
    user: String,
    ts_ms: u64,
    amount: u64,
}

/// Event `i` happens at `i` ms (from an epoch-aligned start) less up to 5 s, in a fixed
/// pseudo-random order of keys.
fn events() -> Vec<Ev> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = 1_700_000_040_000; // a multiple of a minute
    (0..EVENTS as u64)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Ev {
                user: format!("user-{}", x % KEYS),
                ts_ms: start + i - (x >> 32) % DISORDER_MS,
                amount: i % 100,
            }
        })
        .collect()
}

type Out = (String, u64, u64);

fn op(events: Vec<Ev>) -> Vec<Out> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    rt.block_on(
        stream::iter(events)
            .stateful_event_time_window_rs2(
                StateConfig::new().max_size(100_000),
                |e: &Ev| e.user.clone(),
                |e: &Ev| e.ts_ms,
                EventTimeWindow::tumbling(Duration::from_millis(WINDOW_MS))
                    .max_out_of_orderness(Duration::from_millis(DISORDER_MS)),
                |w: TimeWindow<Ev>, _s: StateAccess| async move {
                    let sum = w.events.iter().map(|e| e.amount).sum::<u64>();
                    (w.key, w.start_ms, sum)
                },
            )
            .map(|r| r.expect("in-memory operator"))
            .collect(),
    )
}

/// The same job by hand: each key's open windows (start -> events), an index of open windows
/// by (end, start, open order), the watermark, due windows fired before the next event.
fn hand_written(events: Vec<Ev>) -> Vec<Out> {
    let mut open: HashMap<String, Vec<(u64, Vec<Ev>)>> = HashMap::new();
    let mut index: BTreeMap<(u64, u64, u64), String> = BTreeMap::new();
    let mut seq = 0u64;
    let mut wm = 0u64;
    let mut out = Vec::new();
    let mut fire = |key: String, start: u64, open: &mut HashMap<String, Vec<(u64, Vec<Ev>)>>| {
        let wins = open.get_mut(&key).expect("indexed window");
        let i = wins.iter().position(|w| w.0 == start).expect("open window");
        let (_, evs) = wins.swap_remove(i);
        if wins.is_empty() {
            open.remove(&key);
        }
        let sum = evs.iter().map(|e| e.amount).sum::<u64>();
        out.push((key, start, sum));
    };
    for e in events {
        wm = wm.max(e.ts_ms.saturating_sub(DISORDER_MS));
        let start = e.ts_ms - e.ts_ms % WINDOW_MS;
        if start + WINDOW_MS > wm {
            let key = e.user.clone();
            let wins = open.entry(key).or_default();
            match wins.iter_mut().find(|w| w.0 == start) {
                Some(w) => w.1.push(e),
                None => {
                    index.insert((start + WINDOW_MS, start, seq), e.user.clone());
                    seq += 1;
                    wins.push((start, vec![e]));
                }
            }
        }
        while let Some(entry) = index.first_entry() {
            if entry.key().0 > wm {
                break;
            }
            let ((_, start, _), key) = entry.remove_entry();
            fire(key, start, &mut open);
        }
    }
    while let Some(((_, start, _), key)) = index.pop_first() {
        fire(key, start, &mut open);
    }
    out
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let (want, got) = (hand_written(evs.clone()), op(evs.clone()));
    assert_eq!(want.len(), got.len(), "window counts differ");
    assert!(want == got, "loop and operator differ");
    let mut group = c.benchmark_group("event_time_window_1m_events_10k_keys");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function("hand_written", |b| {
        b.iter_batched(|| evs.clone(), hand_written, BatchSize::LargeInput)
    });
    group.bench_function("stateful_event_time_window_rs2", |b| {
        b.iter_batched(|| evs.clone(), op, BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
