//! `AdmissionState`: an in-memory store on a moka cache, with TinyLFU admission.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::{Cache, CacheBuilder};
use rs2_state_core::{
    async_trait, StateConfig, StateError, StateResult, StateStorage, StatsCounters, StatsSnapshot,
    StatsSource, UpdateFn,
};

/// The longest TTL moka accepts (its builder panics past 1000 years); longer TTLs are
/// clamped to it, which is "never" for any process.
const MAX_TTL: Duration = Duration::from_secs(1_000 * 365 * 24 * 3600);

/// An in-memory store that resists key floods: a moka cache (`moka::sync::Cache`) whose
/// TinyLFU admission policy keeps frequently used keys when the store is full, instead of
/// always making room for the newest key as [`InMemoryState`](crate::InMemoryState) does.
///
/// Select it with `StateStorageType::InMemoryAdmission` in a `StateConfig`: every operator then
/// gets a store of its own, as with `InMemory`, and keeps its state in it as bytes.
///
/// Semantics:
/// * **Expiry.** An entry expires `ttl` (the config's) after it was last written (`set`,
///   `update`, an operator's write); reads do not extend it (moka's `time_to_live`). An
///   expired entry is never returned. The TTL a writer passes to `set_with_ttl` is ignored:
///   the store expires by its own config (like `InMemoryState`). A TTL over 1000 years is
///   clamped to 1000 years. Expiry reads moka's own clock (`std::time::Instant`), not tokio's,
///   so a paused tokio clock does not advance it.
/// * **Size.** With `max_size: Some(n)` (other than `usize::MAX`) the store aims to hold at most
///   `n` entries; `None` or `usize::MAX` is unbounded. [`with_byte_budget`](Self::with_byte_budget)
///   bounds the bytes instead.
/// * **Eviction and admission (TinyLFU).** moka estimates how often each key is *read*
///   (`get`, hits and misses alike; `exists` does not count) in a small count-min sketch that
///   covers keys not in the store too, and halves its counts periodically so old popularity
///   fades. When a write of a new key would exceed the capacity, the new key is compared with
///   the least recently used entries of the store's probation queue (the victims): it is
///   admitted, evicting them, only if its estimated frequency is strictly greater than theirs;
///   otherwise **the new key is refused** and its value dropped. Eviction removes an entry's
///   state; a later read finds nothing. So a flood of one-off keys cannot push out keys that
///   are read again and again: each one-off key has been read at most once. An attacker that
///   reads each of its keys more often than real users read theirs can still evict them.
///   moka starts counting reads only once the store has been at least half full (checked at
///   a maintenance run); until then every new key is admitted, and reads made then give a
///   key no advantage later. An unbounded store never evicts and never refuses.
/// * **Approximate, applied lazily.** The estimates are approximate (sketch collisions), and
///   moka applies eviction, admission and expiry removal in batches ("pending tasks") during
///   later reads and writes, not inside each write. Until then the store may hold more
///   entries than its capacity, and a refused key may be readable for a short while. A read
///   never returns an expired entry. [`len`](Self::len) is moka's `entry_count`, an estimate
///   that counts entries not yet removed; call [`run_pending_tasks`](Self::run_pending_tasks)
///   first for an exact figure (tests that need determinism do so).
/// * **Atomicity.** [`update`](StateStorage::update) is atomic per key within the process
///   (moka's `and_compute_with`, which serialises computations on one key); plain `set`s are
///   not serialised against it. Operators take the store's key lock around their transitions.
/// * **Sharing.** Clones share one store (the handle is an `Arc`).
///
/// **Not a default for keyed counters.** Because a new key may be refused while the store is
/// full, a new user's counter (or throttle log, or session) can be dropped right after it is
/// written, and its next event starts from nothing again, until that user has been seen
/// often enough to win admission. Choose this store when the keys that matter are used
/// repeatedly and a key flood (many one-off keys) must not evict them: dedup markers of
/// retried requests, throttle logs of established clients. Choose `InMemoryState` (exact LRU,
/// new keys always admitted, faster on its in-process fast path) when every key's state must
/// be kept from its first event while the store has room for the working set.
///
/// Memory: moka keeps per-entry bookkeeping (queue nodes, timer, a key `Arc`) besides the key
/// and value; [`ENTRY_OVERHEAD_BYTES`](Self::ENTRY_OVERHEAD_BYTES) is the fixed estimate the
/// byte budget charges for it.
///
/// Errors: none; no method panics.
///
/// ```
/// # futures::executor::block_on(async {
/// use rs2_state_core::{StateConfig, StateStorage};
/// use rs2_state_memory::AdmissionState;
///
/// let store = AdmissionState::new(&StateConfig::new().max_size(10_000));
/// store.set("user-1", b"seen").await.unwrap();
/// assert_eq!(store.get("user-1").await.unwrap().as_deref(), Some(&b"seen"[..]));
/// store.run_pending_tasks();
/// assert_eq!(store.len(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct AdmissionState {
    cache: Arc<Cache<String, Arc<[u8]>>>,
    stats: Arc<AdmissionStats>,
}

type MokaCache = Cache<String, Arc<[u8]>>;

/// An [`AdmissionState`]'s figures: counters, and the cache (weakly, so a `StateStats` handle
/// does not keep a dropped store's entries alive) for `entries` and `bytes`.
struct AdmissionStats {
    counters: Arc<StatsCounters>,
    cache: Weak<MokaCache>,
    /// A byte-budget store: `bytes` is moka's weighted size.
    bytes: bool,
}

impl StatsSource for AdmissionStats {
    fn add_to(&self, s: &mut StatsSnapshot) {
        self.counters.add_to(s);
        let cache = self.cache.upgrade();
        let entries = cache.as_ref().map_or(0, |c| c.entry_count());
        s.entries = s.entries.saturating_add(entries);
        if self.bytes {
            s.add_bytes(Some(cache.as_ref().map_or(0, |c| c.weighted_size())));
        }
    }
}

impl std::fmt::Debug for AdmissionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let policy = self.cache.policy();
        f.debug_struct("AdmissionState")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .field("max_capacity", &policy.max_capacity())
            .field("time_to_live", &policy.time_to_live())
            .finish()
    }
}

impl AdmissionState {
    /// The fixed number of bytes [`with_byte_budget`](Self::with_byte_budget) charges each
    /// entry on top of its key and value lengths: an estimate of moka's bookkeeping per entry
    /// (hash-table slot, queue and timer nodes, the key's `Arc` and `String` headers, the
    /// value's `Arc<[u8]>`), not a measurement.
    pub const ENTRY_OVERHEAD_BYTES: u32 = 128;

    /// A store with the config's `ttl` (from the last write) and, with `max_size: Some(n)`,
    /// room for `n` entries (`None` or `usize::MAX`: unbounded). TinyLFU admission, moka's
    /// default policy, is set explicitly.
    pub fn new(config: &StateConfig) -> Self {
        let mut builder = Cache::builder()
            .eviction_policy(EvictionPolicy::tiny_lfu())
            .time_to_live(config.ttl.min(MAX_TTL));
        if let Some(n) = config.max_size.filter(|&n| n != usize::MAX) {
            builder = builder.max_capacity(u64::try_from(n).unwrap_or(u64::MAX));
        }
        Self::counted(builder, false)
    }

    /// Builds the cache with a listener counting evictions (size: evicted or refused) and
    /// expirations.
    fn counted(builder: CacheBuilder<String, Arc<[u8]>, MokaCache>, bytes: bool) -> Self {
        let counters = Arc::new(StatsCounters::default());
        let listener = Arc::clone(&counters);
        let cache = Arc::new(
            builder
                .eviction_listener(move |_key, _value, cause| match cause {
                    RemovalCause::Size => {
                        listener.evictions.add(1);
                        tracing::trace!(target: "rs2::store", "admission store: evicted or refused a key");
                    }
                    RemovalCause::Expired => listener.expirations.add(1),
                    RemovalCause::Explicit | RemovalCause::Replaced => {}
                })
                .build(),
        );
        let stats = Arc::new(AdmissionStats {
            counters,
            cache: Arc::downgrade(&cache),
            bytes,
        });
        Self { cache, stats }
    }

    /// The store's figures now: entries (moka's estimate, see [`len`](Self::len)), hits and
    /// misses (`get`, `exists`, `update`), writes, evictions (keys evicted or refused for the
    /// capacity), expirations, and `bytes` (the weighted size) for a
    /// [`with_byte_budget`](Self::with_byte_budget) store. Evictions and expirations are
    /// counted when moka applies them (see the type's docs: lazily);
    /// [`run_pending_tasks`](Self::run_pending_tasks) first for exact figures.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        self.stats.add_to(&mut s);
        s
    }

    /// A store whose capacity is a byte budget: each entry weighs its key's length plus its
    /// value's length plus [`ENTRY_OVERHEAD_BYTES`](Self::ENTRY_OVERHEAD_BYTES) (saturating
    /// at `u32::MAX`), and the store aims to hold at most `bytes` of weight. The config's
    /// `max_size` is ignored; its `ttl` applies as in [`new`](Self::new). Admission compares
    /// frequencies as in `new`; a new entry heavier than the victims it would replace must
    /// outweigh their combined frequency.
    pub fn with_byte_budget(config: &StateConfig, bytes: u64) -> Self {
        let builder = Cache::builder()
            .eviction_policy(EvictionPolicy::tiny_lfu())
            .time_to_live(config.ttl.min(MAX_TTL))
            .max_capacity(bytes)
            .weigher(|key: &String, value: &Arc<[u8]>| {
                let len = key.len().saturating_add(value.len());
                u32::try_from(len)
                    .unwrap_or(u32::MAX)
                    .saturating_add(Self::ENTRY_OVERHEAD_BYTES)
            });
        Self::counted(builder, true)
    }

    fn read(&self, found: bool) {
        let c = &self.stats.counters;
        if found {
            c.hits.add(1);
        } else {
            c.misses.add(1);
        }
    }

    /// moka's estimate of the number of entries: it may count entries that expired, were
    /// invalidated or are about to be evicted or refused until pending tasks run. Exact after
    /// [`run_pending_tasks`](Self::run_pending_tasks) with no writes in between.
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether [`len`](Self::len) is zero (same caveat).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight of the entries (bytes for a [`with_byte_budget`](Self::with_byte_budget)
    /// store, else one per entry); an estimate, like [`len`](Self::len).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies moka's pending maintenance now: admission or refusal of recent writes,
    /// eviction down to the capacity, removal of expired entries. Only needed for
    /// determinism (tests, exact [`len`](Self::len)); moka runs it during reads and writes.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

#[async_trait]
impl StateStorage for AdmissionState {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let value = self.cache.get(key).map(|value| value.to_vec());
        self.read(value.is_some());
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.cache.insert(key.to_owned(), Arc::from(value));
        self.stats.counters.writes.add(1);
        Ok(())
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.cache.invalidate(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        let found = self.cache.contains_key(key);
        self.read(found);
        Ok(found)
    }

    async fn clear(&self) -> StateResult<()> {
        self.cache.invalidate_all();
        Ok(())
    }

    /// Atomic per key within the process through moka's `and_compute_with` (computations on
    /// one key run one at a time); `f` runs exactly once, and on its error nothing is written.
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let mut out: Option<StateResult<Vec<u8>>> = None;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let current = current.map(|entry| entry.into_value().to_vec());
            self.read(current.is_some());
            match f(current) {
                Ok(next) => {
                    let stored: Arc<[u8]> = Arc::from(next.as_slice());
                    self.stats.counters.writes.add(1);
                    out = Some(Ok(next));
                    Op::Put(stored)
                }
                Err(err) => {
                    out = Some(Err(err));
                    Op::Nop
                }
            }
        });
        out.unwrap_or_else(|| Err(StateError::storage_for(key, "update function not run")))
    }

    /// The store's figures ([`AdmissionState::stats`]); clones share them.
    fn stats_source(&self) -> Option<Arc<dyn StatsSource>> {
        Some(Arc::clone(&self.stats) as Arc<dyn StatsSource>)
    }
}
