//! The event-time window operator's state apart from the input, the closure's future and the
//! timer: the watermark, the index of windows by when they are due, the idle rule, and the
//! steps that take an event in and settle a due window. The stream is in `stream.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rs2_state_core::{KeyExtractor, StateError, StateResult};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::windows::{
    settle, take_in, Ctx, Entry, IndexOp, KeyWindows, Settled, Spec, SEQ_COUNT_BITS,
};
use super::TimeWindow;
use crate::engine::own::OwnState;
use crate::engine::{EventKey, KeyedState, StateIo};

/// Failed reads of one due window after which it is no longer tried (its state stays in the
/// store until the config's TTL).
const MAX_SETTLE_FAILURES: u8 = 3;

/// The largest watermark while input lasts: `u64::MAX` is the end of input's, so a window
/// whose end saturated at `u64::MAX` (it covers an event at `u64::MAX`) fires only then.
const MAX_WATERMARK: u64 = u64::MAX - 1;

/// What taking an event in changed: the index changes and how many window numbers it used.
pub(super) type AddOut = (Vec<IndexOp>, u64);
/// What settling a window gave, with its index changes.
pub(super) type SettleOut<T> = (Vec<IndexOp>, Settled<T>);

/// The stream's state apart from the input, the closure's future and the timer.
pub(super) struct Core<T, E, F> {
    pub(super) keyed: KeyedState,
    own: OwnState<KeyWindows<T>>,
    pub(super) user_state: KeyedState,
    spec: Spec,
    lateness: u64,
    out_of_orderness: u64,
    /// Processing time (ms) without input after which the watermark follows the clock.
    idle: Option<u64>,
    /// The window arguments were invalid: every event reports this.
    invalid: Option<StateError>,
    event_time: E,
    pub(super) f: F,
    /// Every open window (at its end) and every fired window kept for allowed lateness (at
    /// its end plus the lateness), with its key.
    pub(super) index: BTreeMap<Entry, Arc<str>>,
    /// Due windows whose settling failed (a backend error), with their failures so far: put
    /// back in the index at the next event and at the end of input, up to
    /// [`MAX_SETTLE_FAILURES`] failures each.
    failed: Vec<(Entry, Arc<str>)>,
    failures: BTreeMap<Entry, u8>,
    next_seq: u64,
    /// The watermark; meaningful once `seen`.
    pub(super) wm: u64,
    seen: bool,
    /// The processing time of the last event, and the watermark then (the idle rule's base).
    last_input_ms: u64,
    wm_at_last_input: u64,
    pub(super) late: u64,
    pub(super) input_done: bool,
    /// Recycled between transitions.
    ops: Vec<IndexOp>,
    pub(super) armed_for: Option<u64>,
}

/// What became of an event taken from the input.
pub(super) enum Taken<T> {
    Late(T),
    Err(StateError),
    Io(EventKey, StateIo<AddOut>),
}

/// The settings of a [`Core`], from the validated [`EventTimeWindow`](super::EventTimeWindow).
pub(super) struct Settings {
    pub spec: Spec,
    pub lateness: u64,
    pub out_of_orderness: u64,
    pub idle: Option<u64>,
    pub invalid: Option<StateError>,
}

impl<T, E, F> Core<T, E, F> {
    pub(super) fn new(
        settings: Settings,
        keyed: KeyedState,
        own: OwnState<KeyWindows<T>>,
        user_state: KeyedState,
        event_time: E,
        f: F,
    ) -> Self {
        Self {
            keyed,
            own,
            user_state,
            spec: settings.spec,
            lateness: settings.lateness,
            out_of_orderness: settings.out_of_orderness,
            idle: settings.idle,
            invalid: settings.invalid,
            event_time,
            f,
            index: BTreeMap::new(),
            failed: Vec::new(),
            failures: BTreeMap::new(),
            next_seq: first_seq(),
            wm: 0,
            seen: false,
            last_input_ms: 0,
            wm_at_last_input: 0,
            late: 0,
            input_done: false,
            ops: Vec::new(),
            armed_for: None,
        }
    }

    pub(super) fn late_count(&self) -> u64 {
        self.late
    }

    pub(super) fn watermark(&self) -> Option<u64> {
        self.seen.then_some(self.wm)
    }

    /// Open windows and fired windows kept for allowed lateness (index entries).
    pub(super) fn indexed(&self) -> usize {
        self.index.len()
    }

    /// The watermark windows are settled at: every window is due once the input has ended.
    pub(super) fn settle_wm(&self) -> u64 {
        if self.input_done {
            u64::MAX
        } else {
            self.wm
        }
    }

    fn ctx(&self, wm: u64) -> Ctx {
        Ctx {
            spec: self.spec,
            wm,
            lateness: self.lateness,
            next_seq: self.next_seq,
        }
    }

    /// Puts the windows whose settling failed back in the index, to be tried again.
    pub(super) fn retry_failed(&mut self) {
        for (entry, key) in self.failed.drain(..) {
            self.index.insert(entry, key);
        }
    }

    /// The next due window, taken out of the index.
    pub(super) fn next_due(&mut self) -> Option<(Entry, Arc<str>)> {
        let wm = self.settle_wm();
        match self.index.first_key_value() {
            Some((entry, _)) if entry.deadline <= wm => self.index.pop_first(),
            _ => None,
        }
    }

    /// Applies a transition's index changes for the key `key` (made shared once, if needed).
    fn apply(&mut self, key: &str, shared: Option<&Arc<str>>, mut ops: Vec<IndexOp>) {
        let mut shared = shared.cloned();
        for op in ops.drain(..) {
            match op {
                // Window numbers are this pipeline's own (see `first_seq`), so an entry the
                // index holds is this key's window already.
                IndexOp::Insert(entry) if self.index.contains_key(&entry) => {}
                IndexOp::Insert(entry) => {
                    let key = shared.get_or_insert_with(|| Arc::from(key));
                    self.index.insert(entry, Arc::clone(key));
                }
                IndexOp::Remove(entry) => {
                    self.index.remove(&entry);
                }
            }
        }
        self.ops = ops;
    }

    /// The idle rule: once the input has been quiet for the idle timeout, the watermark is the
    /// one at the last event plus the processing time since.
    pub(super) fn idle_advance(&mut self, now: u64) {
        let Some(idle) = self.idle else { return };
        if self.seen && now >= self.last_input_ms.saturating_add(idle) {
            let wm = self
                .wm_at_last_input
                .saturating_add(now - self.last_input_ms);
            self.wm = self.wm.max(wm.min(MAX_WATERMARK));
        }
    }

    /// The processing time at which the idle rule makes the first indexed window due.
    pub(super) fn idle_deadline(&self) -> Option<u64> {
        let idle = self.idle?;
        let (first, _) = self.index.first_key_value()?;
        let wait = first
            .deadline
            .saturating_sub(self.wm_at_last_input)
            .max(idle);
        Some(self.last_input_ms.saturating_add(wait))
    }
}

impl<T, E, F> Core<T, E, F>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    E: Fn(&T) -> u64,
{
    /// Takes an event in: moves the watermark, then judges it late or starts its transition.
    pub(super) fn take<K: KeyExtractor<T>>(&mut self, extractor: &K, event: T) -> Taken<T> {
        if let Some(err) = &self.invalid {
            return Taken::Err(err.clone());
        }
        if !self.failed.is_empty() {
            self.retry_failed();
        }
        let mut key = match self.keyed.key_of(extractor, &event) {
            Ok(key) => key,
            Err(err) => return Taken::Err(err),
        };
        let t = (self.event_time)(&event);
        let now = self.keyed.now();
        let candidate = t.saturating_sub(self.out_of_orderness).min(MAX_WATERMARK);
        self.wm = if self.seen {
            self.wm.max(candidate)
        } else {
            candidate
        };
        self.seen = true;
        self.last_input_ms = now;
        self.wm_at_last_input = self.wm;
        let ctx = self.ctx(self.wm);
        if ctx.is_late(t) {
            self.late += 1;
            return Taken::Late(event);
        }
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        let io = self
            .own
            .transition(&mut self.keyed, &mut key, now, move |state| {
                let (change, used) = take_in(state, ctx, t, event, &mut ops);
                Ok((change, (ops, used)))
            });
        Taken::Io(key, io)
    }

    pub(super) fn land_take(
        &mut self,
        key: &EventKey,
        result: StateResult<AddOut>,
    ) -> Option<StateError> {
        match result {
            Ok((ops, used)) => {
                self.next_seq = self.next_seq.wrapping_add(used);
                self.apply(key.user_key(), None, ops);
                None
            }
            Err(err) => Some(err),
        }
    }

    pub(super) fn begin_settle(&mut self, key: &str, entry: Entry) -> StateIo<SettleOut<T>> {
        let mut storage_key = match self.keyed.derived_key(key) {
            Ok(k) => k,
            Err(err) => return StateIo::ready(Err(err)),
        };
        let now = self.keyed.now();
        let ctx = self.ctx(self.settle_wm());
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        self.own
            .transition(&mut self.keyed, &mut storage_key, now, move |state| {
                let (change, settled) = settle(state, ctx, entry.start, &mut ops);
                Ok((change, (ops, settled)))
            })
    }

    /// The window to hand to the closure, an error item, or nothing.
    pub(super) fn land_settle(
        &mut self,
        key: Arc<str>,
        entry: Entry,
        result: StateResult<SettleOut<T>>,
    ) -> Option<StateResult<TimeWindow<T>>> {
        let (ops, settled) = match result {
            Ok(out) => out,
            Err(err) => {
                let failures = self.failures.entry(entry).or_insert(0);
                *failures += 1;
                let again = *failures < MAX_SETTLE_FAILURES;
                if again && self.input_done {
                    // No next event to wait for: tried again at once.
                    self.index.insert(entry, Arc::clone(&key));
                } else if again {
                    self.failed.push((entry, Arc::clone(&key)));
                } else {
                    self.failures.remove(&entry);
                }
                return Some(Err(not_emitted(err, &key, entry.start, again)));
            }
        };
        if !self.failures.is_empty() {
            self.failures.remove(&entry);
        }
        self.apply(&key, Some(&key), ops);
        match settled {
            Settled::Fired { start, end, events } => Some(Ok(TimeWindow {
                key: key.to_string(),
                start_ms: start,
                end_ms: end,
                events,
            })),
            Settled::Quiet => None,
            // Purged already (by another pipeline sharing the store): its last firing had all
            // its events, or an event since would have made it due before this.
            Settled::Missing if entry.purge => None,
            // A window another pipeline opened (indexed here when an event joined it): its
            // opener purges it once fired, so gone is expected.
            Settled::Missing if !self.ctx(0).owns(entry.seq) => None,
            Settled::Missing => Some(Err(StateError::storage_for(
                &key,
                format!(
                    "the event-time window starting at {} ms was no longer in storage when \
                     it was due (its state expired by the config's ttl or was evicted by \
                     max_size), so its events are lost; raise ttl above the windows' \
                     processing-time span, or max_size",
                    entry.start
                ),
            ))),
        }
    }
}

/// The first window number of a pipeline: 20 bits of its own above a 44-bit count. The 20 bits
/// are a process-wide pipeline count plus a random base per process (OS-seeded), so pipelines
/// sharing a store, in this process or (very likely) in another, number their windows apart:
/// index entries of different keys' windows never compare equal, whichever pipeline opened
/// them, and the windows a pipeline opens still sort in the order it opened them.
fn first_seq() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static BASE: OnceLock<u64> = OnceLock::new();
    static PIPELINES: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
    let n = PIPELINES.fetch_add(1, Ordering::Relaxed);
    (base.wrapping_add(n) & ((1 << (64 - SEQ_COUNT_BITS)) - 1)) << SEQ_COUNT_BITS
}

/// A failed read of a due window: the error, saying the window was not emitted and whether it
/// will be tried again.
fn not_emitted(err: StateError, key: &str, start: u64, again: bool) -> StateError {
    let err = err.with_key(key);
    let note = if again {
        format!(
            "; the event-time window starting at {start} ms was not emitted yet: it will be \
             tried again at the next event (at once after the end of input)"
        )
    } else {
        format!(
            "; the event-time window starting at {start} ms was not emitted, and after \
             {MAX_SETTLE_FAILURES} failed reads it is no longer tried (its events stay in \
             storage until the config's ttl)"
        )
    };
    match err {
        StateError::Storage(m) => StateError::Storage(m + &note),
        StateError::Serialization(m) => StateError::Serialization(m + &note),
        other => other,
    }
}
