//! The event-time window stream: the poll loop both public stream types run (due windows
//! first, then the input, then the idle timer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Sleep;

use super::core::{AddOut, Core, SettleOut, Taken};
use super::windows::Entry;
use super::{EventTimeOutput, TimeWindow};
use crate::engine::timer::poll_timer;
use crate::engine::{EventKey, StateIo, YieldBudget};

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
        let span = core.keyed.span().clone();
        let _entered = span.enter();
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
                        core.keyed.note_error(&err);
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
                        Some(Err(err)) => {
                            core.keyed.note_error(&err);
                            return Poll::Ready(Some(Err(err)));
                        }
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
                            core.retry_failed();
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
                        Taken::Err(err) => {
                            core.keyed.note_error(&err);
                            return Poll::Ready(Some(Err(err)));
                        }
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
