//! The event-time window stream's machinery: the watermark, the index of windows by when they
//! are due, the idle rule, and the poll loop both public stream types run.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateError, StateResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Sleep;

use super::windows::{settle, take_in, Ctx, Entry, IndexOp, KeyWindows, Settled, Spec};
use super::{EventTimeOutput, TimeWindow};
use crate::engine::own::OwnState;
use crate::engine::timer::poll_timer;
use crate::engine::{EventKey, KeyedState, StateIo, YieldBudget};

/// The largest watermark while input lasts: `u64::MAX` is the end of input's, so a window
/// whose end saturated at `u64::MAX` (it covers an event at `u64::MAX`) fires only then.
const MAX_WATERMARK: u64 = u64::MAX - 1;

/// What a public stream type makes of a fired window's output and of a late event.
pub(super) trait Mode<R, T> {
    type Item;
    fn window(output: R) -> Self::Item;
    /// `None`: the late event is only counted.
    fn late(event: T) -> Option<Self::Item>;
}

/// [`StatefulEventTimeWindow`](super::StatefulEventTimeWindow): outputs; late events counted.
pub(super) struct Basic;

/// [`StatefulEventTimeWindowAdvanced`](super::StatefulEventTimeWindowAdvanced): outputs and
/// late events.
pub(super) struct Advanced;

impl<R, T> Mode<R, T> for Basic {
    type Item = R;
    fn window(output: R) -> R {
        output
    }
    fn late(_: T) -> Option<R> {
        None
    }
}

impl<R, T> Mode<R, T> for Advanced {
    type Item = EventTimeOutput<R, T>;
    fn window(output: R) -> Self::Item {
        EventTimeOutput::Window(output)
    }
    fn late(event: T) -> Option<Self::Item> {
        Some(EventTimeOutput::Late(event))
    }
}

/// What taking an event in changed: the index changes and how many window numbers it used.
type AddOut = (Vec<IndexOp>, u64);
/// What settling a window gave, with its index changes.
type SettleOut<T> = (Vec<IndexOp>, Settled<T>);

/// The stream's state apart from the input, the closure's future and the timer.
pub(super) struct Core<T, E, F> {
    pub keyed: KeyedState,
    own: OwnState<KeyWindows<T>>,
    user_state: KeyedState,
    spec: Spec,
    lateness: u64,
    out_of_orderness: u64,
    /// Processing time (ms) without input after which the watermark follows the clock.
    idle: Option<u64>,
    /// The window arguments were invalid: every event reports this.
    invalid: Option<StateError>,
    event_time: E,
    f: F,
    /// Every open window (at its end) and every fired window kept for allowed lateness (at
    /// its end plus the lateness), with its key.
    index: BTreeMap<Entry, Arc<str>>,
    next_seq: u64,
    /// The watermark; meaningful once `seen`.
    wm: u64,
    seen: bool,
    /// The processing time of the last event, and the watermark then (the idle rule's base).
    last_input_ms: u64,
    wm_at_last_input: u64,
    late: u64,
    input_done: bool,
    /// Recycled between transitions.
    ops: Vec<IndexOp>,
    armed_for: Option<u64>,
}

/// What became of an event taken from the input.
enum Taken<T> {
    Late(T),
    Err(StateError),
    Io(EventKey, StateIo<AddOut>),
}

/// Where the stream is.
pub(super) enum Phase<T> {
    Idle,
    /// An event's transition is in flight (a store that is not in-process).
    Adding(EventKey, StateIo<AddOut>),
    /// A due window is being read (and fired, purged, or both).
    Settling(Arc<str>, Entry, StateIo<SettleOut<T>>),
    /// The closure is running on a fired window.
    Running,
    Done,
}

/// The settings of a [`Core`], from the validated [`EventTimeWindow`](super::EventTimeWindow).
pub(super) struct Settings {
    pub spec: Spec,
    pub lateness: u64,
    pub out_of_orderness: u64,
    pub idle: Option<u64>,
    pub invalid: Option<StateError>,
}

impl<T, E, F> Core<T, E, F> {
    pub fn new(
        settings: Settings,
        keyed: KeyedState,
        own: OwnState<KeyWindows<T>>,
        user_state: KeyedState,
        event_time: E,
        f: F,
    ) -> Self {
        Self {
            keyed,
            own,
            user_state,
            spec: settings.spec,
            lateness: settings.lateness,
            out_of_orderness: settings.out_of_orderness,
            idle: settings.idle,
            invalid: settings.invalid,
            event_time,
            f,
            index: BTreeMap::new(),
            next_seq: 0,
            wm: 0,
            seen: false,
            last_input_ms: 0,
            wm_at_last_input: 0,
            late: 0,
            input_done: false,
            ops: Vec::new(),
            armed_for: None,
        }
    }

    pub fn late_count(&self) -> u64 {
        self.late
    }

    pub fn watermark(&self) -> Option<u64> {
        self.seen.then_some(self.wm)
    }

    /// Open windows and fired windows kept for allowed lateness (index entries).
    pub fn indexed(&self) -> usize {
        self.index.len()
    }

    /// The watermark windows are settled at: every window is due once the input has ended.
    fn settle_wm(&self) -> u64 {
        if self.input_done {
            u64::MAX
        } else {
            self.wm
        }
    }

    fn ctx(&self, wm: u64) -> Ctx {
        Ctx {
            spec: self.spec,
            wm,
            lateness: self.lateness,
            next_seq: self.next_seq,
        }
    }

    /// The next due window, taken out of the index.
    fn next_due(&mut self) -> Option<(Entry, Arc<str>)> {
        let wm = self.settle_wm();
        match self.index.first_key_value() {
            Some((entry, _)) if entry.deadline <= wm => self.index.pop_first(),
            _ => None,
        }
    }

    /// Applies a transition's index changes for the key `key` (made shared once, if needed).
    fn apply(&mut self, key: &str, shared: Option<&Arc<str>>, mut ops: Vec<IndexOp>) {
        let mut shared = shared.cloned();
        for op in ops.drain(..) {
            match op {
                IndexOp::Insert(entry) => {
                    let key = shared.get_or_insert_with(|| Arc::from(key));
                    self.index.insert(entry, Arc::clone(key));
                }
                IndexOp::Remove(entry) => {
                    self.index.remove(&entry);
                }
            }
        }
        self.ops = ops;
    }

    /// The idle rule: once the input has been quiet for the idle timeout, the watermark is the
    /// one at the last event plus the processing time since.
    fn idle_advance(&mut self, now: u64) {
        let Some(idle) = self.idle else { return };
        if self.seen && now >= self.last_input_ms.saturating_add(idle) {
            let wm = self
                .wm_at_last_input
                .saturating_add(now - self.last_input_ms);
            self.wm = self.wm.max(wm.min(MAX_WATERMARK));
        }
    }

    /// The processing time at which the idle rule makes the first indexed window due.
    fn idle_deadline(&self) -> Option<u64> {
        let idle = self.idle?;
        let (first, _) = self.index.first_key_value()?;
        let wait = first
            .deadline
            .saturating_sub(self.wm_at_last_input)
            .max(idle);
        Some(self.last_input_ms.saturating_add(wait))
    }
}

impl<T, E, F> Core<T, E, F>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    E: Fn(&T) -> u64,
{
    /// Takes an event in: moves the watermark, then judges it late or starts its transition.
    fn take<K: KeyExtractor<T>>(&mut self, extractor: &K, event: T) -> Taken<T> {
        if let Some(err) = &self.invalid {
            return Taken::Err(err.clone());
        }
        let mut key = match self.keyed.key_of(extractor, &event) {
            Ok(key) => key,
            Err(err) => return Taken::Err(err),
        };
        let t = (self.event_time)(&event);
        let now = self.keyed.now();
        let candidate = t.saturating_sub(self.out_of_orderness).min(MAX_WATERMARK);
        self.wm = if self.seen {
            self.wm.max(candidate)
        } else {
            candidate
        };
        self.seen = true;
        self.last_input_ms = now;
        self.wm_at_last_input = self.wm;
        let ctx = self.ctx(self.wm);
        if ctx.is_late(t) {
            self.late += 1;
            return Taken::Late(event);
        }
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        let io = self
            .own
            .transition(&mut self.keyed, &mut key, now, move |state| {
                let (change, used) = take_in(state, ctx, t, event, &mut ops);
                Ok((change, (ops, used)))
            });
        Taken::Io(key, io)
    }

    fn land_take(&mut self, key: &EventKey, result: StateResult<AddOut>) -> Option<StateError> {
        match result {
            Ok((ops, used)) => {
                self.next_seq += used;
                self.apply(key.user_key(), None, ops);
                None
            }
            Err(err) => Some(err),
        }
    }

    fn begin_settle(&mut self, key: &str, entry: Entry) -> StateIo<SettleOut<T>> {
        let mut storage_key = match self.keyed.derived_key(key) {
            Ok(k) => k,
            Err(err) => return StateIo::ready(Err(err)),
        };
        let now = self.keyed.now();
        let ctx = self.ctx(self.settle_wm());
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        self.own
            .transition(&mut self.keyed, &mut storage_key, now, move |state| {
                let (change, settled) = settle(state, ctx, entry.start, &mut ops);
                Ok((change, (ops, settled)))
            })
    }

    /// The window to hand to the closure, an error item, or nothing.
    fn land_settle(
        &mut self,
        key: Arc<str>,
        entry: Entry,
        result: StateResult<SettleOut<T>>,
    ) -> Option<StateResult<TimeWindow<T>>> {
        let (ops, settled) = match result {
            Ok(out) => out,
            Err(err) => return Some(Err(not_emitted(err, &key, entry.start))),
        };
        self.apply(&key, Some(&key), ops);
        match settled {
            Settled::Fired { start, end, events } => Some(Ok(TimeWindow {
                key: key.to_string(),
                start_ms: start,
                end_ms: end,
                events,
            })),
            Settled::Quiet => None,
            // Purged already (by another pipeline sharing the store): its last firing had all
            // its events, or an event since would have made it due before this.
            Settled::Missing if entry.purge => None,
            Settled::Missing => Some(Err(StateError::storage_for(
                &key,
                format!(
                    "the event-time window starting at {} ms was no longer in storage when \
                     it was due (its state expired by the config's ttl or was evicted by \
                     max_size), so its events are lost; raise ttl above the windows' \
                     processing-time span, or max_size",
                    entry.start
                ),
            ))),
        }
    }
}

/// A failed read of a due window: the error, saying the window was not emitted.
fn not_emitted(err: StateError, key: &str, start: u64) -> StateError {
    let err = err.with_key(key);
    let note = format!(
        "; the event-time window starting at {start} ms was not emitted (its events stay in \
         storage until their ttl)"
    );
    match err {
        StateError::Storage(m) => StateError::Storage(m + &note),
        StateError::Serialization(m) => StateError::Serialization(m + &note),
        other => other,
    }
}

pin_project! {
    /// The stream both public types wrap.
    pub(super) struct Inner<S: Stream, K, E, F, Fut> {
        #[pin]
        stream: S,
        #[pin]
        running: Option<Fut>,
        #[pin]
        timer: Option<Sleep>,
        phase: Phase<S::Item>,
        key_extractor: K,
        pub(super) core: Core<S::Item, E, F>,
    }
}

impl<S: Stream, K, E, F, Fut> Inner<S, K, E, F, Fut> {
    pub fn new(stream: S, key_extractor: K, core: Core<S::Item, E, F>) -> Self {
        Self {
            stream,
            running: None,
            timer: None,
            phase: Phase::Idle,
            key_extractor,
            core,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

impl<S, K, E, F, Fut, R> Inner<S, K, E, F, Fut>
where
    S: Stream,
    S::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
    K: KeyExtractor<S::Item>,
    E: Fn(&S::Item) -> u64,
    F: FnMut(TimeWindow<S::Item>, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    /// `poll_next` of both streams: due windows first (in index order), then the input.
    pub fn poll_inner<M: Mode<R, S::Item>>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<StateResult<M::Item>>> {
        let mut this = self.project();
        let core = this.core;
        let mut budget = YieldBudget::default();
        loop {
            match std::mem::replace(this.phase, Phase::Idle) {
                Phase::Done => {
                    *this.phase = Phase::Done;
                    return Poll::Ready(None);
                }
                Phase::Running => {
                    let Some(fut) = this.running.as_mut().as_pin_mut() else {
                        continue;
                    };
                    let Poll::Ready(out) = fut.poll(cx) else {
                        *this.phase = Phase::Running;
                        return Poll::Pending;
                    };
                    this.running.set(None);
                    return Poll::Ready(Some(Ok(M::window(out))));
                }
                Phase::Adding(key, mut io) => {
                    let Poll::Ready(result) = Pin::new(&mut io).poll(cx) else {
                        *this.phase = Phase::Adding(key, io);
                        return Poll::Pending;
                    };
                    if let Some(err) = core.land_take(&key, result) {
                        return Poll::Ready(Some(Err(err)));
                    }
                    if budget.spend(cx) {
                        return Poll::Pending;
                    }
                }
                Phase::Settling(key, entry, mut io) => {
                    let Poll::Ready(result) = Pin::new(&mut io).poll(cx) else {
                        *this.phase = Phase::Settling(key, entry, io);
                        return Poll::Pending;
                    };
                    match core.land_settle(key, entry, result) {
                        Some(Ok(window)) => {
                            let now = core.keyed.now();
                            let access = core.user_state.access_for(&window.key, now);
                            this.running.set(Some((core.f)(window, access)));
                            *this.phase = Phase::Running;
                        }
                        Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                        None => {
                            if budget.spend(cx) {
                                return Poll::Pending;
                            }
                        }
                    }
                }
                Phase::Idle => {
                    if let Some((entry, key)) = core.next_due() {
                        let io = core.begin_settle(&key, entry);
                        *this.phase = Phase::Settling(key, entry, io);
                        continue;
                    }
                    if core.input_done {
                        this.timer.set(None);
                        *this.phase = Phase::Done;
                        return Poll::Ready(None);
                    }
                    let event = match this.stream.as_mut().poll_next(cx) {
                        Poll::Ready(Some(event)) => event,
                        Poll::Ready(None) => {
                            core.input_done = true;
                            continue;
                        }
                        Poll::Pending => {
                            core.idle_advance(core.keyed.now());
                            if core
                                .index
                                .first_key_value()
                                .is_some_and(|(e, _)| e.deadline <= core.wm)
                            {
                                continue;
                            }
                            let Some(deadline) = core.idle_deadline() else {
                                return Poll::Pending;
                            };
                            let timer = this.timer.as_mut();
                            match poll_timer(timer, &mut core.armed_for, &core.keyed, deadline, cx)
                            {
                                Poll::Ready(()) => continue,
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                    };
                    match core.take(this.key_extractor, event) {
                        Taken::Late(event) => {
                            if let Some(item) = M::late(event) {
                                return Poll::Ready(Some(Ok(item)));
                            }
                            if budget.spend(cx) {
                                return Poll::Pending;
                            }
                        }
                        Taken::Err(err) => return Poll::Ready(Some(Err(err))),
                        Taken::Io(key, io) => *this.phase = Phase::Adding(key, io),
                    }
                }
            }
        }
    }
}

impl<S: Stream + std::fmt::Debug, K, E, F, Fut> std::fmt::Debug for Inner<S, K, E, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match &self.phase {
            Phase::Idle => "idle",
            Phase::Adding(..) => "adding",
            Phase::Settling(..) => "settling",
            Phase::Running => "running",
            Phase::Done => "done",
        };
        f.debug_struct("EventTimeDriver")
            .field("stream", &self.stream)
            .field("phase", &phase)
            .field("watermark", &self.core.watermark())
            .field("late", &self.core.late)
            .field("indexed_windows", &self.core.indexed())
            .field("input_done", &self.core.input_done)
            .finish_non_exhaustive()
    }
}
