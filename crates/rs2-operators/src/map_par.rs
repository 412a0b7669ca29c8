//! `stateful_map_rs2_par`: `stateful_map_rs2` with up to `n` events of different keys in flight.

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
/// [`stateful_map_rs2_par`](crate::StatefulStreamExt::stateful_map_rs2_par).
///
/// Like [`StatefulMap`](crate::StatefulMap), but up to `concurrency` events are in flight
/// at once, so a closure that awaits I/O (or state behind a slow backend) overlaps with the
/// closures of other keys. Guarantees:
/// * events of **one key** run strictly one after another, in input order (an event waits
///   until the previous event of its key has finished, state writes included);
/// * outputs are yielded in **input order**, whatever order the closures finish in;
/// * at most `concurrency` events are taken from the input and not yet yielded (running,
///   waiting for their key, or finished but waiting for an earlier event's output), which
///   bounds memory; nothing is dropped or duplicated.
///
/// `concurrency` 0 is treated as 1 (the sequential operator's behaviour). As with the
/// sequential operator, a failing key extractor or invalid config reaches the closure through
/// its `StateAccess`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use futures::{stream, StreamExt};
/// use rs2_operators::{StatefulMapPar, StatefulStreamExt};
/// use rs2_state_core::{StateConfig, StateAccess};
///
/// // Each event awaits 10 ms of "I/O": the three keys overlap, so this takes 20 ms, not 40.
/// let start = tokio::time::Instant::now();
/// let lookups: StatefulMapPar<_, _, _, _> = stream::iter(["a", "b", "a", "c"])
///     .stateful_map_rs2_par(StateConfig::new(), |k: &&str| k.to_string(), 4,
///         |k, state: StateAccess| async move {
///             tokio::time::sleep(Duration::from_millis(10)).await;
///             let n = state.update(|n: Option<u32>| n.unwrap_or(0) + 1).await.unwrap();
///             format!("{k}{n}")
///         });
/// assert_eq!(lookups.collect::<Vec<_>>().await, ["a1", "b1", "a2", "c1"]);
/// assert_eq!(start.elapsed(), Duration::from_millis(20));
/// # }
/// ```
pub type StatefulMapPar<S, K, F, Fut> = KeyedPar<S, K, MapParStep<F, Fut>>;

/// The step of [`StatefulMapPar`]: runs the closure with the key's state (namespace `map`).
pub struct MapParStep<F, Fut> {
    keyed: KeyedState,
    f: F,
    _fut: PhantomData<fn() -> Fut>,
}

impl<F, Fut> MapParStep<F, Fut> {
    pub(crate) fn new(config: &StateConfig, f: F) -> Self {
        Self {
            keyed: KeyedState::new(config, "map"),
            f,
            _fut: PhantomData,
        }
    }
}

impl<T, F, Fut> ParStep<T> for MapParStep<F, Fut>
where
    F: FnMut(T, StateAccess) -> Fut,
    Fut: Future,
{
    type Item = Fut::Output;
    type Resume = Infallible;
    type Fut = MapParFut<Fut>;
}

impl<T, F, Fut> ParStart<T> for MapParStep<F, Fut>
where
    F: FnMut(T, StateAccess) -> Fut,
    Fut: Future,
{
    fn keyed(&mut self) -> &mut KeyedState {
        &mut self.keyed
    }

    fn start(&mut self, event: T, key: StateResult<EventKey>) -> MapParFut<Fut> {
        let access = match key {
            Ok(key) => {
                let now = self.keyed.now();
                self.keyed.access(key, now)
            }
            Err(err) => KeyedState::failed_access(err),
        };
        MapParFut {
            fut: (self.f)(event, access),
        }
    }

    fn resume(&mut self, resume: Infallible) -> MapParFut<Fut> {
        match resume {}
    }
}

pin_project! {
    /// One event of [`StatefulMapPar`]: the closure's future, its output the item.
    pub struct MapParFut<Fut> {
        #[pin]
        fut: Fut,
    }
}

impl<Fut: Future> Future for MapParFut<Fut> {
    type Output = Turn<Fut::Output, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = ready!(self.project().fut.poll(cx));
        Poll::Ready(Turn::Done(Some(out)))
    }
}
