//! `stateful_pattern_rs2`: runs a detector over each key's last `pattern_size` events.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::event_log::{LogError, LogWriter};
use crate::engine::{Change, EventKey, KeyedState, StateIo};

pin_project! {
    /// Stream returned by [`stateful_pattern_rs2`](crate::StatefulStreamExt::stateful_pattern_rs2).
    ///
    /// Per key, the operator keeps the key's last `pattern_size` events. On each event, once
    /// the key has seen at least `pattern_size` events, the closure gets those events (oldest
    /// first, the current event last) and a [`StateAccess`] for the key's own user state
    /// (namespace `pattern.user`); a `Some(r)` it resolves to is yielded as `Ok(r)`, a `None`
    /// yields nothing. Before a key has `pattern_size` events the closure is not called for it.
    /// Any `pattern_size` from 1 up works.
    ///
    /// **State.** Per key, its last `pattern_size` events, in the configured storage (namespace
    /// `pattern`), written on every event; so TTL, `max_size` and custom backends apply, and a
    /// key whose events expired or were evicted starts collecting again. Each event costs one
    /// read-modify-write of its key's events that encodes only this event: in an in-process
    /// store the stored bytes are edited in place (this event's encoding appended, the oldest
    /// event's cut from the front). Once the key has
    /// `pattern_size` events, each event also decodes the `pattern_size - 1` stored ones to
    /// hand them to the closure (`O(pattern_size)` decoding per event, none re-encoded); before
    /// that nothing is decoded, except that events this operator did not write itself (an
    /// earlier pipeline's, on a durable store) are decoded in full once, to check them.
    ///
    /// **Errors.** `pattern_size == 0` yields one [`StateError::Validation`] item and ends the
    /// stream without reading the input. An invalid config, a failing key extractor, a backend
    /// failure, or stored events that cannot be decoded yield an `Err` item for that event
    /// (naming the key where there is one) instead of calling the closure; the event is not
    /// added to the key's stored events, and the stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulPattern<S: futures::Stream, K, F, Fut> {
        #[pin]
        stream: S,
        #[pin]
        pending: Option<Fut>,
        step: Step<S::Item>,
        pattern_size: usize,
        pattern_state: KeyedState,
        user_state: KeyedState,
        rings: LogWriter,
        key_extractor: K,
        f: F,
    }
}

/// Tag of a stored ring (see `event_log`): a key's last events, oldest first.
const RING_TAG: u8 = 0x70;

enum Step<T> {
    Idle,
    /// Invalid arguments: report them, then end.
    Invalid(StateError),
    Done,
    /// Adding an event to its key's last events; then they go to the closure, if there are
    /// `pattern_size` of them.
    Updating {
        key: EventKey,
        now: u64,
        io: StateIo<Option<Vec<T>>>,
    },
    Running,
}

/// Adds `event` to the key's stored last events, edited in place in `bytes` (`existed`: the
/// key had some), keeping the last `size`; returns them once there are `size`. On an error
/// `bytes` is left as it was.
fn push<T: Serialize + DeserializeOwned>(
    rings: LogWriter,
    size: usize,
    bytes: &mut Vec<u8>,
    existed: bool,
    event: T,
) -> Result<(Change, Option<Vec<T>>), LogError> {
    let ring = rings.read::<T>(existed.then_some(&bytes[..]))?;
    let count = ring.count;
    if count + 1 < size {
        rings.append(bytes, &event)?;
        rings.set_header(bytes, 0, count + 1);
        return Ok((Change::Store, None));
    }
    // Drop the oldest event (more than one only if the ring was stored by an operator with a
    // larger pattern_size); decode the others for the closure.
    let mut events = ring.iter::<T>();
    for event in events.by_ref().take(count + 1 - size) {
        event?;
    }
    let cut_bytes = events.offset();
    let mut window = Vec::with_capacity(size);
    for event in events {
        window.push(event?);
    }
    rings.append(bytes, &event)?;
    rings.cut(bytes, cut_bytes);
    rings.set_header(bytes, 0, size);
    window.push(event);
    Ok((Change::Store, Some(window)))
}

impl<S: Stream, K, F, Fut> StatefulPattern<S, K, F, Fut> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        pattern_size: usize,
        f: F,
    ) -> Self {
        let step = if pattern_size == 0 {
            Step::Invalid(StateError::Validation(
                "pattern operator: pattern_size must be at least 1 (got 0)".into(),
            ))
        } else {
            Step::Idle
        };
        Self {
            stream,
            pending: None,
            step,
            pattern_size,
            pattern_state: KeyedState::new(&config, "pattern"),
            user_state: KeyedState::new(&config, "pattern.user"),
            rings: LogWriter::new(RING_TAG),
            key_extractor,
            f,
        }
    }
}

impl<S, K, F, Fut, R> Stream for StatefulPattern<S, K, F, Fut>
where
    S: Stream,
    S::Item: Serialize + DeserializeOwned + Send + 'static,
    K: KeyExtractor<S::Item>,
    F: FnMut(Vec<S::Item>, StateAccess) -> Fut,
    Fut: Future<Output = Option<R>>,
{
    type Item = Result<R, StateError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.step, Step::Idle) {
                Step::Invalid(err) => {
                    *this.step = Step::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                Step::Done => {
                    *this.step = Step::Done;
                    return Poll::Ready(None);
                }
                Step::Idle => {
                    let Some(event) = ready!(this.stream.as_mut().poll_next(cx)) else {
                        *this.step = Step::Done;
                        return Poll::Ready(None);
                    };
                    let mut key = match this.pattern_state.key_of(this.key_extractor, &event) {
                        Ok(key) => key,
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    };
                    let now = this.pattern_state.now();
                    let (size, rings) = (*this.pattern_size, *this.rings);
                    let update = move |key: &str, bytes: &mut Vec<u8>, existed: bool| {
                        push(rings, size, bytes, existed, event)
                            .map_err(|e| e.for_events::<S::Item>(key))
                    };
                    let io = this.pattern_state.update_bytes(&mut key, now, update);
                    *this.step = Step::Updating { key, now, io };
                }
                Step::Updating { key, now, mut io } => {
                    let window = match Pin::new(&mut io).poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Updating { key, now, io };
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                        Poll::Ready(Ok(window)) => window,
                    };
                    let Some(window) = window else {
                        continue;
                    };
                    let access = match this.user_state.derived_key(key.user_key()) {
                        Ok(user_key) => this.user_state.access(user_key, now),
                        Err(err) => KeyedState::failed_access(err),
                    };
                    this.pending.set(Some((this.f)(window, access)));
                    *this.step = Step::Running;
                }
                Step::Running => {
                    let Some(fut) = this.pending.as_mut().as_pin_mut() else {
                        continue;
                    };
                    let out = match fut.poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Running;
                            return Poll::Pending;
                        }
                        Poll::Ready(out) => out,
                    };
                    this.pending.set(None);
                    if let Some(out) = out {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
            }
        }
    }
}
