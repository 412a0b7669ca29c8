//! Throughput of the keyed operators over 1,000,000 pre-built events and 10,000 keys, each
//! beside a hand-written loop doing the same job over the same events in the same run, and
//! beside issue 8's reference loop (`reference_loop`: a `HashMap<String, u64>` counter over
//! `rs2_benches::Ev`s keyed by `e.key.to_string()`, see `benches/src/reference.rs`), timed in
//! the same group so every figure also has its "× reference loop" ratio.
//!
//! Dedup and window(100) run over the reference loop's events (`Ev`, keyed by
//! `e.key.to_string()`), as issue 8 measured them, and so do their hand-written loops; the
//! other operators and their loops run over `rs2_suite::keyed_events` (`UserEvent`, keyed by
//! a clone of `user_id`).
//!
//! Every operator and its loop are also run once outside the timed part, and their outputs
//! checked equal: item for item for filter, reduce and pattern, as a multiset for group by
//! (groups left open at the end come out in a different order), by their sums for dedup and
//! window, by count for session and throttle; join's pairs depend on timing within its 5 ms
//! window and are not checked.
//! Run: `cargo bench -p rs2-benches --bench operators` (one workload:
//! `-- 'reference_loop|dedup/'`, say).

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::{future, stream, Stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};
use rs2_benches::reference::{
    self, op_dedup, op_window, reference_loop, Ev, DEDUP_TTL, EVENTS, KEYS, WINDOW,
};
use rs2_suite::{keyed_events, UserEvent};

/// Filter keeps each key's first `FILTER_FIRST` events.
const FILTER_FIRST: u64 = 50;
const PATTERN: usize = 3;
const GROUP: usize = 100;

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

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Dedup by hand, as `reference::op_dedup`: the key as its extractor makes it
/// (`e.key.to_string()`), a clock read per event, the sum of the kept events' `v`.
fn loop_dedup(events: Vec<Ev>) -> u64 {
    let start = Instant::now();
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let ttl = DEDUP_TTL.as_millis() as u64;
    let out = stream::iter(events).filter(|e| {
        let now = now_ms(start);
        let key = e.key.to_string();
        let keep = match first_seen.get_mut(&key) {
            Some(at) if now.saturating_sub(*at) < ttl => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                first_seen.insert(key, now);
                true
            }
        };
        future::ready(keep)
    });
    futures::executor::block_on(reference::sum(out.map(|e| e.v)))
}

/// Tumbling windows of `WINDOW` by hand, as `reference::op_window`: each full window's `v`s
/// summed, then summed.
fn loop_window(events: Vec<Ev>) -> u64 {
    let mut windows: HashMap<String, Vec<Ev>> = HashMap::new();
    let out = stream::iter(events).filter_map(|e| {
        let buf = windows.entry(e.key.to_string()).or_default();
        buf.push(e);
        let full = buf.len() == WINDOW;
        future::ready(full.then(|| std::mem::take(buf).iter().map(|e| e.v).sum::<u64>()))
    });
    futures::executor::block_on(reference::sum(out))
}

fn loop_session(events: Vec<UserEvent>) -> usize {
    let start = Instant::now();
    let timeout = 30 * 60 * 1000;
    let mut last_seen: HashMap<String, u64> = HashMap::new();
    let out = stream::iter(events).map(|e| {
        let now = now_ms(start);
        let new = match last_seen.insert(e.user_id.clone(), now) {
            Some(at) => now.saturating_sub(at) > timeout,
            None => true,
        };
        (e, new)
    });
    futures::executor::block_on(drain(out))
}

fn loop_throttle(events: Vec<UserEvent>) -> usize {
    let start = Instant::now();
    let window = 60_000;
    let mut admitted: HashMap<String, VecDeque<u64>> = HashMap::new();
    let out = stream::iter(events).filter(|e| {
        let now = now_ms(start);
        let times = admitted.entry(e.user_id.clone()).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= window)
        {
            times.pop_front();
        }
        let keep = times.len() < 100;
        if keep {
            times.push_back(now);
        }
        future::ready(keep)
    });
    futures::executor::block_on(drain(out))
}

/// The join window: short, so each key buffers a handful of events per side.
const JOIN_WINDOW: Duration = Duration::from_millis(5);

fn loop_join(left: Vec<UserEvent>, right: Vec<UserEvent>) -> usize {
    // Alternate the inputs, buffer (time, event) per key and side, drop what left the window,
    // pair each arrival with the other side's buffered events.
    type Buffers = HashMap<String, Vec<(u64, UserEvent)>>;
    let start = Instant::now();
    let window = JOIN_WINDOW.as_millis() as u64;
    let (mut lbuf, mut rbuf): (Buffers, Buffers) = (HashMap::new(), HashMap::new());
    let mut pairs = 0usize;
    let mut right = right.into_iter();
    for l in left {
        for (is_left, e) in [(true, Some(l)), (false, right.next())] {
            let Some(e) = e else { continue };
            let now = now_ms(start);
            let (mine, other) = if is_left {
                (&mut lbuf, &mut rbuf)
            } else {
                (&mut rbuf, &mut lbuf)
            };
            if let Some(buf) = other.get_mut(&e.user_id) {
                buf.retain(|(at, _)| now.saturating_sub(*at) <= window);
                for (_, o) in buf.iter() {
                    black_box(e.amount + o.amount);
                    pairs += 1;
                }
            }
            let buf = mine.entry(e.user_id.clone()).or_default();
            buf.retain(|(at, _)| now.saturating_sub(*at) <= window);
            buf.push((now, e));
        }
    }
    pairs
}

fn loop_filter(events: Vec<UserEvent>) -> impl Stream<Item = UserEvent> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    stream::iter(events).filter(move |e| {
        let n = counts.entry(e.user_id.clone()).or_insert(0);
        *n += 1;
        future::ready(*n <= FILTER_FIRST)
    })
}

fn op_filter(events: Vec<UserEvent>) -> impl Stream<Item = UserEvent> {
    stream::iter(events).stateful_filter_rs2(
        roomy(),
        key,
        |_e: &UserEvent, s: StateAccess| async move {
            let n = s.get::<u64>().await.unwrap_or(0) + 1;
            s.set(&n).await.expect("in-memory set");
            n <= FILTER_FIRST
        },
    )
}

/// Reduce's running value: the key's first event with the amounts summed.
fn loop_reduce(events: Vec<UserEvent>) -> impl Stream<Item = UserEvent> {
    let mut running: HashMap<String, UserEvent> = HashMap::new();
    stream::iter(events).map(move |e| match running.entry(e.user_id.clone()) {
        Entry::Occupied(mut r) => {
            let r = r.get_mut();
            r.amount += e.amount;
            r.clone()
        }
        Entry::Vacant(slot) => slot.insert(e).clone(),
    })
}

fn op_reduce(
    events: Vec<UserEvent>,
) -> impl Stream<Item = Result<UserEvent, rs2::state::StateError>> {
    stream::iter(events).stateful_reduce_rs2(
        roomy(),
        key,
        |a: UserEvent, e: UserEvent, _s: StateAccess| async move {
            UserEvent {
                amount: a.amount + e.amount,
                ..a
            }
        },
    )
}

/// The pattern: do the amounts of the key's last events increase?
fn rising(last: &[UserEvent]) -> bool {
    last.windows(2).all(|w| w[0].amount < w[1].amount)
}

fn loop_pattern(events: Vec<UserEvent>) -> impl Stream<Item = bool> {
    let mut recent: HashMap<String, VecDeque<UserEvent>> = HashMap::new();
    stream::iter(events).filter_map(move |e| {
        let last = recent.entry(e.user_id.clone()).or_default();
        if last.len() == PATTERN {
            last.pop_front();
        }
        last.push_back(e);
        // The operator hands its closure an owned `Vec` of the events: so does the loop.
        let out = (last.len() == PATTERN).then(|| {
            let last: Vec<UserEvent> = last.iter().cloned().collect();
            rising(&last)
        });
        future::ready(out)
    })
}

fn op_pattern(events: Vec<UserEvent>) -> impl Stream<Item = Result<bool, rs2::state::StateError>> {
    stream::iter(events).stateful_pattern_rs2(
        roomy(),
        key,
        PATTERN,
        |last: Vec<UserEvent>, _s: StateAccess| async move { Some(rising(&last)) },
    )
}

fn sum(group: &[UserEvent]) -> f64 {
    group.iter().map(|e| e.amount).sum()
}

/// Groups of up to `GROUP` events per key: each full group as it completes, then the groups
/// left open at the end of the input, as the operator does.
fn loop_group_by(events: Vec<UserEvent>) -> impl Stream<Item = f64> {
    let groups = Rc::new(RefCell::new(HashMap::<String, Vec<UserEvent>>::new()));
    let open = Rc::clone(&groups);
    let full = stream::iter(events).filter_map(move |e| {
        let mut groups = groups.borrow_mut();
        let buf = groups.entry(e.user_id.clone()).or_default();
        buf.push(e);
        let full = buf.len() == GROUP;
        future::ready(full.then(|| sum(&std::mem::take(buf))))
    });
    let rest = stream::once(future::lazy(move |_| open.take()))
        .flat_map(|open| stream::iter(open.into_values().filter(|g| !g.is_empty())))
        .map(|g| sum(&g));
    full.chain(rest)
}

fn op_group_by(events: Vec<UserEvent>) -> impl Stream<Item = Result<f64, rs2::state::StateError>> {
    stream::iter(events).stateful_group_by_advanced_rs2(
        roomy(),
        key,
        Some(GROUP),
        None,
        false,
        |_k: String, g: Vec<UserEvent>, _s: StateAccess| async move { sum(&g) },
    )
}

fn op_session(rt: &tokio::runtime::Runtime, evs: Vec<UserEvent>) -> usize {
    rt.block_on(drain(stream::iter(evs).stateful_session_rs2(
        roomy(),
        key,
        Duration::from_secs(30 * 60),
        |e: UserEvent, new: bool, _s: StateAccess| async move { (e, new) },
    )))
}

fn op_throttle(rt: &tokio::runtime::Runtime, evs: Vec<UserEvent>) -> usize {
    rt.block_on(drain(stream::iter(evs).stateful_throttle_rs2(
        roomy(),
        key,
        100,
        Duration::from_secs(60),
    )))
}

fn ok<T>(r: Result<T, rs2::state::StateError>) -> T {
    r.expect("in-memory operator")
}

/// Runs each operator and its loop once (untimed) and checks that each pair yields the same
/// items (dedup and window: the same sum; session and throttle: as many items; join's pairs
/// depend on timing within its 5 ms window, so it is not checked).
fn check_same_outputs(rt: &tokio::runtime::Runtime, events: &[UserEvent], ref_events: &[Ev]) {
    let evs = || events.to_vec();
    assert_eq!(
        loop_dedup(ref_events.to_vec()),
        rt.block_on(op_dedup(ref_events.to_vec())),
        "dedup: loop and operator differ"
    );
    assert_eq!(
        loop_window(ref_events.to_vec()),
        rt.block_on(op_window(ref_events.to_vec())),
        "window: loop and operator differ"
    );
    assert_eq!(
        loop_session(evs()),
        op_session(rt, evs()),
        "session: loop and operator differ"
    );
    assert_eq!(
        loop_throttle(evs()),
        op_throttle(rt, evs()),
        "throttle: loop and operator differ"
    );

    let (want, got): (Vec<_>, Vec<_>) = (
        futures::executor::block_on(loop_filter(evs()).collect()),
        rt.block_on(op_filter(evs()).collect()),
    );
    assert_eq!(want, got, "filter: loop and operator differ");

    let (want, got): (Vec<_>, Vec<_>) = (
        futures::executor::block_on(loop_reduce(evs()).collect()),
        rt.block_on(op_reduce(evs()).map(ok).collect()),
    );
    assert_eq!(want, got, "reduce: loop and operator differ");

    let (want, got): (Vec<_>, Vec<_>) = (
        futures::executor::block_on(loop_pattern(evs()).collect()),
        rt.block_on(op_pattern(evs()).map(ok).collect()),
    );
    assert_eq!(want, got, "pattern: loop and operator differ");

    let (mut want, mut got): (Vec<f64>, Vec<f64>) = (
        futures::executor::block_on(loop_group_by(evs()).collect()),
        rt.block_on(op_group_by(evs()).map(ok).collect()),
    );
    want.sort_by(f64::total_cmp);
    got.sort_by(f64::total_cmp);
    assert_eq!(want, got, "group by: loop and operator differ");
}

fn operators(c: &mut Criterion) {
    let events = keyed_events(EVENTS, KEYS);
    let ref_events = reference::events(EVENTS, KEYS);
    let rt = reference::runtime();
    check_same_outputs(&rt, &events, &ref_events);
    let mut group = c.benchmark_group("operators_1m_events_10k_keys");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let batch = || events.clone();
    let ref_batch = || ref_events.clone();

    group.bench_function("reference_loop", |b| {
        b.iter_batched(
            ref_batch,
            |evs| rt.block_on(reference_loop(evs)),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("dedup/hand_written", |b| {
        b.iter_batched(ref_batch, loop_dedup, BatchSize::LargeInput)
    });
    group.bench_function("dedup/stateful_deduplicate_rs2", |b| {
        b.iter_batched(
            ref_batch,
            |evs| rt.block_on(op_dedup(evs)),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("window_100/hand_written", |b| {
        b.iter_batched(ref_batch, loop_window, BatchSize::LargeInput)
    });
    group.bench_function("window_100/stateful_window_rs2", |b| {
        b.iter_batched(
            ref_batch,
            |evs| rt.block_on(op_window(evs)),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("session/hand_written", |b| {
        b.iter_batched(batch, loop_session, BatchSize::LargeInput)
    });
    group.bench_function("session/stateful_session_rs2", |b| {
        b.iter_batched(batch, |evs| op_session(&rt, evs), BatchSize::LargeInput)
    });

    group.bench_function("throttle/hand_written", |b| {
        b.iter_batched(batch, loop_throttle, BatchSize::LargeInput)
    });
    group.bench_function("throttle/stateful_throttle_rs2", |b| {
        b.iter_batched(batch, |evs| op_throttle(&rt, evs), BatchSize::LargeInput)
    });

    group.bench_function("filter/hand_written", |b| {
        b.iter_batched(
            batch,
            |evs| futures::executor::block_on(drain(loop_filter(evs))),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("filter/stateful_filter_rs2", |b| {
        b.iter_batched(
            batch,
            |evs| rt.block_on(drain(op_filter(evs))),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("reduce/hand_written", |b| {
        b.iter_batched(
            batch,
            |evs| futures::executor::block_on(drain(loop_reduce(evs))),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("reduce/stateful_reduce_rs2", |b| {
        b.iter_batched(
            batch,
            |evs| rt.block_on(drain(op_reduce(evs))),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("pattern_3/hand_written", |b| {
        b.iter_batched(
            batch,
            |evs| futures::executor::block_on(drain(loop_pattern(evs))),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("pattern_3/stateful_pattern_rs2", |b| {
        b.iter_batched(
            batch,
            |evs| rt.block_on(drain(op_pattern(evs))),
            BatchSize::LargeInput,
        )
    });

    group.bench_function("group_by_100/hand_written", |b| {
        b.iter_batched(
            batch,
            |evs| futures::executor::block_on(drain(loop_group_by(evs))),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("group_by_100/stateful_group_by_advanced_rs2", |b| {
        b.iter_batched(
            batch,
            |evs| rt.block_on(drain(op_group_by(evs))),
            BatchSize::LargeInput,
        )
    });

    let split = || {
        let evs = events.clone();
        let (l, r): (Vec<_>, Vec<_>) = evs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        (
            l.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            r.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        )
    };
    group.bench_function("join/hand_written", |b| {
        b.iter_batched(split, |(l, r)| loop_join(l, r), BatchSize::LargeInput)
    });
    group.bench_function("join/stateful_join_rs2", |b| {
        b.iter_batched(
            split,
            |(l, r)| {
                rt.block_on(
                    drain(
                        stream::iter(l).stateful_join_rs2(
                            stream::iter(r),
                            roomy(),
                            key,
                            key,
                            JOIN_WINDOW,
                            |a: UserEvent, b: UserEvent, _s: StateAccess| async move {
                                a.amount + b.amount
                            },
                        ),
                    ),
                )
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, operators);
criterion_main!(benches);
