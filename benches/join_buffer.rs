//! Join arrivals against one key whose left buffer holds 100,000 events (issue 11): before
//! decision 012 each arrival decoded and re-encoded (shared store) or scanned and shifted
//! (private table) the whole buffer, so an arrival cost O(buffer).
//!
//! The join reads two channels; the bench fills key `hot`'s left buffer with `BUFFERED` events
//! (window 1 h, bound `BUFFERED`, so nothing expires and every further left arrival pushes the
//! oldest out), then times left arrivals of `hot`: each is one event sent and the join polled
//! until it has taken it. A left arrival meets the right side, which is empty: no output, so
//! the figure is the cost of buffering against a big buffer, not of emitting pairs.
//!
//! * `private`: an in-memory config (the operator's own typed table);
//! * `shared_memory`: a shared `InMemoryState` as the custom store (in-process, bytes edited in
//!   place);
//! * `remote_map`: `rs2_suite::MapStore`, a store that is not in-process: every arrival reads
//!   and writes the key's whole entry through `StateStorage` (the trait has no append);
//! * `hand_written`: a `HashMap` of two `VecDeque`s per key doing the same job.
//!
//! Run: `cargo bench -p rs2-benches --bench join_buffer -- --warm-up-time 1 --measurement-time 3`.

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::Stream;
use rs2::state::{
    InMemoryState, StateAccess, StateClock, StateConfig, StateStorage, StatefulStreamExt,
};
use rs2_suite::MapStore;

const BUFFERED: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(3600);

type Ev = (String, u64);

/// A join over two channels, and their senders.
struct Rig {
    left: UnboundedSender<Ev>,
    _right: UnboundedSender<Ev>,
    join: Pin<Box<dyn Stream<Item = Result<u64, rs2::state::StateError>>>>,
    next: u64,
}

impl Rig {
    fn new(config: StateConfig) -> Self {
        let (left, lrx) = unbounded::<Ev>();
        let (right, rrx) = unbounded::<Ev>();
        let join = lrx.stateful_join_rs2(
            rrx,
            config,
            |e: &Ev| e.0.clone(),
            |e: &Ev| e.0.clone(),
            WINDOW,
            |l: Ev, r: Ev, _s: StateAccess| async move { l.1 + r.1 },
        );
        let join = join.max_buffered(BUFFERED);
        let mut rig = Rig {
            left,
            _right: right,
            join: Box::pin(join),
            next: 0,
        };
        for _ in 0..BUFFERED {
            rig.send();
        }
        assert_eq!(rig.drive(), 0, "a left buffer alone meets nothing");
        rig
    }

    fn send(&mut self) {
        self.next += 1;
        self.left
            .unbounded_send(("hot".to_string(), self.next))
            .expect("join alive");
    }

    /// Polls the join until it waits for input (a `Pending` that did not wake itself, as one
    /// does after a long run of arrivals); the items it yielded (all must be `Ok`).
    fn drive(&mut self) -> usize {
        let flag = Arc::new(Woken(AtomicBool::new(false)));
        let waker = futures::task::waker(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut items = 0;
        loop {
            flag.0.store(false, Ordering::Relaxed);
            match self.join.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(item)) => {
                    item.expect("join item");
                    items += 1;
                }
                Poll::Pending if flag.0.load(Ordering::Relaxed) => {}
                _ => return items,
            }
        }
    }

    fn arrive(&mut self) {
        self.send();
        black_box(self.drive());
    }
}

/// A waker that notes it was woken.
struct Woken(AtomicBool);

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::Relaxed);
    }
}

/// The hand-written join: per key, both sides' (time, event), oldest first, at most
/// `BUFFERED` each; an arrival drops the other side's expired events, meets the rest, and is
/// buffered (pushing out its side's oldest when full).
/// One side of a key: (arrival time, event), oldest first.
type Side = VecDeque<(u64, Ev)>;

struct Loop {
    keys: HashMap<String, (Side, Side)>,
    clock: StateClock,
    next: u64,
}

impl Loop {
    fn left(&mut self, e: Ev) -> u64 {
        let now = self.clock.now_ms();
        let (mine, other) = self.keys.entry(e.0.clone()).or_default();
        let window = WINDOW.as_millis() as u64;
        while other
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > window)
        {
            other.pop_front();
        }
        let mut sum = 0;
        for (_, r) in other.iter() {
            sum += e.1 + r.1;
        }
        while mine
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > window)
        {
            mine.pop_front();
        }
        if mine.len() >= BUFFERED {
            mine.pop_front();
        }
        mine.push_back((now, e));
        sum
    }

    fn arrive(&mut self) {
        self.next += 1;
        black_box(self.left(("hot".to_string(), self.next)));
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("join_buffer_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    let config = || StateConfig::new().ttl(Duration::from_secs(7200));

    let mut rig = Rig::new(config());
    group.bench_function("private", |b| b.iter(|| rig.arrive()));
    drop(rig);

    let shared: Arc<dyn StateStorage + Send + Sync> = Arc::new(InMemoryState::new(&config()));
    let mut rig = Rig::new(config().with_custom_storage(shared));
    group.bench_function("shared_memory", |b| b.iter(|| rig.arrive()));
    drop(rig);

    let remote: Arc<dyn StateStorage + Send + Sync> = Arc::new(MapStore::default());
    let mut rig = Rig::new(config().with_custom_storage(remote));
    group.bench_function("remote_map", |b| b.iter(|| rig.arrive()));
    drop(rig);

    let mut baseline = Loop {
        keys: HashMap::new(),
        clock: StateClock::new(),
        next: 0,
    };
    for _ in 0..BUFFERED {
        baseline.arrive();
    }
    group.bench_function("hand_written", |b| b.iter(|| baseline.arrive()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
