//! `stateful_filter_rs2_par`: `stateful_filter_rs2` with up to `n` events of different keys in
//! flight.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use rs2_state_core::{StateAccess, StateConfig, StateResult};

use crate::engine::{EventKey, KeyedState};
use crate::engine::{KeyedPar, ParStart, ParStep, Turn};

/// Stream returned by
/// [`stateful_filter_rs2_par`](crate::StatefulStreamExt::stateful_filter_rs2_par).
///
/// Like [`StatefulFilter`](crate::StatefulFilter) (the predicate's state is namespace
/// `filter`), but up to `concurrency` events are in flight at once. Guarantees (see
/// [`StatefulMapPar`](crate::StatefulMapPar)):
/// * events of **one key** run strictly one after another, in input order (an event waits
///   until the previous event of its key has finished, state writes included);
/// * the kept events are yielded in **input order**, whatever order the predicates finish in;
/// * at most `concurrency` events are taken from the input and not yet yielded or dropped,
///   which bounds memory.
///
/// `concurrency` 0 is treated as 1. As with the sequential operator, a failing key extractor
/// or invalid config reaches the predicate through its `StateAccess`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use futures::{stream, StreamExt};
/// use rs2_operators::{StatefulFilterPar, StatefulStreamExt};
/// use rs2_state_core::{StateConfig, StateAccess};
///
/// // Keep each user's first two logins; each check awaits 10 ms, users overlap.
/// let kept: StatefulFilterPar<_, _, _, _> = stream::iter(["ann", "bob", "ann", "ann", "bob"])
///     .stateful_filter_rs2_par(StateConfig::new(), |u: &&str| u.to_string(), 8,
///         |_u, state: StateAccess| async move {
///             tokio::time::sleep(Duration::from_millis(10)).await;
///             state.update(|n: Option<u32>| n.unwrap_or(0) + 1).await.unwrap() <= 2
///         });
/// assert_eq!(kept.collect::<Vec<_>>().await, ["ann", "bob", "ann", "bob"]);
/// # }
/// ```
pub type StatefulFilterPar<S, K, F, Fut> = KeyedPar<S, K, FilterParStep<F, Fut>>;

/// The step of [`StatefulFilterPar`]: runs the predicate with the key's state (namespace
/// `filter`) and keeps the event when it resolves to `true`.
pub struct FilterParStep<F, Fut> {
    keyed: KeyedState,
    f: F,
    _fut: PhantomData<fn() -> Fut>,
}

impl<F, Fut> FilterParStep<F, Fut> {
    pub(crate) fn new(config: &StateConfig, f: F) -> Self {
        Self {
            keyed: KeyedState::new(config, "filter"),
            f,
            _fut: PhantomData,
        }
    }
}

impl<T, F, Fut> ParStep<T> for FilterParStep<F, Fut>
where
    F: FnMut(&T, StateAccess) -> Fut,
    Fut: Future<Output = bool>,
{
    type Item = T;
    type Resume = Infallible;
    type Fut = FilterParFut<Fut, T>;
}

impl<T, F, Fut> ParStart<T> for FilterParStep<F, Fut>
where
    F: FnMut(&T, StateAccess) -> Fut,
    Fut: Future<Output = bool>,
{
    fn keyed(&mut self) -> &mut KeyedState {
        &mut self.keyed
    }

    fn start(&mut self, event: T, key: StateResult<EventKey>) -> FilterParFut<Fut, T> {
        let access = match key {
            Ok(key) => {
                let now = self.keyed.now();
                self.keyed.access(key, now)
            }
            Err(err) => KeyedState::failed_access(err),
        };
        FilterParFut {
            fut: (self.f)(&event, access),
            event: Some(event),
        }
    }

    fn resume(&mut self, resume: Infallible) -> FilterParFut<Fut, T> {
        match resume {}
    }
}

pin_project! {
    /// One event of [`StatefulFilterPar`]: the predicate's future and the event it decides on.
    pub struct FilterParFut<Fut, T> {
        #[pin]
        fut: Fut,
        event: Option<T>,
    }
}

impl<Fut: Future<Output = bool>, T> Future for FilterParFut<Fut, T> {
    type Output = Turn<T, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let keep = ready!(this.fut.poll(cx));
        let event = this.event.take();
        Poll::Ready(Turn::Done(if keep { event } else { None }))
    }
}
