//! `stateful_map_rs2_par` against `stateful_map_rs2` when the closure awaits I/O: each event's
//! closure awaits 100 µs of simulated I/O, then updates its key's `u32` state.
//!
//! tokio's timer has 1 ms resolution, so the I/O is a small simulated device instead: one
//! background thread owns a deadline queue, sleeps until the earliest deadline and wakes every
//! request that is due (batching), like a device completing requests. Its actual mean latency
//! per request (100 µs plus OS timer slack and the wake-up) is measured and printed once.
//!
//! Cases, on a current-thread tokio runtime: 2,000 events over 2,000 keys (every key distinct,
//! so no event waits for its key) sequentially and with `n` = 1, 8, 16, 32, 64 in flight; and
//! 2,000 events over 100 keys taken round-robin (`key = event % 100`) with `n` = 64: any 64
//! consecutive events have distinct keys, so per-key ordering should cost nothing.
//! The target: `par/n=N` ≥ 0.8 × N × `sequential`.
//!
//! Run: `cargo bench -p rs2-benches --bench keyed_concurrency`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures::task::AtomicWaker;
use futures::{stream, StreamExt};
use rs2::state::{StateAccess, StateConfig, StatefulStreamExt};

const EVENTS: u32 = 2_000;
const IO: Duration = Duration::from_micros(100);

/// One outstanding request: completed by the device thread.
#[derive(Default)]
struct Request {
    done: AtomicBool,
    waker: AtomicWaker,
}

/// A queued request, ordered by deadline (then arrival, so equal deadlines stay FIFO).
struct Queued {
    deadline: Instant,
    seq: u64,
    request: Arc<Request>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Queued>>,
    next_seq: u64,
}

/// The simulated I/O device: a deadline queue served by one background thread.
struct SimIo {
    queue: Mutex<Queue>,
    wake_device: Condvar,
}

impl SimIo {
    /// The process-wide device; its thread starts on first use and lives until exit.
    fn get() -> &'static SimIo {
        static DEVICE: OnceLock<&'static SimIo> = OnceLock::new();
        DEVICE.get_or_init(|| {
            let device: &'static SimIo = Box::leak(Box::new(SimIo {
                queue: Mutex::new(Queue::default()),
                wake_device: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("sim-io".into())
                .spawn(move || device.serve())
                .expect("spawn the simulated I/O thread");
            device
        })
    }

    /// A request that completes once `latency` has passed.
    fn wait(latency: Duration) -> Wait {
        Wait {
            deadline: Instant::now() + latency,
            request: None,
        }
    }

    fn submit(&self, deadline: Instant, request: Arc<Request>) {
        let mut q = self.queue.lock().expect("sim-io queue");
        let seq = q.next_seq;
        q.next_seq += 1;
        let earliest = q.heap.peek().is_none_or(|Reverse(e)| deadline < e.deadline);
        q.heap.push(Reverse(Queued {
            deadline,
            seq,
            request,
        }));
        drop(q);
        if earliest {
            // The device sleeps until a later deadline (or indefinitely): make it look again.
            self.wake_device.notify_one();
        }
    }

    fn serve(&self) {
        let mut due = Vec::new();
        let mut q = self.queue.lock().expect("sim-io queue");
        loop {
            let now = Instant::now();
            while q.heap.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
                let Reverse(e) = q.heap.pop().expect("peeked");
                due.push((e.deadline, e.request));
            }
            if !due.is_empty() {
                // Complete the batch outside the lock.
                drop(q);
                for (deadline, r) in due.drain(..) {
                    Stats::late(now.saturating_duration_since(deadline));
                    r.done.store(true, Ordering::Release);
                    r.waker.wake();
                }
                q = self.queue.lock().expect("sim-io queue");
                continue;
            }
            q = match q.heap.peek() {
                Some(Reverse(e)) => {
                    let sleep = e.deadline.saturating_duration_since(now);
                    self.wake_device
                        .wait_timeout(q, sleep)
                        .expect("sim-io queue")
                        .0
                }
                None => self.wake_device.wait(q).expect("sim-io queue"),
            };
        }
    }
}

/// Latencies of the requests since the last [`Stats::take`].
struct Stats;

static LATE_NS: AtomicU64 = AtomicU64::new(0);
static WOKEN: AtomicU64 = AtomicU64::new(0);
static SEEN_NS: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicU64 = AtomicU64::new(0);

impl Stats {
    /// The device woke a request this long after its deadline.
    fn late(by: Duration) {
        LATE_NS.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
        WOKEN.fetch_add(1, Ordering::Relaxed);
    }

    /// A task saw its request complete this long after submitting it.
    fn seen(latency: Duration) {
        SEEN_NS.fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
        SEEN.fetch_add(1, Ordering::Relaxed);
    }

    /// (mean µs the device woke requests after their deadline, mean µs a task waited), reset.
    fn take() -> (f64, f64) {
        let mean = |sum: &AtomicU64, n: &AtomicU64| {
            let n = n.swap(0, Ordering::Relaxed).max(1);
            sum.swap(0, Ordering::Relaxed) as f64 / n as f64 / 1e3
        };
        (mean(&LATE_NS, &WOKEN), mean(&SEEN_NS, &SEEN))
    }

    /// Prints the latencies seen by the case just run.
    fn print(case: &str) {
        let (late, seen) = Stats::take();
        println!(
            "  {case}: tasks waited {seen:.1} µs per request; the device woke them {late:.1} µs \
             after their deadline"
        );
    }
}

/// The future of one simulated I/O request.
struct Wait {
    deadline: Instant,
    request: Option<Arc<Request>>,
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &self.request {
            Some(r) => {
                r.waker.register(cx.waker());
                if r.done.load(Ordering::Acquire) {
                    Stats::seen(IO + Instant::now().saturating_duration_since(self.deadline));
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            None => {
                let r = Arc::new(Request::default());
                r.waker.register(cx.waker());
                SimIo::get().submit(self.deadline, r.clone());
                self.request = Some(r);
                Poll::Pending
            }
        }
    }
}

async fn io_closure(e: u32, state: StateAccess) -> u32 {
    SimIo::wait(IO).await;
    state
        .update(|n: Option<u32>| n.unwrap_or(0) + e)
        .await
        .expect("in-memory update")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Prints the device's mean latency per request as an awaiting task sees it.
fn print_device_latency(rt: &tokio::runtime::Runtime) {
    const REQUESTS: u32 = 2_000;
    let mean = rt.block_on(async {
        SimIo::wait(IO).await; // start the device thread
        Stats::take();
        let start = Instant::now();
        for _ in 0..REQUESTS {
            SimIo::wait(IO).await;
        }
        start.elapsed() / REQUESTS
    });
    let (late, _) = Stats::take();
    println!(
        "simulated I/O device: {} µs requested, {:.1} µs mean latency per request \
         ({REQUESTS} sequential requests; woken {late:.1} µs after the deadline on average, \
         the rest is the wake-up)",
        IO.as_micros(),
        mean.as_secs_f64() * 1e6
    );
    println!(
        "(after each case below: the mean wait its tasks saw, and the device's lateness, over \
         its warm-up and measurement)"
    );
}

fn keyed_concurrency(c: &mut Criterion) {
    let rt = runtime();
    print_device_latency(&rt);
    let mut group = c.benchmark_group("keyed_concurrency_100us_io");
    group.throughput(Throughput::Elements(u64::from(EVENTS)));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function(format!("sequential/keys={EVENTS}"), |b| {
        b.iter(|| {
            rt.block_on(
                stream::iter(0..EVENTS)
                    .stateful_map_rs2(StateConfig::new(), |e: &u32| e.to_string(), io_closure)
                    .count(),
            )
        })
    });
    Stats::print("sequential");
    let cases = [1usize, 8, 16, 32, 64]
        .map(|n| (n, EVENTS))
        .into_iter()
        .chain([(64, 100)]);
    for (n, keys) in cases {
        group.bench_function(format!("par/n={n}/keys={keys}"), |b| {
            b.iter(|| {
                rt.block_on(
                    stream::iter(0..EVENTS)
                        .stateful_map_rs2_par(
                            StateConfig::new(),
                            move |e: &u32| (e % keys).to_string(),
                            n,
                            io_closure,
                        )
                        .count(),
                )
            })
        });
        Stats::print(&format!("par/n={n}/keys={keys}"));
    }
    group.finish();
}

criterion_group!(benches, keyed_concurrency);
criterion_main!(benches);
