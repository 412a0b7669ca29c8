//! `stateful_event_time_window_rs2` and `stateful_event_time_window_advanced_rs2`: per-key
//! windows over the events' own timestamps (tumbling, sliding, session), fired by a watermark
//! so out-of-order streams get the same windows a sorted stream would.

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::own::OwnState;
use crate::engine::{ceil_ms, KeyedState};

mod core;
mod stream;
mod windows;

use self::core::{Core, Settings};
use self::stream::{Advanced, Basic, Inner};
use self::windows::Spec;

/// The windows of an event-time window operator: their shape (tumbling, sliding or session),
/// how far out of order events may arrive, how late an event may still change a fired window,
/// and the idle rule.
///
/// ```
/// use std::time::Duration;
/// use rs2_operators::EventTimeWindow;
///
/// let per_minute = EventTimeWindow::tumbling(Duration::from_secs(60))
///     .max_out_of_orderness(Duration::from_secs(5))
///     .allowed_lateness(Duration::from_secs(30));
/// # let _ = per_minute;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeWindow {
    shape: Shape,
    max_out_of_orderness: Duration,
    allowed_lateness: Duration,
    idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Sliding { size: Duration, slide: Duration },
    Session { gap: Duration },
}

impl EventTimeWindow {
    /// The idle timeout a window spec starts with: 60 s of processing time without input.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    fn new(shape: Shape) -> Self {
        Self {
            shape,
            max_out_of_orderness: Duration::ZERO,
            allowed_lateness: Duration::ZERO,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
        }
    }

    /// Tumbling windows of `size`: `[k * size, (k + 1) * size)` ms since the epoch; each event
    /// is in exactly one. `size` is counted in whole milliseconds (rounded up); zero is invalid.
    pub fn tumbling(size: Duration) -> Self {
        Self::new(Shape::Sliding { size, slide: size })
    }

    /// Sliding windows of `size` starting every `slide`: `[k * slide, k * slide + size)`; an
    /// event is in every window covering its time. Zero `size` or `slide`, or `slide > size`
    /// (events between windows would belong to none), is invalid.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self::new(Shape::Sliding { size, slide })
    }

    /// Session windows: a key's session starts at an event and ends `gap` after the key's last
    /// event in it (`[first, last + gap)`); an event less than `gap` from a session joins it,
    /// and an event that bridges two sessions merges them. Zero `gap` is invalid.
    pub fn session(gap: Duration) -> Self {
        Self::new(Shape::Session { gap })
    }

    /// How far behind the largest event time seen an event may be and still be on time: the
    /// watermark is the largest event time minus this. Default zero (in-order input).
    pub fn max_out_of_orderness(mut self, d: Duration) -> Self {
        self.max_out_of_orderness = d;
        self
    }

    /// How long after a window fired (in event time, by the watermark) an event may still join
    /// it: the window fires again with that event included. Default zero.
    pub fn allowed_lateness(mut self, d: Duration) -> Self {
        self.allowed_lateness = d;
        self
    }

    /// After `d` of processing time with no input, the watermark advances with processing time
    /// (see [`StatefulEventTimeWindow`]). Zero is invalid. Default
    /// [`DEFAULT_IDLE_TIMEOUT`](Self::DEFAULT_IDLE_TIMEOUT).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// No idle rule: the watermark moves only with event times, so a quiet stream's windows
    /// wait for more input or its end.
    pub fn without_idle_timeout(mut self) -> Self {
        self.idle_timeout = None;
        self
    }

    /// The core's settings, with the reason when the spec is invalid.
    fn settings(&self) -> Settings {
        let problem = match self.shape {
            Shape::Sliding { size, .. } if size.is_zero() => Some("the window size is zero"),
            Shape::Sliding { slide, .. } if slide.is_zero() => Some("the slide is zero"),
            Shape::Sliding { size, slide } if ceil_ms(slide) > ceil_ms(size) => Some(
                "the slide is larger than the window size (events between windows would belong \
                 to none); use a slide of at most the size",
            ),
            Shape::Session { gap } if gap.is_zero() => Some("the session gap is zero"),
            _ if self.idle_timeout.is_some_and(|d| d.is_zero()) => {
                Some("the idle timeout is zero; use without_idle_timeout() for no idle rule")
            }
            _ => None,
        };
        let spec = match self.shape {
            Shape::Sliding { size, slide } => Spec::Aligned {
                size: ceil_ms(size).max(1),
                slide: ceil_ms(slide).clamp(1, ceil_ms(size).max(1)),
            },
            Shape::Session { gap } => Spec::Session {
                gap: ceil_ms(gap).max(1),
            },
        };
        Settings {
            spec,
            lateness: ceil_ms(self.allowed_lateness),
            out_of_orderness: ceil_ms(self.max_out_of_orderness),
            idle: self.idle_timeout.map(ceil_ms),
            invalid: problem.map(|p| {
                StateError::Validation(format!(
                    "event_time_window operator: invalid EventTimeWindow {self:?}: {p}"
                ))
            }),
        }
    }
}

/// One key's fired window, as the closure gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow<T> {
    /// The key.
    pub key: String,
    /// First millisecond of the window (ms since the epoch).
    pub start_ms: u64,
    /// End of the window, exclusive (a window whose end would pass `u64::MAX` ends there and
    /// covers `u64::MAX` too).
    pub end_ms: u64,
    /// The window's events, in arrival order.
    pub events: Vec<T>,
}

/// An item of [`stateful_event_time_window_advanced_rs2`](crate::StatefulStreamExt::stateful_event_time_window_advanced_rs2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTimeOutput<R, T> {
    /// The closure's output for a fired window.
    Window(R),
    /// A late event: all its windows had fired and were past allowed lateness. It changed no
    /// window.
    Late(T),
}

pin_project! {
    /// Stream returned by
    /// [`stateful_event_time_window_rs2`](crate::StatefulStreamExt::stateful_event_time_window_rs2)
    /// (and, yielding [`EventTimeOutput`]s, [`StatefulEventTimeWindowAdvanced`]).
    ///
    /// **Windows.** Each event has a time, `event_time(&event)` ms since the epoch, and belongs
    /// to its key's windows covering that time (see [`EventTimeWindow`]): tumbling and sliding
    /// windows are aligned to the epoch, a session is `[first, last + gap)` of a key's events
    /// less than `gap` apart.
    ///
    /// **Watermark.** The stream's (not a key's): the largest event time seen minus
    /// `max_out_of_orderness` (saturating at 0), never moving back. A window **fires** when
    /// the watermark reaches its end, whichever key's event moved it: the closure gets the
    /// [`TimeWindow`] (its events in arrival order) and a [`StateAccess`] for the key's own user
    /// state (namespace `event_time_window.user`), and its output is yielded. When the input
    /// ends, every open window fires.
    ///
    /// **Late events.** An event is late when every window it would belong to has fired and
    /// the watermark has passed that window's end plus `allowed_lateness`. A late event changes
    /// nothing, is counted ([`late_count`](Self::late_count)), and the advanced stream yields it
    /// as [`EventTimeOutput::Late`]. An event for a window that fired less than
    /// `allowed_lateness` ago joins it and the window **fires again** at once, with all its
    /// events (a second output for the same key and window); a window's state is kept until
    /// the watermark passes its end plus `allowed_lateness`.
    ///
    /// **Idle rule.** When no event arrives for the idle timeout (processing time; 60 s by
    /// default), the watermark becomes the one at the last event plus the processing time
    /// since that event, and keeps following the clock until input resumes, so a quiet
    /// stream's windows fire without new input (a tokio timer wakes the stream: poll it inside
    /// a tokio runtime with time enabled). With
    /// [`without_idle_timeout`](EventTimeWindow::without_idle_timeout) windows wait for events
    /// or the end of input.
    ///
    /// **Order.** Windows due together fire in order of end, then start, then the order in
    /// which they were opened; all due windows fire before the next event is read.
    ///
    /// **State and memory.** A key's open windows and their events (each event once, however
    /// many windows cover it) live in the configured storage (namespace `event_time_window`),
    /// so `max_size`, TTL and custom backends apply: typed in a table of the operator's with an
    /// in-memory config; as bytes, read and written under the key's lock, in a custom store
    /// (each event re-encodes the key's open windows). Beside it the operator keeps an index in
    /// memory: one entry per open window (and per fired window kept for allowed lateness), a
    /// few dozen bytes each. Windows are open only for the event-time span `size +
    /// max_out_of_orderness + allowed_lateness` (for sessions, `gap + ...`), so the index holds
    /// at most the keys active in that span times `(size + max_out_of_orderness +
    /// allowed_lateness) / slide + 1` windows each. A window whose state expired (TTL) or was
    /// evicted (`max_size`) before it was due yields an `Err` item naming the key (unless a
    /// later event of the key started it afresh first). Pipelines sharing a custom store and
    /// namespace share windows: an event joins its key's window whichever pipeline opened it;
    /// the opener fires it (with every pipeline's events) by its own watermark, and so does a
    /// pipeline whose event joined it (so a window whose opener stopped still fires); a window
    /// fires once, and again only if an event joined it since; only the opener purges a window (one
    /// it never purges, its opener gone, stays until the TTL). Window numbers carry a number of
    /// their pipeline's own, so windows of different keys never mix in an index.
    ///
    /// **Errors.** A zero size, slide or gap, `slide > size`, or a zero idle timeout, makes
    /// every event an `Err` item ([`StateError::Validation`]), as an invalid config does. A
    /// failing key extractor or backend yields an `Err` item naming the key, for the event
    /// (it joins no window) or for a due window that could not be read (it is tried again at
    /// the next event, or at once after the end of input, up to 3 failed reads; then it is no
    /// longer tried and its state stays until the TTL); the stream goes on.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulEventTimeWindow<S: Stream, K, E, F, Fut> {
        #[pin]
        inner: Inner<S, K, E, F, Fut>,
    }
}

pin_project! {
    /// Stream returned by
    /// [`stateful_event_time_window_advanced_rs2`](crate::StatefulStreamExt::stateful_event_time_window_advanced_rs2):
    /// [`StatefulEventTimeWindow`] that also yields each late event, as
    /// [`EventTimeOutput::Late`], where it arrived.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulEventTimeWindowAdvanced<S: Stream, K, E, F, Fut> {
        #[pin]
        inner: Inner<S, K, E, F, Fut>,
    }
}

fn inner<S: Stream, K, E, F, Fut>(
    stream: S,
    config: StateConfig,
    key_extractor: K,
    event_time: E,
    window: EventTimeWindow,
    f: F,
) -> Inner<S, K, E, F, Fut> {
    let config = crate::engine::with_stats(&config);
    let keyed = KeyedState::new(&config, "event_time_window");
    let own = OwnState::new(&config, &keyed);
    let user_state = KeyedState::new(&config, "event_time_window.user");
    let core = Core::new(window.settings(), keyed, own, user_state, event_time, f);
    Inner::new(stream, key_extractor, core)
}

macro_rules! event_time_stream {
    ($name:ident, $mode:ty, $item:ty) => {
        impl<S: Stream, K, E, F, Fut> $name<S, K, E, F, Fut> {
            pub(crate) fn new(
                stream: S,
                config: StateConfig,
                key_extractor: K,
                event_time: E,
                window: EventTimeWindow,
                f: F,
            ) -> Self {
                Self {
                    inner: inner(stream, config, key_extractor, event_time, window, f),
                }
            }

            /// Late events so far (see the type's docs).
            pub fn late_count(&self) -> u64 {
                self.inner.core.late_count()
            }

            /// The watermark (ms since the epoch), `None` before the first event.
            pub fn watermark(&self) -> Option<u64> {
                self.inner.core.watermark()
            }

            /// The operator's figures (the config's [`StateStats`](rs2_state_core::StateStats)
            /// handle, or one of its own): readable while the stream runs.
            pub fn stats(&self) -> rs2_state_core::StateStats {
                self.inner.core.keyed.stats().clone()
            }
        }

        impl<S, K, E, F, Fut, R> Stream for $name<S, K, E, F, Fut>
        where
            S: Stream,
            S::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
            K: KeyExtractor<S::Item>,
            E: Fn(&S::Item) -> u64,
            F: FnMut(TimeWindow<S::Item>, StateAccess) -> Fut,
            Fut: Future<Output = R>,
        {
            type Item = Result<$item, StateError>;

            fn poll_next(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                self.project().inner.poll_inner::<$mode>(cx)
            }
        }

        impl<S, K, E, F, Fut, R> futures::stream::FusedStream for $name<S, K, E, F, Fut>
        where
            S: Stream,
            S::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
            K: KeyExtractor<S::Item>,
            E: Fn(&S::Item) -> u64,
            F: FnMut(TimeWindow<S::Item>, StateAccess) -> Fut,
            Fut: Future<Output = R>,
        {
            fn is_terminated(&self) -> bool {
                self.inner.is_done()
            }
        }

        impl<S: Stream + std::fmt::Debug, K, E, F, Fut> std::fmt::Debug for $name<S, K, E, F, Fut> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inner", &self.inner)
                    .finish()
            }
        }
    };
}

event_time_stream!(StatefulEventTimeWindow, Basic, R);
event_time_stream!(
    StatefulEventTimeWindowAdvanced,
    Advanced,
    EventTimeOutput<R, S::Item>
);
