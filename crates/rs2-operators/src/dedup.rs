//! `stateful_deduplicate_rs2`: lets a key's first event through and drops its repeats for a
//! while.

use std::time::Duration;

use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateConfig, StateError};

use crate::engine::driver::{driven_stream, Driver, Emit, EventOp};
use crate::engine::own::OwnState;
use crate::engine::{ceil_ms, Change, EventKey, KeyedState, StateIo};

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
        inner: Driver<S, K, Dedup<S::Item>, bool, std::future::Pending<()>>,
    }
}

/// The rule: per key, the time the open window started (`u64` milliseconds).
struct Dedup<T> {
    opened_at: OwnState<u64>,
    ttl_ms: u64,
    /// The event whose transition is running (held here, not moved into the transition, so
    /// events need not be `Send`).
    event: Option<T>,
}

impl<S: futures::Stream, K> StatefulDeduplicate<S, K> {
    pub(crate) fn new(stream: S, config: StateConfig, key_extractor: K, ttl: Duration) -> Self {
        let invalid = ttl.is_zero().then(|| {
            StateError::Validation(
                "dedup operator: ttl cannot be zero; pass how long repeats of a key are dropped \
                 (for example Duration::from_secs(300))"
                    .into(),
            )
        });
        let keyed = KeyedState::new(&config, "dedup");
        let op = Dedup {
            opened_at: OwnState::new(&config, &keyed),
            ttl_ms: ceil_ms(ttl),
            event: None,
        };
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, invalid),
        }
    }
}

impl<T> EventOp<T> for Dedup<T> {
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
        let ttl_ms = self.ttl_ms;
        self.opened_at
            .transition(keyed, key, now, move |opened_at| {
                // `abs_diff`: a marker from the future (a durable store written under a wall clock
                // that has since been set back) holds for at most `ttl` too.
                if opened_at.is_some_and(|at| now.abs_diff(at) < ttl_ms) {
                    return Ok((Change::Keep, false));
                }
                *opened_at = Some(now);
                Ok((Change::Store, true))
            })
    }

    fn emit(
        &mut self,
        let_through: bool,
        _keyed: &mut KeyedState,
        _key: &mut EventKey,
        _now: u64,
    ) -> Emit<T, Self::Fut> {
        match self.event.take() {
            Some(event) if let_through => Emit::Item(event),
            // A repeat within the window: dropped in place.
            _ => Emit::Skip,
        }
    }
}

driven_stream!(StatefulDeduplicate<S, K>, impl<S, K>, Item = S::Item, per_event = Some(1), where
    S: futures::Stream,
    K: KeyExtractor<S::Item>);
