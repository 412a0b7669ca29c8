//! Byte layouts for a key's list of items, made so that adding an item encodes only that item
//! and dropping the oldest ones is a cut: the window's buffers and the pattern's last events
//! ([`EventLog`]), and the throttle's times ([`TimeLog`]).
//!
//! **Event logs**: `[tag: u8][writer: u32 LE][skip: varint][count: varint][events]`, where
//! `events` is the postcard encodings of `count` events, concatenated. An event is added by
//! copying the stored events behind a new header and encoding the new event at the end; the
//! oldest events are dropped by starting the copy at the byte offset where decoding them ended.
//! Events are decoded only when the operator needs them (a window to emit, a pattern to match).
//!
//! The header is checked on every read. The events are trusted without decoding only when the
//! log carries this operator instance's `writer` stamp ([`LogWriter`]), that is when this
//! instance wrote them. Any other log (an earlier pipeline on a durable store, another process,
//! another item type, garbage) is decoded in full when read, and once it decodes the operator
//! rewrites it under its own stamp. So bytes that cannot be decoded are reported on every event
//! that reads them, as if every event decoded the whole list, and the update fails, so they are
//! never overwritten.
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
        let (stamp, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("event log header cut short"))?;
        let (skip, rest) = take_varint(rest)?;
        let (count, events) = take_varint(rest)?;
        let log = EventLog {
            skip,
            count: usize::try_from(count).map_err(|_| corrupt("event count out of range"))?,
            events,
        };
        if u32::from_le_bytes(*stamp) != self.stamp {
            log.decode_all::<T>()?;
        }
        Ok(log)
    }

    /// Writes a log to `out`: the header, `stored` (consecutive events of a log this instance
    /// read) and `new`'s encoding at the end; `count` counts both.
    pub fn write<T: Serialize>(
        self,
        out: &mut Vec<u8>,
        skip: u64,
        count: usize,
        stored: &[u8],
        new: Option<&T>,
    ) -> Result<(), LogError> {
        out.reserve(1 + 4 + 2 * 10 + stored.len() + 32);
        out.push(self.tag);
        out.extend_from_slice(&self.stamp.to_le_bytes());
        put_varint(out, skip);
        put_varint(out, count as u64);
        out.extend_from_slice(stored);
        match new {
            Some(event) => Postcard::encode(event, out).map_err(LogError::Encode),
            None => Ok(()),
        }
    }
}

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

    /// Writes the log of the times at `keep` and `now` to `out`.
    pub fn write(&self, out: &mut Vec<u8>, keep: Range<usize>, now: u64) {
        let at = self.partition_point(keep.clone(), |t| t <= now);
        out.reserve(1 + 8 * (keep.len() + 1));
        out.push(Self::TAG);
        out.extend_from_slice(&self.times[8 * keep.start..8 * at]);
        out.extend_from_slice(&now.to_le_bytes());
        out.extend_from_slice(&self.times[8 * at..8 * keep.end]);
    }
}

/// Appends `n` as a LEB128 varint (postcard's encoding of a `u64`).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 varint from the front of `bytes`.
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), LogError> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            break;
        }
        n |= bits << (7 * i);
        if b < 0x80 {
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(corrupt("bad varint in event log header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: u8 = 0x57;

    fn log_of(writer: LogWriter, skip: u64, events: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stored = Vec::new();
        for e in events {
            Postcard::encode(e, &mut stored).unwrap();
        }
        writer
            .write::<String>(&mut out, skip, events.len(), &stored, None)
            .unwrap();
        out
    }

    #[test]
    fn varints_round_trip() {
        for n in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            let mut pc = Vec::new();
            Postcard::encode(&n, &mut pc).unwrap();
            assert_eq!(out, pc, "postcard's encoding of {n}");
            out.push(0xAA);
            assert_eq!(take_varint(&out).unwrap(), (n, &[0xAA][..]));
        }
        assert!(take_varint(&[0x80]).is_err());
        assert!(take_varint(&[0xff; 10]).is_err());
    }

    #[test]
    fn appending_and_cutting_keep_the_events() {
        let w = LogWriter::new(TAG);
        let evs: Vec<String> = ["a", "bb", "", "dddd"].map(String::from).to_vec();
        let bytes = log_of(w, 3, &evs[..3]);
        let log = w.read::<String>(Some(&bytes)).unwrap();
        assert_eq!((log.skip, log.count), (3, 3));
        // Drop the first event, append the fourth.
        let mut it = log.iter::<String>();
        assert_eq!(it.next().unwrap().unwrap(), "a");
        let mut out = Vec::new();
        w.write(&mut out, 0, 3, &log.events[it.offset()..], Some(&evs[3]))
            .unwrap();
        let log = w.read::<String>(Some(&out)).unwrap();
        assert_eq!(log.decode_all::<String>().unwrap(), evs[1..]);
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
        let mut out = Vec::new();
        log.write(&mut out, 2..4, 50);
        assert_eq!(times(&out), [30, 45, 50]);
        // A time from the future within the window stays, after `now`.
        let bytes = write(&[100, 120]);
        let log = TimeLog::read(Some(&bytes)).unwrap();
        assert_eq!(log.within(110, 20), 0..2);
        let mut out = Vec::new();
        log.write(&mut out, 0..2, 110);
        assert_eq!(times(&out), [100, 110, 120]);
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
            let mut out = Vec::new();
            log.write(&mut out, within, now);
            expected.push(now);
            expected.sort_unstable();
            let back = TimeLog::read(Some(&out)).unwrap();
            let got: Vec<u64> = (0..back.len()).map(|i| back.get(i)).collect();
            assert_eq!(got, expected);
        }
    }
}
