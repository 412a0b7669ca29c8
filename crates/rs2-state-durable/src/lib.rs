//! # rs2-state-durable: keyed state that survives a restart, with no server to run
//!
//! [`DurableState`] is a [`StateStorage`] kept in a directory on local disk, in
//! [fjall](https://docs.rs/fjall) (a pure-Rust LSM tree, like the RocksDB that Flink and Kafka
//! Streams embed; no C dependency). Plug it into any operator's config: stop the process,
//! start it again on the same directory, and every key's state is where it was.
//!
//! ```
//! use std::sync::Arc;
//! use futures::{stream, StreamExt};
//! use rs2_operators::StatefulStreamExt;
//! use rs2_state_core::{StateAccess, StateConfig};
//! use rs2_state_durable::DurableState;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rs2_state_core::StateError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let count = |store: &DurableState| {
//!     let config = StateConfig::new().with_custom_storage(Arc::new(store.clone()));
//!     stream::iter(["ann", "bob", "ann"])
//!         .stateful_fold_rs2(config, |user: &&str| user.to_string(), 0u64,
//!             |n, _user, _state: StateAccess| async move { n + 1 })
//!         .map(|n| n.expect("disk writable"))
//!         .collect::<Vec<u64>>()
//! };
//! let store = DurableState::open(dir.path())?;
//! assert_eq!(count(&store).await, [1, 1, 2]);
//! store.flush()?; // on disk now (a drop flushes too, but cannot report an error)
//! drop(store);
//!
//! let store = DurableState::open(dir.path())?; // a restart
//! assert_eq!(count(&store).await, [3, 2, 4]);
//! # Ok(()) }
//! ```
//!
//! ## What a crash can lose
//! Chosen with [`Durability`] when the store is opened:
//! * **[`Batched`](Durability::Batched)** (the default, every 100 ms): a write is acknowledged
//!   from memory; every interval all writes since the last flush go to disk as one atomic
//!   batch and are synced (`fsync`). A crash (`kill -9`, power loss) loses at most the writes
//!   of the last interval plus a flush in progress, and never part of a flush: the state on
//!   disk is always the state as of some flush, and a flush is the state at one instant (a
//!   consistent cut across keys: every write acknowledged before it, none after). A key
//!   written many times in an interval is written to disk once, so this mode runs at
//!   in-memory speed.
//! * **[`Strict`](Durability::Strict)**: a write is acknowledged only once it is in the
//!   store's journal in the operating system, so every acknowledged write survives the process
//!   being killed (`kill -9`, a panic, an OOM kill). The journal is synced every 100 ms, which
//!   bounds what a power loss can take.
//! * **[`Synced`](Durability::Synced)**: every write is synced to disk before it is
//!   acknowledged; survives power loss, at the disk's sync rate.
//!
//! ## What the store guarantees
//! * **One process owns a directory.** Opening a directory another process (or another open
//!   `DurableState` in this one) holds is an error saying so, never a shared corruption. Clone
//!   the store to share it within the process; clones are handles to one store.
//! * **TTL.** A write carrying a time to live (every operator transition, `StateAccess` writes
//!   to a remote-style store, [`set_with_ttl`](StateStorage::set_with_ttl)) expires that long
//!   after it; other writes take the store's [`ttl`](DurableStateBuilder::ttl) (none unless
//!   set). Expiry is a wall-clock stamp on the value, so it runs on across restarts. An
//!   expired value is never returned; compaction drops it from disk.
//! * **No `max_size`.** The store is bounded by disk, not by a key count; bound state with a
//!   TTL. Memory holds the keys written in about the last two flush intervals: a key stays
//!   while it is used and leaves after a whole interval unused (its value is on disk); at most
//!   [`max_pending`](DurableStateBuilder::max_pending) keys wait unflushed (a writer past it
//!   flushes first); plus fjall's caches.
//! * **Atomic transitions.** [`update`](StateStorage::update) and every operator transition
//!   are atomic (a lock per key in this process, which is the only one writing).
//! * **Failures are reported, never dropped.** A failed read is an error, not an absent
//!   value, so unreadable state is never overwritten. A failed flush keeps its writes in
//!   memory (reads still see them), retries them at the next flush, and refuses new writes with
//!   an error saying so until a flush succeeds; [`flush`](DurableState::flush) reports it.
#![warn(missing_docs)]

mod record;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rs2_state_core::{
    async_trait, KeyLock, LocalModifyFn, LocalStorage, LocalUpdateFn, StateError, StateResult,
    StateStorage, StatsSnapshot, StatsSource, UpdateFn, ValueChange,
};

use table::Table;

/// When an acknowledged write is on disk (see the [crate docs](crate#what-a-crash-can-lose)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Writes gathered in memory are written and synced every `interval`: a crash loses at most
    /// the last interval's writes. The default, with a 100 ms interval.
    Batched {
        /// Time between flushes (more than zero).
        interval: Duration,
    },
    /// Every acknowledged write survives the process being killed; a power loss loses at most
    /// the last 100 ms.
    Strict,
    /// Every acknowledged write is synced to disk.
    Synced,
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Batched {
            interval: Duration::from_millis(100),
        }
    }
}

/// Keyed state in a directory on local disk (see the [crate docs](crate)).
///
/// Cheap to clone: clones are handles to one open store. The store closes when the last
/// handle is dropped, writing what is pending first; call [`flush`](Self::flush) before that
/// to learn whether the last writes reached disk.
#[derive(Clone)]
pub struct DurableState {
    table: Arc<Table>,
}

impl std::fmt::Debug for DurableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableState")
            .field("path", &self.table.path())
            .field("durability", &self.table.durability())
            .finish_non_exhaustive()
    }
}

impl DurableState {
    /// Opens (or creates) the store in `path` with the default [`Durability`] and no TTL of
    /// its own. Everything a previous run wrote is there.
    ///
    /// Fails if the directory cannot be created or read, or another process has it open.
    pub fn open(path: impl AsRef<Path>) -> StateResult<Self> {
        Self::builder(path).open()
    }

    /// The store's figures since it was opened: hits and misses (reads, `exists` and
    /// read-modify-writes that found a live value or none) and writes. `entries`,
    /// evictions and expirations are not counted (the keys live on disk; an expired record
    /// reads as a miss and is dropped by compaction), and `bytes` is not known.
    pub fn stats(&self) -> StatsSnapshot {
        self.table.stats.snapshot()
    }

    /// A builder for a store in `path` with other settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rs2_state_durable::{Durability, DurableState};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = DurableState::builder(dir.path())
    ///     .durability(Durability::Strict)
    ///     .ttl(Duration::from_secs(24 * 3600))
    ///     .open()?;
    /// # Ok::<(), rs2_state_core::StateError>(())
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> DurableStateBuilder {
        DurableStateBuilder {
            path: path.as_ref().to_path_buf(),
            durability: Durability::default(),
            ttl: None,
            max_pending: 1 << 20,
        }
    }

    /// Writes everything pending to disk and syncs it (in every mode), returning the error if
    /// that fails.
    pub fn flush(&self) -> StateResult<()> {
        self.table.flush_pending().map(|_| ())
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        self.table.path()
    }

    /// The store's durability mode.
    pub fn durability(&self) -> Durability {
        self.table.durability()
    }

    /// Every key with a live value, sorted (a full scan: for tools and tests, not a hot path).
    pub fn keys(&self) -> StateResult<Vec<String>> {
        self.table.live_keys()
    }
}

/// Settings for [`DurableState`], from [`DurableState::builder`].
#[derive(Debug, Clone)]
pub struct DurableStateBuilder {
    path: PathBuf,
    durability: Durability,
    ttl: Option<Duration>,
    max_pending: usize,
}

impl DurableStateBuilder {
    /// When a write is on disk (default: [`Durability::Batched`] every 100 ms).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The time to live of writes that carry none of their own (see the
    /// [crate docs](crate#what-the-store-guarantees)); default: none, they never expire.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// In batched mode, how many distinct keys may wait in memory for the next flush before a
    /// writer flushes them itself (default 1,048,576).
    pub fn max_pending(mut self, keys: usize) -> Self {
        self.max_pending = keys;
        self
    }

    /// Opens (or creates) the store.
    pub fn open(self) -> StateResult<DurableState> {
        if let Durability::Batched { interval } = self.durability {
            if interval.is_zero() {
                return Err(StateError::Validation(
                    "a durable store's flush interval must be more than zero (Durability::Synced \
                     syncs every write)"
                        .into(),
                ));
            }
        }
        if self.ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(StateError::Validation(
                "a durable store's TTL must be more than zero".into(),
            ));
        }
        let table = Table::open(&self.path, self.durability, self.ttl, self.max_pending)?;
        Ok(DurableState { table })
    }
}

#[async_trait]
impl StateStorage for DurableState {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let mut value = None;
        let now = self.table.now_ms();
        self.table
            .read(self.table.hash(key), key, now, &mut |bytes| {
                value = Some(bytes.to_vec())
            })?;
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        let ttl = self.table.default_ttl();
        self.set_with_ttl(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        let now = self.table.now_ms();
        self.table.write(self.table.hash(key), key, now, None, None)
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        let now = self.table.now_ms();
        self.table.read(self.table.hash(key), key, now, &mut |_| {})
    }

    async fn clear(&self) -> StateResult<()> {
        self.table.clear()
    }

    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let ttl = self.table.default_ttl();
        self.update_with_ttl(key, ttl, f).await
    }

    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let now = self.table.now_ms();
        self.table
            .write(self.table.hash(key), key, now, Some(value), ttl)
    }

    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        let mut f = Some(f);
        let mut buf = Vec::new();
        let now = self.table.now_ms();
        self.table.update(
            self.table.hash(key),
            key,
            now,
            ttl,
            &mut buf,
            &mut |current, out| {
                let f = f
                    .take()
                    .ok_or_else(|| StateError::storage_for(key, "update function called twice"))?;
                *out = f(current.map(<[u8]>::to_vec))?;
                Ok(())
            },
        )?;
        Ok(buf)
    }

    fn as_local(&self) -> Option<&dyn LocalStorage> {
        Some(self)
    }

    /// The store's figures ([`DurableState::stats`]); clones share them.
    fn stats_source(&self) -> Option<Arc<dyn StatsSource>> {
        Some(Arc::clone(&self.table.stats) as Arc<dyn StatsSource>)
    }
}

/// The synchronous access operators use on the hot path. Writes through it take the store's
/// own [`ttl`](DurableStateBuilder::ttl), as `InMemoryState`'s take its config's.
impl LocalStorage for DurableState {
    fn hash_key(&self, key: &str) -> u64 {
        self.table.hash(key)
    }

    /// A value that cannot be read from disk reads as absent here; operators call
    /// [`try_read`](LocalStorage::try_read), which reports it.
    fn read(&self, hash: u64, key: &str, now_ms: u64, f: &mut dyn FnMut(&[u8])) -> bool {
        self.table.read(hash, key, now_ms, f).unwrap_or(false)
    }

    fn try_read(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        self.table.read(hash, key, now_ms, f)
    }

    fn write(&self, hash: u64, key: &str, now_ms: u64, value: &[u8]) -> StateResult<()> {
        let ttl = self.table.default_ttl();
        self.table.write(hash, key, now_ms, Some(value), ttl)
    }

    fn update(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        buf: &mut Vec<u8>,
        f: &mut LocalUpdateFn<'_>,
    ) -> StateResult<()> {
        let ttl = self.table.default_ttl();
        self.table.update(hash, key, now_ms, ttl, buf, f)
    }

    fn write_expiring(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        self.table.write(hash, key, now_ms, Some(value), ttl)
    }

    fn update_expiring(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        ttl: Option<Duration>,
        buf: &mut Vec<u8>,
        f: &mut LocalUpdateFn<'_>,
    ) -> StateResult<()> {
        self.table.update(hash, key, now_ms, ttl, buf, f)
    }

    fn modify(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        scratch: &mut Vec<u8>,
        f: &mut LocalModifyFn<'_>,
    ) -> StateResult<ValueChange> {
        let ttl = self.table.default_ttl();
        self.table.modify(hash, key, now_ms, ttl, scratch, f)
    }

    fn modify_expiring(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        ttl: Option<Duration>,
        scratch: &mut Vec<u8>,
        f: &mut LocalModifyFn<'_>,
    ) -> StateResult<ValueChange> {
        self.table.modify(hash, key, now_ms, ttl, scratch, f)
    }

    /// The provided `lock_key`'s lock (this store keeps it), taken if free.
    fn try_lock_key(&self, key: &str) -> Option<KeyLock> {
        KeyLock::try_in_process(self, key)
    }

    fn exists(&self, hash: u64, key: &str, now_ms: u64) -> bool {
        self.try_exists(hash, key, now_ms).unwrap_or(false)
    }

    fn try_exists(&self, hash: u64, key: &str, now_ms: u64) -> StateResult<bool> {
        self.table.read(hash, key, now_ms, &mut |_| {})
    }

    /// A removal that fails is lost here; operators call
    /// [`try_remove`](LocalStorage::try_remove), which reports it.
    fn remove(&self, hash: u64, key: &str) {
        let _ = self.try_remove(hash, key);
    }

    fn try_remove(&self, hash: u64, key: &str) -> StateResult<()> {
        let now = self.table.now_ms();
        self.table.write(hash, key, now, None, None)
    }

    fn now_ms(&self) -> u64 {
        self.table.now_ms()
    }
}
