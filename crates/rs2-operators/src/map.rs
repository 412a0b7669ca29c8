//! `stateful_map_rs2`: one output per event, computed with the event's keyed state.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig};

use crate::engine::KeyedState;

pin_project! {
    /// Stream returned by [`stateful_map_rs2`](crate::StatefulStreamExt::stateful_map_rs2).
    ///
    /// For each event it extracts the key, hands the closure the event and a [`StateAccess`]
    /// bound to that key, and yields the closure's output. Events are processed one at a time,
    /// in input order. An invalid config or a failing key extractor reaches the closure through
    /// the access: its `try_get`/`set`/`update` return the error and `get` returns `None`.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulMap<S, K, F, Fut> {
        #[pin]
        stream: S,
        #[pin]
        pending: Option<Fut>,
        keyed: KeyedState,
        key_extractor: K,
        f: F,
    }
}

impl<S, K, F, Fut> StatefulMap<S, K, F, Fut> {
    pub(crate) fn new(stream: S, config: StateConfig, key_extractor: K, f: F) -> Self {
        Self {
            stream,
            pending: None,
            keyed: KeyedState::new(&config, "map"),
            key_extractor,
            f,
        }
    }

    /// This operator's figures, readable while the stream runs (clone the handle before
    /// consuming the stream): its store's entries, hits, misses, writes, evictions and
    /// expirations, and the failed calls of the closure's `StateAccess` as `errors`. The
    /// config's handle ([`StateConfig::stats`]) if it has one, else the operator's own.
    pub fn stats(&self) -> rs2_state_core::StateStats {
        self.keyed.stats().clone()
    }
}

impl<S, K, F, Fut, R> Stream for StatefulMap<S, K, F, Fut>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    F: FnMut(S::Item, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    type Item = R;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<R>> {
        let mut this = self.project();
        let span = this.keyed.span().clone();
        let _entered = span.enter();
        loop {
            if let Some(fut) = this.pending.as_mut().as_pin_mut() {
                let out = ready!(fut.poll(cx));
                this.pending.set(None);
                return Poll::Ready(Some(out));
            }
            let Some(event) = ready!(this.stream.as_mut().poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let access = match this.keyed.key_of(this.key_extractor, &event) {
                Ok(key) => {
                    let now = this.keyed.now();
                    this.keyed.access(key, now)
                }
                Err(err) => {
                    this.keyed.note_error(&err);
                    KeyedState::failed_access(err)
                }
            };
            this.pending.set(Some((this.f)(event, access)));
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let pending = usize::from(self.pending.is_some());
        let (lo, hi) = self.stream.size_hint();
        (
            lo.saturating_add(pending),
            hi.and_then(|h| h.checked_add(pending)),
        )
    }
}
