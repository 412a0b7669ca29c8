//! `stateful_throttle_rs2`: per key at most `rate_limit` events in any sliding window; the
//! excess is dropped (and counted), never delayed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateConfig, StateError};
use rs2_state_memory::TypedTable;

use crate::engine::driver::{driven_stream, Driver, Emit, EventOp};
use crate::engine::event_log::{keep_times_and_insert, TimeLog};
use crate::engine::{ceil_ms, Change, EventKey, KeyedState, StateIo};

pin_project! {
    /// Stream returned by
    /// [`stateful_throttle_rs2`](crate::StatefulStreamExt::stateful_throttle_rs2).
    ///
    /// **Rule.** Per key, at most `rate_limit` events are let through (as `Ok(event)`) in any
    /// sliding `window`: an event is let through when fewer than `rate_limit` of its key's
    /// events were let through in the `window` before it (an event exactly `window` after an
    /// earlier one no longer counts it); otherwise it is **dropped** in place and counted (see
    /// [`dropped`](Self::dropped)). Nothing is ever delayed, so a busy key never holds back
    /// another key, and output order is input order. Time is the operator's clock
    /// (milliseconds, following tokio's paused time in tests), read once per event when the
    /// operator takes it from its input.
    ///
    /// **State.** Per key, the times of its events let through within the last `window` (at
    /// most `rate_limit` of them; older ones are evicted on each event of the key), in the
    /// configured storage (namespace `throttle`), written when an event is let through. So
    /// memory is bounded by the config's `max_size` keys, each holding at most `rate_limit`
    /// times. They are stored as fixed-width entries in time order: an event costs a binary
    /// search over them and, when let through, an in-place edit of the stored bytes (the
    /// time appended, times that left the window cut from the front); nothing is decoded or
    /// re-encoded. A key whose state was evicted (`max_size`) or expired (the config's `ttl`,
    /// counted from its last event let through) starts afresh: give the config a TTL of at
    /// least `window` and a `max_size` above the number of keys active within `window`, or a
    /// key may get more than `rate_limit` events through in a window.
    ///
    /// **Errors.** A zero `rate_limit` or a zero `window` yields one
    /// [`StateError::Validation`] item and ends the stream. An invalid config, a failing key
    /// extractor, a backend failure or undecodable state yields an `Err` item for that event
    /// (naming the key where there is one) in place of the event; it is not counted as
    /// dropped, and the stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulThrottle<S: futures::Stream, K> {
        #[pin]
        inner: Driver<S, K, Throttle<S::Item>, bool, std::future::Pending<()>>,
    }
}

/// The rule, and per key the times of its events let through within the window, ascending:
/// typed in the operator's table when its store is private, else a `TimeLog` edited in place.
struct Throttle<T> {
    times: Option<TypedTable<VecDeque<u64>>>,
    rate_limit: usize,
    window_ms: u64,
    dropped: DroppedCounter,
    /// The event whose transition is running.
    event: Option<T>,
}

/// A shared count of the events a [`StatefulThrottle`] dropped.
///
/// Get one with [`StatefulThrottle::dropped_counter`] before handing the stream on (to
/// `collect`, another operator, a task): it keeps counting as the stream runs. Cloning is
/// cheap and clones share the count.
#[derive(Debug, Clone, Default)]
pub struct DroppedCounter(Arc<AtomicU64>);

impl DroppedCounter {
    /// Events dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: futures::Stream, K> StatefulThrottle<S, K> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        rate_limit: u32,
        window: Duration,
    ) -> Self {
        let invalid = if rate_limit == 0 {
            Some(StateError::Validation(
                "throttle operator: rate_limit cannot be zero; pass the most events a key may \
                 have in one window (at least 1)"
                    .into(),
            ))
        } else if window.is_zero() {
            Some(StateError::Validation(
                "throttle operator: window cannot be zero; pass the length of the sliding window \
                 (for example Duration::from_secs(60))"
                    .into(),
            ))
        } else {
            None
        };
        let keyed = KeyedState::new(&config, "throttle");
        let op = Throttle {
            times: keyed.is_private().then(|| keyed.typed_table(&config)),
            rate_limit: usize::try_from(rate_limit).unwrap_or(usize::MAX),
            window_ms: ceil_ms(window),
            dropped: DroppedCounter::default(),
            event: None,
        };
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, invalid),
        }
    }

    /// How many events this stream has dropped so far for exceeding their key's rate limit
    /// (`Err` items are not counted).
    pub fn dropped(&self) -> u64 {
        self.inner.op().dropped.get()
    }

    /// A handle on the dropped count that stays valid after the stream is moved or consumed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::StateConfig;
    ///
    /// let throttled = stream::iter(["a", "a", "a", "b"]).stateful_throttle_rs2(
    ///     StateConfig::new(), |k: &&str| k.to_string(), 2, Duration::from_secs(1));
    /// let dropped = throttled.dropped_counter();
    /// let passed: Vec<&str> = throttled.map(Result::unwrap).collect().await;
    /// assert_eq!(passed, ["a", "a", "b"]);
    /// assert_eq!(dropped.get(), 1);
    /// # }
    /// ```
    pub fn dropped_counter(&self) -> DroppedCounter {
        self.inner.op().dropped.clone()
    }
}

/// Lets an event at `now` through the typed times if fewer than `rate_limit` of them are
/// within `window_ms` of it (`|now - t| < window`: times from the future, written under a wall
/// clock since set back, count too), recording its time.
fn let_through(times: &mut VecDeque<u64>, now: u64, window_ms: u64, rate_limit: usize) -> bool {
    while times
        .front()
        .is_some_and(|&t| t < now && now - t >= window_ms)
    {
        times.pop_front();
    }
    while times
        .back()
        .is_some_and(|&t| t > now && t - now >= window_ms)
    {
        times.pop_back();
    }
    if times.len() >= rate_limit {
        return false;
    }
    let at = times.partition_point(|&t| t <= now);
    times.insert(at, now);
    true
}

impl<T> EventOp<T> for Throttle<T> {
    /// Whether the event is let through.
    type Out = bool;
    type Fut = std::future::Pending<()>;
    type Item = T;

    fn begin(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        event: T,
    ) -> StateIo<bool> {
        self.event = Some(event);
        let (rate_limit, window_ms) = (self.rate_limit, self.window_ms);
        if let Some(table) = &mut self.times {
            let hash = table.hash(&key.storage_key);
            let passed = match table.get_mut(hash, &key.storage_key, now) {
                Some(times) => {
                    let passed = let_through(times, now, window_ms, rate_limit);
                    if passed {
                        table.touch_write(hash, &key.storage_key, now);
                    }
                    passed
                }
                None => {
                    let times = VecDeque::from([now]);
                    table.put(hash, &key.storage_key, now, times);
                    true
                }
            };
            return StateIo::ready(Ok(passed));
        }
        keyed.update_bytes(key, now, move |key, bytes, existed| {
            let times = TimeLog::read(existed.then_some(&bytes[..]))
                .map_err(|e| e.for_key(key, "a throttle time log"))?;
            let within = times.within(now, window_ms);
            if within.len() >= rate_limit {
                return Ok((Change::Keep, false));
            }
            let at = times.insertion_point(within.clone(), now);
            keep_times_and_insert(bytes, within, at, now);
            Ok((Change::Store, true))
        })
    }

    fn emit(
        &mut self,
        passed: bool,
        _keyed: &mut KeyedState,
        _key: &mut EventKey,
        _now: u64,
    ) -> Emit<T, Self::Fut> {
        match self.event.take() {
            Some(event) if passed => Emit::Item(event),
            _ => {
                // Over the limit: dropped in place.
                self.dropped.add_one();
                Emit::Skip
            }
        }
    }
}

driven_stream!(StatefulThrottle<S, K>, impl<S, K>, Item = S::Item, per_event = Some(1), where
    S: futures::Stream,
    K: KeyExtractor<S::Item>);
