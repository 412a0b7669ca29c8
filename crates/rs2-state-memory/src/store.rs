//! `InMemoryState`: slots held by a moka cache.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use rs2_state_core::{
    async_trait, LocalStorage, Slot, SlotRead, StateConfig, StateResult, StateStorage, UpdateFn,
};

use crate::clock::StateClock;

/// How often (at most) a slot's use is reported to moka's recency order. Recency is therefore
/// tracked with one-second resolution; in exchange an access to an existing key never touches
/// moka. See `docs/decisions/001-in-memory-hot-path.md`.
pub const TOUCH_INTERVAL_MS: u64 = 1_000;

/// The default state store: values live in this process, in slots held by a
/// [moka](https://docs.rs/moka) cache.
///
/// Exact semantics:
/// * **Expiry.** A value expires `ttl` after it was last written (`set`, `update`, or an
///   operator's write). An expired value is never returned: every read compares the value's
///   expiry stamp with the clock. Expired entries are removed from memory every
///   `cleanup_interval` (by a background tokio task when the store is created inside a tokio
///   runtime, otherwise by the first access after the interval has passed).
/// * **Size.** With `max_size = Some(n)` the store holds at most `n` keys after every write.
///   Writing a new key into a full store evicts the least recently used key first (moka's LRU
///   policy; recency has one-second resolution, see [`TOUCH_INTERVAL_MS`]). Eviction removes
///   the key's state: a later read finds nothing. New keys are always admitted (moka's default
///   TinyLFU admission, which can refuse a new key, is not used).
/// * **Sharing.** Clones share one store. Each `update` of a key is atomic with respect to every
///   other `update`, `set` and read of that key, from any task or thread.
///
/// Memory: about 200 bytes per key plus the key and the encoded value (measured in the README).
///
/// ```
/// # futures::executor::block_on(async {
/// use rs2_state_core::{StateConfig, StateStorage};
/// use rs2_state_memory::InMemoryState;
///
/// let store = InMemoryState::new(&StateConfig::new().max_size(2));
/// store.set("a", b"1").await.unwrap();
/// assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
/// # });
/// ```
#[derive(Clone)]
pub struct InMemoryState {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache<String, Arc<Slot>>,
    /// Keys moka holds, counted by us so the bound can be enforced right after an insert
    /// (moka's own count is only refreshed by its maintenance).
    live: Arc<AtomicUsize>,
    max_size: Option<usize>,
    clock: StateClock,
    ttl_ms: u64,
    cleanup_interval_ms: u64,
    next_cleanup_ms: AtomicU64,
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
        let live = Arc::new(AtomicUsize::new(0));
        let max_size = config.max_size.filter(|&n| n != usize::MAX);
        let listener_live = Arc::clone(&live);
        let mut builder = Cache::builder()
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_key, slot: Arc<Slot>, cause| {
                slot.detach();
                if cause != RemovalCause::Replaced {
                    listener_live.fetch_sub(1, Ordering::Relaxed);
                }
            });
        if let Some(max) = max_size {
            builder = builder.max_capacity(max as u64);
        }
        let clock = StateClock::new();
        let cleanup_interval_ms = (config.cleanup_interval.as_millis() as u64).max(1);
        let inner = Arc::new(Inner {
            cache: builder.build(),
            live,
            max_size,
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
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes expired entries now (the store also does this every `cleanup_interval`).
    pub fn cleanup(&self) {
        self.inner.cleanup();
    }

    /// The clock this store judges expiry by.
    pub fn clock(&self) -> StateClock {
        self.inner.clock
    }
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
    fn cleanup(&self) {
        let now = self.clock.now_ms();
        self.next_cleanup_ms.store(
            now.saturating_add(self.cleanup_interval_ms),
            Ordering::Relaxed,
        );
        let expired: Vec<(Arc<String>, Arc<Slot>)> = self
            .cache
            .iter()
            .filter(|(_, slot)| slot.is_expired(now))
            .collect();
        for (key, slot) in expired {
            // Detach first, under the slot's lock and only if still expired, so a write racing
            // the cleanup either lands before (and keeps the key) or goes to a fresh slot.
            if !slot.detach_if_expired(now) {
                continue;
            }
            self.cache
                .entry_by_ref(key.as_str())
                .and_compute_with(|entry| match entry {
                    Some(entry) if Arc::ptr_eq(entry.value(), &slot) => Op::Remove,
                    _ => Op::Nop,
                });
        }
        self.cache.run_pending_tasks();
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

    fn insert(&self, key: &str) -> Arc<Slot> {
        let now = self.clock.now_ms();
        self.maybe_cleanup(now);
        let entry = self
            .cache
            .entry_by_ref(key)
            .or_insert_with_if(|| Arc::new(Slot::new(now)), |slot| slot.is_detached());
        if entry.is_fresh() && !entry.is_old_value_replaced() {
            let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
            if self.max_size.is_some_and(|max| live > max) {
                // Enforce the bound now rather than at moka's next maintenance; this evicts
                // the least recently used keys (and detaches their slots) before returning.
                self.cache.run_pending_tasks();
            }
        }
        entry.into_value()
    }
}

impl LocalStorage for InMemoryState {
    #[inline]
    fn lookup(&self, key: &str) -> Option<Arc<Slot>> {
        self.inner.cache.get(key).filter(|slot| !slot.is_detached())
    }

    fn lookup_or_insert(&self, key: &str) -> StateResult<Arc<Slot>> {
        if let Some(slot) = self.lookup(key) {
            return Ok(slot);
        }
        Ok(self.inner.insert(key))
    }

    #[inline]
    fn touch(&self, key: &str, slot: &Slot, now_ms: u64) {
        if slot.touch_due(now_ms, TOUCH_INTERVAL_MS) {
            self.inner.maybe_cleanup(now_ms);
            // A read records the use in moka's LRU order.
            let _ = self.inner.cache.get(key);
        }
    }

    fn remove(&self, key: &str) {
        if let Some(slot) = self.inner.cache.remove(key) {
            slot.detach();
        }
    }

    #[inline]
    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    #[inline]
    fn ttl_ms(&self) -> u64 {
        self.inner.ttl_ms
    }
}

#[async_trait]
impl StateStorage for InMemoryState {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let now = self.now_ms();
        loop {
            let Some(slot) = self.lookup(key) else {
                return Ok(None);
            };
            match slot.read(now, <[u8]>::to_vec) {
                SlotRead::Value(bytes) => return Ok(Some(bytes)),
                SlotRead::Absent => return Ok(None),
                SlotRead::Detached => continue,
            }
        }
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        let now = self.now_ms();
        let mut buf = value.to_vec();
        while !self
            .lookup_or_insert(key)?
            .write(now, self.inner.ttl_ms, &mut buf)
        {}
        Ok(())
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        let now = self.now_ms();
        loop {
            let Some(slot) = self.lookup(key) else {
                return Ok(false);
            };
            if let Some(live) = slot.is_live(now) {
                return Ok(live);
            }
        }
    }

    async fn clear(&self) -> StateResult<()> {
        for (_, slot) in self.inner.cache.iter() {
            slot.detach();
        }
        self.inner.cache.invalidate_all();
        self.inner.cache.run_pending_tasks();
        Ok(())
    }

    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let now = self.now_ms();
        let mut f = Some(f);
        let mut buf = Vec::new();
        loop {
            let slot = self.lookup_or_insert(key)?;
            let result = slot.update(now, self.inner.ttl_ms, &mut buf, |current, out| {
                let f = f.take().expect("update function runs once");
                *out = f(current.map(<[u8]>::to_vec))?;
                Ok(out.clone())
            });
            if let Some(result) = result {
                return result;
            }
        }
    }

    fn as_local(&self) -> Option<&dyn LocalStorage> {
        Some(self)
    }
}
