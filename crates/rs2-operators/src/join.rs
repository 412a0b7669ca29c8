//! `stateful_join_rs2`: a symmetric inner join of two streams by key within a time window.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{Fuse, FusedStream, StreamExt};
use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use rs2_state_memory::TypedTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::own::typed_transition;
use crate::engine::{Change, EventKey, KeyedState, StateIo, YieldBudget};

mod buffers;

/// A key's buffer on one side holds at most this many events unless
/// [`StatefulJoin::max_buffered`] says otherwise (decision 012).
const DEFAULT_MAX_BUFFERED: usize = 10_000;

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
    /// * **Bounds.** Buffered events older than `window` are dropped from the front of their
    ///   buffers when their key is next touched, and whole buffers expire with the config's TTL
    ///   and count toward its `max_size` (one entry per key). A key's buffer on one side holds
    ///   at most [`max_buffered`](Self::max_buffered) events, 10,000 unless set: when it is
    ///   full, an arrival on that side pushes out the side's **oldest** buffered event, which
    ///   can then no longer be matched; [`dropped`](Self::dropped) counts those events.
    /// * **Cost of an arrival.** It prunes the expired events it finds at the front, meets the
    ///   other side's events within the window (one closure call each: the join's output) and
    ///   buffers itself; nothing else of the buffers is decoded, encoded, copied or scanned,
    ///   however many events they hold. In the operator's own table (an in-memory config) the
    ///   buffers are typed `VecDeque`s; in a custom store they are bytes edited in place
    ///   (decision 012). A store that is not in-process still moves the key's whole entry each
    ///   way per arrival (`StateStorage` reads and writes whole values), without decoding it.
    /// * A key's two buffers live together in the configured storage (namespace
    ///   `join.buffers`), and each arrival meets and joins them in one atomic transition (in a
    ///   custom store, under the key's lock), so pipelines sharing a store emit each pair
    ///   exactly once. The closure's [`StateAccess`] is the key's user state (namespace `join`).
    ///
    /// An `Err` item reports a failure for one arrival (key extraction, backend, buffers that
    /// cannot be decoded, which are left untouched); that arrival is neither buffered nor
    /// matched, and the join goes on with the next event. `max_buffered(0)` gives one
    /// [`StateError::Validation`] item and the stream ends without reading its inputs.
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
        // The buffers, typed, when the store is private to the operator; else bytes in it.
        typed: Option<TypedTable<Sides<S1::Item, S2::Item>>>,
        stamp: buffers::Stamp,
        user_state: KeyedState,
        left_key: K1,
        right_key: K2,
        rule: Rule,
        // An invalid argument, reported as the stream's only item.
        invalid: Option<StateError>,
        done: bool,
        left_first: bool,
        dropped: u64,
        f: F,
    }
}

/// A key's buffered events of each side in the operator's own table: (arrival time in ms,
/// event), oldest first.
struct Sides<T, U> {
    left: VecDeque<(u64, T)>,
    right: VecDeque<(u64, U)>,
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

/// The join's window and per-side bound.
#[derive(Debug, Clone, Copy)]
struct Rule {
    window_ms: u64,
    /// At least 1 once the stream runs (0 is reported as an invalid argument).
    max_buffered: usize,
}

impl Rule {
    /// The transition of one arrival at `now` on a key's typed buffers: prune both to the
    /// window from the front, pair the arrival with every buffered event of the other side,
    /// buffer it (pushing out the oldest of a full side). The same rule as
    /// [`buffers::meet`] on bytes.
    fn meet_typed<T: Clone, U: Clone>(
        self,
        sides: &mut Option<Sides<T, U>>,
        arrival: Arrival<T, U>,
        now: u64,
    ) -> (Change, Met<T, U>) {
        let s = sides.get_or_insert_with(|| Sides {
            left: VecDeque::new(),
            right: VecDeque::new(),
        });
        let oldest = now.saturating_sub(self.window_ms);
        prune_front(&mut s.left, oldest);
        prune_front(&mut s.right, oldest);
        let max = self.max_buffered.max(1);
        let (pairs, dropped) = match arrival {
            Arrival::Left(t) => {
                let pairs = within(&s.right, oldest)
                    .map(|u| (t.clone(), u.clone()))
                    .collect();
                (pairs, push_bounded(&mut s.left, max, now, t))
            }
            Arrival::Right(u) => {
                let pairs = within(&s.left, oldest)
                    .map(|t| (t.clone(), u.clone()))
                    .collect();
                (pairs, push_bounded(&mut s.right, max, now, u))
            }
        };
        (Change::Store, Met { pairs, dropped })
    }
}

/// The events of `buf` that arrived at `oldest` or later (all of them once pruned, the clock
/// being monotonic in a process).
fn within<E>(buf: &VecDeque<(u64, E)>, oldest: u64) -> impl Iterator<Item = &E> {
    buf.iter()
        .filter(move |(at, _)| *at >= oldest)
        .map(|(_, e)| e)
}

/// Drops the events that arrived before `oldest` from the front of `buf`, and gives back
/// memory a burst left behind.
fn prune_front<E>(buf: &mut VecDeque<(u64, E)>, oldest: u64) {
    while buf.front().is_some_and(|(at, _)| *at < oldest) {
        buf.pop_front();
    }
    if buf.capacity() > 64 && buf.len() < buf.capacity() / 4 {
        buf.shrink_to(buf.len() * 2);
    }
}

/// Buffers `event`, first dropping the oldest events until fewer than `max` remain; returns
/// how many it dropped.
fn push_bounded<E>(buf: &mut VecDeque<(u64, E)>, max: usize, now: u64, event: E) -> u64 {
    let mut dropped = 0;
    while buf.len() >= max {
        buf.pop_front();
        dropped += 1;
    }
    buf.push_back((now, event));
    dropped
}

/// Starts an arrival's transition of its key's buffers: in the typed table, or as bytes in the
/// shared store.
fn begin<T, U>(
    typed: &mut Option<TypedTable<Sides<T, U>>>,
    keyed: &mut KeyedState,
    stamp: buffers::Stamp,
    rule: Rule,
    key: &mut EventKey,
    arrival: Arrival<T, U>,
    now: u64,
) -> StateIo<Met<T, U>>
where
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
    U: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    if let Some(table) = typed {
        return StateIo::ready(typed_transition(table, &key.storage_key, now, |sides| {
            Ok(rule.meet_typed(sides, arrival, now))
        }));
    }
    keyed.update_bytes(key, now, move |user_key, bytes, existed| {
        buffers::meet(stamp, rule, bytes, existed, arrival, now).map_err(|e| {
            let what = format!(
                "join buffers of ({}, {})",
                std::any::type_name::<T>(),
                std::any::type_name::<U>()
            );
            e.for_key(user_key, &what)
        })
    })
}

impl<S1, S2, K1, K2, F, Fut> StatefulJoin<S1, S2, K1, K2, F, Fut>
where
    S1: Stream,
    S2: Stream,
    S1::Item: 'static,
    S2::Item: 'static,
{
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
        let keyed = KeyedState::new(&config, "join.buffers");
        Self {
            left: left.fuse(),
            right: right.fuse(),
            pending: None,
            step: Step::Idle,
            typed: keyed.is_private().then(|| keyed.typed_table(&config)),
            stamp: buffers::Stamp::of::<S1::Item, S2::Item>(),
            keyed,
            user_state: KeyedState::new(&config, "join"),
            left_key,
            right_key,
            rule: Rule {
                window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                max_buffered: DEFAULT_MAX_BUFFERED,
            },
            invalid: None,
            done: false,
            left_first: true,
            dropped: 0,
            f,
        }
    }
}

impl<S1: Stream, S2: Stream, K1, K2, F, Fut> StatefulJoin<S1, S2, K1, K2, F, Fut> {
    /// At most `n` buffered events per key on each side (default 10,000): when a key's buffer
    /// on one side is full, an arrival on that side pushes out the side's oldest event,
    /// counted by [`dropped`](Self::dropped). Memory is bounded by about
    /// `keys × 2 × n × event size` (keys bounded by the config's `max_size`). `n == 0` makes the
    /// stream's only item a [`StateError::Validation`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateAccess, StateConfig};
    ///
    /// let orders = stream::iter([("o1".to_string(), 1u32), ("o1".to_string(), 2), ("o1".to_string(), 3)]);
    /// // The payment comes once the three orders are buffered.
    /// let payments = stream::iter([("o1".to_string(), "card".to_string())])
    ///     .then(|p| async move { tokio::task::yield_now().await; p });
    /// let mut join = std::pin::pin!(orders
    ///     .stateful_join_rs2(
    ///         payments,
    ///         StateConfig::new(),
    ///         |o: &(String, u32)| o.0.clone(),
    ///         |p: &(String, String)| p.0.clone(),
    ///         Duration::from_secs(60),
    ///         |o, _p, _state: StateAccess| async move { o.1 },
    ///     )
    ///     .max_buffered(2));
    /// let mut met = Vec::new();
    /// while let Some(n) = join.next().await {
    ///     met.push(n.unwrap());
    /// }
    /// assert_eq!(met, [2, 3]); // order 1 was pushed out by order 3
    /// assert_eq!(join.dropped(), 1);
    /// # }
    /// ```
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.rule.max_buffered = n;
        self.invalid = (n == 0).then(|| {
            StateError::Validation(
                "join operator: max_buffered must be at least 1 (got 0): it is how many events \
                 one key's buffer holds on each side"
                    .into(),
            )
        });
        self
    }

    /// Buffered events pushed out so far because their key's buffer on their side was full
    /// (see [`max_buffered`](Self::max_buffered)); events that left the window are not counted.
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

impl<S1: Stream, S2: Stream, K1, K2, F, Fut> fmt::Debug for StatefulJoin<S1, S2, K1, K2, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatefulJoin")
            .field("window_ms", &self.rule.window_ms)
            .field("max_buffered", &self.rule.max_buffered)
            .field("typed", &self.typed.is_some())
            .field("dropped", &self.dropped)
            .field("done", &self.done)
            .finish_non_exhaustive()
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
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(err) = this.invalid.take() {
            *this.done = true;
            this.keyed.note_error(&err);
            return Poll::Ready(Some(Err(err)));
        }
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
                        *this.done = true;
                        return Poll::Ready(None);
                    };
                    let key = match &arrival {
                        Arrival::Left(t) => this.keyed.key_of(this.left_key, t),
                        Arrival::Right(u) => this.keyed.key_of(this.right_key, u),
                    };
                    let mut key = match key {
                        Ok(key) => key,
                        Err(err) => {
                            this.keyed.note_error(&err);
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    let now = this.keyed.now();
                    let io = begin(
                        this.typed,
                        this.keyed,
                        *this.stamp,
                        *this.rule,
                        &mut key,
                        arrival,
                        now,
                    );
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
                Err(err) => {
                    this.keyed.note_error(&err);
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

impl<S1, S2, K1, K2, F, Fut, R> FusedStream for StatefulJoin<S1, S2, K1, K2, F, Fut>
where
    Self: Stream<Item = Result<R, StateError>>,
    S1: Stream,
    S2: Stream,
{
    fn is_terminated(&self) -> bool {
        self.done
    }
}
