//! `stateful_reduce_rs2`: a per-key running value seeded by the key's first event.

use std::future::Future;

use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::accumulate::{Accumulate, Seed};
use crate::accumulate_par::AccumulateParStep;
use crate::engine::driver::{driven_stream, Driver};
use crate::engine::KeyedPar;
use crate::engine::{KeyedState, Loaded};

pin_project! {
    /// Stream returned by [`stateful_reduce_rs2`](crate::StatefulStreamExt::stateful_reduce_rs2).
    ///
    /// A key's first event (or its first after its value expired or was evicted) becomes its
    /// running value and is yielded as is; each later event is combined with the running value
    /// by the closure (which also gets a [`StateAccess`] for the key's own user state, namespace
    /// `reduce.user`), and the result is stored and yielded as `Ok`.
    ///
    /// **State** and **errors** as [`StatefulFold`](crate::StatefulFold)'s (namespace
    /// `reduce`): typed in the operator's own table with an in-memory config; in a custom store
    /// each event's read-combine-write runs under the key's lock.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulReduce<S: futures::Stream, K, F, Fut, T> {
        #[pin]
        inner: Driver<S, K, Accumulate<S::Item, F, T, ReduceSeed>, Loaded<T>, Fut>,
    }
}

impl<S: futures::Stream, K, F, Fut, T> StatefulReduce<S, K, F, Fut, T> {
    pub(crate) fn new(stream: S, config: StateConfig, key_extractor: K, f: F) -> Self {
        let config = crate::engine::with_stats(&config);
        let keyed = KeyedState::new(&config, "reduce");
        let op = Accumulate::new(&config, "reduce", &keyed, ReduceSeed, f);
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, None),
        }
    }
}

driven_stream!(StatefulReduce<S, K, F, Fut, T>, impl<S, K, F, Fut, T>, Item = T, per_event = Some(1), where
    S: futures::Stream<Item = T>,
    K: KeyExtractor<T>,
    F: FnMut(T, T, StateAccess) -> Fut,
    Fut: Future<Output = T>,
    T: Clone + Serialize + DeserializeOwned + Send + 'static);

/// Stream returned by
/// [`stateful_reduce_rs2_par`](crate::StatefulStreamExt::stateful_reduce_rs2_par).
///
/// [`StatefulReduce`] with up to `concurrency` events in flight: events of different keys run
/// at once, events of one key strictly one after another (each gets the running value the
/// previous one made; on a remote store, events of a key waiting behind each other share one
/// locked read and one write), items come out in input order, and at most `concurrency` events are
/// taken from the input and not yet yielded. `concurrency` 0 is treated as 1. Same state,
/// namespaces (`reduce`, `reduce.user`) and `Err` items as [`StatefulReduce`]; see
/// [`StatefulMapPar`](crate::StatefulMapPar).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::{stream, StreamExt};
/// use rs2_operators::{StatefulReducePar, StatefulStreamExt};
/// use rs2_state_core::{StateConfig, StateAccess};
///
/// // Each sensor's highest reading so far.
/// let peaks: StatefulReducePar<_, _, _, _, (char, u32)> =
///     stream::iter([('a', 3u32), ('b', 9), ('a', 7), ('a', 5), ('b', 1)])
///         .stateful_reduce_rs2_par(StateConfig::new(), |r: &(char, u32)| r.0.to_string(), 8,
///             |best, r, _state: StateAccess| async move { if r.1 > best.1 { r } else { best } });
/// let peaks: Vec<u32> = peaks.map(|r| r.unwrap().1).collect().await;
/// assert_eq!(peaks, [3, 9, 7, 7, 9]);
/// # }
/// ```
pub type StatefulReducePar<S, K, F, Fut, T> =
    KeyedPar<S, K, AccumulateParStep<F, Fut, T, ReduceSeed>>;

/// Seeds a key with its first event.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReduceSeed;

impl<T> Seed<T, T> for ReduceSeed {
    #[inline]
    fn start(&self, stored: Option<T>, event: T) -> Result<(T, T), T> {
        match stored {
            Some(value) => Ok((value, event)),
            None => Err(event),
        }
    }
}
