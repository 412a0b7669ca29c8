//! `StatefulStreamExt`: the stateful operators as methods on every `Stream`.

use std::future::Future;

use futures::Stream;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fold::FoldSeed;
use crate::reduce::ReduceSeed;
use crate::{StatefulFilter, StatefulFold, StatefulMap, StatefulReduce};

/// Keyed, stateful operators for any [`Stream`].
///
/// Every operator extracts a key from each event and keeps per-key state in the storage
/// `config` describes (a private in-memory store by default, or a shared custom backend under
/// a namespace of its own). Output order follows input order; events of a key are processed one
/// after another.
pub trait StatefulStreamExt: Stream {
    /// Maps each event with access to its key's state; yields one output per event.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let words = stream::iter(["a", "b", "a"]);
    /// let counts: Vec<(String, u64)> = words
    ///     .stateful_map_rs2(StateConfig::new(), |w: &&str| w.to_string(), |w, state: StateAccess| async move {
    ///         let n = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await.unwrap();
    ///         (w.to_string(), n)
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(counts, [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    /// # }
    /// ```
    fn stateful_map_rs2<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        f: F,
    ) -> StatefulMap<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = R>,
    {
        StatefulMap::new(self, config, key_extractor, f)
    }

    /// Keeps the events for which the stateful predicate resolves to `true`.
    ///
    /// The predicate's future cannot borrow the event: copy what it needs first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // Keep each key's first two events.
    /// let kept: Vec<u32> = stream::iter([1u32, 1, 2, 1, 2])
    ///     .stateful_filter_rs2(StateConfig::new(), |n: &u32| n.to_string(), |_n, state: StateAccess| async move {
    ///         state.update(|seen: Option<u32>| seen.unwrap_or(0) + 1).await.unwrap() <= 2
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(kept, [1, 1, 2, 2]);
    /// # }
    /// ```
    fn stateful_filter_rs2<K, F, Fut>(
        self,
        config: StateConfig,
        key_extractor: K,
        f: F,
    ) -> StatefulFilter<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(&Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = bool>,
    {
        StatefulFilter::new(self, config, key_extractor, f)
    }

    /// Folds each key's events into an accumulator and yields the key's updated accumulator
    /// after every event.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let totals: Vec<u64> = stream::iter([("a", 2u64), ("b", 5), ("a", 3)])
    ///     .stateful_fold_rs2(StateConfig::new(), |e: &(&str, u64)| e.0.to_string(), 0u64,
    ///         |sum, e, _state: StateAccess| async move { sum + e.1 })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(totals, [2, 5, 5]);
    /// # }
    /// ```
    fn stateful_fold_rs2<K, F, Fut, A>(
        self,
        config: StateConfig,
        key_extractor: K,
        initial: A,
        f: F,
    ) -> StatefulFold<Self, K, F, Fut, A>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(A, Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = A>,
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        StatefulFold::new(self, config, "fold", key_extractor, FoldSeed(initial), f)
    }

    /// Reduces each key's events: the first seeds the key's running value, later ones are
    /// combined with it; yields the running value after every event.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let maxima: Vec<u32> = stream::iter([3u32, 1, 7, 2])
    ///     .stateful_reduce_rs2(StateConfig::new(), |_: &u32| "all".to_string(),
    ///         |best, n, _state: StateAccess| async move { best.max(n) })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(maxima, [3, 3, 7, 7]);
    /// # }
    /// ```
    fn stateful_reduce_rs2<K, F, Fut>(
        self,
        config: StateConfig,
        key_extractor: K,
        f: F,
    ) -> StatefulReduce<Self, K, F, Fut, Self::Item>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Self::Item, Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = Self::Item>,
        Self::Item: Serialize + DeserializeOwned + Send + 'static,
    {
        StatefulReduce::new(self, config, "reduce", key_extractor, ReduceSeed, f)
    }

    /// Joins this stream with `other` by key: each event meets every event of the other input
    /// with the same key that arrived within `window` before it (an inner join, symmetric in
    /// time). Runs until both inputs end. See [`StatefulJoin`] for buffering and its bounds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let orders = stream::iter([("o1".to_string(), 30u32), ("o2".to_string(), 10)]);
    /// let payments = stream::iter([("o1".to_string(), "card".to_string())]);
    /// let paid: Vec<String> = orders
    ///     .stateful_join_rs2(
    ///         payments,
    ///         StateConfig::new(),
    ///         |o: &(String, u32)| o.0.clone(),
    ///         |p: &(String, String)| p.0.clone(),
    ///         Duration::from_secs(60),
    ///         |o, p, _state: StateAccess| async move { format!("{} paid {} by {}", o.0, o.1, p.1) },
    ///     )
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(paid, ["o1 paid 30 by card"]);
    /// # }
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn stateful_join_rs2<S2, K1, K2, F, Fut, R>(
        self,
        other: S2,
        config: StateConfig,
        key_extractor: K1,
        other_key_extractor: K2,
        window: std::time::Duration,
        f: F,
    ) -> crate::StatefulJoin<Self, S2, K1, K2, F, Fut>
    where
        Self: Sized,
        S2: Stream,
        Self::Item: Clone + Serialize + DeserializeOwned + Send + 'static,
        S2::Item: Clone + Serialize + DeserializeOwned + Send + 'static,
        K1: KeyExtractor<Self::Item>,
        K2: KeyExtractor<S2::Item>,
        F: FnMut(Self::Item, S2::Item, StateAccess) -> Fut,
        Fut: Future<Output = R>,
    {
        crate::StatefulJoin::new(
            self,
            other,
            config,
            key_extractor,
            other_key_extractor,
            window,
            f,
        )
    }
}

impl<S: Stream + ?Sized> StatefulStreamExt for S {}
