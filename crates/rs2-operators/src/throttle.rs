//! `stateful_throttle_rs2`: per key at most `rate_limit` events in any sliding window; the
//! excess is dropped (and counted), never delayed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateConfig, StateError};

use crate::event_log::{keep_times_and_insert, TimeLog};
use crate::keyed::{ceil_ms, spend};
use crate::keyed::{Change, InFlight, KeyedState, Landed};

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
        stream: S,
        step: Step<S::Item>,
        keyed: KeyedState,
        key_extractor: K,
        rate_limit: usize,
        window_ms: u64,
        dropped: DroppedCounter,
    }
}

enum Step<T> {
    /// Waiting for the next event.
    Idle,
    /// Reading the key's recent times, and adding the event's if it is let through: the
    /// result says whether it was.
    Updating(InFlight<T, bool>),
    /// An argument was invalid: report it, then end.
    Invalid(StateError),
    Done,
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

impl<S: Stream, K> StatefulThrottle<S, K> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        rate_limit: u32,
        window: Duration,
    ) -> Self {
        let step = if rate_limit == 0 {
            Step::Invalid(StateError::Validation(
                "throttle operator: rate_limit cannot be zero; pass the most events a key may \
                 have in one window (at least 1)"
                    .into(),
            ))
        } else if window.is_zero() {
            Step::Invalid(StateError::Validation(
                "throttle operator: window cannot be zero; pass the length of the sliding window \
                 (for example Duration::from_secs(60))"
                    .into(),
            ))
        } else {
            Step::Idle
        };
        Self {
            stream,
            step,
            keyed: KeyedState::new(&config, "throttle"),
            key_extractor,
            rate_limit: usize::try_from(rate_limit).unwrap_or(usize::MAX),
            window_ms: ceil_ms(window),
            dropped: DroppedCounter::default(),
        }
    }

    /// How many events this stream has dropped so far for exceeding their key's rate limit
    /// (`Err` items are not counted).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
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
        self.dropped.clone()
    }
}

impl<S, K> Stream for StatefulThrottle<S, K>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
{
    type Item = Result<S::Item, StateError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let mut budget = 0;
        loop {
            match std::mem::replace(this.step, Step::Idle) {
                Step::Idle => {
                    let Some(event) = ready!(this.stream.as_mut().poll_next(cx)) else {
                        *this.step = Step::Done;
                        return Poll::Ready(None);
                    };
                    let mut key = match this.keyed.key_of(this.key_extractor, &event) {
                        Ok(key) => key,
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    };
                    let now = this.keyed.now();
                    let (rate_limit, window_ms) = (*this.rate_limit, *this.window_ms);
                    let io = this
                        .keyed
                        .update_bytes(&mut key, now, move |key, bytes, existed| {
                            let times = TimeLog::read(existed.then_some(&bytes[..]))
                                .map_err(|e| e.for_key(key, "a throttle time log"))?;
                            let within = times.within(now, window_ms);
                            if within.len() >= rate_limit {
                                return Ok((Change::Keep, false));
                            }
                            let at = times.insertion_point(within.clone(), now);
                            keep_times_and_insert(bytes, within, at, now);
                            Ok((Change::Store, true))
                        });
                    *this.step = Step::Updating(InFlight::new(event, key, now, io));
                }
                Step::Updating(update) => {
                    let Landed { event, result, .. } = match update.poll(cx) {
                        Ok(landed) => landed,
                        Err(update) => {
                            *this.step = Step::Updating(update);
                            return Poll::Pending;
                        }
                    };
                    match result {
                        Ok(true) => return Poll::Ready(Some(Ok(event))),
                        Err(err) => return Poll::Ready(Some(Err(err))),
                        Ok(false) => {
                            // Over the limit: dropped in place.
                            this.dropped.add_one();
                            if spend(&mut budget, cx) {
                                return Poll::Pending;
                            }
                        }
                    }
                }
                Step::Invalid(err) => {
                    *this.step = Step::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                Step::Done => {
                    *this.step = Step::Done;
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.step {
            Step::Done => (0, Some(0)),
            Step::Invalid(_) => (1, Some(1)),
            _ => {
                let (_, hi) = self.stream.size_hint();
                (0, hi.and_then(|h| h.checked_add(1)))
            }
        }
    }
}
