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
use serde::{Deserialize, Serialize};

use crate::engine::own::OwnState;
use crate::engine::{Change, KeyedState, StateIo, YieldBudget};

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
    /// * A key's two buffers live together in the configured storage (namespace
    ///   `join.buffers`; typed in the operator's own table with an in-memory config), and each
    ///   arrival meets and joins them in one atomic transition (in a custom store, under the
    ///   key's lock), so pipelines sharing a store emit each pair exactly once. The closure's
    ///   [`StateAccess`] is the key's user state (namespace `join`).
    ///
    /// An `Err` item reports a failure for one arrival (key extraction, backend, buffers that
    /// cannot be decoded, which are left untouched); the join goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulJoin<S1: Stream, S2: Stream, K1, K2, F, Fut> {
        #[pin]
        left: Fuse<S1>,
        #[pin]
        right: Fuse<S2>,
        #[pin]
        pending: Option<Fut>,
        step: Step<S1::Item, S2::Item>,
        keyed: KeyedState,
        buffers: OwnState<Buffers<S1::Item, S2::Item>>,
        user_state: KeyedState,
        left_key: K1,
        right_key: K2,
        rule: Rule,
        left_first: bool,
        dropped: u64,
        f: F,
    }
}

/// A key's buffered events of each side: (arrival time in ms, event), oldest first.
#[derive(Serialize, Deserialize)]
struct Buffers<T, U> {
    left: Vec<(u64, T)>,
    right: Vec<(u64, U)>,
}

/// One event taken from either input.
enum Arrival<T, U> {
    Left(T),
    Right(U),
}

/// The pairs an arrival made, and how many buffered events it pushed out of a full buffer.
struct Met<T, U> {
    pairs: VecDeque<(T, U)>,
    dropped: u64,
}

enum Step<T, U> {
    Idle,
    /// The arrival's transition of its key's buffers (a store that is not in-process).
    Meeting {
        user_key: String,
        now: u64,
        io: StateIo<Met<T, U>>,
    },
    /// Handing the arrival's pairs to the closure, one at a time.
    Emitting {
        user_key: String,
        now: u64,
        pairs: VecDeque<(T, U)>,
    },
}

/// The join's window and buffer bound.
#[derive(Debug, Clone, Copy)]
struct Rule {
    window_ms: u64,
    max_buffer: usize,
}

impl Rule {
    /// The transition of one arrival at `now`: prune both buffers to the window, pair the
    /// arrival with every buffered event of the other side, buffer it (pushing out the oldest
    /// of a full buffer). An empty pair of buffers removes the key.
    fn meet<T: Clone, U: Clone>(
        self,
        buffers: &mut Option<Buffers<T, U>>,
        arrival: Arrival<T, U>,
        now: u64,
    ) -> (Change, Met<T, U>) {
        let b = buffers.get_or_insert_with(|| Buffers {
            left: Vec::new(),
            right: Vec::new(),
        });
        let oldest_kept = now.saturating_sub(self.window_ms);
        b.left.retain(|(at, _)| *at >= oldest_kept);
        b.right.retain(|(at, _)| *at >= oldest_kept);
        let max = self.max_buffer.max(1);
        let mut dropped = 0;
        let pairs = match arrival {
            Arrival::Left(t) => {
                let pairs = b
                    .right
                    .iter()
                    .map(|(_, u)| (t.clone(), u.clone()))
                    .collect();
                dropped += make_room(&mut b.left, max);
                b.left.push((now, t));
                pairs
            }
            Arrival::Right(u) => {
                let pairs = b.left.iter().map(|(_, t)| (t.clone(), u.clone())).collect();
                dropped += make_room(&mut b.right, max);
                b.right.push((now, u));
                pairs
            }
        };
        (Change::Store, Met { pairs, dropped })
    }
}

/// Drops the oldest events of `buf` so one more fits under `max`; returns how many.
fn make_room<E>(buf: &mut Vec<(u64, E)>, max: usize) -> u64 {
    if buf.len() < max {
        return 0;
    }
    let excess = buf.len() + 1 - max;
    buf.drain(..excess);
    excess as u64
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
        let config = crate::engine::with_stats(&config);
        let max_buffer = config
            .max_size
            .filter(|&n| n != usize::MAX)
            .unwrap_or(10_000);
        let keyed = KeyedState::new(&config, "join.buffers");
        Self {
            left: left.fuse(),
            right: right.fuse(),
            pending: None,
            step: Step::Idle,
            buffers: OwnState::new(&config, &keyed),
            keyed,
            user_state: KeyedState::new(&config, "join"),
            left_key,
            right_key,
            rule: Rule {
                window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                max_buffer,
            },
            left_first: true,
            dropped: 0,
            f,
        }
    }

    /// Buffered events dropped so far because a key's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// This operator's figures, readable while the stream runs (clone the handle before
    /// consuming the stream): its stores' entries, hits, misses, writes, evictions and
    /// expirations. The config's handle ([`StateConfig::stats`]) if it has one, else the
    /// operator's own.
    pub fn stats(&self) -> rs2_state_core::StateStats {
        self.keyed.stats().clone()
    }
}

/// The next event of either input, taking them alternately (`left_first` flips every call);
/// `Ready(None)` once both have ended.
fn next_arrival<S1: Stream, S2: Stream>(
    mut left: Pin<&mut Fuse<S1>>,
    mut right: Pin<&mut Fuse<S2>>,
    left_first: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Arrival<S1::Item, S2::Item>>> {
    let first = *left_first;
    *left_first = !first;
    for take_left in [first, !first] {
        if take_left {
            if let Poll::Ready(Some(t)) = left.as_mut().poll_next(cx) {
                return Poll::Ready(Some(Arrival::Left(t)));
            }
        } else if let Poll::Ready(Some(u)) = right.as_mut().poll_next(cx) {
            return Poll::Ready(Some(Arrival::Right(u)));
        }
    }
    if left.is_terminated() && right.is_terminated() {
        Poll::Ready(None)
    } else {
        Poll::Pending
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
        let span = this.keyed.span().clone();
        let _entered = span.enter();
        let mut budget = YieldBudget::default();
        loop {
            if let Some(fut) = this.pending.as_mut().as_pin_mut() {
                let out = futures::ready!(fut.poll(cx));
                this.pending.set(None);
                return Poll::Ready(Some(Ok(out)));
            }
            let (user_key, now, met) = match std::mem::replace(this.step, Step::Idle) {
                Step::Idle => {
                    let next =
                        next_arrival(this.left.as_mut(), this.right.as_mut(), this.left_first, cx);
                    let Some(arrival) = futures::ready!(next) else {
                        return Poll::Ready(None);
                    };
                    let key = match &arrival {
                        Arrival::Left(t) => this.keyed.key_of(this.left_key, t),
                        Arrival::Right(u) => this.keyed.key_of(this.right_key, u),
                    };
                    let mut key = match key {
                        Ok(key) => key,
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    };
                    let now = this.keyed.now();
                    let rule = *this.rule;
                    let io = this
                        .buffers
                        .transition(this.keyed, &mut key, now, move |b| {
                            Ok(rule.meet(b, arrival, now))
                        });
                    let user_key = key.user_key().to_owned();
                    match io.into_ready() {
                        Ok(met) => (user_key, now, met),
                        Err(io) => {
                            *this.step = Step::Meeting { user_key, now, io };
                            continue;
                        }
                    }
                }
                Step::Meeting {
                    user_key,
                    now,
                    mut io,
                } => match Pin::new(&mut io).poll(cx) {
                    Poll::Ready(met) => (user_key, now, met),
                    Poll::Pending => {
                        *this.step = Step::Meeting { user_key, now, io };
                        return Poll::Pending;
                    }
                },
                Step::Emitting {
                    user_key,
                    now,
                    mut pairs,
                } => {
                    if let Some((t, u)) = pairs.pop_front() {
                        let access = this.user_state.access_for(&user_key, now);
                        this.pending.set(Some((this.f)(t, u, access)));
                        *this.step = Step::Emitting {
                            user_key,
                            now,
                            pairs,
                        };
                    } else if budget.spend(cx) {
                        // A long run of arrivals that met nothing: let other tasks run.
                        return Poll::Pending;
                    }
                    continue;
                }
            };
            match met {
                Ok(Met { pairs, dropped }) => {
                    *this.dropped += dropped;
                    *this.step = Step::Emitting {
                        user_key,
                        now,
                        pairs,
                    };
                }
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
        }
    }
}
