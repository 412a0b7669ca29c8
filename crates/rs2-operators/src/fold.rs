//! `stateful_fold_rs2`: a per-key accumulator, emitted after every event.

use crate::accumulate::{Accumulate, Seed};
use crate::{AccumulateParStep, KeyedPar};

/// Stream returned by [`stateful_fold_rs2`](crate::StatefulStreamExt::stateful_fold_rs2).
///
/// Each key's accumulator starts as a clone of `initial`; for each event the closure gets the
/// accumulator, the event and a [`StateAccess`](rs2_state_core::StateAccess), and the key's
/// updated accumulator is stored and yielded as `Ok`. See [`Accumulate`] for storage, expiry
/// and error items.
pub type StatefulFold<S, K, F, Fut, A> = Accumulate<S, K, F, Fut, A, FoldSeed<A>>;

/// Stream returned by
/// [`stateful_fold_rs2_par`](crate::StatefulStreamExt::stateful_fold_rs2_par).
///
/// [`StatefulFold`] with up to `concurrency` events in flight: events of different keys run
/// at once, events of one key strictly one after another (each loads the accumulator the
/// previous one stored), items come out in input order, and at most `concurrency` events are
/// taken from the input and not yet yielded. `concurrency` 0 is treated as 1. Same state,
/// namespaces (`fold`, `fold.user`) and `Err` items as [`StatefulFold`]; see [`KeyedPar`].
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
