//! Byte layouts for a key's list of items, made so that adding an item encodes only that item
//! and edits the stored bytes in place (`KeyedState::update_bytes`): the window's buffers and
//! the pattern's last events ([`EventLog`]), and the throttle's times ([`TimeLog`]).
//!
//! **Event logs**: `[tag: u8][writer: u32 LE][skip: u64 LE][count: u64 LE][events]`, where
//! `events` is the postcard encodings of `count` events, concatenated. The header has a fixed
//! width so that it is patched in place: an event is added by encoding it at the end, the
//! oldest events are dropped by cutting their bytes (found by decoding them) from the front.
//! Events are decoded only when the operator needs them (a window to emit, a pattern to match).
//!
//! The header is checked on every read, its count against the bytes the log holds. The events
//! are trusted without decoding only when the log carries this operator instance's `writer`
//! stamp ([`LogWriter`]), that is when this instance wrote them. Any other log (an earlier
//! pipeline on a durable store, another process, another item type, garbage) is decoded in
//! full when read, and once it decodes the operator rewrites it under its own stamp. So bytes
//! that cannot be decoded are reported on every event that reads them, as if every event
//! decoded the whole list, and the update fails, so they are never overwritten.
//!
//! Every edit below either fails leaving the bytes as they were or succeeds: the one fallible
//! edit, encoding an event, is undone by a truncation, and it comes before any other edit.
//!
//! **Time logs**: `[tag: u8][times: u64 LE each, ascending]`. Fixed-width entries: the times
//! within a window are found by binary search and the others cut off, nothing decoded.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use rs2_state_core::{Codec, Postcard, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a log could not be read, or an event not encoded.
#[derive(Debug)]
pub(crate) enum LogError {
    Decode(String),
    Encode(String),
}

impl LogError {
    /// The error for the state of user key `key`, a log of `what`.
    pub fn for_key(self, key: &str, what: &str) -> StateError {
        match self {
            LogError::Decode(cause) => StateError::decode_for(key, what, cause),
            LogError::Encode(cause) => StateError::encode_for(key, what, cause),
        }
    }

    /// The error for user key `key`'s log of events of type `T`.
    pub fn for_events<T>(self, key: &str) -> StateError {
        self.for_key(key, std::any::type_name::<T>())
    }
}

fn corrupt(cause: impl Into<String>) -> LogError {
    LogError::Decode(cause.into())
}

/// One operator instance as the reader and writer of its event logs: their tag (which operator's
/// layout) and the instance's stamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogWriter {
    tag: u8,
    stamp: u32,
}

impl LogWriter {
    /// A writer of logs tagged `tag`, with a stamp no other instance in this process has
    /// (until 2^32 instances) and, being random per process, unlikely in another process.
    pub fn new(tag: u8) -> Self {
        static BASE: OnceLock<u32> = OnceLock::new();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = *BASE.get_or_init(|| RandomState::new().hash_one(std::process::id()) as u32);
        Self {
            tag,
            stamp: base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Reads a stored log (`None`: empty). A log this instance did not write is decoded in full
    /// as events of type `T` to check it.
    pub fn read<'a, T: DeserializeOwned>(
        self,
        bytes: Option<&'a [u8]>,
    ) -> Result<EventLog<'a>, LogError> {
        let Some(bytes) = bytes else {
            return Ok(EventLog {
                skip: 0,
                count: 0,
                events: &[],
            });
        };
        let (&tag, rest) = bytes.split_first().ok_or_else(|| corrupt("empty value"))?;
        if tag != self.tag {
            return Err(corrupt(format!(
                "not an rs2 event log of this operator: first byte {tag:#04x}, expected {:#04x}",
                self.tag
            )));
        }
        let short = || corrupt("event log header cut short");
        let (stamp, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
        let (skip, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
        let (count, events) = rest.split_first_chunk::<8>().ok_or_else(short)?;
        let count = u64::from_le_bytes(*count);
        // Each event takes a byte at least, unless its type encodes to nothing (`()`, unit
        // structs). A count past that is corrupt, whoever wrote the log: trusted, it had a
        // reader decode 2^64 unit events (a hang) or overflow adding one.
        if count > events.len() as u64
            && (count > MAX_ZERO_WIDTH_EVENTS || postcard::from_bytes::<T>(&[]).is_err())
        {
            return Err(corrupt(format!(
                "event log claims {count} events in {} bytes",
                events.len()
            )));
        }
        let log = EventLog {
            skip: u64::from_le_bytes(*skip),
            count: usize::try_from(count).map_err(|_| corrupt("event count out of range"))?,
            events,
        };
        if u32::from_le_bytes(*stamp) != self.stamp {
            log.decode_all::<T>()?;
        }
        Ok(log)
    }

    /// Encodes `event` at the end of the log `bytes` (an empty `bytes` gets a header first, to
    /// be filled by [`set_header`](Self::set_header)). On failure `bytes` is as it was.
    pub fn append<T: Serialize>(self, bytes: &mut Vec<u8>, event: &T) -> Result<(), LogError> {
        let len = bytes.len();
        if len == 0 {
            bytes.resize(HEADER, 0);
        }
        Postcard::encode(event, bytes).map_err(|e| {
            bytes.truncate(len);
            LogError::Encode(e)
        })
    }

    /// Replaces `bytes` with a log of `event` alone. On failure `bytes` is as it was (the new
    /// log is built after the old bytes, which are cut only once it is complete).
    pub fn replace_with_one<T: Serialize>(
        self,
        bytes: &mut Vec<u8>,
        event: &T,
    ) -> Result<(), LogError> {
        let old = bytes.len();
        bytes.resize(old + HEADER, 0);
        if let Err(e) = Postcard::encode(event, bytes) {
            bytes.truncate(old);
            return Err(LogError::Encode(e));
        }
        bytes.drain(..old);
        self.set_header(bytes, 0, 1);
        Ok(())
    }

    /// Drops the first `n` bytes of the log's events (whole events, as decoding found them).
    pub fn cut(self, bytes: &mut Vec<u8>, n: usize) {
        if n > 0 && bytes.len() >= HEADER + n {
            bytes.drain(HEADER..HEADER + n);
        }
    }

    /// Writes the header of a log of `count` events with `skip` under this instance's stamp.
    pub fn set_header(self, bytes: &mut Vec<u8>, skip: u64, count: usize) {
        if bytes.len() < HEADER {
            bytes.resize(HEADER, 0);
        }
        bytes[0] = self.tag;
        bytes[1..5].copy_from_slice(&self.stamp.to_le_bytes());
        bytes[5..13].copy_from_slice(&skip.to_le_bytes());
        bytes[13..HEADER].copy_from_slice(&(count as u64).to_le_bytes());
    }
}

/// Bytes of an event log's header.
const HEADER: usize = 1 + 4 + 8 + 8;

/// Most events a log of a type that encodes to no bytes may claim (a window of a million `()`).
const MAX_ZERO_WIDTH_EVENTS: u64 = 1 << 20;

/// A key's list of events, as read from storage.
pub(crate) struct EventLog<'a> {
    /// Events still to drop before the next window starts (hopping windows; otherwise 0).
    pub skip: u64,
    /// Number of events.
    pub count: usize,
    /// The events' encodings, concatenated.
    pub events: &'a [u8],
}

impl<'a> EventLog<'a> {
    /// Decodes the events, oldest first.
    pub fn iter<T: DeserializeOwned>(&self) -> Events<'a, T> {
        Events {
            all: self.events.len(),
            rest: self.events,
            left: self.count,
            item: PhantomData,
        }
    }

    /// Decodes every event, checking that no bytes follow the last one.
    pub fn decode_all<T: DeserializeOwned>(&self) -> Result<Vec<T>, LogError> {
        let mut events = self.iter();
        let all = events.by_ref().collect::<Result<Vec<T>, _>>()?;
        match events.rest.len() {
            0 => Ok(all),
            n => Err(corrupt(format!(
                "{n} byte(s) after the last of {} events",
                self.count
            ))),
        }
    }
}

/// Decodes a log's events one by one, oldest first; after an error it yields nothing more.
pub(crate) struct Events<'a, T> {
    all: usize,
    rest: &'a [u8],
    left: usize,
    item: PhantomData<fn() -> T>,
}

impl<T> Events<'_, T> {
    /// Bytes of the log's `events` decoded so far: where the next event starts.
    pub fn offset(&self) -> usize {
        self.all - self.rest.len()
    }
}

impl<T: DeserializeOwned> Iterator for Events<'_, T> {
    type Item = Result<T, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        match postcard::take_from_bytes(self.rest) {
            Ok((event, rest)) => {
                self.rest = rest;
                Some(Ok(event))
            }
            Err(e) => {
                self.left = 0;
                let at = self.offset();
                Some(Err(corrupt(format!("event at byte {at}: {e}"))))
            }
        }
    }
}

/// A key's times, ascending, as read from storage.
pub(crate) struct TimeLog<'a> {
    times: &'a [u8],
}

impl<'a> TimeLog<'a> {
    pub const TAG: u8 = 0x74;

    /// Reads a stored time log (`None`: empty).
    pub fn read(bytes: Option<&'a [u8]>) -> Result<Self, LogError> {
        let Some(bytes) = bytes else {
            return Ok(Self { times: &[] });
        };
        match bytes.split_first() {
            Some((&Self::TAG, times)) if times.len() % 8 == 0 => Ok(Self { times }),
            Some((&Self::TAG, times)) => Err(corrupt(format!(
                "time log of {} bytes, not a multiple of 8",
                times.len()
            ))),
            _ => Err(corrupt("not an rs2 time log")),
        }
    }

    pub fn len(&self) -> usize {
        self.times.len() / 8
    }

    fn get(&self, i: usize) -> u64 {
        let at = 8 * i;
        u64::from_le_bytes(self.times[at..at + 8].try_into().unwrap_or_default())
    }

    /// The first index in `range` whose time fails `pred` (`pred` holds for a prefix of it).
    /// The last time is tried first: it usually fails (times pruned from the front) or holds
    /// (times inserted at the back).
    fn partition_point(&self, mut range: Range<usize>, pred: impl Fn(u64) -> bool) -> usize {
        match range.clone().last() {
            None => return range.start,
            Some(last) if pred(self.get(last)) => return range.end,
            Some(last) => range.end = last,
        }
        while !range.is_empty() {
            let mid = range.start + range.len() / 2;
            if pred(self.get(mid)) {
                range.start = mid + 1;
            } else {
                range.end = mid;
            }
        }
        range.start
    }

    /// The indices of the times `t` with `|now - t| < window`: times from the future (a durable
    /// store written under a wall clock since set back) count within `window` too.
    pub fn within(&self, now: u64, window: u64) -> Range<usize> {
        let len = self.len();
        // Usually none is too old or too new: check the first and the last before searching.
        let too_old = |t: u64| t < now && now - t >= window;
        let start = if len > 0 && too_old(self.get(0)) {
            self.partition_point(1..len, too_old)
        } else {
            0
        };
        let end = self.partition_point(start..len, |t| t <= now || t - now < window);
        start..end
    }

    /// Where `now` goes among the times at `keep`, after any equal time.
    pub fn insertion_point(&self, keep: Range<usize>, now: u64) -> usize {
        self.partition_point(keep, |t| t <= now)
    }
}

/// Edits the time log `bytes` (empty: no log yet) in place to hold the times at `keep` with
/// `now` inserted at index `at` (from [`TimeLog::insertion_point`]).
pub(crate) fn keep_times_and_insert(bytes: &mut Vec<u8>, keep: Range<usize>, at: usize, now: u64) {
    if bytes.is_empty() {
        bytes.push(TimeLog::TAG);
    }
    bytes.truncate(1 + 8 * keep.end);
    let at = 1 + 8 * at;
    if at == bytes.len() {
        bytes.extend_from_slice(&now.to_le_bytes());
    } else {
        bytes.splice(at..at, now.to_le_bytes());
    }
    bytes.drain(1..1 + 8 * keep.start);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: u8 = 0x57;

    fn log_of(writer: LogWriter, skip: u64, events: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            writer.append(&mut out, e).unwrap();
        }
        writer.set_header(&mut out, skip, events.len());
        out
    }

    #[test]
    fn appending_and_cutting_keep_the_events() {
        let w = LogWriter::new(TAG);
        let evs: Vec<String> = ["a", "bb", "", "dddd"].map(String::from).to_vec();
        let mut bytes = log_of(w, 3, &evs[..3]);
        let log = w.read::<String>(Some(&bytes)).unwrap();
        assert_eq!((log.skip, log.count), (3, 3));
        // Drop the first event, append the fourth.
        let mut it = log.iter::<String>();
        assert_eq!(it.next().unwrap().unwrap(), "a");
        let cut = it.offset();
        w.append(&mut bytes, &evs[3]).unwrap();
        w.cut(&mut bytes, cut);
        w.set_header(&mut bytes, 0, 3);
        let log = w.read::<String>(Some(&bytes)).unwrap();
        assert_eq!(log.skip, 0);
        assert_eq!(log.decode_all::<String>().unwrap(), evs[1..]);
    }

    #[test]
    fn a_failed_append_leaves_the_log_as_it_was() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let w = LogWriter::new(TAG);
        let mut bytes = log_of(w, 0, &["x".to_string()]);
        let before = bytes.clone();
        assert!(w.append(&mut bytes, &Unencodable).is_err());
        assert_eq!(bytes, before);
        let mut empty = Vec::new();
        assert!(w.append(&mut empty, &Unencodable).is_err());
        assert!(empty.is_empty());
    }

    #[test]
    fn a_log_of_another_writer_is_checked_in_full() {
        let (mine, theirs) = (LogWriter::new(TAG), LogWriter::new(TAG));
        let evs = vec!["x".to_string(), "y".to_string()];
        let good = log_of(theirs, 0, &evs);
        assert_eq!(mine.read::<String>(Some(&good)).unwrap().count, 2);
        // Cut short, trailing bytes, another item type: all caught, though the header is fine.
        assert!(mine.read::<String>(Some(&good[..good.len() - 1])).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(mine.read::<String>(Some(&long)).is_err());
        assert!(mine.read::<(String, u64)>(Some(&good)).is_err());
        // The writer's own logs are trusted: only the header is read.
        let own = log_of(mine, 0, &evs);
        assert!(mine.read::<String>(Some(&own[..own.len() - 1])).is_ok());
        // A wrong tag or a short header is an error whoever wrote it.
        assert!(LogWriter::new(0x50).read::<String>(Some(&own)).is_err());
        assert!(mine.read::<String>(Some(&own[..3])).is_err());
        assert!(mine.read::<String>(Some(&[])).is_err());
    }

    #[test]
    fn time_logs_keep_the_times_within_the_window_in_order() {
        let write = |times: &[u64]| {
            let mut out = vec![TimeLog::TAG];
            for t in times {
                out.extend_from_slice(&t.to_le_bytes());
            }
            out
        };
        let times = |bytes: &[u8]| -> Vec<u64> {
            let log = TimeLog::read(Some(bytes)).unwrap();
            (0..log.len()).map(|i| log.get(i)).collect()
        };
        let bytes = write(&[10, 20, 30, 45, 200]);
        let log = TimeLog::read(Some(&bytes)).unwrap();
        // now 50, window 30: 20 (30 ago) is out, 30 and 45 are in, 200 (150 ahead) is out.
        assert_eq!(log.within(50, 30), 2..4);
        let mut out = bytes.clone();
        keep_times_and_insert(&mut out, 2..4, log.insertion_point(2..4, 50), 50);
        assert_eq!(times(&out), [30, 45, 50]);
        // A time from the future within the window stays, after `now`.
        let bytes = write(&[100, 120]);
        let log = TimeLog::read(Some(&bytes)).unwrap();
        assert_eq!(log.within(110, 20), 0..2);
        let mut out = bytes.clone();
        keep_times_and_insert(&mut out, 0..2, log.insertion_point(0..2, 110), 110);
        assert_eq!(times(&out), [100, 110, 120]);
        let mut fresh = Vec::new();
        keep_times_and_insert(&mut fresh, 0..0, 0, 7);
        assert_eq!(times(&fresh), [7]);
        assert_eq!(TimeLog::read(None).unwrap().len(), 0);
        assert!(TimeLog::read(Some(&bytes[..5])).is_err());
        assert!(TimeLog::read(Some(&[1, 2])).is_err());
        // Near the ends of the clock nothing overflows.
        let bytes = write(&[0, u64::MAX]);
        let log = TimeLog::read(Some(&bytes)).unwrap();
        assert_eq!(log.within(u64::MAX, u64::MAX), 1..2);
        assert_eq!(log.within(0, u64::MAX), 0..1);
    }

    #[test]
    fn time_logs_match_retain_then_push() {
        // The throttle's rule as it was written over a plain list: keep the times within the
        // window, then add `now`.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..2_000 {
            let mut times: Vec<u64> = (0..next(12)).map(|_| 1_000 + next(100)).collect();
            times.sort_unstable();
            let (now, window) = (1_000 + next(120), 1 + next(60));
            let mut bytes = vec![TimeLog::TAG];
            for t in &times {
                bytes.extend_from_slice(&t.to_le_bytes());
            }
            let log = TimeLog::read(Some(&bytes)).unwrap();
            let within = log.within(now, window);
            let mut expected: Vec<u64> = times
                .iter()
                .copied()
                .filter(|&t| now.abs_diff(t) < window)
                .collect();
            assert_eq!(
                within.len(),
                expected.len(),
                "{times:?} now {now} window {window}"
            );
            let mut out = bytes.clone();
            let at = log.insertion_point(within.clone(), now);
            keep_times_and_insert(&mut out, within, at, now);
            expected.push(now);
            expected.sort_unstable();
            let back = TimeLog::read(Some(&out)).unwrap();
            let got: Vec<u64> = (0..back.len()).map(|i| back.get(i)).collect();
            assert_eq!(got, expected);
        }
    }

    /// Runs `f` on another thread; fails the test if it takes more than 10 s (a read that
    /// loops over a count it was handed is a hang, not a slow test).
    fn within_10s<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("finished within 10 s")
    }

    /// A header with the count `count` and no event bytes, under `writer`'s stamp or a foreign one.
    fn bare_header(writer: LogWriter, own: bool, count: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        writer.set_header(&mut bytes, 0, 0);
        if !own {
            bytes[1..5].copy_from_slice(&(writer.stamp ^ 1).to_le_bytes());
        }
        bytes[13..HEADER].copy_from_slice(&count.to_le_bytes());
        bytes
    }

    /// Found by fuzzing: events that encode to no bytes at all (`()`, unit structs) under a
    /// garbage count of 2^64 - 1 made a read decode that many events: the operator hung.
    #[test]
    fn a_huge_count_of_zero_width_events_is_an_error_not_a_hang() {
        let w = LogWriter::new(TAG);
        let bytes = bare_header(w, false, u64::MAX);
        let read = within_10s(move || w.read::<()>(Some(&bytes)).map(|log| log.count));
        assert!(read.is_err(), "{read:?}");
        // A real log of unit events still reads, whoever wrote it.
        let (theirs, mine) = (LogWriter::new(TAG), LogWriter::new(TAG));
        let units = log_of_units(theirs, 1000);
        let log = mine.read::<()>(Some(&units)).unwrap();
        assert_eq!(log.decode_all::<()>().unwrap().len(), 1000);
    }

    fn log_of_units(writer: LogWriter, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            writer.append(&mut out, &()).unwrap();
        }
        writer.set_header(&mut out, 0, n);
        out
    }

    /// Found by fuzzing: a log carrying the reader's own stamp is trusted without decoding,
    /// so a count past the bytes it holds (2^64 - 1) reached `count + 1` in group_by's append
    /// (an overflow panic in a debug build). The count is checked against the bytes whoever
    /// wrote the log.
    #[test]
    fn a_count_past_the_bytes_is_an_error_even_in_an_own_log() {
        let w = LogWriter::new(TAG);
        for count in [u64::MAX, 2, 1] {
            let bytes = bare_header(w, true, count);
            assert!(w.read::<String>(Some(&bytes)).is_err(), "count {count}");
        }
        let mut one = log_of(w, 0, &["x".to_string()]);
        assert_eq!(w.read::<String>(Some(&one)).unwrap().count, 1);
        one[13..HEADER].copy_from_slice(&3u64.to_le_bytes());
        assert!(w.read::<String>(Some(&one)).is_err());
    }

    mod fuzz {
        //! Arbitrary bytes through every function that reads or edits a stored log: never a
        //! panic or a hang, an `Err` for what cannot be read, and edits of a log that reads
        //! keep its events. `RS2_FUZZ_CASES` sets the case count (default 256); the long run
        //! is in `docs/reliability.md`.

        use super::*;
        use proptest::prelude::*;

        fn cases() -> u32 {
            std::env::var("RS2_FUZZ_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(256)
        }

        /// The reader of every case: the logs `stored` makes under "its own" stamp are its.
        fn reader() -> LogWriter {
            static READER: OnceLock<LogWriter> = OnceLock::new();
            *READER.get_or_init(|| LogWriter::new(TAG))
        }

        /// Bytes a reader meets: anything, or a well-formed header (own stamp or foreign, any
        /// skip and count, small counts likely) followed by anything.
        fn stored(w: LogWriter) -> impl Strategy<Value = Vec<u8>> {
            let any_bytes = proptest::collection::vec(any::<u8>(), 0..80);
            let count = prop_oneof![0u64..6, any::<u64>()];
            let headed = (any::<bool>(), any::<u64>(), count, any_bytes.clone()).prop_map(
                move |(own, skip, count, events)| {
                    let mut bytes = bare_header(w, own, count);
                    bytes[5..13].copy_from_slice(&skip.to_le_bytes());
                    bytes.extend(events);
                    bytes
                },
            );
            prop_oneof![any_bytes, headed]
        }

        /// What window, pattern and group_by do with a log that reads: decode the events one
        /// by one, append one, cut the first, rewrite the header; then read it back.
        fn edit<T>(w: LogWriter, mut bytes: Vec<u8>, new: T) -> Result<(), TestCaseError>
        where
            T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
        {
            let Ok(log) = w.read::<T>(Some(&bytes)) else {
                return Ok(());
            };
            let (skip, count) = (log.skip, log.count);
            let mut events = log.iter::<T>();
            let first = events.next();
            let cut = events.offset();
            let rest: Result<Vec<T>, _> = events.collect();
            let all = log.decode_all::<T>();
            let (Some(Ok(_)), Ok(rest), Ok(all)) = (first, rest, all) else {
                // Only a log of this writer is trusted without decoding; its events may not
                // decode, and that is found when they are needed.
                return Ok(());
            };
            prop_assert_eq!(all.len(), count);
            w.append(&mut bytes, &new)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            w.cut(&mut bytes, cut);
            w.set_header(&mut bytes, skip, count);
            let back = LogWriter::new(TAG)
                .read::<T>(Some(&bytes))
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let mut expected = rest;
            expected.push(new);
            prop_assert_eq!(back.decode_all::<T>().ok(), Some(expected));
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            /// Any bytes, read as several event types: `Ok` or `Err`, never a panic or a hang;
            /// a log that reads and decodes is edited as the operators edit it and reads back.
            #[test]
            fn any_bytes_read_as_a_log_and_edited(raw in stored(reader())) {
                let w = reader();
                let bytes = raw.clone();
                within_10s(move || -> Result<(), TestCaseError> {
                    edit::<String>(w, bytes.clone(), "new".into())?;
                    edit::<(String, u64)>(w, bytes.clone(), ("k".into(), 7))?;
                    edit::<u64>(w, bytes.clone(), 9)?;
                    edit::<Option<u8>>(w, bytes.clone(), None)?;
                    edit::<()>(w, bytes.clone(), ())?;
                    edit::<Vec<u8>>(w, bytes, vec![1, 2])?;
                    Ok(())
                })?;
                // Whoever wrote it, with any other tag the read is an error.
                let other = LogWriter { tag: TAG ^ 0x80, stamp: w.stamp };
                prop_assert!(other.read::<String>(Some(&raw)).is_err());
            }

            /// A log of arbitrary events, cut short, extended or with one byte changed, read by
            /// another writer: an error, or exactly `count` events that decode.
            #[test]
            fn damaged_logs_read_as_errors_or_whole(
                events in proptest::collection::vec(("[a-z\u{80}-\u{10ffff}]{0,6}", any::<u64>()), 0..8),
                cut in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                extra in proptest::collection::vec(any::<u8>(), 0..4),
                how in 0u8..3,
            ) {
                let (theirs, mine) = (LogWriter::new(TAG), LogWriter::new(TAG));
                let mut bytes = Vec::new();
                for e in &events {
                    theirs.append(&mut bytes, e).unwrap();
                }
                theirs.set_header(&mut bytes, 0, events.len());
                let whole = mine.read::<(String, u64)>(Some(&bytes)).unwrap();
                prop_assert_eq!(whole.decode_all::<(String, u64)>().unwrap(), events.clone());
                match how {
                    0 => bytes.truncate(cut.index(bytes.len() + 1)),
                    1 => bytes.extend(extra),
                    _ => {
                        let i = at.index(bytes.len());
                        bytes[i] = byte;
                    }
                }
                if let Ok(log) = mine.read::<(String, u64)>(Some(&bytes)) {
                    let all = log.decode_all::<(String, u64)>();
                    prop_assert!(all.is_ok_and(|all| all.len() == log.count));
                }
            }

            /// Time logs: any bytes read as `Ok` or `Err`; for one that reads, any `now` and
            /// window give a range inside it, and keeping that range and inserting `now` gives
            /// a log that reads with one more time than the range.
            #[test]
            fn any_bytes_read_as_a_time_log(
                raw in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64),
                    proptest::collection::vec(any::<u64>(), 0..8).prop_map(|ts| {
                        let mut b = vec![TimeLog::TAG];
                        ts.iter().for_each(|t| b.extend_from_slice(&t.to_le_bytes()));
                        b
                    }),
                ],
                now in prop_oneof![any::<u64>(), 0u64..100],
                window in prop_oneof![any::<u64>(), 1u64..100],
            ) {
                let Ok(log) = TimeLog::read(Some(&raw)) else { return Ok(()); };
                let keep = log.within(now, window);
                prop_assert!(keep.start <= keep.end && keep.end <= log.len());
                let at = log.insertion_point(keep.clone(), now);
                prop_assert!(keep.contains(&at) || at == keep.end);
                let mut bytes = raw.clone();
                keep_times_and_insert(&mut bytes, keep.clone(), at, now);
                let back = TimeLog::read(Some(&bytes)).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(back.len(), keep.len() + 1);
            }
        }
    }
}
