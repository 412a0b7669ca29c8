//! `stateful_fold_rs2`: a per-key accumulator, emitted after every event.

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
    /// Stream returned by [`stateful_fold_rs2`](crate::StatefulStreamExt::stateful_fold_rs2).
    ///
    /// Each key's accumulator starts as a clone of `initial`; for each event the closure gets
    /// the accumulator, the event and a [`StateAccess`] for the key's own user state
    /// (namespace `fold.user`, separate from the accumulator), and the key's updated
    /// accumulator is stored and yielded as `Ok`.
    ///
    /// **State.** The accumulators live in the configured storage (namespace `fold`), so TTL
    /// and `max_size` apply: a key whose accumulator expired or was evicted starts again from
    /// `initial`. With an in-memory config the store is the operator's own and accumulators
    /// stay typed in it (no encoding, no lock). In a custom store an event reads its key's
    /// accumulator under the key's lock and the save after the closure releases it, so
    /// pipelines (or processes, with a store whose `lock_key` is server-held) sharing the store
    /// apply their events one at a time and counts never drift.
    ///
    /// **Errors.** An `Err` item reports a failure for that event (invalid config, key
    /// extraction, backend, or a stored accumulator that cannot be decoded, which is left
    /// untouched); the stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulFold<S: futures::Stream, K, F, Fut, A> {
        #[pin]
        inner: Driver<S, K, Accumulate<S::Item, F, A, FoldSeed<A>>, Loaded<A>, Fut>,
    }
}

impl<S: futures::Stream, K, F, Fut, A> StatefulFold<S, K, F, Fut, A> {
    pub(crate) fn new(stream: S, config: StateConfig, key_extractor: K, initial: A, f: F) -> Self {
        let config = crate::engine::with_stats(&config);
        let keyed = KeyedState::new(&config, "fold");
        let op = Accumulate::new(&config, "fold", &keyed, FoldSeed(initial), f);
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, None),
        }
    }
}

driven_stream!(StatefulFold<S, K, F, Fut, A>, impl<S, K, F, Fut, A>, Item = A, per_event = Some(1), where
    S: futures::Stream,
    K: KeyExtractor<S::Item>,
    F: FnMut(A, S::Item, StateAccess) -> Fut,
    Fut: Future<Output = A>,
    A: Clone + Serialize + DeserializeOwned + Send + 'static);

/// Stream returned by
/// [`stateful_fold_rs2_par`](crate::StatefulStreamExt::stateful_fold_rs2_par).
///
/// [`StatefulFold`] with up to `concurrency` events in flight: events of different keys run
/// at once, events of one key strictly one after another (each gets the accumulator the
/// previous one made; on a remote store, events of a key waiting behind each other share one
/// locked read and one write), items come out in input order, and at most `concurrency` events are
/// taken from the input and not yet yielded. `concurrency` 0 is treated as 1. Same state,
/// namespaces (`fold`, `fold.user`) and `Err` items as [`StatefulFold`]; see [`StatefulMapPar`](crate::StatefulMapPar).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use futures::{stream, StreamExt};
/// use rs2_operators::{StatefulFoldPar, StatefulStreamExt};
/// use rs2_state_core::{StateConfig, StateAccess};
///
/// // Per-account balances; each event awaits 10 ms, accounts overlap: 20 ms, not 40.
/// let start = tokio::time::Instant::now();
/// let balances: StatefulFoldPar<_, _, _, _, i64> = stream::iter([("x", 5i64), ("y", 7), ("x", -2), ("z", 1)])
///     .stateful_fold_rs2_par(StateConfig::new(), |e: &(&str, i64)| e.0.to_string(), 4, 0i64,
///         |balance, e, _state: StateAccess| async move {
///             tokio::time::sleep(Duration::from_millis(10)).await;
///             balance + e.1
///         });
/// let balances: Vec<i64> = balances.map(Result::unwrap).collect().await;
/// assert_eq!(balances, [5, 7, 3, 1]);
/// assert_eq!(start.elapsed(), Duration::from_millis(20));
/// # }
/// ```
pub type StatefulFoldPar<S, K, F, Fut, A> =
    KeyedPar<S, K, AccumulateParStep<F, Fut, A, FoldSeed<A>>>;

/// Starts every key from a clone of the initial accumulator.
#[derive(Debug, Clone)]
pub struct FoldSeed<A>(pub(crate) A);

impl<T, A: Clone> Seed<T, A> for FoldSeed<A> {
    #[inline]
    fn start(&self, stored: Option<A>, event: T) -> Result<(A, T), A> {
        Ok((stored.unwrap_or_else(|| self.0.clone()), event))
    }
}
