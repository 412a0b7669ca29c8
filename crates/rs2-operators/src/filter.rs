//! `stateful_filter_rs2`: keeps the events for which a stateful predicate holds.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig};

use crate::engine::{KeyedState, YieldBudget};

pin_project! {
    /// Stream returned by [`stateful_filter_rs2`](crate::StatefulStreamExt::stateful_filter_rs2).
    ///
    /// For each event the predicate gets `&event` and a [`StateAccess`] for its key; the event
    /// is yielded when the predicate's future resolves to `true`. The future cannot borrow the
    /// event: copy what it needs before `async move`. Order is kept; nothing is reordered.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulFilter<S: futures::Stream, K, F, Fut> {
        #[pin]
        stream: S,
        #[pin]
        pending: Option<Fut>,
        item: Option<S::Item>,
        keyed: KeyedState,
        key_extractor: K,
        f: F,
    }
}

impl<S: Stream, K, F, Fut> StatefulFilter<S, K, F, Fut> {
    pub(crate) fn new(stream: S, config: StateConfig, key_extractor: K, f: F) -> Self {
        Self {
            stream,
            pending: None,
            item: None,
            keyed: KeyedState::new(&config, "filter"),
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

impl<S, K, F, Fut> Stream for StatefulFilter<S, K, F, Fut>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    F: FnMut(&S::Item, StateAccess) -> Fut,
    Fut: Future<Output = bool>,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        let span = this.keyed.span().clone();
        let _entered = span.enter();
        let mut budget = YieldBudget::default();
        loop {
            if let Some(fut) = this.pending.as_mut().as_pin_mut() {
                let keep = ready!(fut.poll(cx));
                this.pending.set(None);
                let item = this.item.take();
                if keep {
                    return Poll::Ready(item);
                }
                if budget.spend(cx) {
                    // A long run of rejected events: let other tasks run.
                    return Poll::Pending;
                }
                continue;
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
            this.pending.set(Some((this.f)(&event, access)));
            *this.item = Some(event);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let pending = usize::from(self.item.is_some());
        let (_, hi) = self.stream.size_hint();
        (0, hi.and_then(|h| h.checked_add(pending)))
    }
}
