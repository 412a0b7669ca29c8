//! `TypedTable`: one owner's typed key-value table with the in-memory store's rules.

use std::hash::BuildHasher;
use std::sync::Arc;

use std::collections::hash_map::RandomState;

use hashbrown::HashTable;
use rs2_state_core::{StateConfig, StatsCounters, StatsSnapshot, StatsSource};

use crate::recency::RecencyList;
use crate::value::Key;

/// A table of typed values owned by one operator: no encoding, no lock, no sharing.
///
/// Operators whose store is private (an `InMemory` config) keep their own state here instead
/// of in an [`InMemoryState`](crate::InMemoryState), with the same rules:
/// * **TTL from last write.** A value expires `ttl` after it was last stored; an expired value
///   is never returned (every access compares its stamp with the `now_ms` the caller passes).
/// * **`max_size` with eviction by list order.** Storing a new key into a full table evicts
///   the key at the front of the recency list first. A new key joins the back; a use moves a
///   key to the back once at least `max(1, max_size / 2)` list operations (keys joining or
///   moving to the back) have happened since it last got there. So a key used again within
///   every `max_size / 2` operations is never the victim, whatever the event rate, and a use
///   that does not move costs a compare (decision 005: `InMemoryState`'s rule).
/// * **Cleanup.** Expired values are dropped from memory by the first access after each
///   `cleanup_interval` (the table belongs to its operator's stream, which no background task
///   can reach); correctness never depends on it.
///
/// A value can be [taken](Self::take) out while the owner works on it (an async closure) and
/// [put](Self::put) back; the key keeps its place meanwhile.
///
/// ```
/// use rs2_state_core::StateConfig;
/// use rs2_state_memory::TypedTable;
///
/// let mut table: TypedTable<u64> = TypedTable::new(&StateConfig::new().max_size(2));
/// let h = table.hash("a");
/// table.put(h, "a", 0, 1);
/// assert_eq!(table.take(h, "a", 0), Some(1));
/// table.put(h, "a", 0, 2);
/// assert_eq!(table.get_mut(h, "a", 0).copied(), Some(2));
/// ```
pub struct TypedTable<V> {
    table: HashTable<Slot<V>>,
    /// SipHash-1-3, randomly keyed, as `InMemoryState` (decision 010).
    hasher: RandomState,
    /// Keys in eviction order (oldest first); kept only when the table is bounded.
    recency: RecencyList,
    /// List operations so far: a key's age is `ops - slot.stamp`.
    ops: u64,
    /// A used key moves to the back once its age reaches this (`max(1, max_size / 2)`).
    move_after: u64,
    max_size: Option<usize>,
    ttl_ms: u64,
    cleanup_interval_ms: u64,
    next_cleanup_ms: u64,
    /// The table's figures; written only by the table's owner (plain increments), read by
    /// any `StateStats` holding them.
    stats: Arc<StatsCounters>,
}

struct Slot<V> {
    /// Keys up to 22 bytes live inside the slot: a lookup touches one place, not two.
    key: Key,
    /// `None` while taken.
    value: Option<V>,
    expires_at_ms: u64,
    /// `ops` when the key last joined or moved to the back of the list.
    stamp: u64,
    node: u32,
}

impl<V> std::fmt::Debug for TypedTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedTable")
            .field("len", &self.table.len())
            .field("max_size", &self.max_size)
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

impl<V> TypedTable<V> {
    /// An empty table following `config`'s `ttl`, `cleanup_interval` and `max_size` (used as
    /// given: validate the config first).
    pub fn new(config: &StateConfig) -> Self {
        let cleanup_interval_ms = u64::try_from(config.cleanup_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            table: HashTable::new(),
            hasher: RandomState::new(),
            recency: RecencyList::default(),
            ops: 0,
            move_after: config.max_size.map_or(u64::MAX, |n| {
                u64::try_from(n / 2).unwrap_or(u64::MAX).max(1)
            }),
            max_size: config.max_size.filter(|&n| n != usize::MAX),
            ttl_ms: u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX),
            cleanup_interval_ms,
            next_cleanup_ms: 0,
            stats: Arc::default(),
        }
    }

    /// The table's figures now: entries, hits and misses (of [`take`](Self::take) and
    /// [`get_mut`](Self::get_mut)), writes ([`put`](Self::put)), evictions (for `max_size`)
    /// and expirations (expired values dropped by a cleanup or replaced by a `put`).
    ///
    /// ```
    /// use rs2_state_core::StateConfig;
    /// use rs2_state_memory::TypedTable;
    ///
    /// let mut table: TypedTable<u64> = TypedTable::new(&StateConfig::new().max_size(1));
    /// let (a, b) = (table.hash("a"), table.hash("b"));
    /// table.put(a, "a", 0, 1);
    /// table.put(b, "b", 0, 2); // evicts "a"
    /// assert_eq!(table.take(a, "a", 0), None);
    /// let s = table.stats();
    /// assert_eq!((s.entries, s.writes, s.evictions, s.misses), (1, 2, 1, 1));
    /// ```
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The table's figures as a source for a `StateStats` handle (which may read them from
    /// another thread while the owner works).
    pub fn stats_source(&self) -> Arc<dyn StatsSource> {
        Arc::clone(&self.stats) as Arc<dyn StatsSource>
    }

    /// The hash every other call takes for `key`.
    #[inline]
    pub fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key.as_bytes())
    }

    /// Keys held (expired ones included until the next cleanup).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table holds no keys.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The key's live value, to read or edit in place; records a use of the key (an edit does
    /// not restart its TTL: [`touch_write`](Self::touch_write) does).
    pub fn get_mut(&mut self, hash: u64, key: &str, now_ms: u64) -> Option<&mut V> {
        self.live_slot(hash, key, now_ms)?.value.as_mut()
    }

    /// Restarts the TTL of the key's value (after an edit through
    /// [`get_mut`](Self::get_mut)).
    pub fn touch_write(&mut self, hash: u64, key: &str, now_ms: u64) {
        let ttl = self.ttl_ms;
        if let Some(slot) = self
            .table
            .find_mut(hash, |s| s.key.as_bytes() == key.as_bytes())
        {
            slot.expires_at_ms = now_ms.saturating_add(ttl);
        }
    }

    /// Takes the key's live value out, leaving the key in place (and counting a use), so the
    /// caller can work on it and [`put`](Self::put) the result back.
    pub fn take(&mut self, hash: u64, key: &str, now_ms: u64) -> Option<V> {
        self.live_slot(hash, key, now_ms)?.value.take()
    }

    /// The key's slot if it holds a live value, its use recorded.
    #[inline]
    fn live_slot(&mut self, hash: u64, key: &str, now_ms: u64) -> Option<&mut Slot<V>> {
        self.maybe_cleanup(now_ms);
        let Some(slot) = self
            .table
            .find_mut(hash, |s| s.key.as_bytes() == key.as_bytes())
        else {
            self.stats.misses.add_unshared(1);
            return None;
        };
        if now_ms >= slot.expires_at_ms || slot.value.is_none() {
            self.stats.misses.add_unshared(1);
            return None;
        }
        self.stats.hits.add_unshared(1);
        if self.max_size.is_some() && self.ops - slot.stamp >= self.move_after {
            self.ops += 1;
            slot.stamp = self.ops;
            self.recency.move_to_back(slot.node, hash);
        }
        Some(slot)
    }

    /// Stores `value` as the key's value (its TTL starts again). A new key into a full table
    /// evicts the least recently used key first.
    pub fn put(&mut self, hash: u64, key: &str, now_ms: u64, value: V) {
        let expires_at_ms = now_ms.saturating_add(self.ttl_ms);
        self.stats.writes.add_unshared(1);
        if let Some(slot) = self
            .table
            .find_mut(hash, |s| s.key.as_bytes() == key.as_bytes())
        {
            if slot.value.is_some() && now_ms >= slot.expires_at_ms {
                self.stats.expirations.add_unshared(1);
            }
            slot.value = Some(value);
            slot.expires_at_ms = expires_at_ms;
            return;
        }
        self.maybe_cleanup(now_ms);
        let node = match self.max_size {
            Some(max) => {
                while self.recency.len() >= max {
                    let Some((victim, victim_hash)) = self.recency.pop_front() else {
                        break;
                    };
                    if let Ok(entry) = self.table.find_entry(victim_hash, |s| s.node == victim) {
                        entry.remove();
                    }
                    self.stats.evictions.add_unshared(1);
                    tracing::trace!(target: "rs2::store", max_size = max, "typed table: evicted the least recently used key");
                }
                self.ops += 1;
                self.recency.push_back(hash)
            }
            None => 0,
        };
        let hasher = &self.hasher;
        self.table.insert_unique(
            hash,
            Slot {
                key: Key::new(key),
                value: Some(value),
                expires_at_ms,
                stamp: self.ops,
                node,
            },
            |s| hasher.hash_one(s.key.as_bytes()),
        );
        self.stats.entries.set(self.table.len() as u64);
    }

    /// Puts a [taken](Self::take) value back unchanged: its TTL runs on from its last write.
    /// If the key was evicted meanwhile, the value goes with it.
    pub fn restore(&mut self, hash: u64, key: &str, value: V) {
        if let Some(slot) = self
            .table
            .find_mut(hash, |s| s.key.as_bytes() == key.as_bytes())
        {
            slot.value = Some(value);
        }
    }

    /// Removes the key and its value.
    pub fn remove(&mut self, hash: u64, key: &str) -> Option<V> {
        let entry = self
            .table
            .find_entry(hash, |s| s.key.as_bytes() == key.as_bytes())
            .ok()?;
        let (slot, _) = entry.remove();
        if self.max_size.is_some() {
            self.recency.remove(slot.node);
        }
        self.stats.entries.set(self.table.len() as u64);
        slot.value
    }

    /// Drops every expired value now (the table also does this every `cleanup_interval`).
    pub fn cleanup(&mut self, now_ms: u64) {
        self.next_cleanup_ms = now_ms.saturating_add(self.cleanup_interval_ms);
        let bounded = self.max_size.is_some();
        let mut expired = 0u64;
        for slot in self
            .table
            .extract_if(|s| now_ms >= s.expires_at_ms && s.value.is_some())
        {
            if bounded {
                self.recency.remove(slot.node);
            }
            expired += 1;
        }
        if expired > 0 {
            self.stats.expirations.add_unshared(expired);
            self.stats.entries.set(self.table.len() as u64);
            tracing::debug!(target: "rs2::store", expired, "typed table: cleanup pass");
        }
    }

    #[inline]
    fn maybe_cleanup(&mut self, now_ms: u64) {
        if now_ms >= self.next_cleanup_ms {
            self.cleanup(now_ms);
        }
    }
}

impl<V> Drop for TypedTable<V> {
    /// A `StateStats` handle may outlive the table: its entries are gone, its counts stay.
    fn drop(&mut self) {
        self.stats.entries.set(0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn table(max: usize) -> TypedTable<u32> {
        TypedTable::new(
            &StateConfig::new()
                .ttl(Duration::from_millis(100))
                .cleanup_interval(Duration::from_millis(10))
                .max_size(max),
        )
    }

    #[test]
    fn values_expire_from_their_last_write() {
        let mut t = table(10);
        let h = t.hash("k");
        t.put(h, "k", 0, 1);
        assert_eq!(t.get_mut(h, "k", 99).copied(), Some(1));
        t.put(h, "k", 50, 2);
        assert_eq!(
            t.get_mut(h, "k", 149).copied(),
            Some(2),
            "reads do not extend"
        );
        assert_eq!(t.get_mut(h, "k", 150), None);
        assert_eq!(t.take(h, "k", 150), None);
        // Cleanup drops it from memory.
        t.cleanup(150);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_bound_holds_and_the_least_recently_used_goes() {
        let mut t = table(3);
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            t.put(t.hash(k), k, 0, i as u32);
        }
        // Use "a" twice so it ages out of the newer half and is moved.
        let ha = t.hash("a");
        assert!(t.get_mut(ha, "a", 1).is_some());
        t.put(t.hash("d"), "d", 1, 3);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.get_mut(t.hash("b"), "b", 1),
            None,
            "b was least recently used"
        );
        assert!(t.get_mut(ha, "a", 1).is_some());
    }

    #[test]
    fn a_key_used_every_event_survives_a_flood_of_new_keys_in_one_instant() {
        let n = 100;
        let mut t = table(n);
        let hot = t.hash("hot");
        t.put(hot, "hot", 0, 0);
        for i in 0..10 * n {
            let v = t.take(hot, "hot", 0).expect("the hot key survives");
            t.put(hot, "hot", 0, v + 1);
            let k = format!("cold-{i}");
            t.put(t.hash(&k), &k, 0, 0);
            assert!(t.len() <= n);
        }
        assert_eq!(t.get_mut(hot, "hot", 0).copied(), Some(10 * n as u32));
    }

    #[test]
    fn matches_a_reference_lru_on_a_random_workload() {
        // Unbounded reference with a TTL: every value read must match the model's.
        let mut t: TypedTable<u32> = TypedTable::new(
            &StateConfig::new()
                .ttl(Duration::from_millis(50))
                .cleanup_interval(Duration::from_millis(7)),
        );
        let mut model: HashMap<String, (u32, u64)> = HashMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 64);
            let now = step / 4;
            let h = t.hash(&key);
            let live = model
                .get(&key)
                .filter(|(_, exp)| now < *exp)
                .map(|(v, _)| *v);
            match x % 3 {
                0 => {
                    t.put(h, &key, now, step as u32);
                    model.insert(key, (step as u32, now + 50));
                }
                1 => assert_eq!(t.get_mut(h, &key, now).copied(), live, "{key} at {now}"),
                _ => {
                    assert_eq!(t.remove(h, &key).filter(|_| live.is_some()), live);
                    model.remove(&key);
                }
            }
        }
    }
}
