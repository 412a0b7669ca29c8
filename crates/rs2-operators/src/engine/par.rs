//! The engine behind the keyed-concurrency operators (`stateful_*_rs2_par`): up to `n` events
//! in flight, one key strictly in order, outputs in input order.
//!
//! Each operator is a *step* ([`ParStep`]): given an event and its key, it starts a future
//! that processes the event. The engine decides when an event may start (its key is free and
//! fewer than `n` events are outstanding), and puts the outputs back in input order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Fuse, FusedStream, FuturesUnordered, StreamExt};
use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateError, StateResult, StateStats};

use crate::engine::{EventKey, KeyedState, YieldBudget};

/// What a keyed-concurrency operator does with one event: the step type inside a
/// [`KeyedPar`] ([`MapParStep`](crate::MapParStep), [`FilterParStep`](crate::FilterParStep),
/// [`AccumulateParStep`](crate::AccumulateParStep)).
///
/// Only this crate's steps can drive a [`KeyedPar`]; the trait is public so that the
/// operators' stream types can be named.
pub trait ParStep<T> {
    /// What the stream yields.
    type Item;
    /// What an event's future hands back to the step to go on (after a read from a remote
    /// store, say, the step runs the user's closure).
    type Resume;
    /// The future processing one event.
    type Fut: Future<Output = Turn<Self::Item, Self::Resume>>;
}

/// How an event's future ends.
#[derive(Debug)]
pub enum Turn<I, R> {
    /// The event is finished, its key free: its output (`None`: it yields nothing).
    Done(Option<I>),
    /// The event needs its step again (its key stays busy): the step makes the next future.
    Resume(R),
    /// A group of events (from [`ParStart::start_group`]) is finished, its key free: their
    /// outputs, in the group's order.
    DoneGroup(Vec<Option<I>>),
}

/// The step's side the engine drives (crate-private: it works on the keyed-state helper).
pub(crate) trait ParStart<T>: ParStep<T> {
    /// The state whose namespace the engine extracts keys in.
    fn keyed(&mut self) -> &mut KeyedState;
    /// Starts processing `event`, whose key is `key` (or the error that stands for it).
    fn start(&mut self, event: T, key: StateResult<EventKey>) -> Self::Fut;
    /// Goes on with an event whose future returned [`Turn::Resume`].
    fn resume(&mut self, resume: Self::Resume) -> Self::Fut;

    /// The error an item reports, if it is an `Err` item (counted and logged by the engine).
    /// The default, for steps whose items are not results: none.
    fn error_of(item: &Self::Item) -> Option<&StateError> {
        let _ = item;
        None
    }

    /// How many waiting events of one key the step takes in one go with
    /// [`start_group`](Self::start_group) (1, the default: one at a time). A step whose
    /// state lives in a remote store groups them, so the key's events waiting behind each
    /// other cost one locked read and one write between them instead of one each.
    fn group_limit(&self) -> usize {
        1
    }

    /// Starts processing `events` (in order, all of key `key`, at most
    /// [`group_limit`](Self::group_limit) of them) as one future ending in
    /// [`Turn::DoneGroup`]; or hands them back to be started one at a time (the default).
    #[allow(clippy::type_complexity)]
    fn start_group(
        &mut self,
        events: Vec<T>,
        key: EventKey,
    ) -> Result<Self::Fut, (Vec<T>, EventKey)> {
        Err((events, key))
    }
}

pin_project! {
    /// The stream behind the keyed-concurrency operators
    /// ([`StatefulMapPar`](crate::StatefulMapPar), [`StatefulFilterPar`](crate::StatefulFilterPar),
    /// [`StatefulFoldPar`](crate::StatefulFoldPar), [`StatefulReducePar`](crate::StatefulReducePar)).
    ///
    /// Up to `concurrency` events are in flight at once, so a closure that awaits I/O (or
    /// state behind a slow backend) overlaps with the closures of other keys. Guarantees:
    /// * events of **one key** run strictly one after another, in input order (an event waits
    ///   until the previous event of its key has finished, state writes included);
    /// * outputs are yielded in **input order**, whatever order the events finish in;
    /// * at most `concurrency` events are taken from the input and not yet yielded or dropped
    ///   (running, waiting for their key, or finished but waiting for an earlier event's
    ///   output), which bounds memory; nothing is lost or duplicated.
    ///
    /// `concurrency` 0 is treated as 1 (the sequential operator's behaviour). An event whose
    /// key cannot be extracted (or any event, when the config is invalid) is not serialised
    /// against anything and is handled as the sequential operator handles it.
    #[must_use = "streams do nothing unless polled"]
    pub struct KeyedPar<S: Stream, K, St: ParStep<S::Item>> {
        #[pin]
        stream: Fuse<S>,
        running: FuturesUnordered<Tagged<St::Fut>>,
        // Keys with an event running (by `KeyedState::key_hash`: two keys sharing a hash are
        // only serialised, never mixed up, since each waiting event keeps its own key), and
        // the events waiting behind it.
        busy: HashMap<u64, VecDeque<(u64, S::Item, EventKey)>, BuildHasherDefault<KeyHashHasher>>,
        // Finished outputs waiting for the outputs of earlier events.
        // `done[i]` is the event `next_out + i` once it finished (`Some(None)`: without an output).
        done: VecDeque<Option<Option<St::Item>>>,
        next_seq: u64,
        next_out: u64,
        concurrency: u64,
        key_extractor: K,
        step: St,
        stats: StateStats,
        span: tracing::Span,
        op: Box<str>,
    }
}

pin_project! {
    /// An event's future tagged with its sequence number and key (and, for a group, the
    /// sequence numbers of the group's other events).
    struct Tagged<Fut> {
        #[pin]
        fut: Fut,
        seq: u64,
        key: Option<u64>,
        more: Vec<u64>,
    }
}

/// The `busy` map's keys are already hashes.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl<Fut> Tagged<Fut> {
    fn one(fut: Fut, seq: u64, key: Option<u64>) -> Self {
        Self {
            fut,
            seq,
            key,
            more: Vec::new(),
        }
    }
}

/// A finished future: its first event's sequence number, its key, the group's other
/// sequence numbers, and how it ended.
type Finished<O> = (u64, Option<u64>, Vec<u64>, O);

impl<Fut: Future> Future for Tagged<Fut> {
    type Output = Finished<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = futures::ready!(this.fut.poll(cx));
        Poll::Ready((*this.seq, this.key.take(), std::mem::take(this.more), out))
    }
}

impl<S: Stream, K, St: ParStep<S::Item>> KeyedPar<S, K, St> {
    pub(crate) fn new(stream: S, key_extractor: K, concurrency: usize, mut step: St) -> Self
    where
        St: ParStart<S::Item>,
    {
        let stats = step.keyed().stats().clone();
        let span = step.keyed().span().clone();
        let op = step.keyed().name().into();
        Self {
            stats,
            span,
            op,
            stream: stream.fuse(),
            running: FuturesUnordered::new(),
            busy: HashMap::default(),
            done: VecDeque::new(),
            next_seq: 0,
            next_out: 0,
            concurrency: concurrency.max(1) as u64,
            key_extractor,
            step,
        }
    }

    /// This operator's figures, readable while the stream runs (clone the handle before
    /// consuming the stream): its store's entries, hits, misses, writes, evictions and
    /// expirations, and (fold, reduce) its `Err` items as `errors`. The config's handle
    /// ([`StateConfig::stats`](rs2_state_core::StateConfig::stats)) if it has one, else the
    /// operator's own.
    pub fn stats(&self) -> StateStats {
        self.stats.clone()
    }
}

impl<S, K, St> Stream for KeyedPar<S, K, St>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    St: ParStart<S::Item>,
{
    type Item = St::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let span = self.span.clone();
        let _entered = span.enter();
        let polled = self.as_mut().poll_events(cx);
        if let Poll::Ready(Some(item)) = &polled {
            if let Some(err) = St::error_of(item) {
                super::observe::note_error(&self.stats, &self.op, err);
            }
        }
        polled
    }
}

// The bound is crate-private on purpose (only this crate's steps drive the engine); the
// method is private too.
#[allow(private_bounds)]
impl<S, K, St> KeyedPar<S, K, St>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    St: ParStart<S::Item>,
{
    fn poll_events(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        let mut this = self.project();
        let mut budget = YieldBudget::default();
        loop {
            if let Some(Some(_)) = this.done.front() {
                let out = this.done.pop_front().flatten().flatten();
                *this.next_out += 1;
                match out {
                    Some(item) => return Poll::Ready(Some(item)),
                    // An event that yields nothing (a filter's rejected event).
                    None if budget.spend(cx) => return Poll::Pending,
                    None => continue,
                }
            }
            // Take events while fewer than `concurrency` are outstanding.
            while *this.next_seq - *this.next_out < *this.concurrency {
                let Poll::Ready(Some(event)) = this.stream.as_mut().poll_next(cx) else {
                    break;
                };
                let seq = *this.next_seq;
                *this.next_seq += 1;
                let mut key = match this.step.keyed().key_of(this.key_extractor, &event) {
                    Ok(key) => key,
                    // No key: nothing to serialise against.
                    Err(err) => {
                        let fut = this.step.start(event, Err(err));
                        this.running.push(Tagged::one(fut, seq, None));
                        continue;
                    }
                };
                let hash = this.step.keyed().key_hash(&mut key);
                if let Some(queue) = this.busy.get_mut(&hash) {
                    queue.push_back((seq, event, key));
                    continue;
                }
                this.busy.insert(hash, VecDeque::new());
                let fut = this.step.start(event, Ok(key));
                this.running.push(Tagged::one(fut, seq, Some(hash)));
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((seq, key, more, Turn::Resume(resume)))) => {
                    let fut = this.step.resume(resume);
                    this.running.push(Tagged {
                        fut,
                        seq,
                        key,
                        more,
                    });
                }
                Poll::Ready(Some((seq, key, more, turn))) => {
                    let outs = match turn {
                        Turn::Done(out) => vec![out],
                        Turn::DoneGroup(outs) => outs,
                        Turn::Resume(_) => unreachable!("matched above"),
                    };
                    debug_assert_eq!(outs.len(), 1 + more.len(), "one output per event");
                    let mut outs = outs.into_iter();
                    for seq in std::iter::once(seq).chain(more) {
                        let at = (seq - *this.next_out) as usize;
                        if this.done.len() <= at {
                            this.done.resize_with(at + 1, || None);
                        }
                        this.done[at] = Some(outs.next().flatten());
                    }
                    let Some(hash) = key else { continue };
                    // The key is free: start its next events, if any wait.
                    let Some(queue) = this.busy.get_mut(&hash) else {
                        continue;
                    };
                    match start_next(this.step, queue, hash) {
                        Some(tagged) => this.running.push(tagged),
                        None => {
                            this.busy.remove(&hash);
                        }
                    }
                }
                Poll::Ready(None) | Poll::Pending => {
                    if let Some(Some(_)) = this.done.front() {
                        continue;
                    }
                    let finished = this.stream.is_terminated() && this.running.is_empty();
                    return if finished && this.busy.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
    }
}

/// Starts the events waiting for key `hash` to be free: the leading run of them with the same
/// key as one group, if the step groups, else the first alone. `None` if none wait.
fn start_next<T, St: ParStart<T>>(
    step: &mut St,
    queue: &mut VecDeque<(u64, T, EventKey)>,
    hash: u64,
) -> Option<Tagged<St::Fut>> {
    let limit = step.group_limit();
    // Two keys may share a hash: a group is one key's events only.
    let run = match queue.front() {
        None => return None,
        Some((_, _, first)) if limit > 1 => queue
            .iter()
            .take(limit)
            .take_while(|(_, _, k)| k.storage_key == first.storage_key)
            .count(),
        Some(_) => 1,
    };
    if run > 1 {
        let mut seqs = Vec::with_capacity(run);
        let mut events = Vec::with_capacity(run);
        let mut keys = Vec::with_capacity(run);
        for (seq, event, key) in queue.drain(..run) {
            seqs.push(seq);
            events.push(event);
            keys.push(key);
        }
        let first_key = keys.swap_remove(0);
        match step.start_group(events, first_key) {
            Ok(fut) => {
                let seq = seqs.remove(0);
                return Some(Tagged {
                    fut,
                    seq,
                    key: Some(hash),
                    more: seqs,
                });
            }
            // The step starts them one at a time after all: put them back as they were.
            Err((events, first_key)) => {
                keys.push(first_key);
                let last = keys.len() - 1;
                keys.swap(0, last);
                for ((seq, event), key) in seqs.into_iter().zip(events).zip(keys).rev() {
                    queue.push_front((seq, event, key));
                }
            }
        }
    }
    let (seq, event, key) = queue.pop_front()?;
    Some(Tagged::one(step.start(event, Ok(key)), seq, Some(hash)))
}
