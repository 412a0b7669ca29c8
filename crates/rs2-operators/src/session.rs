//! `stateful_session_rs2`: tells the closure whether each event starts a new session of its key.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::{Deserialize, Serialize};

use crate::engine::{decode, replace_encoded, Change, InFlight, KeyedState, Landed};

pin_project! {
    /// Stream returned by [`stateful_session_rs2`](crate::StatefulStreamExt::stateful_session_rs2).
    ///
    /// For each event the closure gets the event, `is_new_session` and a [`StateAccess`] for
    /// the key's own user state (namespace `session.user`); its output is yielded as `Ok`, one
    /// item per event, in input order.
    ///
    /// `is_new_session` is `true` for a key's first event and for an event that comes more than
    /// `timeout` after the key's previous event (a gap of exactly `timeout` continues the
    /// session); otherwise `false`. Time is the operator's clock (milliseconds, following
    /// tokio's paused time in tests), read once per event, when the operator takes the event
    /// from its input.
    ///
    /// **State.** Per key, the time of its last event, in the configured storage (namespace
    /// `session`), written on every event. A key whose state expired (TTL) or was evicted
    /// (`max_size`) is treated as new: give the config a TTL of at least `timeout`, or
    /// sessions may restart early.
    ///
    /// **Errors.** An invalid config, a failing key extractor, a backend failure, or stored
    /// state that cannot be decoded yields an `Err` item for that event (naming the key where
    /// there is one) instead of running the closure; the key's stored time is left as it was,
    /// and the stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulSession<S: futures::Stream, K, F, Fut> {
        #[pin]
        stream: S,
        #[pin]
        pending: Option<Fut>,
        step: Step<S::Item>,
        timeout_ms: u64,
        session_state: KeyedState,
        user_state: KeyedState,
        key_extractor: K,
        f: F,
    }
}

/// A key's session, as stored.
#[derive(Serialize, Deserialize)]
struct SessionState {
    /// When the key's last event was seen, in the operator clock's milliseconds.
    last_seen_ms: u64,
}

enum Step<T> {
    Idle,
    /// Reading the key's last-seen time and writing this event's, in one read-modify-write;
    /// its result says whether the event starts a session.
    Updating(InFlight<T, bool>),
    Running,
}

impl<S: Stream, K, F, Fut> StatefulSession<S, K, F, Fut> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        timeout: Duration,
        f: F,
    ) -> Self {
        Self {
            stream,
            pending: None,
            step: Step::Idle,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            session_state: KeyedState::new(&config, "session"),
            user_state: KeyedState::new(&config, "session.user"),
            key_extractor,
            f,
        }
    }
}

impl<S, K, F, Fut, R> Stream for StatefulSession<S, K, F, Fut>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    F: FnMut(S::Item, bool, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    type Item = Result<R, StateError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            let landed = match std::mem::replace(this.step, Step::Idle) {
                Step::Idle => {
                    let Some(event) = ready!(this.stream.as_mut().poll_next(cx)) else {
                        return Poll::Ready(None);
                    };
                    let mut key = match this.session_state.key_of(this.key_extractor, &event) {
                        Ok(key) => key,
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    };
                    let now = this.session_state.now();
                    let timeout_ms = *this.timeout_ms;
                    let io = this.session_state.update_bytes(
                        &mut key,
                        now,
                        move |key, bytes, existed| {
                            let is_new = if existed {
                                let last: SessionState = decode(key, bytes)?;
                                now.saturating_sub(last.last_seen_ms) > timeout_ms
                            } else {
                                true
                            };
                            replace_encoded(key, bytes, &SessionState { last_seen_ms: now })?;
                            Ok((Change::Store, is_new))
                        },
                    );
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
                    return Poll::Ready(Some(Ok(out)));
                }
            };
            let Landed {
                event,
                key,
                now,
                result,
            } = landed;
            let is_new = match result {
                Ok(is_new) => is_new,
                Err(err) => return Poll::Ready(Some(Err(err))),
            };
            let access = match this.user_state.derived_key(key.user_key()) {
                Ok(user_key) => this.user_state.access(user_key, now),
                Err(err) => KeyedState::failed_access(err),
            };
            this.pending.set(Some((this.f)(event, is_new, access)));
            *this.step = Step::Running;
        }
    }
}
