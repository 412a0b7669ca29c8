//! `stateful_pattern_rs2`: runs a detector over each key's last `pattern_size` events.

use std::future::Future;

use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::driver::{driven_stream, Driver, Emit, EventOp, Finish};
use crate::engine::event_log::{LogError, LogWriter};
use crate::engine::{Change, EventKey, KeyedState, StateIo};

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
    /// read-modify-write of its key's events that encodes only this event: in an in-process
    /// store the stored bytes are edited in place (this event's encoding appended, the oldest
    /// event's cut from the front). Once the key has
    /// `pattern_size` events, each event also decodes the `pattern_size - 1` stored ones to
    /// hand them to the closure (`O(pattern_size)` decoding per event, none re-encoded); before
    /// that nothing is decoded, except that events this operator did not write itself (an
    /// earlier pipeline's, on a durable store) are decoded in full once, to check them.
    ///
    /// **Errors.** `pattern_size == 0` yields one [`StateError::Validation`] item and ends the
    /// stream without reading the input. An invalid config, a failing key extractor, a backend
    /// failure, or stored events that cannot be decoded yield an `Err` item for that event
    /// (naming the key where there is one) instead of calling the closure; the event is not
    /// added to the key's stored events, and the stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulPattern<S: futures::Stream, K, F, Fut> {
        #[pin]
        inner: Driver<S, K, Pattern<F>, Option<Vec<S::Item>>, Fut>,
    }
}

/// The rule and the closure.
struct Pattern<F> {
    pattern_size: usize,
    user_state: KeyedState,
    rings: LogWriter,
    f: F,
}

/// Tag of a stored ring (see `event_log`): a key's last events, oldest first.
const RING_TAG: u8 = 0x70;

/// Adds `event` to the key's stored last events, edited in place in `bytes` (`existed`: the
/// key had some), keeping the last `size`; returns them once there are `size`. On an error
/// `bytes` is left as it was.
fn push<T: Serialize + DeserializeOwned>(
    rings: LogWriter,
    size: usize,
    bytes: &mut Vec<u8>,
    existed: bool,
    event: T,
) -> Result<(Change, Option<Vec<T>>), LogError> {
    let ring = rings.read::<T>(existed.then_some(&bytes[..]))?;
    let count = ring.count;
    if count + 1 < size {
        rings.append(bytes, &event)?;
        rings.set_header(bytes, 0, count + 1);
        return Ok((Change::Store, None));
    }
    // Drop the oldest event (more than one only if the ring was stored by an operator with a
    // larger pattern_size); decode the others for the closure.
    let mut events = ring.iter::<T>();
    for event in events.by_ref().take(count + 1 - size) {
        event?;
    }
    let cut_bytes = events.offset();
    let mut window = Vec::with_capacity(size);
    for event in events {
        window.push(event?);
    }
    rings.append(bytes, &event)?;
    rings.cut(bytes, cut_bytes);
    rings.set_header(bytes, 0, size);
    window.push(event);
    Ok((Change::Store, Some(window)))
}

impl<S: futures::Stream, K, F, Fut> StatefulPattern<S, K, F, Fut> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        pattern_size: usize,
        f: F,
    ) -> Self {
        let config = crate::engine::with_stats(&config);
        let invalid = (pattern_size == 0).then(|| {
            StateError::Validation(
                "pattern operator: pattern_size must be at least 1 (got 0)".into(),
            )
        });
        let op = Pattern {
            pattern_size,
            user_state: KeyedState::new(&config, "pattern.user"),
            rings: LogWriter::new(RING_TAG),
            f,
        };
        let keyed = KeyedState::new(&config, "pattern");
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, invalid),
        }
    }
}

impl<T, F, Fut, R> EventOp<T> for Pattern<F>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnMut(Vec<T>, StateAccess) -> Fut,
    Fut: Future<Output = Option<R>>,
{
    /// The key's last `pattern_size` events, once it has that many.
    type Out = Option<Vec<T>>;
    type Fut = Fut;
    type Item = R;

    fn begin(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        event: T,
    ) -> StateIo<Option<Vec<T>>> {
        let (rings, size) = (self.rings, self.pattern_size);
        keyed.update_bytes(key, now, move |key, bytes, existed| {
            push(rings, size, bytes, existed, event).map_err(|e| e.for_events::<T>(key))
        })
    }

    fn emit(
        &mut self,
        events: Option<Vec<T>>,
        _keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> Emit<R, Fut> {
        match events {
            Some(events) => {
                let access = self.user_state.access_for(key.user_key(), now);
                Emit::Run((self.f)(events, access))
            }
            None => Emit::Skip,
        }
    }

    fn finish(&mut self, out: Option<R>, _: &mut KeyedState, _: EventKey, _: u64) -> Finish<R> {
        match out {
            Some(r) => Finish::Item(r),
            None => Finish::Skip,
        }
    }
}

driven_stream!(StatefulPattern<S, K, F, Fut>, impl<S, K, F, Fut, R>, Item = R, per_event = Some(1), where
    S: futures::Stream,
    S::Item: Serialize + DeserializeOwned + Send + 'static,
    K: KeyExtractor<S::Item>,
    F: FnMut(Vec<S::Item>, StateAccess) -> Fut,
    Fut: Future<Output = Option<R>>);
