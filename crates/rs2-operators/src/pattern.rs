//! `stateful_pattern_rs2`: runs a detector over each key's last `pattern_size` events.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keyed::{EventKey, KeyedState, StateIo};

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
    /// load and one store of its key's events (encoding `O(pattern_size)` events).
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
        key_extractor: K,
        f: F,
    }
}

enum Step<T> {
    Idle,
    /// Invalid arguments: report them, then end.
    Invalid(StateError),
    Done,
    Loading {
        event: T,
        key: EventKey,
        now: u64,
        io: StateIo<Option<VecDeque<T>>>,
    },
    Saving {
        key: EventKey,
        now: u64,
        io: StateIo<()>,
        window: Option<Vec<T>>,
    },
    Running,
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
                    let io = this.pattern_state.load(&mut key, now);
                    *this.step = Step::Loading {
                        event,
                        key,
                        now,
                        io,
                    };
                }
                Step::Loading {
                    event,
                    mut key,
                    now,
                    mut io,
                } => {
                    let stored = match Pin::new(&mut io).poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Loading {
                                event,
                                key,
                                now,
                                io,
                            };
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                        Poll::Ready(Ok(stored)) => stored,
                    };
                    let size = *this.pattern_size;
                    let mut ring = stored.unwrap_or_default();
                    // Longer only if stored by an operator with a larger pattern_size.
                    while ring.len() >= size {
                        ring.pop_front();
                    }
                    ring.push_back(event);
                    let io = this.pattern_state.save(&mut key, &ring, now);
                    let window = (ring.len() == size).then(|| Vec::from(ring));
                    *this.step = Step::Saving {
                        key,
                        now,
                        io,
                        window,
                    };
                }
                Step::Saving {
                    key,
                    now,
                    mut io,
                    window,
                } => {
                    match Pin::new(&mut io).poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Saving {
                                key,
                                now,
                                io,
                                window,
                            };
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                        Poll::Ready(Ok(())) => {}
                    }
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
