//! A shared cell holding one key's bytes in an in-process store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// One key's value in an in-process store: bytes, an expiry stamp, and whether the store still
/// holds the cell.
///
/// Stores hand slots out as `Arc<Slot>`; holders read and write them in place. All methods take
/// the current time from the caller, so a whole event is judged against one instant.
#[derive(Debug, Default)]
pub struct Slot {
    cell: Mutex<Cell>,
    /// Set (under `cell`'s lock) when the store evicts or removes the slot.
    detached: AtomicBool,
    /// Last time the store was told of a use (see `LocalStorage::touch`).
    last_touch_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct Cell {
    bytes: Vec<u8>,
    present: bool,
    expires_at_ms: u64,
}

impl Cell {
    fn live(&self, now_ms: u64) -> bool {
        self.present && now_ms < self.expires_at_ms
    }
}

/// What a read of a slot found.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotRead<R> {
    /// A live value; the closure's result.
    Value(R),
    /// No value, or an expired one.
    Absent,
    /// The store no longer holds this slot; ask the store again.
    Detached,
}

impl Slot {
    /// An empty, attached slot whose last touch was at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            last_touch_ms: AtomicU64::new(now_ms),
            ..Self::default()
        }
    }

    fn cell(&self) -> MutexGuard<'_, Cell> {
        // A panic while the lock was held (in a user's update closure) leaves the bytes as they
        // were before the write: writes swap in a fully encoded buffer, so the data is whole.
        self.cell
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls `f` with the live bytes, if any.
    pub fn read<R>(&self, now_ms: u64, f: impl FnOnce(&[u8]) -> R) -> SlotRead<R> {
        let cell = self.cell();
        if self.detached.load(Ordering::Relaxed) {
            SlotRead::Detached
        } else if cell.live(now_ms) {
            SlotRead::Value(f(&cell.bytes))
        } else {
            SlotRead::Absent
        }
    }

    /// Whether the slot holds a live value (`None` if detached).
    pub fn is_live(&self, now_ms: u64) -> Option<bool> {
        match self.read(now_ms, |_| ()) {
            SlotRead::Value(()) => Some(true),
            SlotRead::Absent => Some(false),
            SlotRead::Detached => None,
        }
    }

    /// Stores the encoded value in `buf` by swapping buffers (no copy); `buf` gets the previous
    /// bytes back so its capacity is reused. Returns `false`, leaving `buf` as it was, if the
    /// slot is detached.
    pub fn write(&self, now_ms: u64, ttl_ms: u64, buf: &mut Vec<u8>) -> bool {
        let mut cell = self.cell();
        if self.detached.load(Ordering::Relaxed) {
            return false;
        }
        std::mem::swap(&mut cell.bytes, buf);
        cell.present = true;
        cell.expires_at_ms = now_ms.saturating_add(ttl_ms);
        true
    }

    /// Atomic read-modify-write: `f` gets the live bytes (or `None`) and fills `buf` with the new
    /// encoding, or returns an error and nothing is written. `None` if the slot is detached
    /// (`f` is then not called).
    pub fn update<R, E>(
        &self,
        now_ms: u64,
        ttl_ms: u64,
        buf: &mut Vec<u8>,
        f: impl FnOnce(Option<&[u8]>, &mut Vec<u8>) -> Result<R, E>,
    ) -> Option<Result<R, E>> {
        let mut cell = self.cell();
        if self.detached.load(Ordering::Relaxed) {
            return None;
        }
        let current = cell.live(now_ms).then_some(&cell.bytes[..]);
        buf.clear();
        let result = f(current, buf);
        if result.is_ok() {
            std::mem::swap(&mut cell.bytes, buf);
            cell.present = true;
            cell.expires_at_ms = now_ms.saturating_add(ttl_ms);
        }
        Some(result)
    }

    /// Clears the value (the slot stays attached). Returns `false` if detached.
    pub fn clear(&self) -> bool {
        let mut cell = self.cell();
        if self.detached.load(Ordering::Relaxed) {
            return false;
        }
        cell.present = false;
        cell.bytes = Vec::new();
        true
    }

    /// Marks the slot as no longer held by its store and frees its bytes. Later reads report
    /// [`SlotRead::Detached`] and writes are refused, so they go back to the store.
    pub fn detach(&self) {
        let mut cell = self.cell();
        self.detached.store(true, Ordering::Relaxed);
        cell.present = false;
        cell.bytes = Vec::new();
    }

    /// Detaches the slot only if its value has expired at `now_ms` (checked under the same lock,
    /// so a concurrent write either keeps the slot alive or goes to a fresh slot). Returns
    /// whether it detached.
    pub fn detach_if_expired(&self, now_ms: u64) -> bool {
        let mut cell = self.cell();
        if cell.live(now_ms) {
            return false;
        }
        self.detached.store(true, Ordering::Relaxed);
        cell.present = false;
        cell.bytes = Vec::new();
        true
    }

    /// Whether the store has let go of this slot.
    #[inline]
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    /// Whether the slot's value has expired (or it holds none) at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        !self.cell().live(now_ms)
    }

    /// Records a use at `now_ms`; returns `true` if the previous recorded use is older than
    /// `interval_ms` (the caller should then tell the store's eviction policy).
    #[inline]
    pub fn touch_due(&self, now_ms: u64, interval_ms: u64) -> bool {
        let last = self.last_touch_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= interval_ms {
            self.last_touch_ms.store(now_ms, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Approximate heap bytes held by the value.
    pub fn value_capacity(&self) -> usize {
        self.cell().bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_exact_and_detach_refuses_writes() {
        let slot = Slot::new(0);
        let mut buf = vec![1, 2, 3];
        assert!(slot.write(100, 50, &mut buf));
        assert_eq!(
            slot.read(149, |b| b.to_vec()),
            SlotRead::Value(vec![1, 2, 3])
        );
        assert_eq!(slot.read(150, |b| b.to_vec()), SlotRead::Absent);
        slot.detach();
        let mut buf = vec![9];
        assert!(!slot.write(200, 50, &mut buf));
        assert_eq!(
            buf,
            vec![9],
            "a refused write leaves the caller's bytes alone"
        );
        assert_eq!(slot.read(200, |b| b.to_vec()), SlotRead::Detached);
    }

    #[test]
    fn failed_update_writes_nothing() {
        let slot = Slot::new(0);
        let mut buf = vec![7];
        assert!(slot.write(0, 1000, &mut buf));
        let mut buf = Vec::new();
        let r: Option<Result<(), &str>> = slot.update(1, 1000, &mut buf, |cur, out| {
            assert_eq!(cur, Some(&[7u8][..]));
            out.push(8);
            Err("no")
        });
        assert_eq!(r, Some(Err("no")));
        assert_eq!(slot.read(2, |b| b.to_vec()), SlotRead::Value(vec![7]));
    }
}
