//! The one stream that runs every per-event operator.
//!
//! An operator is an [`EventOp`]: what it does with one event's state (its transition), what
//! the transition's result emits (an item, nothing, or the user's closure to run), and what the
//! closure's output becomes. [`Driver`] does the rest for all of them, the same way: take an
//! event, extract its key, read the clock once, run the transition (on an in-process store it
//! has answered already, so the event goes on without a round trip through the state machine),
//! poll the closure, save, yield, and spend the yield budget on events that yield nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateError, StateResult};

use super::budget::YieldBudget;
use super::keyed::{EventKey, KeyedState, StateIo};

/// What the transition's result makes of an event.
pub(crate) enum Emit<R, Fut> {
    /// Yield `Ok(R)`.
    Item(R),
    /// Yield nothing for this event (dropped, or buffered).
    Skip,
    /// Run the user's closure; [`EventOp::finish`] gets its output.
    Run(Fut),
    /// Wait for this write of the operator's state, then yield the operator's
    /// [`saved`](EventOp::saved) item (or the write's error).
    Save(StateIo<()>),
    /// Yield this error for the event.
    Err(StateError),
}

/// What the closure's output makes of an event.
pub(crate) enum Finish<R> {
    /// Yield `Ok(R)`.
    Item(R),
    /// Yield nothing for this event.
    Skip,
    /// Wait for this write of the operator's state, then yield the operator's
    /// [`saved`](EventOp::saved) item (or the write's error).
    Save(StateIo<()>),
    /// Yield this error for the event.
    Err(StateError),
}

/// A per-event operator, run by [`Driver`].
pub(crate) trait EventOp<T> {
    /// The transition's result.
    type Out;
    /// The user's closure's future.
    type Fut: Future;
    /// What the stream yields as `Ok`.
    type Item;

    /// Starts `event`, whose key is `key`, at `now`: its state transition (`keyed` is the
    /// operator's own state).
    fn begin(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        event: T,
    ) -> StateIo<Self::Out>;

    /// What the finished transition makes of the event (`keyed` is the operator's own state,
    /// for a write the event makes without a closure).
    fn emit(
        &mut self,
        out: Self::Out,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> Emit<Self::Item, Self::Fut>;

    /// What the closure's output makes of the event. The default is for operators that never
    /// return [`Emit::Run`].
    fn finish(
        &mut self,
        output: <Self::Fut as Future>::Output,
        keyed: &mut KeyedState,
        key: EventKey,
        now: u64,
    ) -> Finish<Self::Item> {
        let _ = (output, keyed, now);
        Finish::Err(StateError::storage_for(
            key.user_key(),
            "this operator runs no closure",
        ))
    }

    /// The item to yield once a [`Finish::Save`] write has landed.
    fn saved(&mut self) -> Option<Self::Item> {
        None
    }

    /// An error to yield before taking the next event (the default: none).
    fn side_error(&mut self) -> Option<StateError> {
        None
    }

    /// The input has ended: the user key of the next state to flush (a partial window), if
    /// any; [`begin_flush`](Self::begin_flush) then runs its transition. The default: none.
    fn next_flush(&mut self) -> Option<Arc<str>> {
        None
    }

    /// Starts flushing `key`'s state at end of input (see [`next_flush`](Self::next_flush)).
    fn begin_flush(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> StateIo<Self::Out> {
        let _ = (keyed, now);
        StateIo::ready(Err(StateError::storage_for(
            key.user_key(),
            "this operator has nothing to flush",
        )))
    }
}

pin_project! {
    /// Runs the per-event operator `Op` over `stream`; yields `Ok` items and `Err` items for
    /// the events whose state failed (the stream goes on with the next event). `O` and `Fut`
    /// are `Op`'s `Out` and `Fut` (named here so the operators' stream types need no bounds).
    pub(crate) struct Driver<S, K, Op, O, Fut> {
        #[pin]
        stream: S,
        #[pin]
        running: Option<Fut>,
        phase: Phase<O>,
        keyed: KeyedState,
        key_extractor: K,
        op: Op,
        input_done: bool,
    }
}

enum Phase<O> {
    /// Waiting for the next event (or, once the input ended, the next flush).
    Idle,
    /// The event's transition is in flight (a store that is not in-process).
    Transition {
        key: EventKey,
        now: u64,
        io: StateIo<O>,
    },
    /// The user's closure is running.
    Running {
        key: EventKey,
        now: u64,
    },
    /// The closure's result is being saved.
    Saving {
        io: StateIo<()>,
    },
    /// The operator's arguments were invalid: report it, then end.
    Invalid(StateError),
    Done,
}

impl<S: Stream, K, Op, O, Fut> Driver<S, K, Op, O, Fut> {
    /// Runs `op` over `stream`, keying events with `key_extractor`; `invalid` is an argument
    /// error to yield (alone) instead of reading the input.
    pub fn new(
        stream: S,
        keyed: KeyedState,
        key_extractor: K,
        op: Op,
        invalid: Option<StateError>,
    ) -> Self {
        Self {
            stream,
            running: None,
            phase: invalid.map_or(Phase::Idle, Phase::Invalid),
            keyed,
            key_extractor,
            op,
            input_done: false,
        }
    }

    /// The operator's figures (its `stats()`).
    pub fn stats(&self) -> rs2_state_core::StateStats {
        self.keyed.stats().clone()
    }

    /// The operator.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Whether the stream has ended.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The stream's size hint, given at most `per_event` items per input event.
    pub fn size_hint_with(&self, per_event: Option<usize>) -> (usize, Option<usize>) {
        match &self.phase {
            Phase::Done => (0, Some(0)),
            Phase::Invalid(_) => (1, Some(1)),
            _ => {
                let in_flight = usize::from(!matches!(self.phase, Phase::Idle));
                let (_, hi) = self.stream.size_hint();
                let hi = match (hi, per_event) {
                    (Some(hi), Some(n)) if !self.input_done => hi
                        .checked_add(in_flight)
                        .and_then(|events| events.checked_mul(n)),
                    _ => None,
                };
                (0, hi)
            }
        }
    }
}

impl<S, K, Op, O, Fut> Driver<S, K, Op, O, Fut>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    Op: EventOp<S::Item, Out = O, Fut = Fut>,
    Fut: Future,
{
    /// `poll_next` of the operator's stream: in the operator's span; an `Err` item is counted
    /// and logged.
    pub fn poll_driver(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<StateResult<Op::Item>>> {
        // A clone of a disabled span (no subscriber wants it) is a copy; entering it, nothing.
        let span = self.keyed.span().clone();
        let _entered = span.enter();
        let polled = self.as_mut().poll_events(cx);
        if let Poll::Ready(Some(Err(err))) = &polled {
            self.keyed.note_error(err);
        }
        polled
    }

    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<StateResult<Op::Item>>> {
        let mut this = self.project();
        let mut budget = YieldBudget::default();
        loop {
            let (mut key, now, out) = match std::mem::replace(this.phase, Phase::Idle) {
                Phase::Done => {
                    *this.phase = Phase::Done;
                    return Poll::Ready(None);
                }
                Phase::Invalid(err) => {
                    *this.phase = Phase::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                Phase::Idle => {
                    if let Some(err) = this.op.side_error() {
                        return Poll::Ready(Some(Err(err)));
                    }
                    let (key, now, io) = if !*this.input_done {
                        let Some(event) = ready!(this.stream.as_mut().poll_next(cx)) else {
                            *this.input_done = true;
                            continue;
                        };
                        let mut key = match this.keyed.key_of(this.key_extractor, &event) {
                            Ok(key) => key,
                            Err(err) => return Poll::Ready(Some(Err(err))),
                        };
                        let now = this.keyed.now();
                        let io = this.op.begin(this.keyed, &mut key, now, event);
                        (key, now, io)
                    } else {
                        let Some(user_key) = this.op.next_flush() else {
                            *this.phase = Phase::Done;
                            return Poll::Ready(None);
                        };
                        let mut key = match this.keyed.derived_key(&user_key) {
                            Ok(key) => key,
                            Err(err) => return Poll::Ready(Some(Err(err))),
                        };
                        let now = this.keyed.now();
                        let io = this.op.begin_flush(this.keyed, &mut key, now);
                        (key, now, io)
                    };
                    // An in-process store has answered already: go on at once.
                    match io.into_ready() {
                        Ok(result) => (key, now, result),
                        Err(io) => {
                            *this.phase = Phase::Transition { key, now, io };
                            continue;
                        }
                    }
                }
                Phase::Transition { key, now, mut io } => match Pin::new(&mut io).poll(cx) {
                    Poll::Ready(result) => (key, now, result),
                    Poll::Pending => {
                        *this.phase = Phase::Transition { key, now, io };
                        return Poll::Pending;
                    }
                },
                Phase::Running { key, now } => {
                    let Some(fut) = this.running.as_mut().as_pin_mut() else {
                        return Poll::Ready(Some(Err(StateError::storage_for(
                            key.user_key(),
                            "operator closure lost",
                        ))));
                    };
                    let output = match fut.poll(cx) {
                        Poll::Ready(output) => output,
                        Poll::Pending => {
                            *this.phase = Phase::Running { key, now };
                            return Poll::Pending;
                        }
                    };
                    this.running.set(None);
                    match this.op.finish(output, this.keyed, key, now) {
                        Finish::Item(item) => return Poll::Ready(Some(Ok(item))),
                        Finish::Err(err) => return Poll::Ready(Some(Err(err))),
                        Finish::Skip => {
                            if budget.spend(cx) {
                                return Poll::Pending;
                            }
                            continue;
                        }
                        Finish::Save(io) => {
                            *this.phase = Phase::Saving { io };
                            continue;
                        }
                    }
                }
                Phase::Saving { mut io } => match Pin::new(&mut io).poll(cx) {
                    Poll::Ready(result) => {
                        return Poll::Ready(Some(result.and_then(|()| {
                            this.op.saved().ok_or_else(|| {
                                StateError::Storage("operator lost its saved item".into())
                            })
                        })))
                    }
                    Poll::Pending => {
                        *this.phase = Phase::Saving { io };
                        return Poll::Pending;
                    }
                },
            };
            let out = match out {
                Ok(out) => out,
                Err(err) => return Poll::Ready(Some(Err(err))),
            };
            match this.op.emit(out, this.keyed, &mut key, now) {
                Emit::Item(item) => return Poll::Ready(Some(Ok(item))),
                Emit::Err(err) => return Poll::Ready(Some(Err(err))),
                Emit::Save(io) => *this.phase = Phase::Saving { io },
                Emit::Skip => {
                    if budget.spend(cx) {
                        return Poll::Pending;
                    }
                }
                Emit::Run(fut) => {
                    this.running.set(Some(fut));
                    *this.phase = Phase::Running { key, now };
                }
            }
        }
    }
}

impl<S: std::fmt::Debug, K, Op, O, Fut> std::fmt::Debug for Driver<S, K, Op, O, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match &self.phase {
            Phase::Idle => "idle",
            Phase::Transition { .. } => "transition",
            Phase::Running { .. } => "running",
            Phase::Saving { .. } => "saving",
            Phase::Invalid(_) => "invalid",
            Phase::Done => "done",
        };
        f.debug_struct("Driver")
            .field("stream", &self.stream)
            .field("phase", &phase)
            .field("input_done", &self.input_done)
            .finish_non_exhaustive()
    }
}

/// Implements `Stream`, `FusedStream` and `Debug` (when the input stream is `Debug`) for an
/// operator's public stream type: a `pin_project` wrapper whose field `inner` is a [`Driver`]
/// and whose input stream type parameter is `S`. `per_event` bounds the items per input event
/// (`None`: unbounded) for `size_hint`.
macro_rules! driven_stream {
    (
        $name:ident < $($sg:ident),* >, impl < $($g:ident),* >,
        Item = $item:ty, per_event = $per:expr, where $($bounds:tt)*
    ) => {
        impl<$($g),*> futures::Stream for $name<$($sg),*>
        where
            $($bounds)*
        {
            type Item = Result<$item, rs2_state_core::StateError>;

            fn poll_next(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                self.project().inner.poll_driver(cx)
            }

            fn size_hint(&self) -> (usize, Option<usize>) {
                self.inner.size_hint_with($per)
            }
        }

        impl<$($g),*> futures::stream::FusedStream for $name<$($sg),*>
        where
            $($bounds)*
        {
            fn is_terminated(&self) -> bool {
                self.inner.is_done()
            }
        }

        impl<$($sg),*> $name<$($sg),*>
        where
            S: futures::Stream,
        {
            /// This operator's figures, readable while the stream runs (clone the handle
            /// before consuming the stream): its store's entries, hits, misses, writes,
            /// evictions and expirations, and its `Err` items as `errors`. The config's handle
            /// ([`StateConfig::stats`](rs2_state_core::StateConfig::stats)) if it has one,
            /// else the operator's own.
            pub fn stats(&self) -> rs2_state_core::StateStats {
                self.inner.stats()
            }
        }

        impl<$($sg),*> std::fmt::Debug for $name<$($sg),*>
        where
            S: futures::Stream + std::fmt::Debug,
        {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inner", &self.inner)
                    .finish()
            }
        }
    };
}
pub(crate) use driven_stream;
