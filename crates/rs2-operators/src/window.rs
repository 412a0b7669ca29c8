//! `stateful_window_rs2` and `stateful_window_rs2_advanced`: per-key count windows (tumbling,
//! sliding or hopping), optionally with the partial windows left at end of input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use rs2_state_memory::TypedTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::driver::{driven_stream, Driver, Emit, EventOp, Finish};
use crate::engine::event_log::{LogError, LogWriter};
use crate::engine::own::typed_transition;
use crate::engine::{Change, EventKey, KeyedState, StateIo};

pin_project! {
    /// Stream returned by [`stateful_window_rs2`](crate::StatefulStreamExt::stateful_window_rs2)
    /// and [`stateful_window_rs2_advanced`](crate::StatefulStreamExt::stateful_window_rs2_advanced).
    ///
    /// Per key, events are counted into windows of `window_size` events. The windows of a key
    /// start at its events number `0, slide, 2 * slide, ...` (counting from 0; `slide` is
    /// `slide_size`, or `window_size` when it is `None`):
    ///
    /// * **tumbling** (`slide == window_size`): each event is in exactly one window;
    /// * **sliding** (`slide < window_size`): consecutive windows overlap by
    ///   `window_size - slide` events;
    /// * **hopping** (`slide > window_size`): after a window, the key's next
    ///   `slide - window_size` events belong to no window and are dropped (they reach neither
    ///   the closure nor a partial window).
    ///
    /// When a key's window is complete (on the event that completes it), the closure gets the
    /// window (oldest event first) and a [`StateAccess`] for the key's own user state
    /// (namespace `window.user`), and its output is yielded as `Ok`.
    ///
    /// **State.** A key's open buffer (the events of its next window, plus a count of events
    /// still to skip when hopping) lives in the configured storage (namespace `window`), so TTL,
    /// `max_size` and custom backends apply: a buffer that expired or was evicted starts again
    /// empty. A buffer that becomes empty is removed from storage. With an in-memory config
    /// the store is the operator's own, and buffers are kept as typed `Vec`s of events (nothing
    /// is encoded; a tumbling window is handed to the closure without copying). In a custom
    /// store each event costs one read-modify-write of its key's buffer (under the key's lock,
    /// so pipelines sharing the store lose no event) that encodes only this event, and the
    /// buffer's events are decoded only when they form a window.
    /// A buffer this
    /// operator did not write itself (an earlier pipeline's, on a durable store) is decoded in
    /// full once, to check it, before it is added to. When the input ends,
    /// emitted partial windows are removed from storage; everything else (open buffers without
    /// `emit_partial`, a hopping key's count of events to skip) stays until its TTL, so a later
    /// pipeline on the same durable store and namespace carries on with those keys.
    ///
    /// **End of input.** Without `emit_partial`, events of incomplete windows are not emitted.
    /// With it, once the input ends the closure is run on every key's non-empty open buffer
    /// (the window that would have started next, fewer than `window_size` events), one key
    /// after another, in the order in which those buffers were started (a tumbling key's buffer
    /// starts with the first event after its last complete window; a sliding key's buffer never
    /// empties, so it started with the key's first event). To know these keys the operator keeps
    /// an index of keys with open buffers in memory (the buffers stay in storage). The index
    /// holds at most `config.max_size` keys, the same bound as the default store: when full,
    /// the key whose buffer started first leaves it, its partial window will not be emitted at
    /// end of input, and the stream yields an `Err` item naming that key right away (a default
    /// store that full is evicting buffers too). With `max_size` unset the index is unbounded.
    ///
    /// **Errors.** `window_size == 0` or `slide_size == Some(0)` yields one
    /// [`StateError::Validation`] item and ends the stream without reading the input. An invalid
    /// config, a failing key extractor, a backend failure or a stored buffer that cannot be
    /// decoded yields an `Err` item for that event, naming the key where there is one; that
    /// event is not added to any window, the key's stored buffer is left as it was, and the
    /// stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulWindow<S: futures::Stream, K, F, Fut> {
        #[pin]
        inner: Driver<S, K, Window<S::Item, F>, Advanced<S::Item>, Fut>,
    }
}

/// The rule, the buffers' index and the closure.
struct Window<T, F> {
    spec: Spec,
    /// The buffers, typed, when the store is private.
    typed: Option<TypedTable<TypedBuffer<T>>>,
    buffers: LogWriter,
    open: OpenKeys,
    /// Keys whose partial windows are still to be emitted (end of input).
    drain: Option<VecDeque<Arc<str>>>,
    user_state: KeyedState,
    f: F,
}

/// A key's open buffer in the operator's own table.
struct TypedBuffer<T> {
    /// Events still to drop before the next window starts (hopping).
    skip: u64,
    events: Vec<T>,
}

/// Window size and slide, both at least 1.
#[derive(Debug, Clone, Copy)]
struct Spec {
    size: usize,
    slide: usize,
}

/// Tag of a stored buffer (see `event_log`): the events of a key's next window so far, oldest
/// first, and a count of events still to drop before the next window starts (hopping windows).
const BUFFER_TAG: u8 = 0x77;

/// What one event did: the window it completed, if any, and how it changed the set of keys with
/// open buffers.
struct Advanced<T> {
    window: Option<Vec<T>>,
    change: IndexChange,
}

impl<T> Advanced<T> {
    fn new(window: Option<Vec<T>>, change: IndexChange) -> Self {
        Self { window, change }
    }
}

impl Spec {
    /// Adds `event` to the key's stored buffer, edited in place in `bytes` (`existed`: the key
    /// had a buffer). On an error `bytes` is left as it was.
    fn advance<T: Serialize + DeserializeOwned>(
        self,
        buffers: LogWriter,
        bytes: &mut Vec<u8>,
        existed: bool,
        event: T,
    ) -> Result<(Change, Advanced<T>), LogError> {
        let buf = buffers.read::<T>(existed.then_some(&bytes[..]))?;
        let (skip, count) = (buf.skip, buf.count);
        let was_open = count > 0;
        if skip > 0 {
            // Hopping: the event belongs to no window.
            let change = if skip == 1 && count == 0 {
                Change::Remove
            } else {
                buffers.set_header(bytes, skip - 1, count);
                Change::Store
            };
            return Ok((change, Advanced::new(None, IndexChange::Unchanged)));
        }
        if count + 1 < self.size {
            buffers.append(bytes, &event)?;
            buffers.set_header(bytes, 0, count + 1);
            let index = if was_open {
                IndexChange::Unchanged
            } else {
                IndexChange::Opened
            };
            return Ok((Change::Store, Advanced::new(None, index)));
        }
        // The event completes a window: the first `size` of the stored events and this one.
        // The buffer keeps these events from number `cut` on: a sliding window's last
        // `size - slide`; none of a tumbling or hopping window's (unless the buffer was stored
        // by an operator with a larger window: its excess starts the next window).
        let (cut, next_skip) = if self.slide < self.size {
            (self.slide, 0)
        } else {
            (self.size, (self.slide - self.size) as u64)
        };
        let mut events = buf.iter::<T>();
        let mut window = Vec::with_capacity(self.size);
        for event in events.by_ref().take(cut) {
            window.push(event?);
        }
        let cut_bytes = events.offset();
        for event in events.take(self.size - cut) {
            window.push(event?);
        }
        let keep_event = cut <= count;
        let next_count = count.saturating_sub(cut) + usize::from(keep_event);
        let change = if next_skip == 0 && next_count == 0 {
            Change::Remove
        } else {
            if keep_event {
                buffers.append(bytes, &event)?;
            }
            buffers.cut(bytes, cut_bytes);
            buffers.set_header(bytes, next_skip, next_count);
            Change::Store
        };
        if count < self.size {
            window.push(event);
        }
        let index = match (was_open, next_count > 0) {
            (false, true) => IndexChange::Opened,
            (true, false) => IndexChange::Closed,
            _ => IndexChange::Unchanged,
        };
        Ok((change, Advanced::new(Some(window), index)))
    }
}

/// At end of input: takes the key's partial window (all its buffered events) out of storage.
fn take_partial<T: DeserializeOwned>(
    buffers: LogWriter,
    bytes: &[u8],
    existed: bool,
) -> Result<(Change, Advanced<T>), LogError> {
    let buf = buffers.read::<T>(existed.then_some(bytes))?;
    if buf.count == 0 {
        // Expired, evicted or emptied meanwhile (or only events to skip): nothing to emit.
        return Ok((Change::Keep, Advanced::new(None, IndexChange::Unchanged)));
    }
    let window = buf.decode_all()?;
    Ok((
        Change::Remove,
        Advanced::new(Some(window), IndexChange::Unchanged),
    ))
}

/// How an event changed the set of keys with open buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexChange {
    Unchanged,
    Opened,
    Closed,
}

/// Keys whose buffer holds events, in the order their buffers were started; kept only when
/// partial windows are to be emitted. At most `cap` keys.
struct OpenKeys {
    enabled: bool,
    cap: usize,
    next_seq: u64,
    by_key: HashMap<Arc<str>, u64>,
    order: BTreeMap<u64, Arc<str>>,
    /// Keys pushed out of the index by the cap; each is reported as an error item, so a
    /// partial window is never skipped silently.
    untracked: VecDeque<Arc<str>>,
}

impl OpenKeys {
    fn new(enabled: bool, max_size: Option<usize>) -> Self {
        Self {
            enabled,
            cap: max_size.unwrap_or(usize::MAX).max(1),
            next_seq: 0,
            by_key: HashMap::new(),
            order: BTreeMap::new(),
            untracked: VecDeque::new(),
        }
    }

    fn apply(&mut self, key: &str, change: IndexChange) {
        if !self.enabled {
            return;
        }
        match change {
            IndexChange::Unchanged => {}
            IndexChange::Closed => {
                if let Some(seq) = self.by_key.remove(key) {
                    self.order.remove(&seq);
                }
            }
            IndexChange::Opened => {
                if let Some(seq) = self.by_key.remove(key) {
                    self.order.remove(&seq);
                }
                while self.by_key.len() >= self.cap {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    self.by_key.remove(&oldest);
                    self.untracked.push_back(oldest);
                }
                let key: Arc<str> = Arc::from(key);
                let seq = self.next_seq;
                self.next_seq += 1;
                self.by_key.insert(Arc::clone(&key), seq);
                self.order.insert(seq, key);
            }
        }
    }

    /// Every indexed key, in order, leaving the index empty.
    fn take_in_order(&mut self) -> VecDeque<Arc<str>> {
        self.by_key.clear();
        std::mem::take(&mut self.order).into_values().collect()
    }
}

impl Spec {
    /// [`advance`](Self::advance) on a typed buffer (`None`: the key has none); the same rule.
    fn advance_typed<T: Clone>(
        self,
        buf: &mut Option<TypedBuffer<T>>,
        event: T,
    ) -> (Change, Advanced<T>) {
        let b = buf.get_or_insert_with(|| TypedBuffer {
            skip: 0,
            events: Vec::new(),
        });
        let count = b.events.len();
        if b.skip > 0 {
            b.skip -= 1;
            let change = if b.skip == 0 && count == 0 {
                Change::Remove
            } else {
                Change::Store
            };
            return (change, Advanced::new(None, IndexChange::Unchanged));
        }
        if count + 1 < self.size {
            if b.events.capacity() == 0 {
                b.events.reserve_exact(self.size);
            }
            b.events.push(event);
            let index = if count > 0 {
                IndexChange::Unchanged
            } else {
                IndexChange::Opened
            };
            return (Change::Store, Advanced::new(None, index));
        }
        // The event completes a window (a typed buffer never holds more than `size - 1`).
        let mut window = std::mem::replace(&mut b.events, Vec::with_capacity(self.size));
        window.push(event);
        if self.slide < self.size {
            b.events.extend_from_slice(&window[self.slide..]);
        } else {
            b.skip = (self.slide - self.size) as u64;
        }
        let next_count = b.events.len();
        let change = if b.skip == 0 && next_count == 0 {
            Change::Remove
        } else {
            Change::Store
        };
        let index = match (count > 0, next_count > 0) {
            (false, true) => IndexChange::Opened,
            (true, false) => IndexChange::Closed,
            _ => IndexChange::Unchanged,
        };
        (change, Advanced::new(Some(window), index))
    }
}

impl<S: futures::Stream, K, F, Fut> StatefulWindow<S, K, F, Fut> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        window_size: usize,
        slide_size: Option<usize>,
        emit_partial: bool,
        f: F,
    ) -> Self {
        let config = crate::engine::with_stats(&config);
        let slide = slide_size.unwrap_or(window_size);
        let invalid = if window_size == 0 {
            Some(StateError::Validation(
                "window operator: window_size must be at least 1 (got 0)".into(),
            ))
        } else if slide == 0 {
            Some(StateError::Validation(
                "window operator: slide_size must be at least 1 (got Some(0)); use None for \
                 tumbling windows"
                    .into(),
            ))
        } else {
            None
        };
        let keyed = KeyedState::new(&config, "window");
        let op = Window {
            spec: Spec {
                size: window_size.max(1),
                slide: slide.max(1),
            },
            typed: keyed.is_private().then(|| keyed.typed_table(&config)),
            buffers: LogWriter::new(BUFFER_TAG),
            open: OpenKeys::new(emit_partial, config.max_size),
            drain: None,
            user_state: KeyedState::new(&config, "window.user"),
            f,
        };
        Self {
            inner: Driver::new(stream, keyed, key_extractor, op, invalid),
        }
    }
}

impl<T, F, Fut, R> EventOp<T> for Window<T, F>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    F: FnMut(Vec<T>, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    type Out = Advanced<T>;
    type Fut = Fut;
    type Item = R;

    fn begin(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        event: T,
    ) -> StateIo<Advanced<T>> {
        let spec = self.spec;
        if let Some(table) = &mut self.typed {
            return StateIo::ready(typed_transition(table, &key.storage_key, now, |buf| {
                Ok(spec.advance_typed(buf, event))
            }));
        }
        let buffers = self.buffers;
        keyed.update_bytes(key, now, move |key, bytes, existed| {
            spec.advance(buffers, bytes, existed, event)
                .map_err(|e| e.for_events::<T>(key))
        })
    }

    fn emit(
        &mut self,
        advanced: Advanced<T>,
        _keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> Emit<R, Fut> {
        self.open.apply(key.user_key(), advanced.change);
        match advanced.window {
            Some(window) => {
                let access = self.user_state.access_for(key.user_key(), now);
                Emit::Run((self.f)(window, access))
            }
            None => Emit::Skip,
        }
    }

    fn finish(&mut self, out: R, _: &mut KeyedState, _: EventKey, _: u64) -> Finish<R> {
        Finish::Item(out)
    }

    fn side_error(&mut self) -> Option<StateError> {
        let key = self.open.untracked.pop_front()?;
        Some(StateError::Storage(format!(
            "key {}: more than max_size ({}) keys have open windows, so this key's partial \
             window will not be emitted at end of input; raise max_size to track more keys",
            rs2_state_core::KeyDisplay(&key),
            self.open.cap
        )))
    }

    fn next_flush(&mut self) -> Option<Arc<str>> {
        self.drain
            .get_or_insert_with(|| self.open.take_in_order())
            .pop_front()
    }

    fn begin_flush(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> StateIo<Advanced<T>> {
        if let Some(table) = &mut self.typed {
            let k = &key.storage_key;
            let hash = table.hash(k);
            let window = match table.get_mut(hash, k, now) {
                Some(buf) if !buf.events.is_empty() => {
                    let window = std::mem::take(&mut buf.events);
                    table.remove(hash, k);
                    Some(window)
                }
                // Expired, evicted or emptied meanwhile: nothing to emit.
                _ => None,
            };
            return StateIo::ready(Ok(Advanced::new(window, IndexChange::Unchanged)));
        }
        let buffers = self.buffers;
        keyed.update_bytes(key, now, move |key, bytes, existed| {
            take_partial(buffers, bytes, existed).map_err(|e| e.for_events::<T>(key))
        })
    }
}

driven_stream!(StatefulWindow<S, K, F, Fut>, impl<S, K, F, Fut, R>, Item = R, per_event = Some(1), where
    S: futures::Stream,
    S::Item: Serialize + DeserializeOwned + Clone + Send + 'static,
    K: KeyExtractor<S::Item>,
    F: FnMut(Vec<S::Item>, StateAccess) -> Fut,
    Fut: Future<Output = R>);
