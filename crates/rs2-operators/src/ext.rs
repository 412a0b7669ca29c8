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
        StatefulFold::new(self, config, key_extractor, initial, f)
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
        StatefulReduce::new(self, config, key_extractor, f)
    }

    /// Joins this stream with `other` by key: each event meets every event of the other input
    /// with the same key that arrived within `window` before it (an inner join, symmetric in
    /// time). Runs until both inputs end. See [`StatefulJoin`](crate::StatefulJoin) for buffering and its bounds.
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
    /// Per-key **event-time** windows: each event's time is `event_time(&event)` (ms since the
    /// epoch); windows ([`EventTimeWindow`](crate::EventTimeWindow): tumbling, sliding or
    /// session) fire when the stream's watermark (the largest event time seen minus
    /// `max_out_of_orderness`) reaches their end, or when the input ends, so events arriving
    /// out of order still land in the right window. The closure gets the
    /// [`TimeWindow`](crate::TimeWindow) and the key's user state; its output is yielded as
    /// `Ok`. Late events change nothing and are counted
    /// ([`late_count`](crate::StatefulEventTimeWindow::late_count)); see
    /// [`stateful_event_time_window_advanced_rs2`](Self::stateful_event_time_window_advanced_rs2)
    /// to receive them, and [`StatefulEventTimeWindow`](crate::StatefulEventTimeWindow) for
    /// allowed lateness, the idle rule, emission order, state and errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::{EventTimeWindow, StatefulStreamExt, TimeWindow};
    /// use rs2_state_core::{StateAccess, StateConfig};
    ///
    /// // (user, time in ms, amount), slightly out of order.
    /// let events = stream::iter([('a', 1_000u64, 5u32), ('a', 61_000, 1), ('a', 59_000, 2)]);
    /// let sums: Vec<(String, u64, u32)> = events
    ///     .stateful_event_time_window_rs2(
    ///         StateConfig::new(),
    ///         |e: &(char, u64, u32)| e.0.to_string(),
    ///         |e: &(char, u64, u32)| e.1,
    ///         EventTimeWindow::tumbling(Duration::from_secs(60))
    ///             .max_out_of_orderness(Duration::from_secs(5)),
    ///         |w: TimeWindow<(char, u64, u32)>, _state: StateAccess| async move {
    ///             (w.key, w.start_ms, w.events.iter().map(|e| e.2).sum())
    ///         },
    ///     )
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// // The event at 59 s arrived after one at 61 s, within the 5 s allowed disorder.
    /// assert_eq!(sums, [("a".into(), 0, 7), ("a".into(), 60_000, 1)]);
    /// # }
    /// ```
    fn stateful_event_time_window_rs2<K, E, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        event_time: E,
        window: crate::EventTimeWindow,
        f: F,
    ) -> crate::StatefulEventTimeWindow<Self, K, E, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        E: Fn(&Self::Item) -> u64,
        F: FnMut(crate::TimeWindow<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = R>,
        Self::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        crate::StatefulEventTimeWindow::new(self, config, key_extractor, event_time, window, f)
    }

    /// [`stateful_event_time_window_rs2`](Self::stateful_event_time_window_rs2) that also
    /// yields every late event where it arrived, as
    /// [`EventTimeOutput::Late`](crate::EventTimeOutput::Late) (fired windows' outputs are
    /// [`EventTimeOutput::Window`](crate::EventTimeOutput::Window)): the way to receive late
    /// events, say to correct a report downstream or to log them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::{EventTimeOutput, EventTimeWindow, StatefulStreamExt, TimeWindow};
    /// use rs2_state_core::{StateAccess, StateConfig};
    ///
    /// // Times in ms; the event at 5 arrives after the watermark passed 10.
    /// let out: Vec<EventTimeOutput<usize, u64>> = stream::iter([1u64, 12, 5])
    ///     .stateful_event_time_window_advanced_rs2(
    ///         StateConfig::new(),
    ///         |_: &u64| "k".to_string(),
    ///         |t: &u64| *t,
    ///         EventTimeWindow::tumbling(Duration::from_millis(10)),
    ///         |w: TimeWindow<u64>, _state: StateAccess| async move { w.events.len() },
    ///     )
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// use EventTimeOutput::*;
    /// assert_eq!(out, [Window(1), Late(5), Window(1)]);
    /// # }
    /// ```
    fn stateful_event_time_window_advanced_rs2<K, E, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        event_time: E,
        window: crate::EventTimeWindow,
        f: F,
    ) -> crate::StatefulEventTimeWindowAdvanced<Self, K, E, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        E: Fn(&Self::Item) -> u64,
        F: FnMut(crate::TimeWindow<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = R>,
        Self::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        crate::StatefulEventTimeWindowAdvanced::new(
            self,
            config,
            key_extractor,
            event_time,
            window,
            f,
        )
    }

    /// Per-key count **tumbling** windows: every `window_size` events of a key go to the
    /// closure as one window (oldest first), and its output is yielded as `Ok`. Events of an
    /// incomplete window at end of input are not emitted (see
    /// [`stateful_window_rs2_advanced`](Self::stateful_window_rs2_advanced) for partial
    /// windows). Buffered events live in the configured storage, so the item type must be
    /// serializable. `window_size == 0` yields one [`StateError::Validation`] item.
    ///
    /// [`StateError::Validation`]: rs2_state_core::StateError::Validation
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // (key, amount); buffered events are stored, so they must be serializable and owned.
    /// let sums: Vec<(char, u32)> = stream::iter([('a', 1u32), ('b', 10), ('a', 2), ('a', 3), ('b', 20)])
    ///     .stateful_window_rs2(StateConfig::new(), |e: &(char, u32)| e.0.to_string(), 2,
    ///         |window, _state: StateAccess| async move {
    ///             (window[0].0, window.iter().map(|e| e.1).sum())
    ///         })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// // 'a': [1, 2] is complete on its second event; [3] never completes.
    /// assert_eq!(sums, [('a', 3), ('b', 30)]);
    /// # }
    /// ```
    fn stateful_window_rs2<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        window_size: usize,
        f: F,
    ) -> crate::StatefulWindow<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Vec<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = R>,
        Self::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        crate::StatefulWindow::new(self, config, key_extractor, window_size, None, false, f)
    }

    /// Per-key count windows that can slide, hop, and emit partial windows at end of input.
    ///
    /// A key's windows start at its events number `0, slide, 2 * slide, ...`, where `slide` is
    /// `slide_size.unwrap_or(window_size)`: **tumbling** when `slide == window_size`,
    /// **sliding** (overlapping by `window_size - slide` events) when `slide < window_size`,
    /// and **hopping** when `slide > window_size`: the `slide - window_size` events after each
    /// window belong to no window and are dropped. With `emit_partial`, when the input ends
    /// the closure also gets each key's incomplete next window (if non-empty), in the order
    /// those buffers were started. `window_size == 0` or `slide_size == Some(0)` yields one
    /// [`StateError::Validation`] item. See [`StatefulWindow`](crate::StatefulWindow) for state,
    /// memory bounds and error items.
    ///
    /// [`StateError::Validation`]: rs2_state_core::StateError::Validation
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // Windows of 3 sliding by 1, plus the partial window left at the end.
    /// let windows: Vec<Vec<u32>> = stream::iter(1u32..=5)
    ///     .stateful_window_rs2_advanced(StateConfig::new(), |_: &u32| "all".to_string(), 3, Some(1), true,
    ///         |window, _state: StateAccess| async move { window })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(windows, [vec![1, 2, 3], vec![2, 3, 4], vec![3, 4, 5], vec![4, 5]]);
    /// # }
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn stateful_window_rs2_advanced<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        window_size: usize,
        slide_size: Option<usize>,
        emit_partial: bool,
        f: F,
    ) -> crate::StatefulWindow<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Vec<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = R>,
        Self::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        crate::StatefulWindow::new(
            self,
            config,
            key_extractor,
            window_size,
            slide_size,
            emit_partial,
            f,
        )
    }

    /// Tells the closure, for each event, whether it starts a new session of its key:
    /// `is_new_session` is `true` for a key's first event and for an event more than `timeout`
    /// after the key's previous event. Yields the closure's output as `Ok`, one per event.
    /// See [`StatefulSession`](crate::StatefulSession) for time, state and error items.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use futures::StreamExt;
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // (user, seconds to wait before the event)
    /// let events = futures::stream::iter([("ann", 0u64), ("ann", 10), ("bob", 0), ("ann", 120)])
    ///     .then(|(user, wait)| async move {
    ///         tokio::time::sleep(Duration::from_secs(wait)).await;
    ///         user
    ///     });
    /// let flags: Vec<(&str, bool)> = events
    ///     .stateful_session_rs2(StateConfig::new(), |u: &&str| u.to_string(), Duration::from_secs(60),
    ///         |user, is_new, _state: StateAccess| async move { (user, is_new) })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(flags, [("ann", true), ("ann", false), ("bob", true), ("ann", true)]);
    /// # }
    /// ```
    fn stateful_session_rs2<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        timeout: std::time::Duration,
        f: F,
    ) -> crate::StatefulSession<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Self::Item, bool, StateAccess) -> Fut,
        Fut: Future<Output = R>,
    {
        crate::StatefulSession::new(self, config, key_extractor, timeout, f)
    }

    /// Runs a detector over each key's last `pattern_size` events: on every event once the key
    /// has that many, the closure gets them (oldest first) and a `Some(r)` it returns is
    /// yielded as `Ok(r)`; `None` yields nothing. Any `pattern_size` from 1 up works;
    /// `pattern_size == 0` yields one [`StateError::Validation`] item. See
    /// [`StatefulPattern`](crate::StatefulPattern) for state and error items.
    ///
    /// [`StateError::Validation`]: rs2_state_core::StateError::Validation
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // Flag three rising amounts in a row, per card.
    /// let alerts: Vec<Vec<u32>> = stream::iter([('x', 5u32), ('x', 7), ('y', 1), ('x', 9), ('x', 2)])
    ///     .stateful_pattern_rs2(StateConfig::new(), |e: &(char, u32)| e.0.to_string(), 3,
    ///         |last, _state: StateAccess| async move {
    ///             let amounts: Vec<u32> = last.iter().map(|e| e.1).collect();
    ///             amounts.windows(2).all(|w| w[0] < w[1]).then_some(amounts)
    ///         })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(alerts, [vec![5, 7, 9]]);
    /// # }
    /// ```
    fn stateful_pattern_rs2<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        pattern_size: usize,
        f: F,
    ) -> crate::StatefulPattern<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Vec<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = Option<R>>,
        Self::Item: Serialize + DeserializeOwned + Send + 'static,
    {
        crate::StatefulPattern::new(self, config, key_extractor, pattern_size, f)
    }

    /// Drops repeats: yields a key's first event, then drops the key's later events that
    /// arrive less than `ttl` after it; the first event at or after `ttl` is yielded again and
    /// starts a new window.
    ///
    /// Items are `Ok(event)` or an `Err` for an event whose state failed (naming the key); a
    /// zero `ttl` is one `Validation` error. The per-key marker lives in the configured storage,
    /// so `max_size` bounds memory; give the config a TTL of at least `ttl`. See
    /// [`StatefulDeduplicate`](crate::StatefulDeduplicate).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::StateConfig;
    ///
    /// let requests = stream::iter([("u1", 1), ("u2", 1), ("u1", 1), ("u1", 2)]);
    /// let unique: Vec<(&str, u32)> = requests
    ///     .stateful_deduplicate_rs2(StateConfig::new(),
    ///         |r: &(&str, u32)| format!("{}:{}", r.0, r.1), Duration::from_secs(300))
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(unique, [("u1", 1), ("u2", 1), ("u1", 2)]);
    /// # }
    /// ```
    fn stateful_deduplicate_rs2<K>(
        self,
        config: StateConfig,
        key_extractor: K,
        ttl: std::time::Duration,
    ) -> crate::StatefulDeduplicate<Self, K>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
    {
        crate::StatefulDeduplicate::new(self, config, key_extractor, ttl)
    }

    /// Rate-limits each key: at most `rate_limit` of a key's events in any sliding `window`
    /// are yielded; the excess is **dropped** in place (not delayed) and counted, so a busy key
    /// never holds back another.
    ///
    /// Items are `Ok(event)` or an `Err` for an event whose state failed (naming the key); a
    /// zero `rate_limit` or `window` is one `Validation` error. Read the dropped count with
    /// [`StatefulThrottle::dropped`](crate::StatefulThrottle::dropped) or
    /// [`dropped_counter`](crate::StatefulThrottle::dropped_counter). Give the config a TTL of
    /// at least `window`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::StateConfig;
    ///
    /// // Two events per user per second: the third "ann" in the same second is dropped.
    /// let mut throttled = stream::iter(["ann", "ann", "bob", "ann"])
    ///     .stateful_throttle_rs2(StateConfig::new(), |u: &&str| u.to_string(), 2, Duration::from_secs(1));
    /// let mut passed = Vec::new();
    /// while let Some(user) = throttled.next().await {
    ///     passed.push(user.unwrap());
    /// }
    /// assert_eq!(passed, ["ann", "ann", "bob"]);
    /// assert_eq!(throttled.dropped(), 1);
    /// # }
    /// ```
    fn stateful_throttle_rs2<K>(
        self,
        config: StateConfig,
        key_extractor: K,
        rate_limit: u32,
        window: std::time::Duration,
    ) -> crate::StatefulThrottle<Self, K>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
    {
        crate::StatefulThrottle::new(self, config, key_extractor, rate_limit, window)
    }

    /// Groups events by key and, when the input ends, calls `f(key, events, state)` once per
    /// key (keys in the order of their first events, events in input order), yielding its
    /// output as `Ok`.
    ///
    /// Groups are buffered in the configured storage: if they outgrow its `max_size` or would
    /// outlive its TTL, the oldest group is emitted early rather than lost. See
    /// [`StatefulGroupBy`](crate::StatefulGroupBy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let sales = stream::iter([("books", 12u32), ("games", 30), ("books", 8)])
    ///     .map(|(category, amount)| (category.to_string(), amount));
    /// let totals: Vec<(String, u32)> = sales
    ///     .stateful_group_by_rs2(StateConfig::new(), |s: &(String, u32)| s.0.clone(),
    ///         |category, group, _state: StateAccess| async move {
    ///             (category, group.iter().map(|s| s.1).sum())
    ///         })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(totals, [("books".into(), 20), ("games".into(), 30)]);
    /// # }
    /// ```
    fn stateful_group_by_rs2<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        f: F,
    ) -> crate::StatefulGroupBy<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(String, Vec<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = R>,
        Self::Item: Serialize + DeserializeOwned + Send + 'static,
    {
        crate::StatefulGroupBy::new(self, config, key_extractor, None, None, false, f)
    }

    /// Groups events by key and emits a group (`f(key, events, state)`, yielded as `Ok`) when
    /// it reaches `max_group_size` events, when `group_timeout` has passed since its **first**
    /// event (a tokio timer: it fires while the input is idle), when the key changes from the
    /// previous event's key (if `emit_on_key_change`; the previous key's group is emitted
    /// before the new event is taken in), and all remaining groups at the end of input.
    ///
    /// `max_group_size == Some(0)` or a zero `group_timeout` is one `Validation` error. No group
    /// is lost: see [`StatefulGroupBy`](crate::StatefulGroupBy) for the storage limits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // Batches of at most 2 readings per sensor.
    /// let readings = stream::iter([("s1", 1u32), ("s1", 2), ("s2", 3), ("s1", 4)])
    ///     .map(|(sensor, value)| (sensor.to_string(), value));
    /// let batches: Vec<(String, Vec<u32>)> = readings
    ///     .stateful_group_by_advanced_rs2(StateConfig::new(), |r: &(String, u32)| r.0.clone(),
    ///         Some(2), Some(Duration::from_secs(10)), false,
    ///         |sensor, group, _state: StateAccess| async move {
    ///             (sensor, group.into_iter().map(|r| r.1).collect())
    ///         })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(batches, [("s1".into(), vec![1, 2]), ("s2".into(), vec![3]), ("s1".into(), vec![4])]);
    /// # }
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn stateful_group_by_advanced_rs2<K, F, Fut, R>(
        self,
        config: StateConfig,
        key_extractor: K,
        max_group_size: Option<usize>,
        group_timeout: Option<std::time::Duration>,
        emit_on_key_change: bool,
        f: F,
    ) -> crate::StatefulGroupByAdvanced<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(String, Vec<Self::Item>, StateAccess) -> Fut,
        Fut: Future<Output = R>,
        Self::Item: Serialize + DeserializeOwned + Send + 'static,
    {
        crate::StatefulGroupBy::new(
            self,
            config,
            key_extractor,
            max_group_size,
            group_timeout,
            emit_on_key_change,
            f,
        )
    }

    /// [`stateful_map_rs2`](Self::stateful_map_rs2) with up to `concurrency` events of
    /// different keys in flight at once: events of one key still run one after another, and
    /// outputs come out in input order. Worth it when the closure awaits I/O or state lives
    /// behind a slow backend. See [`StatefulMapPar`](crate::StatefulMapPar).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let counts: Vec<(String, u64)> = stream::iter(["a", "b", "a", "c"])
    ///     .stateful_map_rs2_par(StateConfig::new(), |w: &&str| w.to_string(), 8,
    ///         |w, state: StateAccess| async move {
    ///             // An awaited lookup would go here; other keys proceed meanwhile.
    ///             let n = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await.unwrap();
    ///             (w.to_string(), n)
    ///         })
    ///     .collect()
    ///     .await;
    /// assert_eq!(counts, [("a".into(), 1), ("b".into(), 1), ("a".into(), 2), ("c".into(), 1)]);
    /// # }
    /// ```
    fn stateful_map_rs2_par<K, F, Fut>(
        self,
        config: StateConfig,
        key_extractor: K,
        concurrency: usize,
        f: F,
    ) -> crate::StatefulMapPar<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Self::Item, StateAccess) -> Fut,
        Fut: Future,
    {
        crate::engine::KeyedPar::new(
            self,
            key_extractor,
            concurrency,
            crate::map_par::MapParStep::new(&config, f),
        )
    }

    /// [`stateful_filter_rs2`](Self::stateful_filter_rs2) with up to `concurrency` events of
    /// different keys in flight at once: events of one key still run one after another (each
    /// sees the previous one's state writes), kept events come out in input order, and at most
    /// `concurrency` events are taken from the input ahead of the output. `concurrency` 0 is
    /// treated as 1. See [`StatefulFilterPar`](crate::StatefulFilterPar).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// // Keep each key's first two events, checking up to 8 keys at once.
    /// let kept: Vec<u32> = stream::iter([1u32, 1, 2, 1, 2])
    ///     .stateful_filter_rs2_par(StateConfig::new(), |n: &u32| n.to_string(), 8,
    ///         |_n, state: StateAccess| async move {
    ///             state.update(|seen: Option<u32>| seen.unwrap_or(0) + 1).await.unwrap() <= 2
    ///         })
    ///     .collect()
    ///     .await;
    /// assert_eq!(kept, [1, 1, 2, 2]);
    /// # }
    /// ```
    fn stateful_filter_rs2_par<K, F, Fut>(
        self,
        config: StateConfig,
        key_extractor: K,
        concurrency: usize,
        f: F,
    ) -> crate::StatefulFilterPar<Self, K, F, Fut>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(&Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = bool>,
    {
        crate::engine::KeyedPar::new(
            self,
            key_extractor,
            concurrency,
            crate::filter_par::FilterParStep::new(&config, f),
        )
    }

    /// [`stateful_fold_rs2`](Self::stateful_fold_rs2) with up to `concurrency` events of
    /// different keys in flight at once: events of one key still run one after another (each
    /// gets the accumulator the previous one made; on a remote store, events of a key waiting
    /// behind each other share one locked read and one write), items come out in input order, and at
    /// most `concurrency` events are taken from the input ahead of the output. `concurrency` 0
    /// is treated as 1. Same state and `Err` items as the sequential operator; see
    /// [`StatefulFoldPar`](crate::StatefulFoldPar).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let totals: Vec<u64> = stream::iter([("a", 2u64), ("b", 5), ("a", 3)])
    ///     .stateful_fold_rs2_par(StateConfig::new(), |e: &(&str, u64)| e.0.to_string(), 8, 0u64,
    ///         |sum, e, _state: StateAccess| async move { sum + e.1 })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(totals, [2, 5, 5]);
    /// # }
    /// ```
    fn stateful_fold_rs2_par<K, F, Fut, A>(
        self,
        config: StateConfig,
        key_extractor: K,
        concurrency: usize,
        initial: A,
        f: F,
    ) -> crate::StatefulFoldPar<Self, K, F, Fut, A>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(A, Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = A>,
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        crate::engine::KeyedPar::new(
            self,
            key_extractor,
            concurrency,
            crate::accumulate_par::AccumulateParStep::new(&config, "fold", FoldSeed(initial), f),
        )
    }

    /// [`stateful_reduce_rs2`](Self::stateful_reduce_rs2) with up to `concurrency` events of
    /// different keys in flight at once: events of one key still run one after another (each
    /// gets the running value the previous one made; on a remote store, events of a key
    /// waiting behind each other share one locked read and one write), items come out in input order, and
    /// at most `concurrency` events are taken from the input ahead of the output.
    /// `concurrency` 0 is treated as 1. Same state and `Err` items as the sequential operator;
    /// see [`StatefulReducePar`](crate::StatefulReducePar).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::{stream, StreamExt};
    /// use rs2_operators::StatefulStreamExt;
    /// use rs2_state_core::{StateConfig, StateAccess};
    ///
    /// let maxima: Vec<u32> = stream::iter([3u32, 1, 7, 2])
    ///     .stateful_reduce_rs2_par(StateConfig::new(), |n: &u32| (n % 2).to_string(), 8,
    ///         |best, n, _state: StateAccess| async move { best.max(n) })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// // Odd numbers: 3, 3, 7; even numbers: 2.
    /// assert_eq!(maxima, [3, 3, 7, 2]);
    /// # }
    /// ```
    fn stateful_reduce_rs2_par<K, F, Fut>(
        self,
        config: StateConfig,
        key_extractor: K,
        concurrency: usize,
        f: F,
    ) -> crate::StatefulReducePar<Self, K, F, Fut, Self::Item>
    where
        Self: Sized,
        K: KeyExtractor<Self::Item>,
        F: FnMut(Self::Item, Self::Item, StateAccess) -> Fut,
        Fut: Future<Output = Self::Item>,
        Self::Item: Serialize + DeserializeOwned + Send + 'static,
    {
        crate::engine::KeyedPar::new(
            self,
            key_extractor,
            concurrency,
            crate::accumulate_par::AccumulateParStep::new(&config, "reduce", ReduceSeed, f),
        )
    }
}

impl<S: Stream + ?Sized> StatefulStreamExt for S {}
