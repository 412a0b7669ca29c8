//! `stateful_join_rs2`: a symmetric inner join of two streams by key within a time window.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{Fuse, FusedStream, StreamExt};
use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::{EventKey, KeyedState, StateIo};

/// Events of one side buffered under a key: (arrival time in ms, event), oldest first.
type Buffer<E> = Vec<(u64, E)>;

pin_project! {
    /// Stream returned by [`stateful_join_rs2`](crate::StatefulStreamExt::stateful_join_rs2).
    ///
    /// Semantics (inner join, symmetric):
    /// * Each event of either input is buffered under its key with its arrival time, and meets
    ///   every buffered event of the *other* input with the same key that arrived at most
    ///   `window` before it; each such pair is passed to the closure (left event first) and its
    ///   result yielded as `Ok`, in arrival order of the buffered events.
    /// * The stream runs until **both** inputs end; the two inputs are polled alternately so
    ///   neither starves the other.
    /// * Buffered events older than `window` are dropped when their key is next touched, and
    ///   whole buffers expire with the config's TTL, so memory stays bounded. A key's buffer on
    ///   one side holds at most `max_size` events (the config's `max_size`, or 10,000 when
    ///   unbounded); when it is full the oldest buffered event is dropped to make room, and
    ///   can then no longer be matched. [`dropped`](Self::dropped) counts such events.
    /// * Buffers live in the configured storage (namespaces `join.left` and `join.right`); the
    ///   closure's [`StateAccess`] is the key's user state (namespace `join`).
    ///
    /// An `Err` item reports a failure for one arrival (key extraction, backend, a buffer that
    /// cannot be decoded, which is left untouched); the join goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulJoin<S1: Stream, S2: Stream, K1, K2, F, Fut> {
        #[pin]
        left: Fuse<S1>,
        #[pin]
        right: Fuse<S2>,
        #[pin]
        pending: Option<Fut>,
        step: Step<S1::Item, S2::Item>,
        left_state: KeyedState,
        right_state: KeyedState,
        user_state: KeyedState,
        left_key: K1,
        right_key: K2,
        window_ms: u64,
        max_buffer: usize,
        left_first: bool,
        dropped: u64,
        f: F,
    }
}

enum Arrival<T, U> {
    Left(T),
    Right(U),
}

enum Step<T, U> {
    Idle,
    Loading {
        arrival: Arrival<T, U>,
        left_key: EventKey,
        right_key: EventKey,
        now: u64,
        left_io: StateIo<Option<Buffer<T>>>,
        right_io: StateIo<Option<Buffer<U>>>,
        left_buf: Option<Buffer<T>>,
        right_buf: Option<Buffer<U>>,
    },
    Saving {
        user_key: String,
        now: u64,
        pairs: VecDeque<(T, U)>,
        left_io: Option<StateIo<()>>,
        right_io: Option<StateIo<()>>,
    },
    Emitting {
        user_key: String,
        now: u64,
        pairs: VecDeque<(T, U)>,
    },
}

impl<S1: Stream, S2: Stream, K1, K2, F, Fut> StatefulJoin<S1, S2, K1, K2, F, Fut> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        left: S1,
        right: S2,
        config: StateConfig,
        left_key: K1,
        right_key: K2,
        window: Duration,
        f: F,
    ) -> Self {
        let max_buffer = config
            .max_size
            .filter(|&n| n != usize::MAX)
            .unwrap_or(10_000);
        Self {
            left: left.fuse(),
            right: right.fuse(),
            pending: None,
            step: Step::Idle,
            left_state: KeyedState::new(&config, "join.left"),
            right_state: KeyedState::new(&config, "join.right"),
            user_state: KeyedState::new(&config, "join"),
            left_key,
            right_key,
            window_ms: window.as_millis() as u64,
            max_buffer,
            left_first: true,
            dropped: 0,
            f,
        }
    }

    /// Buffered events dropped so far because a key's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Saves a buffer, or removes the key when the buffer is empty.
fn store<E: Serialize>(
    state: &mut KeyedState,
    key: &mut EventKey,
    buf: &Buffer<E>,
    now: u64,
) -> StateIo<()> {
    if buf.is_empty() {
        state.remove(key)
    } else {
        state.save(key, buf, now)
    }
}

impl<S1, S2, K1, K2, F, Fut, R> Stream for StatefulJoin<S1, S2, K1, K2, F, Fut>
where
    S1: Stream,
    S2: Stream,
    S1::Item: Clone + Serialize + DeserializeOwned + Send + 'static,
    S2::Item: Clone + Serialize + DeserializeOwned + Send + 'static,
    K1: KeyExtractor<S1::Item>,
    K2: KeyExtractor<S2::Item>,
    F: FnMut(S1::Item, S2::Item, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    type Item = Result<R, StateError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(fut) = this.pending.as_mut().as_pin_mut() {
                let out = futures::ready!(fut.poll(cx));
                this.pending.set(None);
                return Poll::Ready(Some(Ok(out)));
            }
            match std::mem::replace(this.step, Step::Idle) {
                Step::Idle => {
                    let arrival = {
                        let left_first = *this.left_first;
                        *this.left_first = !left_first;
                        let mut arrival = None;
                        for take_left in [left_first, !left_first] {
                            if take_left {
                                if let Poll::Ready(Some(t)) = this.left.as_mut().poll_next(cx) {
                                    arrival = Some(Arrival::Left(t));
                                    break;
                                }
                            } else if let Poll::Ready(Some(u)) = this.right.as_mut().poll_next(cx) {
                                arrival = Some(Arrival::Right(u));
                                break;
                            }
                        }
                        match arrival {
                            Some(arrival) => arrival,
                            None if this.left.is_terminated() && this.right.is_terminated() => {
                                return Poll::Ready(None)
                            }
                            None => return Poll::Pending,
                        }
                    };
                    let user_key = match &arrival {
                        Arrival::Left(t) => this.left_state.key_of(this.left_key, t),
                        Arrival::Right(u) => this.right_state.key_of(this.right_key, u),
                    };
                    let keys = user_key.and_then(|k| match &arrival {
                        Arrival::Left(_) => {
                            let other = this.right_state.derived_key(k.user_key())?;
                            Ok((k, other))
                        }
                        Arrival::Right(_) => {
                            let other = this.left_state.derived_key(k.user_key())?;
                            Ok((other, k))
                        }
                    });
                    let (mut left_key, mut right_key) = match keys {
                        Ok(keys) => keys,
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    };
                    let now = this.left_state.now();
                    let left_io = this.left_state.load(&mut left_key, now);
                    let right_io = this.right_state.load(&mut right_key, now);
                    *this.step = Step::Loading {
                        arrival,
                        left_key,
                        right_key,
                        now,
                        left_io,
                        right_io,
                        left_buf: None,
                        right_buf: None,
                    };
                }
                Step::Loading {
                    arrival,
                    mut left_key,
                    mut right_key,
                    now,
                    mut left_io,
                    mut right_io,
                    mut left_buf,
                    mut right_buf,
                } => {
                    if left_buf.is_none() {
                        match Pin::new(&mut left_io).poll(cx) {
                            Poll::Ready(Ok(buf)) => left_buf = Some(buf.unwrap_or_default()),
                            Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                            Poll::Pending => {}
                        }
                    }
                    if right_buf.is_none() {
                        match Pin::new(&mut right_io).poll(cx) {
                            Poll::Ready(Ok(buf)) => right_buf = Some(buf.unwrap_or_default()),
                            Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                            Poll::Pending => {}
                        }
                    }
                    let (Some(mut lbuf), Some(mut rbuf)) = (left_buf.take(), right_buf.take())
                    else {
                        *this.step = Step::Loading {
                            arrival,
                            left_key,
                            right_key,
                            now,
                            left_io,
                            right_io,
                            left_buf,
                            right_buf,
                        };
                        return Poll::Pending;
                    };
                    let window = *this.window_ms;
                    let oldest_kept = now.saturating_sub(window);
                    lbuf.retain(|(at, _)| *at >= oldest_kept);
                    rbuf.retain(|(at, _)| *at >= oldest_kept);
                    let max = (*this.max_buffer).max(1);
                    let pairs: VecDeque<_> = match arrival {
                        Arrival::Left(t) => {
                            let pairs = rbuf.iter().map(|(_, u)| (t.clone(), u.clone())).collect();
                            if lbuf.len() >= max {
                                let excess = lbuf.len() + 1 - max;
                                lbuf.drain(..excess);
                                *this.dropped += excess as u64;
                            }
                            lbuf.push((now, t));
                            pairs
                        }
                        Arrival::Right(u) => {
                            let pairs = lbuf.iter().map(|(_, t)| (t.clone(), u.clone())).collect();
                            if rbuf.len() >= max {
                                let excess = rbuf.len() + 1 - max;
                                rbuf.drain(..excess);
                                *this.dropped += excess as u64;
                            }
                            rbuf.push((now, u));
                            pairs
                        }
                    };
                    let left_io = store(this.left_state, &mut left_key, &lbuf, now);
                    let right_io = store(this.right_state, &mut right_key, &rbuf, now);
                    *this.step = Step::Saving {
                        user_key: left_key.user_key().to_owned(),
                        now,
                        pairs,
                        left_io: Some(left_io),
                        right_io: Some(right_io),
                    };
                }
                Step::Saving {
                    user_key,
                    now,
                    pairs,
                    mut left_io,
                    mut right_io,
                } => {
                    let mut failure = None;
                    for io in [&mut left_io, &mut right_io] {
                        if let Some(pending_io) = io {
                            match Pin::new(pending_io).poll(cx) {
                                Poll::Ready(result) => {
                                    *io = None;
                                    failure = failure.or(result.err());
                                }
                                Poll::Pending => {}
                            }
                        }
                    }
                    if let Some(err) = failure {
                        *this.step = Step::Saving {
                            user_key,
                            now,
                            pairs,
                            left_io,
                            right_io,
                        };
                        return Poll::Ready(Some(Err(err)));
                    }
                    let saved = left_io.is_none() && right_io.is_none();
                    *this.step = if saved {
                        Step::Emitting {
                            user_key,
                            now,
                            pairs,
                        }
                    } else {
                        Step::Saving {
                            user_key,
                            now,
                            pairs,
                            left_io,
                            right_io,
                        }
                    };
                    if !saved {
                        return Poll::Pending;
                    }
                }
                Step::Emitting {
                    user_key,
                    now,
                    mut pairs,
                } => {
                    let Some((t, u)) = pairs.pop_front() else {
                        continue;
                    };
                    let access = match this.user_state.derived_key(&user_key) {
                        Ok(key) => this.user_state.access(key, now),
                        Err(err) => KeyedState::failed_access(err),
                    };
                    this.pending.set(Some((this.f)(t, u, access)));
                    *this.step = Step::Emitting {
                        user_key,
                        now,
                        pairs,
                    };
                }
            }
        }
    }
}
