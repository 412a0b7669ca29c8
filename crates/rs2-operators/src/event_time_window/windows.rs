//! One key's open windows and their events (the state the operator keeps in the store), and the
//! two transitions on it: take an event in, settle a window (fire it, purge it, or both).
//!
//! Pure functions of the state, the watermark and the spec: no I/O, so both the typed table and
//! the byte path of [`OwnState`](crate::engine::own::OwnState) run them.

use serde::{Deserialize, Serialize};

use crate::engine::Change;

/// Bits of a window number that count a pipeline's windows; the bits above name the pipeline.
pub(super) const SEQ_COUNT_BITS: u32 = 44;

/// Window shape, in milliseconds; validated (every length at least 1, `slide <= size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spec {
    /// Epoch-aligned windows `[k * slide, k * slide + size)`; tumbling when `slide == size`.
    Aligned { size: u64, slide: u64 },
    /// Per-key sessions: an event opens `[t, t + gap)`, overlapping sessions merge.
    Session { gap: u64 },
}

/// A key's open windows (or fired ones kept for allowed lateness) and their events.
///
/// Each event is stored once, with its time, however many windows cover it (sliding windows
/// overlap); a window's events are those whose time it covers, in arrival order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: serde::de::DeserializeOwned"
))]
pub(super) struct KeyWindows<T> {
    wins: Vec<Win>,
    events: Vec<(u64, T)>,
}

impl<T> Default for KeyWindows<T> {
    fn default() -> Self {
        Self {
            wins: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// One window of a key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Win {
    start: u64,
    /// Exclusive; `u64::MAX` when `start + size` would pass it (such a window covers
    /// `u64::MAX` too, so an event at the end of time has a window).
    end: u64,
    /// The operator's number for the window, in the order windows were opened.
    seq: u64,
    /// Emitted, with no event added since.
    fired: bool,
}

impl Win {
    fn covers(&self, t: u64) -> bool {
        t >= self.start && (t < self.end || self.end == u64::MAX)
    }
}

/// An entry of the operator's index of windows: at watermark `deadline`, settle the entry's
/// key's window starting at `start` (opened as number `seq`). Entries sort by deadline, then start, then
/// open order: the order windows fire in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    pub deadline: u64,
    pub start: u64,
    pub seq: u64,
    /// The purge of a fired window kept for allowed lateness (its deadline is its end plus the
    /// lateness), rather than its firing.
    pub purge: bool,
}

/// A change a transition makes to the index.
#[derive(Debug, Clone, Copy)]
pub(super) enum IndexOp {
    Insert(Entry),
    Remove(Entry),
}

/// What a transition works with: the shape, the watermark it judges by, allowed lateness, and
/// the next free window number.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    pub spec: Spec,
    pub wm: u64,
    pub lateness: u64,
    pub next_seq: u64,
}

impl Ctx {
    /// Whether a window ending at `end` has been purged (or would be at once): the watermark
    /// passed its end plus allowed lateness.
    fn gone(&self, end: u64) -> bool {
        end.saturating_add(self.lateness) <= self.wm
    }

    fn fire_entry(&self, w: &Win) -> Entry {
        Entry {
            deadline: w.end,
            start: w.start,
            seq: w.seq,
            purge: false,
        }
    }

    fn purge_entry(&self, w: &Win) -> Entry {
        Entry {
            deadline: w.end.saturating_add(self.lateness),
            start: w.start,
            seq: w.seq,
            purge: true,
        }
    }

    /// Whether this pipeline opened the window numbered `seq` (window numbers carry their
    /// pipeline's own high bits, see `core::first_seq`).
    pub fn owns(&self, seq: u64) -> bool {
        seq >> SEQ_COUNT_BITS == self.next_seq >> SEQ_COUNT_BITS
    }

    /// Whether an event at `t` is late: every window it would belong to is purged.
    pub fn is_late(&self, t: u64) -> bool {
        match self.spec {
            // The last window covering `t` ends last.
            Spec::Aligned { size, slide } => self.gone(aligned_end(t - t % slide, size)),
            Spec::Session { gap } => self.gone(t.saturating_add(gap)),
        }
    }
}

fn aligned_end(start: u64, size: u64) -> u64 {
    start.saturating_add(size)
}

/// Starts of the aligned windows covering `t`, ascending (no allocation; `slide <= size`).
fn aligned_starts(t: u64, size: u64, slide: u64) -> impl Iterator<Item = u64> {
    let first = if t >= size {
        // The smallest multiple of `slide` above `t - size`; `slide <= size`, so no overflow.
        (t - size + 1).div_ceil(slide) * slide
    } else {
        0
    };
    std::iter::successors(Some(first), move |s| s.checked_add(slide)).take_while(move |&s| s <= t)
}

/// Takes event `event` at time `t` (not late: see [`Ctx::is_late`]) into the key's windows:
/// opens the windows it needs, merges sessions it bridges, and marks fired windows (kept for
/// allowed lateness) that it joins for firing again. Index changes go to `ops`; returns the
/// window numbers used.
pub(super) fn take_in<T>(
    state: &mut Option<KeyWindows<T>>,
    ctx: Ctx,
    t: u64,
    event: T,
    ops: &mut Vec<IndexOp>,
) -> (Change, u64) {
    let st = state.get_or_insert_with(KeyWindows::default);
    let mut used = 0;
    let mut next = || {
        used += 1;
        ctx.next_seq.wrapping_add(used - 1)
    };
    match ctx.spec {
        Spec::Aligned { size, slide } => {
            for start in aligned_starts(t, size, slide) {
                let end = aligned_end(start, size);
                if ctx.gone(end) {
                    continue;
                }
                match st
                    .wins
                    .iter_mut()
                    .find(|w| w.start == start && w.end == end)
                {
                    Some(w) => {
                        // A fired window fires again; a due one whose settling failed is due
                        // again. A window another pipeline sharing the store (or an earlier
                        // run) opened may be in no live pipeline's index: index it here too,
                        // so it fires even if its opener stopped (inserting an entry the index
                        // holds is a no-op).
                        if w.fired || w.end <= ctx.wm || !ctx.owns(w.seq) {
                            w.fired = false;
                            ops.push(IndexOp::Insert(ctx.fire_entry(w)));
                        }
                    }
                    None => {
                        let w = Win {
                            start,
                            end,
                            seq: next(),
                            fired: false,
                        };
                        ops.push(IndexOp::Insert(ctx.fire_entry(&w)));
                        st.wins.push(w);
                    }
                }
            }
        }
        Spec::Session { gap } => {
            let (mut start, mut end) = (t, t.saturating_add(gap));
            let mut seq: Option<u64> = None;
            st.wins.retain(|w| {
                let overlaps = w.start < end && start < w.end;
                if overlaps {
                    start = start.min(w.start);
                    end = end.max(w.end);
                    seq = Some(seq.map_or(w.seq, |s| s.min(w.seq)));
                    ops.push(IndexOp::Remove(ctx.fire_entry(w)));
                    ops.push(IndexOp::Remove(ctx.purge_entry(w)));
                }
                !overlaps
            });
            let merged = Win {
                start,
                end,
                seq: seq.unwrap_or_else(&mut next),
                fired: false,
            };
            ops.push(IndexOp::Insert(ctx.fire_entry(&merged)));
            st.wins.push(merged);
        }
    }
    st.events.push((t, event));
    (Change::Store, used)
}

/// What settling a window gave.
#[derive(Debug)]
pub(super) enum Settled<T> {
    /// The window fired: its bounds and events (arrival order).
    Fired {
        start: u64,
        end: u64,
        events: Vec<T>,
    },
    /// Nothing to emit (purged without new events, or fired already).
    Quiet,
    /// The window is not in the key's state: it expired or was evicted from the store.
    Missing,
}

/// Settles the key's window starting at `start` (a key's windows have distinct starts; the
/// number is not matched, so a window another pipeline sharing the store opened is found too)
/// at watermark `ctx.wm`: fires it if its end has been reached
/// and it has events not emitted yet, and purges it (with the events no other window covers)
/// once the watermark passed its end plus allowed lateness. Index changes go to `ops`.
pub(super) fn settle<T: Clone>(
    state: &mut Option<KeyWindows<T>>,
    ctx: Ctx,
    start: u64,
    ops: &mut Vec<IndexOp>,
) -> (Change, Settled<T>) {
    let Some(st) = state else {
        return (Change::Keep, Settled::Missing);
    };
    let Some(i) = st.wins.iter().position(|w| w.start == start) else {
        // A session another pipeline sharing the store merged into a larger one: that
        // pipeline indexed the merged session and fires it.
        if matches!(ctx.spec, Spec::Session { .. }) && st.wins.iter().any(|w| w.covers(start)) {
            return (Change::Keep, Settled::Quiet);
        }
        return (Change::Keep, Settled::Missing);
    };
    let w = st.wins[i];
    let emit = w.end <= ctx.wm && !w.fired;
    // Only the window's opener purges it: a pipeline that fires a window another opened (see
    // `take_in`) leaves it for the opener (or the TTL), so the opener never finds it gone.
    let owner = ctx.owns(w.seq);
    let purge = owner && ctx.gone(w.end);
    if !emit && !purge {
        return (Change::Keep, Settled::Quiet);
    }
    if purge {
        st.wins.swap_remove(i);
        ops.push(IndexOp::Remove(ctx.fire_entry(&w)));
        ops.push(IndexOp::Remove(ctx.purge_entry(&w)));
    } else {
        st.wins[i].fired = true;
        if owner {
            ops.push(IndexOp::Insert(ctx.purge_entry(&w)));
        }
    }
    let mut out = Vec::new();
    let wins = &st.wins;
    let kept = |t: u64| wins.iter().any(|w| w.covers(t));
    if emit {
        out.reserve(st.events.iter().filter(|(t, _)| w.covers(*t)).count());
    }
    // Events of this window go out (moved when no other window covers them, else
    // cloned); events no window covers any more are dropped. One pass, order kept.
    let events = std::mem::take(&mut st.events);
    for (t, event) in events {
        let keep = kept(t);
        if emit && w.covers(t) {
            if keep {
                out.push(event.clone());
            } else {
                out.push(event);
                continue;
            }
        }
        if keep {
            st.events.push((t, event));
        }
    }
    let change = if st.wins.is_empty() {
        Change::Remove
    } else {
        Change::Store
    };
    let settled = if emit {
        Settled::Fired {
            start: w.start,
            end: w.end,
            events: out,
        }
    } else {
        Settled::Quiet
    };
    (change, settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(spec: Spec, wm: u64, lateness: u64) -> Ctx {
        Ctx {
            spec,
            wm,
            lateness,
            next_seq: 0,
        }
    }

    #[test]
    fn aligned_starts_cover_the_event_and_saturate() {
        let starts = |t, size, slide| aligned_starts(t, size, slide).collect::<Vec<_>>();
        assert_eq!(starts(5, 10, 10), [0]);
        assert_eq!(starts(25, 10, 5), [20, 25]);
        assert_eq!(starts(3, 10, 5), [0]);
        assert_eq!(starts(u64::MAX, 10, 10).len(), 1);
        assert_eq!(starts(u64::MAX - 1, 7, 3).len(), 2);
        let s = starts(u64::MAX, 10, 10)[0];
        assert!(Win {
            start: s,
            end: aligned_end(s, 10),
            seq: 0,
            fired: false
        }
        .covers(u64::MAX));
    }

    #[test]
    fn a_tumbling_window_fires_once_then_purges_its_events() {
        let spec = Spec::Aligned {
            size: 10,
            slide: 10,
        };
        let mut state = None;
        let mut ops = Vec::new();
        take_in(&mut state, ctx(spec, 0, 0), 3, 'a', &mut ops);
        take_in(&mut state, ctx(spec, 0, 0), 12, 'b', &mut ops);
        assert_eq!(ops.len(), 2);
        let (change, out) = settle(&mut state, ctx(spec, 10, 0), 0, &mut ops);
        assert!(matches!(change, Change::Store));
        assert!(
            matches!(out, Settled::Fired { start: 0, end: 10, ref events } if events == &['a'])
        );
        let st = state.as_ref().unwrap();
        assert_eq!((st.wins.len(), st.events.len()), (1, 1));
    }

    #[test]
    fn sessions_merge_when_an_event_bridges_them() {
        let spec = Spec::Session { gap: 5 };
        let mut state = None;
        let mut ops = Vec::new();
        let mut c = ctx(spec, 0, 0);
        c.next_seq += take_in(&mut state, c, 0, 1, &mut ops).1;
        c.next_seq += take_in(&mut state, c, 8, 2, &mut ops).1;
        assert_eq!(state.as_ref().unwrap().wins.len(), 2);
        let (_, used) = take_in(&mut state, c, 4, 3, &mut ops);
        assert_eq!(used, 0, "a merge opens no window");
        let st = state.as_ref().unwrap();
        assert_eq!(st.wins.len(), 1);
        assert_eq!(
            (st.wins[0].start, st.wins[0].end, st.wins[0].seq),
            (0, 13, 0)
        );
    }
}
