//! `stateful_session_rs2`: tells the closure whether each event starts a new session of its key.

use std::future::Future;
use std::time::Duration;

use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig};
use serde::{Deserialize, Serialize};

use crate::engine::driver::{driven_stream, Driver, Emit, EventOp, Finish};
use crate::engine::own::OwnState;
use crate::engine::{Change, EventKey, KeyedState, StateIo};

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
        inner: Driver<S, K, Session<S::Item, F>, bool, Fut>,
    }
}

/// A key's session, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SessionState {
    /// When the key's last event was seen, in the operator clock's milliseconds.
    last_seen_ms: u64,
}

/// The rule and the closure.
struct Session<T, F> {
    last_seen: OwnState<SessionState>,
    user_state: KeyedState,
    timeout_ms: u64,
    f: F,
    /// The event whose transition is running.
    event: Option<T>,
}

impl<S: futures::Stream, K, F, Fut> StatefulSession<S, K, F, Fut> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        timeout: Duration,
        f: F,
    ) -> Self {
        let config = crate::engine::with_stats(&config);
        let keyed = KeyedState::new(&config, "session");
        let op = Session {
            last_seen: OwnState::new(&config, &keyed),
            user_state: KeyedState::new(&config, "session.user"),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            f,
            event: None,
        };
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, None),
        }
    }
}

impl<T, F, Fut, R> EventOp<T> for Session<T, F>
where
    F: FnMut(T, bool, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    /// Whether the event starts a session.
    type Out = bool;
    type Fut = Fut;
    type Item = R;

    fn begin(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        event: T,
    ) -> StateIo<bool> {
        self.event = Some(event);
        let timeout_ms = self.timeout_ms;
        self.last_seen.transition(keyed, key, now, move |state| {
            let is_new = state.is_none_or(|s| now.saturating_sub(s.last_seen_ms) > timeout_ms);
            *state = Some(SessionState { last_seen_ms: now });
            Ok((Change::Store, is_new))
        })
    }

    fn emit(
        &mut self,
        is_new: bool,
        _keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> Emit<R, Fut> {
        let Some(event) = self.event.take() else {
            return Emit::Skip;
        };
        let access = self.user_state.access_for(key.user_key(), now);
        Emit::Run((self.f)(event, is_new, access))
    }

    fn finish(&mut self, out: R, _: &mut KeyedState, _: EventKey, _: u64) -> Finish<R> {
        Finish::Item(out)
    }
}

driven_stream!(StatefulSession<S, K, F, Fut>, impl<S, K, F, Fut, R>, Item = R, per_event = Some(1), where
    S: futures::Stream,
    K: KeyExtractor<S::Item>,
    F: FnMut(S::Item, bool, StateAccess) -> Fut,
    Fut: Future<Output = R>);
