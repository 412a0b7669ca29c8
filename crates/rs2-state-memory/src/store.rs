//! `InMemoryState`: a sharded hash table of values with an exact, global LRU bound.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashTable};
use rs2_state_core::{
    async_trait, LocalModifyFn, LocalStorage, LocalUpdateFn, StateConfig, StateResult,
    StateStorage, UpdateFn, ValueChange,
};

use crate::clock::StateClock;
use crate::recency::RecencyList;
use crate::value::{Key, Value};

/// Recency is recorded at most once per key per this many milliseconds: an access to an
/// existing key takes one shard lock and nothing else, except on its first access in each
/// second. So eviction order is least-recently-used with one-second resolution. See
/// `docs/decisions/001-in-memory-hot-path.md`.
pub const TOUCH_INTERVAL_MS: u64 = 1_000;

const SHARDS: usize = 16;

/// The default state store: values live in this process.
///
/// Exact semantics:
/// * **Expiry.** A value expires `ttl` after it was last written (`set`, `update`, or an
///   operator's write). An expired value is never returned: every read compares the value's
///   expiry stamp with the clock ([`StateClock`]). Expired entries are removed from memory every
///   `cleanup_interval`, by a background tokio task when the store is created inside a tokio
///   runtime, and otherwise by the first new key written after the interval has passed.
/// * **Size.** With `max_size = Some(n)` the store holds at most `n` keys after every write:
///   writing a new key into a full store evicts the least recently used key before the write
///   returns (recency has one-second resolution, see [`TOUCH_INTERVAL_MS`]). Eviction removes
///   the key's state: a later read finds nothing. New keys are always admitted.
/// * **Sharing.** Clones share one store. Each `update` of a key is atomic with respect to every
///   other `update`, `set` and read of that key, from any task or thread.
///
/// Memory: each key takes one 64-byte table entry (keys up to 22 bytes and values up to 22
/// encoded bytes are stored inside it), a 24-byte recency node, and the table's spare capacity;
/// longer keys and values add their length. The README gives measured bytes per key.
///
/// ```
/// # futures::executor::block_on(async {
/// use rs2_state_core::{StateConfig, StateStorage};
/// use rs2_state_memory::InMemoryState;
///
/// let store = InMemoryState::new(&StateConfig::new().max_size(2));
/// store.set("a", b"1").await.unwrap();
/// store.set("b", b"2").await.unwrap();
/// store.set("c", b"3").await.unwrap(); // full: evicts "a", the least recently used
/// assert_eq!(store.get("a").await.unwrap(), None);
/// assert_eq!(store.get("c").await.unwrap(), Some(b"3".to_vec()));
/// # });
/// ```
#[derive(Clone)]
pub struct InMemoryState {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<HashTable<Entry>>]>,
    /// foldhash, seeded per store: several times cheaper than SipHash on short keys (see
    /// docs/decisions/004), with the per-process random seed that keeps crafted keys from
    /// being aimed at one bucket.
    hasher: DefaultHashBuilder,
    /// Recency order of every key in the table. Lock order: `recency`, then a shard. Taken
    /// only to add or remove a key, and to record a key's first use in a second.
    recency: Mutex<RecencyList>,
    /// Keys held (mirrors the recency list, readable without its lock).
    len: AtomicUsize,
    max_size: Option<usize>,
    clock: StateClock,
    ttl_ms: u64,
    cleanup_interval_ms: u64,
    next_cleanup_ms: AtomicU64,
}

/// One key's state: 64 bytes, one cache line, when the key and value are short.
#[repr(align(64))]
struct Entry {
    key: Key,
    value: Value,
    expires_at_ms: u64,
    /// Second (of the store's clock) of the last recorded use.
    touched_s: u32,
    /// The key's node in the recency list.
    node: u32,
}

impl Entry {
    #[inline]
    fn is(&self, key: &str) -> bool {
        self.key.as_bytes() == key.as_bytes()
    }

    #[inline]
    fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Records a use; `true` when the recency list should hear of it (once per second).
    #[inline]
    fn touch(&mut self, now_ms: u64) -> bool {
        let now_s = (now_ms / TOUCH_INTERVAL_MS) as u32;
        if self.touched_s != now_s {
            self.touched_s = now_s;
            true
        } else {
            false
        }
    }

    fn heap_bytes(&self) -> usize {
        self.key.heap_bytes() + self.value.heap_bytes()
    }
}

impl std::fmt::Debug for InMemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryState")
            .field("len", &self.len())
            .field("max_size", &self.inner.max_size)
            .field("ttl_ms", &self.inner.ttl_ms)
            .finish()
    }
}

impl InMemoryState {
    /// A new, empty store following `config`'s `ttl`, `cleanup_interval` and `max_size`.
    ///
    /// The config is used as given; call [`StateConfig::validate`] first to reject a zero TTL
    /// and the like (operators do).
    pub fn new(config: &StateConfig) -> Self {
        let clock = StateClock::new();
        let cleanup_interval_ms = (config.cleanup_interval.as_millis() as u64).max(1);
        let inner = Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: DefaultHashBuilder::default(),
            recency: Mutex::new(RecencyList::default()),
            len: AtomicUsize::new(0),
            max_size: config.max_size.filter(|&n| n != usize::MAX),
            clock,
            ttl_ms: config.ttl.as_millis() as u64,
            cleanup_interval_ms,
            next_cleanup_ms: AtomicU64::new(clock.now_ms().saturating_add(cleanup_interval_ms)),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(cleanup_task(
                Arc::downgrade(&inner),
                Duration::from_millis(cleanup_interval_ms),
            ));
        }
        Self { inner }
    }

    /// Number of keys held (expired ones included until the next cleanup).
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes expired entries now (the store also does this every `cleanup_interval`).
    pub fn cleanup(&self) {
        self.inner.cleanup();
    }

    /// Heap bytes held by keys and values too long to live inside their table entry (for
    /// memory accounting; see the type's docs for the fixed cost per key).
    pub fn heap_bytes(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).iter().map(Entry::heap_bytes).sum::<usize>())
            .sum()
    }

    /// The clock this store judges expiry by.
    pub fn clock(&self) -> StateClock {
        self.inner.clock
    }
}

/// Locks, recovering from poisoning: a panic in a user's update closure happens before anything
/// is written, so the data behind a poisoned lock is whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn cleanup_task(store: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.upgrade() {
            Some(inner) => inner.cleanup(),
            None => return,
        }
    }
}

impl Inner {
    #[inline]
    fn shard(&self, hash: u64) -> MutexGuard<'_, HashTable<Entry>> {
        // hashbrown uses the low bits for the bucket and the top 7 for its tag: shard by others.
        lock(&self.shards[(hash >> 32) as usize % SHARDS])
    }

    #[inline]
    fn hash_of(&self, entry: &Entry) -> u64 {
        self.hasher.hash_one(entry.key.as_bytes())
    }

    fn cleanup(&self) {
        let now = self.clock.now_ms();
        self.next_cleanup_ms.store(
            now.saturating_add(self.cleanup_interval_ms),
            Ordering::Relaxed,
        );
        let mut recency = lock(&self.recency);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for entry in shard.extract_if(|e| !e.live(now)) {
                recency.remove(entry.node);
            }
        }
        self.len.store(recency.len(), Ordering::Relaxed);
    }

    fn maybe_cleanup(&self, now: u64) {
        let due = self.next_cleanup_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_cleanup_ms
                .compare_exchange(
                    due,
                    now.saturating_add(self.cleanup_interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.cleanup();
        }
    }

    /// Stores what `produce` makes of the key's live value. An existing key takes only its
    /// shard lock; a new key takes the recency lock too, and the store evicts down to
    /// `max_size` before returning.
    fn write_with(
        &self,
        hash: u64,
        key: &str,
        now: u64,
        mut produce: impl Produce,
    ) -> StateResult<()> {
        let expires_at_ms = now.saturating_add(self.ttl_ms);
        let touched = {
            let mut shard = self.shard(hash);
            match shard.find_mut(hash, |e| e.is(key)) {
                Some(entry) => {
                    let current = entry.live(now).then(|| entry.value.as_slice());
                    let bytes = produce.produce(current)?;
                    entry.value.set(bytes);
                    entry.expires_at_ms = expires_at_ms;
                    Some(entry.touch(now).then_some(entry.node))
                }
                None => None,
            }
        };
        match touched {
            Some(Some(node)) => lock(&self.recency).move_to_back(node, hash),
            Some(None) => {}
            None => self.insert_new(hash, key, now, produce)?,
        }
        Ok(())
    }

    /// Stores what `produce` makes of a key that was not in its shard a moment ago. Takes the
    /// recency lock, then the shard's, and looks again, since another writer may have inserted
    /// the key meanwhile; then inserts it and evicts down to `max_size` before returning.
    fn insert_new(
        &self,
        hash: u64,
        key: &str,
        now: u64,
        mut produce: impl Produce,
    ) -> StateResult<()> {
        let expires_at_ms = now.saturating_add(self.ttl_ms);
        let mut recency = lock(&self.recency);
        let mut shard = self.shard(hash);
        if let Some(entry) = shard.find_mut(hash, |e| e.is(key)) {
            let current = entry.live(now).then(|| entry.value.as_slice());
            let bytes = produce.produce(current)?;
            entry.value.set(bytes);
            entry.expires_at_ms = expires_at_ms;
            entry.touched_s = (now / TOUCH_INTERVAL_MS) as u32;
            let node = entry.node;
            drop(shard);
            recency.move_to_back(node, hash);
            return Ok(());
        }
        let value = Value::new(produce.produce(None)?);
        let node = recency.push_back(hash);
        shard.insert_unique(
            hash,
            Entry {
                key: Key::new(key),
                value,
                expires_at_ms,
                touched_s: (now / TOUCH_INTERVAL_MS) as u32,
                node,
            },
            |e| self.hash_of(e),
        );
        drop(shard);
        if let Some(max) = self.max_size {
            while recency.len() > max {
                let Some((victim, victim_hash)) = recency.pop_front() else {
                    break;
                };
                if let Ok(entry) = self
                    .shard(victim_hash)
                    .find_entry(victim_hash, |e| e.node == victim)
                {
                    entry.remove();
                }
            }
        }
        self.len.store(recency.len(), Ordering::Relaxed);
        drop(recency);
        self.maybe_cleanup(now);
        Ok(())
    }
}

/// The new value of a write: given bytes, or computed from the current value.
trait Produce {
    fn produce(&mut self, current: Option<&[u8]>) -> StateResult<&[u8]>;
}

struct Bytes<'a>(&'a [u8]);

impl Produce for Bytes<'_> {
    #[inline]
    fn produce(&mut self, _current: Option<&[u8]>) -> StateResult<&[u8]> {
        Ok(self.0)
    }
}

struct Computed<'a, 'f> {
    buf: &'a mut Vec<u8>,
    f: &'a mut LocalUpdateFn<'f>,
}

impl Produce for Computed<'_, '_> {
    fn produce(&mut self, current: Option<&[u8]>) -> StateResult<&[u8]> {
        self.buf.clear();
        (self.f)(current, self.buf)?;
        Ok(self.buf)
    }
}

impl LocalStorage for InMemoryState {
    #[inline]
    fn hash_key(&self, key: &str) -> u64 {
        self.inner.hasher.hash_one(key.as_bytes())
    }

    fn read(&self, hash: u64, key: &str, now_ms: u64, f: &mut dyn FnMut(&[u8])) -> bool {
        let node = {
            let mut shard = self.inner.shard(hash);
            match shard.find_mut(hash, |e| e.is(key)) {
                Some(entry) if entry.live(now_ms) => {
                    f(entry.value.as_slice());
                    entry.touch(now_ms).then_some(entry.node)
                }
                _ => return false,
            }
        };
        if let Some(node) = node {
            lock(&self.inner.recency).move_to_back(node, hash);
        }
        true
    }

    fn write(&self, hash: u64, key: &str, now_ms: u64, value: &[u8]) -> StateResult<()> {
        self.inner.write_with(hash, key, now_ms, Bytes(value))
    }

    fn update(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        buf: &mut Vec<u8>,
        f: &mut LocalUpdateFn<'_>,
    ) -> StateResult<()> {
        self.inner
            .write_with(hash, key, now_ms, Computed { buf, f })
    }

    /// Edits a value longer than 22 bytes where it lies, so appending to a log of `n` bytes
    /// costs the appended bytes, not `n`; a shorter value is edited in `scratch` and copied
    /// back. A value edited in place keeps its allocation when it shrinks (a window's buffer
    /// emptied by a window fills up again), so it costs the largest size it reached.
    fn modify(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        scratch: &mut Vec<u8>,
        f: &mut LocalModifyFn<'_>,
    ) -> StateResult<ValueChange> {
        let inner = &self.inner;
        let (change, touched) = {
            let mut shard = inner.shard(hash);
            let Some(entry) = shard.find_mut(hash, |e| e.is(key)) else {
                drop(shard);
                scratch.clear();
                let change = f(scratch, false)?;
                if change == ValueChange::Store {
                    inner.insert_new(hash, key, now_ms, Bytes(scratch))?;
                }
                return Ok(change);
            };
            let live = entry.live(now_ms);
            let change = match &mut entry.value {
                Value::Heap(bytes) => {
                    if !live {
                        // Expired: as if absent (its bytes are dead whatever `f` says).
                        bytes.clear();
                    }
                    f(bytes, live)?
                }
                value => {
                    scratch.clear();
                    if live {
                        scratch.extend_from_slice(value.as_slice());
                    }
                    let change = f(scratch, live)?;
                    if change == ValueChange::Store {
                        value.set(scratch);
                    }
                    change
                }
            };
            let touched = match change {
                ValueChange::Store => {
                    entry.expires_at_ms = now_ms.saturating_add(inner.ttl_ms);
                    entry.touch(now_ms).then_some(entry.node)
                }
                ValueChange::Keep if live => entry.touch(now_ms).then_some(entry.node),
                ValueChange::Keep | ValueChange::Remove => None,
            };
            (change, touched)
        };
        if change == ValueChange::Remove {
            self.remove(hash, key);
        } else if let Some(node) = touched {
            lock(&inner.recency).move_to_back(node, hash);
        }
        Ok(change)
    }

    fn exists(&self, hash: u64, key: &str, now_ms: u64) -> bool {
        self.read(hash, key, now_ms, &mut |_| {})
    }

    fn remove(&self, hash: u64, key: &str) {
        let mut recency = lock(&self.inner.recency);
        let mut shard = self.inner.shard(hash);
        if let Ok(entry) = shard.find_entry(hash, |e| e.is(key)) {
            recency.remove(entry.remove().0.node);
            self.inner.len.store(recency.len(), Ordering::Relaxed);
        }
    }

    #[inline]
    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }
}

#[async_trait]
impl StateStorage for InMemoryState {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let mut value = None;
        self.read(self.hash_key(key), key, self.now_ms(), &mut |bytes| {
            value = Some(bytes.to_vec())
        });
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.write(self.hash_key(key), key, self.now_ms(), value)
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.remove(self.hash_key(key), key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(LocalStorage::exists(
            self,
            self.hash_key(key),
            key,
            self.now_ms(),
        ))
    }

    async fn clear(&self) -> StateResult<()> {
        let mut recency = lock(&self.inner.recency);
        for shard in self.inner.shards.iter() {
            lock(shard).clear();
        }
        recency.clear();
        self.inner.len.store(0, Ordering::Relaxed);
        Ok(())
    }

    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let mut f = Some(f);
        let mut buf = Vec::new();
        LocalStorage::update(
            self,
            self.hash_key(key),
            key,
            self.now_ms(),
            &mut buf,
            &mut |current, out| {
                let f = f.take().ok_or_else(|| {
                    rs2_state_core::StateError::Storage(format!(
                        "key '{key}': update function already ran"
                    ))
                })?;
                *out = f(current.map(<[u8]>::to_vec))?;
                Ok(())
            },
        )?;
        Ok(buf)
    }

    fn as_local(&self) -> Option<&dyn LocalStorage> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }
}
