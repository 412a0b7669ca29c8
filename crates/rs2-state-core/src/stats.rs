//! Figures an application reads while its streams run: entries, hits, misses, writes,
//! evictions, expirations, errors, retries and bytes.
//!
//! A [`StateStats`] handle gathers them. Every operator stream has one (`stats()`); give
//! several operators the same handle through [`StateConfig::stats`](crate::StateConfig::stats)
//! and their figures add up in it. Stores keep their own counters (a [`StatsSource`]) and the
//! handle reads them when asked for a [`snapshot`](StateStats::snapshot), so counting costs the
//! store a plain increment and reading costs the reader, not the stream.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The figures at one instant (see [`StateStats::snapshot`]).
///
/// Counters (`hits` ... `retries`) only grow; `entries` and `bytes` are what the stores hold
/// now. Each figure is the sum over the stores and operators feeding the handle.
///
/// ```
/// use rs2_state_core::StatsSnapshot;
///
/// let s = StatsSnapshot { hits: 3, misses: 1, ..StatsSnapshot::default() };
/// assert_eq!(s.hit_rate(), Some(0.75));
/// assert_eq!(StatsSnapshot::default().hit_rate(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Keys the stores hold now (expired ones the store has not dropped yet included).
    pub entries: u64,
    /// Reads that found a live value.
    pub hits: u64,
    /// Reads that found none (never written, expired, evicted or deleted).
    pub misses: u64,
    /// Values stored (a new key or a new value for a key).
    pub writes: u64,
    /// Keys removed to keep a store within its `max_size` (or byte budget), or refused by an
    /// admission policy.
    pub evictions: u64,
    /// Values dropped because their TTL ran out.
    pub expirations: u64,
    /// Events whose state failed (an `Err` item), and failed calls of a closure's
    /// `StateAccess` (including `get` / `exists` failing open).
    pub errors: u64,
    /// Backend calls tried again after a transient error.
    pub retries: u64,
    /// Bytes the stores hold, when every store feeding the handle knows it (`None` when
    /// one does not).
    pub bytes: Option<u64>,
}

impl StatsSnapshot {
    /// `hits / (hits + misses)`, or `None` before the first read.
    pub fn hit_rate(&self) -> Option<f64> {
        let reads = self.hits.saturating_add(self.misses);
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }

    /// Adds `other`'s figures to these.
    pub fn add(&mut self, other: &StatsSnapshot) {
        self.entries = self.entries.saturating_add(other.entries);
        self.hits = self.hits.saturating_add(other.hits);
        self.misses = self.misses.saturating_add(other.misses);
        self.writes = self.writes.saturating_add(other.writes);
        self.evictions = self.evictions.saturating_add(other.evictions);
        self.expirations = self.expirations.saturating_add(other.expirations);
        self.errors = self.errors.saturating_add(other.errors);
        self.retries = self.retries.saturating_add(other.retries);
        self.add_bytes(other.bytes);
    }

    /// Adds `bytes` (if known) to [`bytes`](Self::bytes).
    pub fn add_bytes(&mut self, bytes: Option<u64>) {
        if let Some(b) = bytes {
            self.bytes = Some(self.bytes.unwrap_or(0).saturating_add(b));
        }
    }
}

impl fmt::Display for StatsSnapshot {
    /// One line: `entries=.. hits=.. misses=.. hit_rate=..% writes=.. evictions=..
    /// expirations=.. errors=.. retries=.. bytes=..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entries={} hits={} misses={}",
            self.entries, self.hits, self.misses
        )?;
        match self.hit_rate() {
            Some(rate) => write!(f, " hit_rate={:.1}%", rate * 100.0)?,
            None => f.write_str(" hit_rate=-")?,
        }
        write!(
            f,
            " writes={} evictions={} expirations={} errors={} retries={}",
            self.writes, self.evictions, self.expirations, self.errors, self.retries
        )?;
        match self.bytes {
            Some(b) => write!(f, " bytes={b}"),
            None => f.write_str(" bytes=-"),
        }
    }
}

/// Something that adds its figures into a snapshot: a store's counters.
///
/// A store returns one from [`StateStorage::stats_source`](crate::StateStorage::stats_source);
/// the handle keeps it (an `Arc`) and asks it at each [`StateStats::snapshot`]. Keep the
/// source apart from the store's data (counters only), held by the store, so a handle
/// outliving a pipeline does not keep its state alive: once the handle holds the last
/// reference, it takes the source's counts into its own and lets it go (a store's `entries`
/// and `bytes` are then gone with it).
pub trait StatsSource: Send + Sync {
    /// Adds this source's figures to `snapshot`.
    fn add_to(&self, snapshot: &mut StatsSnapshot);
}

/// One counter a reader may load while its writer counts.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (an atomic read-modify-write: for counters several threads write).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` with a plain load and store, no atomic read-modify-write: only for a counter
    /// with one writer at a time (written under a lock, or by the one owner of a table), so
    /// counting on a hot path costs what an ordinary increment does.
    #[inline]
    pub fn add_unshared(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets the value (a gauge such as `entries`).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value now.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// One counter per figure: the building block of a [`StatsSource`].
///
/// `bytes` is reported only for counters made with [`with_bytes`](Self::with_bytes).
///
/// ```
/// use rs2_state_core::{StatsCounters, StatsSnapshot, StatsSource};
///
/// let c = StatsCounters::default();
/// c.hits.add(2);
/// c.entries.set(5);
/// let mut s = StatsSnapshot::default();
/// c.add_to(&mut s);
/// assert_eq!((s.hits, s.entries, s.bytes), (2, 5, None));
/// ```
#[derive(Debug, Default)]
pub struct StatsCounters {
    /// Keys held now.
    pub entries: Counter,
    /// Reads that found a live value.
    pub hits: Counter,
    /// Reads that found none.
    pub misses: Counter,
    /// Values stored.
    pub writes: Counter,
    /// Keys evicted (or refused) for the size bound.
    pub evictions: Counter,
    /// Values dropped at the end of their TTL.
    pub expirations: Counter,
    /// Failed events and calls.
    pub errors: Counter,
    /// Calls tried again.
    pub retries: Counter,
    /// Bytes held now (reported only when [`has_bytes`](Self::has_bytes)).
    pub bytes: Counter,
    has_bytes: AtomicBool,
}

impl StatsCounters {
    /// Counters that report `bytes`.
    pub fn with_bytes() -> Self {
        let c = Self::default();
        c.has_bytes.store(true, Ordering::Relaxed);
        c
    }

    /// Whether `bytes` is reported.
    pub fn has_bytes(&self) -> bool {
        self.has_bytes.load(Ordering::Relaxed)
    }

    /// The counters as a snapshot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        self.add_to(&mut s);
        s
    }
}

impl StatsSource for StatsCounters {
    fn add_to(&self, s: &mut StatsSnapshot) {
        s.add(&StatsSnapshot {
            entries: self.entries.get(),
            hits: self.hits.get(),
            misses: self.misses.get(),
            writes: self.writes.get(),
            evictions: self.evictions.get(),
            expirations: self.expirations.get(),
            errors: self.errors.get(),
            retries: self.retries.get(),
            bytes: self.has_bytes().then(|| self.bytes.get()),
        });
    }
}

/// A handle on the figures of one or more stores and operators; clones share them.
///
/// Every operator stream has one (`stats()`), which it feeds with its store's figures (hits,
/// misses, writes, entries, evictions, expirations, bytes where known) and its own (errors,
/// retries). Set one handle on several configs with
/// [`StateConfig::stats`](crate::StateConfig::stats) and their operators add into it; a store
/// several of them share is counted once. Read it from any task or thread while the streams
/// run: [`snapshot`](Self::snapshot) costs one load per counter.
///
/// ```
/// use rs2_state_core::{StateConfig, StateStats};
///
/// let stats = StateStats::new();
/// let config = StateConfig::new().stats(stats.clone());
/// // ... run operators with `config`, then, from anywhere:
/// let now = stats.snapshot();
/// assert_eq!(now.errors, 0);
/// # let _ = config;
/// ```
#[derive(Clone, Default)]
pub struct StateStats {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// What operators count themselves: errors, retries, and the reads and writes of a store
    /// that keeps no figures of its own.
    counters: StatsCounters,
    /// Stores' figures, each once (by address).
    sources: Mutex<Vec<Arc<dyn StatsSource>>>,
}

impl fmt::Debug for StateStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StateStats").field(&self.snapshot()).finish()
    }
}

impl StateStats {
    /// A new handle with every figure at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle's own counters, which operators add their errors and retries to (and the
    /// reads and writes of a store without figures of its own).
    pub fn counters(&self) -> &StatsCounters {
        &self.inner.counters
    }

    /// Adds `source`'s figures to this handle's from now on. A source already registered (the
    /// same `Arc`) is not added twice, so a store shared by several operators counts once.
    pub fn register(&self, source: Arc<dyn StatsSource>) {
        let mut sources = self.sources();
        if !sources.iter().any(|s| same_source(s, &source)) {
            sources.push(source);
        }
    }

    /// The registered sources, those whose store is gone folded into the handle's own
    /// counters first: a handle shared by pipeline after pipeline keeps one counter block per
    /// live store, not one per store it ever saw.
    fn sources(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn StatsSource>>> {
        let mut sources = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counters = &self.inner.counters;
        sources.retain(|source| {
            // Only this handle holds it: its store was dropped, its figures are final.
            if Arc::strong_count(source) > 1 {
                return true;
            }
            // Pairs with the store's last `Arc` release (as `Arc`'s drop does): every count it
            // made is visible before its figures are folded in.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let mut done = StatsSnapshot::default();
            source.add_to(&mut done);
            counters.hits.add(done.hits);
            counters.misses.add(done.misses);
            counters.writes.add(done.writes);
            counters.evictions.add(done.evictions);
            counters.expirations.add(done.expirations);
            counters.errors.add(done.errors);
            counters.retries.add(done.retries);
            false
        });
        sources
    }

    /// The figures now: this handle's counters plus every registered source's. `bytes` is
    /// the sum of the sources' bytes when every one of them knows its bytes, else `None` (a
    /// partial figure would read as the whole).
    pub fn snapshot(&self) -> StatsSnapshot {
        let sources = self.sources();
        let mut s = self.inner.counters.snapshot();
        let mut bytes = (!sources.is_empty()).then_some(0u64);
        for source in sources.iter() {
            let mut one = StatsSnapshot::default();
            source.add_to(&mut one);
            bytes = bytes.and_then(|b| one.bytes.map(|more| b.saturating_add(more)));
            one.bytes = None;
            s.add(&one);
        }
        s.bytes = bytes;
        s
    }

    /// Marks this handle's `bytes` as unknown from now on: for a store that keeps no figures
    /// of its own, whose bytes are not known.
    pub fn register_unknown_bytes(&self) {
        static UNKNOWN: std::sync::OnceLock<Arc<StatsCounters>> = std::sync::OnceLock::new();
        let marker = UNKNOWN.get_or_init(Arc::default);
        self.register(Arc::clone(marker) as Arc<dyn StatsSource>);
    }

    /// Whether `other` is a clone of this handle.
    pub fn same_handle(&self, other: &StateStats) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

fn same_source(a: &Arc<dyn StatsSource>, b: &Arc<dyn StatsSource>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_registered_twice_counts_once_and_handles_share() {
        let stats = StateStats::new();
        let source = Arc::new(StatsCounters::with_bytes());
        source.writes.add(3);
        source.bytes.set(10);
        stats.register(source.clone());
        stats.register(source.clone());
        let other = stats.clone();
        other.counters().errors.add(1);
        let s = stats.snapshot();
        assert_eq!((s.writes, s.errors, s.bytes), (3, 1, Some(10)));
        assert!(stats.same_handle(&other));
        assert!(!stats.same_handle(&StateStats::new()));
    }

    #[test]
    fn a_dropped_stores_counts_stay_and_its_source_is_let_go() {
        let stats = StateStats::new();
        let source = Arc::new(StatsCounters::default());
        source.writes.add(5);
        source.entries.set(2);
        stats.register(source.clone());
        assert_eq!(stats.snapshot().entries, 2);
        drop(source); // the store goes
        let s = stats.snapshot();
        assert_eq!((s.writes, s.entries), (5, 0));
        assert!(stats.inner.sources.lock().unwrap().is_empty());
        assert_eq!(stats.snapshot().writes, 5, "folded once");
    }

    #[test]
    fn bytes_are_known_only_when_every_source_knows_them() {
        let stats = StateStats::new();
        assert_eq!(stats.snapshot().bytes, None, "no store");
        let sized = Arc::new(StatsCounters::with_bytes());
        sized.bytes.set(100);
        stats.register(sized.clone());
        assert_eq!(stats.snapshot().bytes, Some(100));
        let unsized_ = Arc::new(StatsCounters::default());
        stats.register(unsized_.clone());
        assert_eq!(
            stats.snapshot().bytes,
            None,
            "a partial sum would read as the whole"
        );
    }

    #[test]
    fn display_is_one_line_with_every_figure() {
        let s = StatsSnapshot {
            entries: 2,
            hits: 1,
            misses: 1,
            ..Default::default()
        };
        assert_eq!(
            s.to_string(),
            "entries=2 hits=1 misses=1 hit_rate=50.0% writes=0 evictions=0 expirations=0 \
             errors=0 retries=0 bytes=-"
        );
    }
}
