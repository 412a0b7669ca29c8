//! `stateful_reduce_rs2`: a per-key running value seeded by the key's first event.

use crate::accumulate::{Accumulate, Seed};

/// Stream returned by [`stateful_reduce_rs2`](crate::StatefulStreamExt::stateful_reduce_rs2).
///
/// A key's first event (or its first after its value expired or was evicted) becomes its
/// running value and is yielded as is; each later event is combined with the running value by
/// the closure, and the result is stored and yielded as `Ok`. See [`Accumulate`] for storage,
/// expiry and error items.
pub type StatefulReduce<S, K, F, Fut, T> = Accumulate<S, K, F, Fut, T, ReduceSeed>;

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
