//! A key's join buffers as bytes in a shared store, laid out so that an arrival costs its own
//! event, the events it prunes and the events it meets, never the rest of the buffers
//! (decision 012).
//!
//! `[tag 0x6A][stamp u64][left: dead u64, len u64, count u64][right: the same][left][right]`,
//! all little-endian. Each side's region is `len` bytes: `dead` bytes of events already pruned,
//! then `count` records `[arrival time u64][n u32][n bytes: the event, postcard]`, oldest first.
//!
//! * An arrival is encoded once, at the end of the value; a left one is then rotated in front
//!   of the right region, which moves the right side's bytes: those are the events the arrival
//!   meets (all of them are within the window once the expired ones are pruned).
//! * Pruning (expired events, and the oldest of a full side) walks record headers from the
//!   front of a region, decoding nothing, and only advances `dead`. The dead bytes are cut
//!   when they outgrow the bytes behind them, so each cut moves no more than was pruned since
//!   the last one (amortised O(1) per event). The left side's dead bytes are weighed against
//!   everything behind them (its live bytes and the whole right region), so the value holds at
//!   most about twice its live bytes, or about four times the live bytes when the right side
//!   dominates.
//! * Matching decodes the other side's events within the window: the pairs the arrival makes.
//!
//! Every fallible step (reading the header, walking records, decoding the events met,
//! encoding the arrival, undone by a truncation) comes before any edit, so an arrival that
//! fails leaves the stored bytes exactly as they were (state that cannot be decoded is never
//! overwritten).
//!
//! The stamp says which process and item types wrote the value
//! ([`Stamp`]). A value with another stamp (another process on a durable or remote store,
//! other item types, an older layout, garbage) is checked in full before it is trusted: every
//! record walked and every event decoded. Once an arrival succeeds it is rewritten under this
//! stamp, so that check is paid once per change of writer.

use std::any::TypeId;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::OnceLock;

use rs2_state_core::{Codec, Postcard};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Arrival, Met, Rule};
use crate::engine::event_log::LogError;
use crate::engine::Change;

/// First byte of a join entry.
pub(super) const TAG: u8 = 0x6A;
/// Bytes of the entry's header.
pub(super) const HEADER: usize = 1 + 8 + 2 * SIDE;
/// Bytes of one side's header fields (dead, len, count).
const SIDE: usize = 3 * 8;
const LEFT_AT: usize = 9;
const RIGHT_AT: usize = LEFT_AT + SIDE;
/// Bytes of a record's header (arrival time, event length).
pub(super) const RECORD: usize = 8 + 4;

fn corrupt(cause: impl Into<String>) -> LogError {
    LogError::Decode(cause.into())
}

/// The writer of a join entry: this process, with the join's item types. Joins of one process
/// with the same item types trust each other's entries (pipelines sharing a store in one
/// process check nothing twice); anything else is checked in full once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp(u64);

impl Stamp {
    /// The stamp of this process's joins of `T` with `U`.
    pub fn of<T: 'static, U: 'static>() -> Self {
        static SEED: OnceLock<RandomState> = OnceLock::new();
        Self(
            SEED.get_or_init(RandomState::new)
                .hash_one(TypeId::of::<(T, U)>()),
        )
    }
}

/// One side's region, as the header says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Region {
    /// Bytes of pruned events at the front.
    dead: usize,
    /// Bytes of the region, `dead` included.
    len: usize,
    /// Live records after the dead bytes.
    count: usize,
}

impl Region {
    fn read(header: &[u8], at: usize) -> Result<Self, LogError> {
        let field = |i: usize| -> Result<usize, LogError> {
            let bytes: [u8; 8] = header[at + 8 * i..at + 8 * i + 8]
                .try_into()
                .map_err(|_| corrupt("join header cut short"))?;
            usize::try_from(u64::from_le_bytes(bytes))
                .map_err(|_| corrupt("join header field out of range"))
        };
        let region = Region {
            dead: field(0)?,
            len: field(1)?,
            count: field(2)?,
        };
        // Every record takes at least its header: a count past that is corrupt, and would
        // otherwise be walked into the other region.
        if region.dead > region.len || region.count > (region.len - region.dead) / RECORD {
            return Err(corrupt(format!(
                "join side of {} bytes cannot hold {} pruned bytes and {} events",
                region.len, region.dead, region.count
            )));
        }
        Ok(region)
    }

    fn write(self, header: &mut [u8], at: usize) {
        for (i, v) in [self.dead, self.len, self.count].into_iter().enumerate() {
            header[at + 8 * i..at + 8 * i + 8].copy_from_slice(&(v as u64).to_le_bytes());
        }
    }
}

/// A stored entry's header, checked against the value's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    stamp: Stamp,
    left: Region,
    right: Region,
}

impl Entry {
    fn read(bytes: &[u8]) -> Result<Self, LogError> {
        match bytes.first() {
            None => return Err(corrupt("empty value")),
            Some(&TAG) => {}
            Some(&tag) => {
                return Err(corrupt(format!(
                    "not an rs2 join entry: first byte {tag:#04x}, expected {TAG:#04x} \
                     (an entry of an older layout or another operator)"
                )))
            }
        }
        if bytes.len() < HEADER {
            return Err(corrupt("join header cut short"));
        }
        let stamp: [u8; 8] = bytes[1..9]
            .try_into()
            .map_err(|_| corrupt("join header cut short"))?;
        let entry = Entry {
            stamp: Stamp(u64::from_le_bytes(stamp)),
            left: Region::read(bytes, LEFT_AT)?,
            right: Region::read(bytes, RIGHT_AT)?,
        };
        let total = HEADER
            .checked_add(entry.left.len)
            .and_then(|n| n.checked_add(entry.right.len));
        if total != Some(bytes.len()) {
            return Err(corrupt(format!(
                "join sides of {} and {} bytes in a value of {}",
                entry.left.len,
                entry.right.len,
                bytes.len()
            )));
        }
        Ok(entry)
    }

    /// Where each side's region starts.
    fn starts(&self) -> (usize, usize) {
        (HEADER, HEADER + self.left.len)
    }
}

/// The live records of a region, oldest first: (arrival time, the event's bytes).
struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    left: usize,
}

impl<'a> Records<'a> {
    /// The live records of `region`, which starts at `start` in `bytes`.
    fn of(bytes: &'a [u8], start: usize, region: Region) -> Self {
        Records {
            bytes,
            pos: start + region.dead,
            end: start + region.len,
            left: region.count,
        }
    }

    /// Where the next record starts.
    fn pos(&self) -> usize {
        self.pos
    }

    /// The next record's arrival time, without moving past it.
    fn peek_time(&self) -> Option<Result<u64, LogError>> {
        (self.left > 0).then(|| self.head().map(|(at, _)| at))
    }

    /// The record at `pos`: its time and its event's range.
    fn head(&self) -> Result<(u64, Range<usize>), LogError> {
        let head = self
            .bytes
            .get(self.pos..self.pos + RECORD)
            .filter(|_| self.pos + RECORD <= self.end)
            .ok_or_else(|| corrupt(format!("join record at byte {} cut short", self.pos)))?;
        let (at, n) = head.split_at(8);
        let at = u64::from_le_bytes(at.try_into().unwrap_or_default());
        let n = u32::from_le_bytes(n.try_into().unwrap_or_default()) as usize;
        let event = self.pos + RECORD..self.pos + RECORD + n;
        if event.end > self.end {
            return Err(corrupt(format!(
                "join event at byte {} runs past its side's end",
                self.pos
            )));
        }
        Ok((at, event))
    }
}

impl<'a> Iterator for Records<'a> {
    /// (arrival time, where the event starts, the event's bytes).
    type Item = Result<(u64, usize, &'a [u8]), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        match self.head() {
            Ok((at, event)) => {
                self.pos = event.end;
                Some(Ok((at, event.start, &self.bytes[event])))
            }
            Err(err) => {
                self.left = 0;
                Some(Err(err))
            }
        }
    }
}

/// Decodes one event's bytes, all of them.
fn decode<E: DeserializeOwned>(bytes: &[u8], at: usize) -> Result<E, LogError> {
    match postcard::take_from_bytes::<E>(bytes) {
        Ok((event, [])) => Ok(event),
        Ok((_, rest)) => Err(corrupt(format!(
            "join event at byte {at}: {} byte(s) after it",
            rest.len()
        ))),
        Err(e) => Err(corrupt(format!("join event at byte {at}: {e}"))),
    }
}

/// Checks an entry this process's joins of `T` and `U` did not write: every record of both
/// sides walks to its side's end and every event decodes.
fn check_all<T: DeserializeOwned, U: DeserializeOwned>(
    bytes: &[u8],
    entry: &Entry,
) -> Result<(), LogError> {
    let (l_start, r_start) = entry.starts();
    let mut left = Records::of(bytes, l_start, entry.left);
    for record in left.by_ref() {
        let (_, pos, event) = record?;
        decode::<T>(event, pos)?;
    }
    let mut right = Records::of(bytes, r_start, entry.right);
    for record in right.by_ref() {
        let (_, pos, event) = record?;
        decode::<U>(event, pos)?;
    }
    if left.pos() != r_start || right.pos() != bytes.len() {
        return Err(corrupt("join side has bytes after its last event"));
    }
    Ok(())
}

/// What pruning found at the front of one side.
struct Pruned {
    /// The side's new dead bytes.
    dead: usize,
    /// Records pruned: expired, then (`dropped` of them) the oldest of a full side.
    removed: usize,
    dropped: u64,
}

/// Walks the front of `region` (at `start`): the records that arrived before `oldest`, then
/// as many more as the side needs to hold fewer than `max` events (`usize::MAX`: no bound).
fn prune(
    bytes: &[u8],
    start: usize,
    region: Region,
    oldest: u64,
    max: usize,
) -> Result<Pruned, LogError> {
    let mut records = Records::of(bytes, start, region);
    let mut out = Pruned {
        dead: region.dead,
        removed: 0,
        dropped: 0,
    };
    while let Some(at) = records.peek_time() {
        let expired = at? < oldest;
        let full = region.count - out.removed >= max;
        if !expired && !full {
            break;
        }
        records.next().transpose()?;
        out.removed += 1;
        out.dropped += u64::from(!expired);
        out.dead = records.pos() - start;
    }
    Ok(out)
}

/// Cuts `region`'s dead bytes (it starts at `start`) once they are at least the bytes behind
/// them, so the memmove is paid for by the events pruned since the last cut.
fn compact(bytes: &mut Vec<u8>, start: usize, region: &mut Region) {
    let behind = bytes.len() - (start + region.dead);
    if region.dead > 0 && region.dead >= behind {
        bytes.drain(start..start + region.dead);
        region.len -= region.dead;
        region.dead = 0;
    }
}

/// An arrival's transition of the key's entry `bytes` (`existed`: the key had one): prune both
/// sides to the window, make room on the arrival's side, meet the other side, buffer the
/// arrival. On an error `bytes` is as it was.
pub(super) fn meet<T, U>(
    stamp: Stamp,
    rule: Rule,
    bytes: &mut Vec<u8>,
    existed: bool,
    arrival: Arrival<T, U>,
    now: u64,
) -> Result<(Change, Met<T, U>), LogError>
where
    T: Serialize + DeserializeOwned + Clone,
    U: Serialize + DeserializeOwned + Clone,
{
    let entry = if !existed {
        bytes.clear();
        Entry {
            stamp,
            left: Region::default(),
            right: Region::default(),
        }
    } else {
        let entry = Entry::read(bytes)?;
        if entry.stamp != stamp {
            check_all::<T, U>(bytes, &entry)?;
        }
        entry
    };
    let oldest = now.saturating_sub(rule.window_ms);
    let max = rule.max_buffered.max(1);
    let is_left = matches!(arrival, Arrival::Left(_));
    let (l_start, r_start) = entry.starts();
    let l_max = if is_left { max } else { usize::MAX };
    let r_max = if is_left { usize::MAX } else { max };
    let l_pruned = prune(bytes, l_start, entry.left, oldest, l_max)?;
    let r_pruned = prune(bytes, r_start, entry.right, oldest, r_max)?;
    let mut left = Region {
        dead: l_pruned.dead,
        count: entry.left.count - l_pruned.removed,
        ..entry.left
    };
    let mut right = Region {
        dead: r_pruned.dead,
        count: entry.right.count - r_pruned.removed,
        ..entry.right
    };
    // The events met: the other side's within the window (all of them but for a clock that
    // went back, say another process's on a durable store).
    let (other_start, other) = if is_left {
        (r_start, right)
    } else {
        (l_start, left)
    };
    let met = Records::of(bytes, other_start, other)
        .filter(|r| !matches!(r, Ok((at, _, _)) if *at < oldest));

    // Decode what the arrival meets, then encode the arrival: the last fallible steps.
    let old_len = bytes.len();
    let pairs: VecDeque<(T, U)> = match arrival {
        Arrival::Left(t) => {
            let partners = met
                .map(|r| r.and_then(|(_, pos, e)| decode::<U>(e, pos)))
                .collect::<Result<Vec<U>, _>>()?;
            append(bytes, now, &t)?;
            pair_up(t, partners, |t, u| (t, u))
        }
        Arrival::Right(u) => {
            let partners = met
                .map(|r| r.and_then(|(_, pos, e)| decode::<T>(e, pos)))
                .collect::<Result<Vec<T>, _>>()?;
            append(bytes, now, &u)?;
            pair_up(u, partners, |u, t| (t, u))
        }
    };
    let record = bytes.len() - old_len.max(HEADER);

    // From here on nothing fails.
    if is_left {
        bytes[r_start..].rotate_right(record);
        left.len += record;
        left.count += 1;
    } else {
        right.len += record;
        right.count += 1;
    }
    let r_start = HEADER + left.len;
    compact(bytes, r_start, &mut right);
    compact(bytes, HEADER, &mut left);
    bytes[0] = TAG;
    bytes[1..9].copy_from_slice(&stamp.0.to_le_bytes());
    left.write(bytes, LEFT_AT);
    right.write(bytes, RIGHT_AT);
    let dropped = l_pruned.dropped + r_pruned.dropped;
    Ok((Change::Store, Met { pairs, dropped }))
}

/// Encodes `event`, arrived at `now`, as a record at the end of `bytes` (an empty `bytes` gets
/// a header's room first). On failure `bytes` is as it was.
fn append<E: Serialize>(bytes: &mut Vec<u8>, now: u64, event: &E) -> Result<(), LogError> {
    let old = bytes.len();
    if old == 0 {
        bytes.resize(HEADER, 0);
    }
    let start = bytes.len();
    bytes.extend_from_slice(&now.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let encoded = Postcard::encode(event, bytes).map_err(LogError::Encode);
    let n = encoded.and_then(|()| {
        u32::try_from(bytes.len() - start - RECORD)
            .map_err(|_| LogError::Encode("an event of 4 GiB or more".into()))
    });
    match n {
        Ok(n) => {
            bytes[start + 8..start + RECORD].copy_from_slice(&n.to_le_bytes());
            Ok(())
        }
        Err(err) => {
            bytes.truncate(old);
            Err(err)
        }
    }
}

/// The arrival `a` paired with each of `partners`, in order (cloned for all but the last).
fn pair_up<A: Clone, B, P>(a: A, partners: Vec<B>, pair: impl Fn(A, B) -> P) -> VecDeque<P> {
    let mut out = VecDeque::with_capacity(partners.len());
    let mut partners = partners.into_iter().peekable();
    while let Some(b) = partners.next() {
        if partners.peek().is_some() {
            out.push_back(pair(a.clone(), b));
        } else {
            out.push_back(pair(a, b));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rec = (String, u64);

    fn rule(window_ms: u64, max_buffered: usize) -> Rule {
        Rule {
            window_ms,
            max_buffered,
        }
    }

    fn arrive(
        bytes: &mut Vec<u8>,
        stamp: Stamp,
        rule: Rule,
        a: Arrival<Rec, Rec>,
        now: u64,
    ) -> Result<Met<Rec, Rec>, LogError> {
        let existed = !bytes.is_empty();
        meet(stamp, rule, bytes, existed, a, now).map(|(_, met)| met)
    }

    fn l(n: u64) -> Arrival<Rec, Rec> {
        Arrival::Left(("l".into(), n))
    }

    fn r(n: u64) -> Arrival<Rec, Rec> {
        Arrival::Right(("r".into(), n))
    }

    fn nums(met: &Met<Rec, Rec>) -> Vec<(u64, u64)> {
        met.pairs.iter().map(|(t, u)| (t.1, u.1)).collect()
    }

    #[test]
    fn arrivals_meet_the_other_side_within_the_window() {
        let s = Stamp::of::<Rec, Rec>();
        let mut b = Vec::new();
        assert!(nums(&arrive(&mut b, s, rule(10, 100), l(1), 0).unwrap()).is_empty());
        assert!(nums(&arrive(&mut b, s, rule(10, 100), l(2), 5).unwrap()).is_empty());
        let met = arrive(&mut b, s, rule(10, 100), r(3), 10).unwrap();
        assert_eq!(nums(&met), [(1, 3), (2, 3)]);
        // At 12, left 1 (arrived at 0) has expired.
        let met = arrive(&mut b, s, rule(10, 100), r(4), 12).unwrap();
        assert_eq!(nums(&met), [(2, 4)]);
        let met = arrive(&mut b, s, rule(10, 100), l(5), 13).unwrap();
        assert_eq!(nums(&met), [(5, 3), (5, 4)]);
        let e = Entry::read(&b).unwrap();
        assert_eq!((e.left.count, e.right.count), (2, 2));
    }

    #[test]
    fn a_full_side_drops_its_oldest() {
        let s = Stamp::of::<Rec, Rec>();
        let mut b = Vec::new();
        let mut dropped = 0;
        for n in 0..5 {
            dropped += arrive(&mut b, s, rule(1_000, 3), l(n), 0).unwrap().dropped;
        }
        assert_eq!(dropped, 2);
        let met = arrive(&mut b, s, rule(1_000, 3), r(9), 0).unwrap();
        assert_eq!(nums(&met), [(2, 9), (3, 9), (4, 9)]);
    }

    #[test]
    fn dead_bytes_stay_below_the_live_ones() {
        let s = Stamp::of::<Rec, Rec>();
        let mut b = Vec::new();
        for n in 0..1_000 {
            let a = if n % 3 == 0 { r(n) } else { l(n) };
            arrive(&mut b, s, rule(1_000, 50), a, n).unwrap();
            let e = Entry::read(&b).unwrap();
            assert!(e.left.dead < e.left.len - e.left.dead + e.right.len || e.left.dead == 0);
            assert!(e.right.dead < e.right.len - e.right.dead || e.right.dead == 0);
        }
        let e = Entry::read(&b).unwrap();
        assert_eq!((e.left.count, e.right.count), (50, 50));
        assert!(
            b.len() < 3 * 100 * 30,
            "{} bytes for 100 small events",
            b.len()
        );
    }

    #[test]
    fn another_writers_entry_is_checked_and_a_failure_changes_nothing() {
        let mine = Stamp::of::<Rec, Rec>();
        let theirs = Stamp(mine.0 ^ 1);
        let mut b = Vec::new();
        for n in 0..4 {
            arrive(&mut b, theirs, rule(1_000, 10), l(n), 0).unwrap();
        }
        // A good entry of another writer is accepted and taken over.
        let mut good = b.clone();
        assert_eq!(
            arrive(&mut good, mine, rule(1_000, 10), r(7), 0)
                .unwrap()
                .pairs
                .len(),
            4
        );
        assert_eq!(Entry::read(&good).unwrap().stamp, mine);
        // One flipped event byte: caught by the full check, left as it was.
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] = 0xFF;
        let before = bad.clone();
        assert!(arrive(&mut bad, mine, rule(1_000, 10), l(9), 0).is_err());
        assert_eq!(bad, before);
        // Another item type: caught.
        let mut other = b.clone();
        let met = meet::<u64, Rec>(mine, rule(1_000, 10), &mut other, true, Arrival::Left(1), 0);
        assert!(met.is_err());
        assert_eq!(other, b);
    }

    #[test]
    fn spoiled_headers_are_errors() {
        let s = Stamp::of::<Rec, Rec>();
        let mut b = Vec::new();
        for n in 0..3 {
            arrive(&mut b, s, rule(1_000, 10), l(n), 0).unwrap();
            arrive(&mut b, s, rule(1_000, 10), r(n), 0).unwrap();
        }
        for cut in [0, 1, HEADER - 1, HEADER, b.len() - 1] {
            let mut short = b[..cut].to_vec();
            let before = short.clone();
            assert!(arrive(&mut short, s, rule(1_000, 10), l(9), 0).is_err() || cut == 0);
            if cut > 0 {
                assert_eq!(short, before);
            }
        }
        // A count past what the side can hold.
        let mut big = b.clone();
        big[LEFT_AT + 16..LEFT_AT + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Entry::read(&big).is_err());
    }
}
