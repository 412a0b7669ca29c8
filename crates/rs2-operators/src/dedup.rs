//! `stateful_deduplicate_rs2`: lets a key's first event through and drops its repeats for a
//! while.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateConfig, StateError};

use crate::keyed::{ceil_ms, decode, replace_encoded, spend, Change, InFlight, KeyedState, Landed};

pin_project! {
    /// Stream returned by
    /// [`stateful_deduplicate_rs2`](crate::StatefulStreamExt::stateful_deduplicate_rs2).
    ///
    /// **Rule.** An event is let through (as `Ok(event)`) when its key has no window open, and
    /// it opens a window of `ttl` for that key; every later event of the key that arrives while
    /// the window is open (less than `ttl` after the event that opened it) is dropped in place.
    /// The first event at or after `ttl` is let through again and opens a new window. Dropped
    /// events do not extend the window. Output order is input order. Time is the operator's
    /// clock (milliseconds, following tokio's paused time in tests), read once per event when
    /// the operator takes it from its input.
    ///
    /// **State.** Per key, one timestamp (the opening event's time) in the configured storage
    /// (namespace `dedup`), written only when an event is let through. So memory is bounded by
    /// the config's `max_size`; a key whose marker was evicted (`max_size`) or expired (the
    /// config's `ttl`, counted from the write) is forgotten and its next event is let through.
    /// Give the config a TTL of at least `ttl` (the seed's `StateConfigs::short_lived()` with a
    /// 5 minute `ttl` is exactly that) and a `max_size` above the number of keys active within
    /// `ttl`, or repeats may pass early.
    ///
    /// **Errors.** A zero `ttl` yields one [`StateError::Validation`] item and ends the stream.
    /// An invalid config, a failing key extractor, a backend failure or an undecodable marker
    /// yields an `Err` item for that event (naming the key where there is one) in place of the
    /// event, and the stream goes on with the next event. If the marker could not be written,
    /// the event is reported as that `Err` (not let through), and its key has no window open.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulDeduplicate<S: futures::Stream, K> {
        #[pin]
        stream: S,
        step: Step<S::Item>,
        keyed: KeyedState,
        key_extractor: K,
        ttl_ms: u64,
    }
}

enum Step<T> {
    /// Waiting for the next event.
    Idle,
    /// Reading the key's marker and, if the event is let through, writing its own, in one
    /// read-modify-write; its result says whether the event is let through.
    Updating(InFlight<T, bool>),
    /// An argument was invalid: report it, then end.
    Invalid(StateError),
    Done,
}

impl<S: Stream, K> StatefulDeduplicate<S, K> {
    pub(crate) fn new(stream: S, config: StateConfig, key_extractor: K, ttl: Duration) -> Self {
        let step = if ttl.is_zero() {
            Step::Invalid(StateError::Validation(
                "dedup operator: ttl cannot be zero; pass how long repeats of a key are dropped \
                 (for example Duration::from_secs(300))"
                    .into(),
            ))
        } else {
            Step::Idle
        };
        Self {
            stream,
            step,
            keyed: KeyedState::new(&config, "dedup"),
            key_extractor,
            ttl_ms: ceil_ms(ttl),
        }
    }
}

impl<S, K> Stream for StatefulDeduplicate<S, K>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
{
    type Item = Result<S::Item, StateError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let mut budget = 0;
        loop {
            let Landed { event, result, .. } = match std::mem::replace(this.step, Step::Idle) {
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
                    let ttl_ms = *this.ttl_ms;
                    let io = this
                        .keyed
                        .update_bytes(&mut key, now, move |key, bytes, existed| {
                            if existed {
                                let opened_at: u64 = decode(key, bytes)?;
                                // `abs_diff`: a marker from the future (a durable store written
                                // under a wall clock that has since been set back) holds for
                                // at most `ttl` too.
                                if now.abs_diff(opened_at) < ttl_ms {
                                    return Ok((Change::Keep, false));
                                }
                            }
                            replace_encoded(key, bytes, &now)?;
                            Ok((Change::Store, true))
                        });
                    // An in-process store has answered already: go on without a round trip
                    // through `step`.
                    match InFlight::new(event, key, now, io).try_land() {
                        Ok(landed) => landed,
                        Err(update) => {
                            *this.step = Step::Updating(update);
                            continue;
                        }
                    }
                }
                Step::Updating(update) => match update.poll(cx) {
                    Ok(landed) => landed,
                    Err(update) => {
                        *this.step = Step::Updating(update);
                        return Poll::Pending;
                    }
                },
                Step::Invalid(err) => {
                    *this.step = Step::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                Step::Done => {
                    *this.step = Step::Done;
                    return Poll::Ready(None);
                }
            };
            match result {
                Ok(true) => return Poll::Ready(Some(Ok(event))),
                Err(err) => return Poll::Ready(Some(Err(err))),
                // A repeat within the window: dropped in place.
                Ok(false) => {
                    if spend(&mut budget, cx) {
                        return Poll::Pending;
                    }
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
