//! The state behind [`StatefulGroupBy`](super::StatefulGroupBy): the index of open groups,
//! their storage entries (chunks of up to [`GROUP_CHUNK`] events), and the steps that take an
//! event in or read a closed group back. The stream itself (input, timer, closure) is in
//! `group_by.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rs2_state_core::{StateError, StateResult};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::event_log::{LogError, LogWriter};
use crate::engine::{Change, EventKey, KeyedState, StateIo};

/// Events per storage entry of a group buffer: appending an event reads and writes at most
/// this many, so a long group costs O(1) per event, not O(group).
pub(crate) const GROUP_CHUNK: usize = 64;

/// Tag of a stored entry (an `event_log` event log of up to [`GROUP_CHUNK`] events).
const ENTRY_TAG: u8 = 0x67;

/// The event-log writer of this operator instance's entries.
pub(super) fn entry_writer() -> LogWriter {
    LogWriter::new(ENTRY_TAG)
}

/// The stream's state apart from the input, the closure's future and the timer.
pub(super) struct Core<T> {
    pub(super) groups: KeyedState,
    pub(super) user_state: KeyedState,
    pub(super) index: OpenGroups,
    /// An event taken from the input that waits for a group to be emitted first.
    pub(super) parked: Option<(T, String)>,
    /// The previous event's key (kept only with `emit_on_key_change`).
    pub(super) prev_key: Option<String>,
    pub(super) max_group_size: Option<usize>,
    pub(super) emit_on_key_change: bool,
    /// A group is due this long after its first event: `group_timeout` or the storage-TTL
    /// guard, whichever is shorter.
    pub(super) due_after_ms: u64,
    pub(super) max_entries: Option<usize>,
    pub(super) input_done: bool,
    /// The deadline the timer is set for.
    pub(super) armed_for: Option<u64>,
    /// Buffer for building chunk keys.
    pub(super) key_buf: String,
    /// What sets this operator's entries apart from another's in a shared store (empty in a
    /// private one): see [`instance_tag`].
    pub(super) instance: String,
    /// Reader and writer of the group entries (event logs).
    pub(super) entry_log: LogWriter,
    /// Keys whose group failed to read back, with the number of failures in a row (see
    /// [`Core::keep_unread`]); a key leaves when its group is emitted or abandoned.
    pub(super) read_failures: HashMap<String, u32>,
}

/// Reads of a group that may fail in a row before it is abandoned (left in storage).
pub(super) const MAX_READ_FAILURES: u32 = 3;

/// Open groups: by key, and in the order they were opened (which is also deadline order).
#[derive(Default)]
pub(super) struct OpenGroups {
    pub(super) by_key: HashMap<String, OpenGroup>,
    pub(super) order: BTreeMap<u64, String>,
    pub(super) next_seq: u64,
    /// Storage entries held by all open groups.
    pub(super) entries: usize,
}

pub(super) struct OpenGroup {
    pub(super) seq: u64,
    pub(super) opened_at: u64,
    pub(super) len: usize,
}

pub(super) fn chunks(len: usize) -> usize {
    len.div_ceil(GROUP_CHUNK)
}

impl OpenGroups {
    pub(super) fn len_of(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).map(|g| g.len)
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// The oldest open group: its key and the time of its first event.
    pub(super) fn front(&self) -> Option<(&str, u64)> {
        let (_, key) = self.order.first_key_value()?;
        let group = self.by_key.get(key)?;
        Some((key.as_str(), group.opened_at))
    }

    pub(super) fn open(&mut self, key: String, opened_at: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.by_key.insert(
            key,
            OpenGroup {
                seq,
                opened_at,
                len: 1,
            },
        );
        self.entries += 1;
    }

    pub(super) fn grow(&mut self, key: &str) {
        if let Some(group) = self.by_key.get_mut(key) {
            self.entries += chunks(group.len + 1) - chunks(group.len);
            group.len += 1;
        }
    }

    /// Opens `key`'s group again with `len` stored events, at the back of the order (due
    /// `due_after` from `opened_at`): a group whose emission could not read it back.
    pub(super) fn reopen(&mut self, key: String, len: usize, opened_at: u64) {
        if len == 0 {
            return;
        }
        self.open(key.clone(), opened_at);
        if let Some(group) = self.by_key.get_mut(&key) {
            self.entries += chunks(len) - chunks(1);
            group.len = len;
        }
    }

    /// Closes `key`'s group; returns its length.
    pub(super) fn close(&mut self, key: &str) -> Option<usize> {
        let group = self.by_key.remove(key)?;
        self.order.remove(&group.seq);
        self.entries -= chunks(group.len);
        Some(group.len)
    }
}

pub(super) enum Step<T> {
    /// Between events.
    Idle,
    /// Reading back the tail entry of `key`'s open group (of `len` events), which `event`
    /// completes: the group is emitted.
    Completing {
        event: T,
        key: String,
        len: usize,
        io: StateIo<Option<Vec<T>>>,
    },
    /// Adding an event to an entry of `key`'s group (appending it in place, or writing a new
    /// entry). The result is `Some(event)` when the entry to append to had vanished.
    Saving {
        key: String,
        new_group: bool,
        now: u64,
        io: StateIo<Option<T>>,
    },
    /// Reading back (and removing) a closed group's entries.
    Emitting(Emission<T>),
    /// The closure's future is running (in `pending`).
    Running,
    /// An argument was invalid: report it, then end.
    Invalid(StateError),
    Done,
}

/// A closed group being read back from storage.
pub(super) struct Emission<T> {
    pub(super) key: String,
    /// Events in the group.
    pub(super) len: usize,
    /// Entries `0..load` are read back, entries `0..remove` removed.
    pub(super) load: usize,
    pub(super) remove: usize,
    pub(super) next: usize,
    pub(super) removed: usize,
    pub(super) events: Vec<T>,
    /// Events already in hand, after the stored ones (the entry an event just completed).
    pub(super) tail: Option<Vec<T>>,
    pub(super) error: Option<StateError>,
    /// Why a read failed: then nothing is removed, and the group is kept (see
    /// `Core::keep_unread`).
    pub(super) unread: Option<StateError>,
    pub(super) io: EmitIo<T>,
}

pub(super) enum EmitIo<T> {
    Idle,
    Load(StateIo<Option<Vec<T>>>),
    Remove(StateIo<()>),
}

impl<T> Emission<T> {
    /// A read of the group failed: stop, remove nothing (the cause goes in the error the
    /// operator reports, see `Core::keep_unread`).
    fn fail_read(&mut self, err: StateError) {
        self.unread = Some(err);
        self.remove = self.removed;
    }

    /// Events of the group that are in storage: all but the event that triggered the
    /// emission when one did (the last event of `tail`, never stored).
    pub(super) fn stored_len(&self) -> usize {
        self.len - usize::from(self.tail.is_some())
    }
    /// The whole of a group whose entries are all in storage.
    pub(super) fn stored(key: String, len: usize) -> Self {
        Self::new(key, len, chunks(len), chunks(len), None)
    }

    pub(super) fn new(
        key: String,
        len: usize,
        load: usize,
        remove: usize,
        tail: Option<Vec<T>>,
    ) -> Self {
        Self {
            key,
            len,
            load,
            remove,
            next: 0,
            removed: 0,
            events: Vec::new(),
            tail,
            error: None,
            unread: None,
            io: EmitIo::Idle,
        }
    }
}

/// `err` while reading back `key`'s group of `len` events: nothing was removed; say what
/// becomes of the group (`retry`: kept and emitted at its next trigger; else left in storage).
pub(super) fn group_unread(err: StateError, key: &str, len: usize, retry: bool) -> StateError {
    let what = format!(
        "key {}: group of {len} event(s) could not be read back; nothing was removed, {}",
        rs2_state_core::KeyDisplay(key),
        if retry {
            "and the group is kept and emitted again at its next trigger (size, timeout, key \
             change or end of input)"
        } else {
            "but the group is no longer tracked (end of input, or too many failed reads in a \
             row): its stored events stay until the store's TTL ends, and a new group of the \
             key may replace them"
        }
    );
    match err {
        StateError::Storage(msg) => StateError::Storage(format!("{what}: {msg}")),
        StateError::Serialization(msg) => StateError::Serialization(format!("{what}: {msg}")),
        other => other,
    }
}

/// `err` while taking an event of `key` in: the event is not in any group, say so.
pub(super) fn event_not_grouped(err: StateError, key: &str) -> StateError {
    let what = format!(
        "key {}: event not added to its group",
        rs2_state_core::KeyDisplay(key)
    );
    match err {
        StateError::Storage(msg) => StateError::Storage(format!("{what}: {msg}")),
        StateError::Serialization(msg) => StateError::Serialization(format!("{what}: {msg}")),
        other => other,
    }
}

pub(super) fn group_missing(key: &str, len: usize, chunk: usize) -> StateError {
    StateError::Storage(format!(
        "key {}: group of {len} event(s) is lost: its storage entry number {chunk} \
         expired or was evicted before the group was emitted (the store's TTL or max_size is \
         smaller than the group's life, or another writer removed it)",
        rs2_state_core::KeyDisplay(key)
    ))
}

/// A tag naming one group-by operator among all in every process: a random per-process part
/// and a counter (`"3f9a1c2e-0"`).
///
/// A group-by operator's open groups are its own: it alone knows their length and chunk count
/// (the index lives in its memory), so two pipelines sharing a store keep theirs apart under
/// their own tags instead of appending to one another's entries, and no event is lost.
pub(super) fn instance_tag() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PROCESS: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        let seed = std::collections::hash_map::RandomState::new();
        seed.hash_one((std::process::id(), std::time::SystemTime::now())) as u32
    });
    format!("{process:08x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The user's key of an extracted key (drops the namespace in place).
pub(super) fn into_user_key(key: EventKey) -> String {
    let mut s = key.storage_key;
    s.drain(..key.key_start);
    s
}

impl<T> Core<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// The storage key of `key`'s entry `chunk`: `{key}#{chunk}`, or `{key}#{instance}.{chunk}`
    /// in a shared store (unambiguous: neither part has a `#`, so the last `#` always
    /// separates them).
    pub(super) fn chunk_key(&mut self, key: &str, chunk: usize) -> StateResult<EventKey> {
        self.key_buf.clear();
        self.key_buf.push_str(key);
        self.key_buf.push('#');
        if !self.instance.is_empty() {
            self.key_buf.push_str(&self.instance);
            self.key_buf.push('.');
        }
        let _ = write!(self.key_buf, "{chunk}");
        self.groups.derived_key(&self.key_buf)
    }

    pub(super) fn completes(&self, len: usize) -> bool {
        self.max_group_size.is_some_and(|max| len >= max)
    }

    /// Whether one more storage entry would exceed `max_size`.
    pub(super) fn full(&self) -> bool {
        self.max_entries
            .is_some_and(|max| self.index.entries.saturating_add(1) > max)
    }

    /// Closes the oldest open group and starts emitting it.
    pub(super) fn emit_oldest(&mut self) -> Option<Step<T>> {
        let key = self.index.front()?.0.to_owned();
        let len = self.index.close(&key)?;
        Some(Step::Emitting(Emission::stored(key, len)))
    }

    /// The oldest open group if it is due at `now`.
    pub(super) fn due(&self, now: u64) -> bool {
        self.index
            .front()
            .is_some_and(|(_, opened_at)| now >= opened_at.saturating_add(self.due_after_ms))
    }

    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.index
            .front()
            .map(|(_, opened_at)| opened_at.saturating_add(self.due_after_ms))
    }

    /// Takes `event` of `key` in (the key-change rule already applied).
    pub(super) fn route(&mut self, event: T, key: String, now: u64) -> StateResult<Step<T>> {
        match self.index.len_of(&key) {
            Some(len) if len % GROUP_CHUNK != 0 => {
                let chunk = len / GROUP_CHUNK;
                if self.completes(len + 1) {
                    let mut chunk_key = self.chunk_key(&key, chunk)?;
                    let io = self.load_entry(&mut chunk_key, now);
                    return Ok(Step::Completing {
                        event,
                        key,
                        len,
                        io,
                    });
                }
                // Append to the group's tail entry.
                self.add_to_entry(key, chunk, event, false, false, now)
            }
            Some(len) => {
                // The event starts a new entry of an open group.
                let tail = len / GROUP_CHUNK;
                if self.completes(len + 1) {
                    self.index.close(&key);
                    let em = Emission::new(key, len + 1, tail, tail, Some(vec![event]));
                    return Ok(Step::Emitting(em));
                }
                if self.full() {
                    self.parked = Some((event, key));
                    return Ok(self.emit_oldest().unwrap_or(Step::Idle));
                }
                self.add_to_entry(key, tail, event, true, false, now)
            }
            None => {
                if self.completes(1) {
                    return Ok(Step::Emitting(Emission::new(
                        key,
                        1,
                        0,
                        0,
                        Some(vec![event]),
                    )));
                }
                if self.full() {
                    self.parked = Some((event, key));
                    return Ok(self.emit_oldest().unwrap_or(Step::Idle));
                }
                self.add_to_entry(key, 0, event, true, true, now)
            }
        }
    }

    /// Adds `event` to entry `chunk` of `key`'s group: a new entry holding only it (`fresh`;
    /// whatever a failed removal left under that entry's key is replaced), or appended in place
    /// to the existing entry, whose events are not decoded.
    pub(super) fn add_to_entry(
        &mut self,
        key: String,
        chunk: usize,
        event: T,
        fresh: bool,
        new_group: bool,
        now: u64,
    ) -> StateResult<Step<T>> {
        let mut chunk_key = self.chunk_key(&key, chunk)?;
        let writer = self.entry_log;
        if fresh {
            // A plain write: whatever a failed removal left under that key is replaced.
            let io = self
                .groups
                .write_bytes(&mut chunk_key, now, |entry_key, bytes| {
                    writer
                        .replace_with_one(bytes, &event)
                        .map_err(|e| e.for_events::<T>(entry_key))
                });
            return Ok(Step::Saving {
                key,
                new_group,
                now,
                io: io.map(|()| None),
            });
        }
        let io = self
            .groups
            .update_bytes(&mut chunk_key, now, move |entry_key, bytes, existed| {
                let failed = |e: LogError| e.for_events::<T>(entry_key);
                if !existed {
                    return Ok((Change::Keep, Some(event)));
                }
                let count = writer.read::<T>(Some(bytes)).map_err(failed)?.count;
                writer.append(bytes, &event).map_err(failed)?;
                writer.set_header(bytes, 0, count + 1);
                Ok((Change::Store, None))
            });
        Ok(Step::Saving {
            key,
            new_group,
            now,
            io,
        })
    }

    /// `key`'s open group lost its tail entry (expired or evicted from storage) while `event`
    /// was being added to it: the group is reported lost (and what is left of it removed),
    /// then the event is taken in as a new group.
    pub(super) fn group_vanished(&mut self, key: String, event: T) -> Step<T> {
        let len = self.index.close(&key).unwrap_or(0);
        self.read_failures.remove(&key);
        let mut em = Emission::stored(key.clone(), len);
        em.error = Some(group_missing(&key, len, len / GROUP_CHUNK));
        self.parked = Some((event, key));
        Step::Emitting(em)
    }

    /// Reads an entry's events back (`None`: the entry is gone).
    pub(super) fn load_entry(
        &mut self,
        chunk_key: &mut EventKey,
        now: u64,
    ) -> StateIo<Option<Vec<T>>> {
        let writer = self.entry_log;
        self.groups
            .update_bytes(chunk_key, now, move |entry_key, bytes, existed| {
                if !existed {
                    return Ok((Change::Keep, None));
                }
                let events = writer
                    .read::<T>(Some(bytes))
                    .and_then(|log| log.decode_all::<T>())
                    .map_err(|e| e.for_events::<T>(entry_key))?;
                Ok((Change::Keep, Some(events)))
            })
    }

    /// After a failed read of `em` (nothing removed): keeps the group for a retry at its next
    /// trigger, unless the input has ended or its reads failed [`MAX_READ_FAILURES`] times in
    /// a row (then it is no longer tracked; its entries stay until the store's TTL). The event
    /// that triggered the emission, never stored, is taken in again (parked): into the kept
    /// group, or as a new group. Returns the error to report.
    pub(super) fn keep_unread(&mut self, em: Emission<T>, cause: StateError) -> StateError {
        let stored = em.stored_len();
        let failures = self.read_failures.entry(em.key.clone()).or_insert(0);
        *failures += 1;
        let retry = !self.input_done && *failures < MAX_READ_FAILURES;
        if !retry {
            self.read_failures.remove(&em.key);
        }
        let err = group_unread(cause, &em.key, stored, retry);
        if retry {
            let now = self.groups.now();
            self.index.reopen(em.key.clone(), stored, now);
        }
        if let Some(event) = em.tail.and_then(|mut tail| tail.pop()) {
            // The triggering event waits for its turn; with the group kept it joins it (and
            // completes it again, for another try), else it starts a new group.
            // Only a step taking an event in (none parked) can trigger such an emission.
            debug_assert!(self.parked.is_none());
            self.parked = Some((event, em.key));
        }
        err
    }

    /// Reads back (then removes) an emission's entries.
    pub(super) fn poll_emission(&mut self, em: &mut Emission<T>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut em.io {
                EmitIo::Idle => {
                    if em.error.is_none() && em.unread.is_none() && em.next < em.load {
                        match self.chunk_key(&em.key, em.next) {
                            Ok(mut chunk_key) => {
                                let now = self.groups.now();
                                let io = self.load_entry(&mut chunk_key, now);
                                em.io = EmitIo::Load(io);
                            }
                            Err(err) => em.fail_read(err),
                        }
                    } else if em.removed < em.remove {
                        match self.chunk_key(&em.key, em.removed) {
                            Ok(mut chunk_key) => {
                                em.io = EmitIo::Remove(self.groups.remove(&mut chunk_key));
                            }
                            Err(_) => em.removed = em.remove,
                        }
                    } else {
                        return Poll::Ready(());
                    }
                }
                EmitIo::Load(io) => {
                    let result = match Pin::new(io).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    em.io = EmitIo::Idle;
                    match result {
                        Ok(Some(mut chunk)) if em.events.is_empty() => {
                            std::mem::swap(&mut em.events, &mut chunk);
                            em.next += 1;
                        }
                        Ok(Some(chunk)) => {
                            em.events.extend(chunk);
                            em.next += 1;
                        }
                        Ok(None) => em.error = Some(group_missing(&em.key, em.len, em.next)),
                        Err(err) => em.fail_read(err),
                    }
                }
                EmitIo::Remove(io) => {
                    // A failed removal loses nothing: the entry is overwritten before it is
                    // read again (a new group writes its entries before reading them), and
                    // otherwise expires with the store's TTL.
                    if Pin::new(io).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    em.io = EmitIo::Idle;
                    em.removed += 1;
                }
            }
        }
    }
}
