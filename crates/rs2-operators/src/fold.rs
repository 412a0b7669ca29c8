//! `stateful_fold_rs2`: a per-key accumulator, emitted after every event.

use crate::accumulate::{Accumulate, Seed};

/// Stream returned by [`stateful_fold_rs2`](crate::StatefulStreamExt::stateful_fold_rs2).
///
/// Each key's accumulator starts as a clone of `initial`; for each event the closure gets the
/// accumulator, the event and a [`StateAccess`](rs2_state_core::StateAccess), and the key's
/// updated accumulator is stored and yielded as `Ok`. See [`Accumulate`] for storage, expiry
/// and error items.
pub type StatefulFold<S, K, F, Fut, A> = Accumulate<S, K, F, Fut, A, FoldSeed<A>>;

/// Starts every key from a clone of the initial accumulator.
#[derive(Debug, Clone)]
pub struct FoldSeed<A>(pub(crate) A);

impl<T, A: Clone> Seed<T, A> for FoldSeed<A> {
    #[inline]
    fn start(&self, stored: Option<A>, event: T) -> Result<(A, T), A> {
        Ok((stored.unwrap_or_else(|| self.0.clone()), event))
    }
}
