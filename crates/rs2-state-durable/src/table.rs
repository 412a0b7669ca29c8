//! The store's internals: the fjall keyspace, the writes not yet on disk, the flusher.
//!
//! In batched mode a write lands in its shard's map as a dirty entry and is acknowledged;
//! every interval the flusher marks each dirty entry as flushing, writes them all to fjall as
//! one atomic batch and syncs the journal, then marks them clean. Reads look in the map first,
//! then on disk, so a read never misses a write on its way down, and a key in use is read from
//! memory. A clean entry not used during a whole interval is dropped (its value is on disk),
//! so the map holds the keys of about the last two intervals. A key written many times in one
//! interval is written to disk once. In strict and synced modes writes go to fjall directly and
//! the maps stay empty.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rs2_state_core::{StateError, StateResult, StatsCounters, ValueChange};

use crate::record::{self, ExpiryFilterFactory, HEADER};
use crate::Durability;

/// Shards of the pending-write maps: writers on different keys rarely share a lock.
const SHARDS: usize = 16;
/// The keyspace inside the directory that holds the state.
const KEYSPACE: &str = "rs2-state";
/// fjall's key limit.
const MAX_KEY: usize = 65_536;

/// A key's newest value in memory: a record (see `record`), or `None` for a removal.
#[derive(Debug)]
struct Entry {
    record: Option<Vec<u8>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Written since the last flush began: not on disk.
    Dirty,
    /// In the flush under way (or in one that failed): not known to be on disk.
    Flushing,
    /// On disk; kept while it is used (`used`: read or written since the last flush).
    Clean { used: bool },
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
}

/// Where a read found a key's record.
enum Found<'a> {
    Memory(&'a [u8]),
    Disk(fjall::Slice),
    Absent,
}

pub(crate) struct Table {
    path: PathBuf,
    db: Database,
    keyspace: Keyspace,
    durability: Durability,
    ttl: Option<Duration>,
    max_pending: usize,
    shards: Box<[Mutex<Shard>]>,
    /// Dirty entries in every shard.
    pending_len: AtomicUsize,
    /// One flush at a time (the flusher, a writer over `max_pending`, `flush`, `clear`).
    flush_lock: Mutex<()>,
    /// Why the last flush failed, while it has not been retried successfully.
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    hasher: std::collections::hash_map::RandomState,
    base_wall_ms: u64,
    base: tokio::time::Instant,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// Reads that found a live value or none, and writes (see `DurableState::stats`).
    pub(crate) stats: Arc<StatsCounters>,
    /// Makes the next flush fail as a disk error would (tests of the failure path).
    #[cfg(test)]
    fail_next_flush: AtomicBool,
}

/// Locks a mutex, going on with the data if a panicking thread held it (every critical
/// section here leaves the maps consistent at each step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Table {
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        ttl: Option<Duration>,
        max_pending: usize,
    ) -> StateResult<Arc<Self>> {
        let db = Database::builder(path)
            .manual_journal_persist(!matches!(durability, Durability::Strict))
            .with_compaction_filter_factories(Arc::new(|_| Some(Arc::new(ExpiryFilterFactory))))
            .open()
            .map_err(|e| open_error(path, e))?;
        let keyspace = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| open_error(path, e))?;
        let base_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let table = Arc::new(Self {
            path: path.to_path_buf(),
            db,
            keyspace,
            durability,
            ttl,
            max_pending: max_pending.max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pending_len: AtomicUsize::new(0),
            flush_lock: Mutex::new(()),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            hasher: Default::default(),
            base_wall_ms,
            base: tokio::time::Instant::now(),
            flusher: Mutex::new(None),
            stats: Arc::default(),
            #[cfg(test)]
            fail_next_flush: AtomicBool::new(false),
        });
        let interval = match durability {
            Durability::Batched { interval } => interval,
            // A strict store's journal is in the OS at every acknowledgement; syncing it
            // every 100 ms bounds what a power loss (not a process crash) can take.
            Durability::Strict => Duration::from_millis(100),
            Durability::Synced => return Ok(table),
        };
        let weak = Arc::downgrade(&table);
        let handle = std::thread::Builder::new()
            .name("rs2-durable-flush".into())
            .spawn(move || flush_loop(weak, interval))
            .map_err(|e| {
                StateError::Storage(format!(
                    "durable store at {}: could not start its flush thread: {e}",
                    path.display()
                ))
            })?;
        *lock(&table.flusher) = Some(handle);
        Ok(table)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn default_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_wall_ms.saturating_add(elapsed.as_millis() as u64)
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(hash % SHARDS as u64) as usize])
    }

    fn storage_error(&self, key: &str, what: &str, e: impl std::fmt::Display) -> StateError {
        StateError::storage_for(
            key,
            format!("durable store at {}: {what}: {e}", self.path.display()),
        )
    }

    /// `key`'s record: in memory, on disk, or absent.
    fn find<'s>(&self, shard: &'s mut Shard, key: &str) -> StateResult<Found<'s>> {
        match shard.map.get_mut(key) {
            Some(entry) => {
                if let State::Clean { used } = &mut entry.state {
                    *used = true;
                }
                Ok(match &entry.record {
                    Some(record) => Found::Memory(record),
                    None => Found::Absent,
                })
            }
            None => match self.keyspace.get(key) {
                Ok(Some(record)) => Ok(Found::Disk(record)),
                Ok(None) => Ok(Found::Absent),
                Err(e) => Err(self.storage_error(key, "reading the key failed", e)),
            },
        }
    }

    /// The live value in `found`, or `None` if there is none or it expired at `now_ms`.
    fn live<'f>(
        &self,
        key: &str,
        found: &'f Found<'_>,
        now_ms: u64,
    ) -> StateResult<Option<&'f [u8]>> {
        let record = match found {
            Found::Memory(record) => *record,
            Found::Disk(record) => &record[..],
            Found::Absent => return Ok(None),
        };
        let (expires_at, value) = record::decode(record).map_err(|cause| {
            self.storage_error(
                key,
                "the stored value is not readable (left as it is; delete the key to reset it)",
                cause,
            )
        })?;
        Ok((expires_at > now_ms).then_some(value))
    }

    /// Calls `f` with the key's live value; returns whether there was one.
    pub(crate) fn read(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        let mut shard = self.shard(hash);
        let found = self.find(&mut shard, key)?;
        let live = self.live(key, &found, now_ms)?;
        self.count_read(live.is_some());
        Ok(match live {
            Some(value) => {
                f(value);
                true
            }
            None => false,
        })
    }

    /// Stores `value` (expiring `ttl` after `now_ms`) or, with `None`, removes the key.
    pub(crate) fn write(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        self.check_writable(key, value)?;
        let mut shard = self.shard(hash);
        self.write_locked(&mut shard, key, now_ms, value, ttl)?;
        drop(shard);
        self.after_write()
    }

    /// Atomic read-modify-write under the key's shard lock (see `LocalStorage::update`).
    pub(crate) fn update(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        ttl: Option<Duration>,
        buf: &mut Vec<u8>,
        f: &mut rs2_state_core::LocalUpdateFn<'_>,
    ) -> StateResult<()> {
        self.check_writable(key, Some(&[]))?;
        let mut shard = self.shard(hash);
        {
            let found = self.find(&mut shard, key)?;
            let current = self.live(key, &found, now_ms)?;
            self.count_read(current.is_some());
            buf.clear();
            f(current, buf)?;
        }
        self.check_writable(key, Some(buf))?;
        self.write_locked(&mut shard, key, now_ms, Some(buf), ttl)?;
        drop(shard);
        self.after_write()
    }

    /// In-place read-modify-write under the key's shard lock (see `LocalStorage::modify`):
    /// `f` edits a copy of the live value in `scratch`.
    pub(crate) fn modify(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        ttl: Option<Duration>,
        scratch: &mut Vec<u8>,
        f: &mut rs2_state_core::LocalModifyFn<'_>,
    ) -> StateResult<ValueChange> {
        self.check_writable(key, Some(&[]))?;
        let mut shard = self.shard(hash);
        scratch.clear();
        let existed = {
            let found = self.find(&mut shard, key)?;
            let current = self.live(key, &found, now_ms)?;
            self.count_read(current.is_some());
            scratch.extend_from_slice(current.unwrap_or_default());
            current.is_some()
        };
        let change = f(scratch, existed)?;
        match change {
            ValueChange::Keep => return Ok(change),
            ValueChange::Store => {
                self.check_writable(key, Some(scratch))?;
                self.write_locked(&mut shard, key, now_ms, Some(scratch), ttl)?;
            }
            ValueChange::Remove => self.write_locked(&mut shard, key, now_ms, None, None)?,
        }
        drop(shard);
        self.after_write().map(|()| change)
    }

    fn count_read(&self, found: bool) {
        if found {
            self.stats.hits.add(1);
        } else {
            self.stats.misses.add(1);
        }
    }

    fn check_writable(&self, key: &str, value: Option<&[u8]>) -> StateResult<()> {
        if key.len() > MAX_KEY {
            let mut end = 64;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            return Err(StateError::storage_for(
                &key[..end],
                format!(
                    "the key is {} bytes; a durable store takes keys of at most {MAX_KEY} bytes \
                     (hash long keys before keying state by them)",
                    key.len()
                ),
            ));
        }
        if value.is_some_and(|v| v.len() > u32::MAX as usize - HEADER) {
            return Err(StateError::storage_for(
                key,
                "the value is larger than the 4 GiB a durable store takes per key",
            ));
        }
        if self.failed.load(Ordering::Acquire) {
            let cause = lock(&self.failure).clone().unwrap_or_default();
            return Err(StateError::storage_for(
                key,
                format!(
                    "durable store at {}: writing to disk failed ({cause}); writes since the \
                     last successful flush are held in memory, not on disk, and new writes are \
                     refused until a flush succeeds (free disk space, then call flush())",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    fn write_locked(
        &self,
        shard: &mut Shard,
        key: &str,
        now_ms: u64,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let written = self.store_record(shard, key, now_ms, value, ttl);
        if written.is_ok() && value.is_some() {
            self.stats.writes.add(1);
        }
        written
    }

    /// `write_locked` but for the count (a write counts once it succeeded).
    fn store_record(
        &self,
        shard: &mut Shard,
        key: &str,
        now_ms: u64,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        match self.durability {
            Durability::Batched { .. } => {
                let fill = |slot: &mut Option<Vec<u8>>| match value {
                    Some(value) => {
                        // The record's buffer is reused: a hot key writes without allocating.
                        let record = slot.get_or_insert_with(Vec::new);
                        record.clear();
                        record::encode(value, record::expiry(now_ms, ttl), record);
                    }
                    None => *slot = None,
                };
                match shard.map.get_mut(key) {
                    Some(entry) => {
                        fill(&mut entry.record);
                        if entry.state != State::Dirty {
                            entry.state = State::Dirty;
                            self.pending_len.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        let mut record = None;
                        fill(&mut record);
                        let entry = Entry {
                            record,
                            state: State::Dirty,
                        };
                        shard.map.insert(key.to_owned(), entry);
                        self.pending_len.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            Durability::Strict | Durability::Synced => {
                let written = match value {
                    Some(value) => {
                        let mut record = Vec::new();
                        record::encode(value, record::expiry(now_ms, ttl), &mut record);
                        self.keyspace.insert(key, record)
                    }
                    None => self.keyspace.remove(key),
                };
                written.map_err(|e| self.storage_error(key, "writing the key failed", e))?;
                if self.durability == Durability::Synced {
                    self.db.persist(PersistMode::SyncData).map_err(|e| {
                        self.storage_error(key, "syncing the write to disk failed", e)
                    })?;
                }
                Ok(())
            }
        }
    }

    /// A writer that took the pending maps past their bound flushes them itself, so memory
    /// stays bounded however fast writes come.
    fn after_write(&self) -> StateResult<()> {
        if self.pending_len.load(Ordering::Relaxed) > self.max_pending {
            self.flush_pending().map(|_| ())
        } else {
            Ok(())
        }
    }

    /// Writes every pending write to disk as one atomic batch and syncs it; returns how many
    /// keys it wrote. On failure the writes stay in memory (read as before) and are retried by
    /// the next flush; new writes are refused until one succeeds.
    pub(crate) fn flush_pending(&self) -> StateResult<usize> {
        if !matches!(self.durability, Durability::Batched { .. }) {
            self.db
                .persist(PersistMode::SyncAll)
                .map_err(|e| self.flush_error(e))?;
            return Ok(0);
        }
        let _one_flush = lock(&self.flush_lock);
        let now_ms = self.now_ms();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        let mut written = 0;
        // Every shard locked at once: the batch is the state at one instant (a consistent cut
        // across keys), not shard 0 as of one moment and shard 15 as of a later one. Writers
        // wait for the copy (about a millisecond per 10,000 dirty keys), not for the disk.
        let mut shards: Vec<_> = self.shards.iter().map(lock).collect();
        for shard in &mut shards {
            let mut dirty = 0;
            shard.map.retain(|key, entry| match entry.state {
                State::Dirty | State::Flushing => {
                    dirty += usize::from(entry.state == State::Dirty);
                    entry.state = State::Flushing;
                    match &entry.record {
                        Some(record) if record::decode(record).is_ok_and(|(at, _)| at > now_ms) => {
                            batch.insert(&self.keyspace, key.as_str(), record.as_slice())
                        }
                        // A removal, or a value that expired before it reached disk: only the
                        // removal of the old value goes down.
                        _ => batch.remove(&self.keyspace, key.as_str()),
                    }
                    written += 1;
                    true
                }
                State::Clean { used: true } => {
                    entry.state = State::Clean { used: false };
                    true
                }
                // On disk and unused for a whole interval.
                State::Clean { used: false } => false,
            });
            self.pending_len.fetch_sub(dirty, Ordering::Relaxed);
            if shard.map.capacity() > 4 * shard.map.len() + 1024 {
                shard.map.shrink_to_fit();
            }
        }
        drop(shards);
        #[cfg(test)]
        let batch = match self.fail_next_flush.swap(false, Ordering::AcqRel) {
            true => Err(fjall::Error::Poisoned),
            false => Ok(batch),
        };
        #[cfg(not(test))]
        let batch: Result<_, fjall::Error> = Ok(batch);
        match batch.and_then(|batch| batch.commit()) {
            Ok(()) => {
                for shard in self.shards.iter() {
                    for entry in lock(shard).map.values_mut() {
                        // An entry written again since is dirty, not flushing, and stays so.
                        if entry.state == State::Flushing {
                            entry.state = State::Clean { used: false };
                        }
                    }
                }
                if self.failed.swap(false, Ordering::AcqRel) {
                    *lock(&self.failure) = None;
                }
                Ok(written)
            }
            Err(e) => {
                *lock(&self.failure) = Some(e.to_string());
                self.failed.store(true, Ordering::Release);
                Err(self.flush_error(e))
            }
        }
    }

    fn flush_error(&self, e: fjall::Error) -> StateError {
        StateError::Storage(format!(
            "durable store at {}: writing pending state to disk failed: {e}; the writes stay in \
             memory and the next flush retries them",
            self.path.display()
        ))
    }

    /// Removes every key, in memory and on disk.
    pub(crate) fn clear(&self) -> StateResult<()> {
        let _one_flush = lock(&self.flush_lock);
        let mut shards: Vec<_> = self.shards.iter().map(lock).collect();
        for shard in &mut shards {
            shard.map.clear();
        }
        self.pending_len.store(0, Ordering::Relaxed);
        self.keyspace.clear().map_err(|e| {
            StateError::Storage(format!(
                "durable store at {}: clearing the state failed: {e}",
                self.path.display()
            ))
        })?;
        if self.durability != Durability::Strict {
            self.db
                .persist(PersistMode::SyncAll)
                .map_err(|e| self.flush_error(e))?;
        }
        Ok(())
    }

    /// Live entries (a scan of the keyspace plus the pending writes; for tests and tools).
    pub(crate) fn live_keys(&self) -> StateResult<Vec<String>> {
        let _one_flush = lock(&self.flush_lock);
        let now_ms = self.now_ms();
        let shards: Vec<_> = self.shards.iter().map(lock).collect();
        let mut keys = Vec::new();
        for item in self.keyspace.iter() {
            let (key, record) = item.into_inner().map_err(|e| {
                StateError::Storage(format!(
                    "durable store at {}: scanning the state failed: {e}",
                    self.path.display()
                ))
            })?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let shard = &shards[(self.hash(&key) % SHARDS as u64) as usize];
            if !shard.map.contains_key(&key)
                && record::decode(&record).is_ok_and(|(at, _)| at > now_ms)
            {
                keys.push(key);
            }
        }
        for shard in &shards {
            for (key, entry) in &shard.map {
                if let Some(record) = &entry.record {
                    if record::decode(record).is_ok_and(|(at, _)| at > now_ms) {
                        keys.push(key.clone());
                    }
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.flusher).take() {
            // The flusher holds only a weak reference: woken, it finds the table gone and
            // ends. (If this drop runs on the flusher itself, it is ending anyway.)
            if handle.thread().id() != std::thread::current().id() {
                handle.thread().unpark();
                let _ = handle.join();
            }
        }
        // A drop cannot report an error: `DurableState::flush` before the end is how a
        // caller learns whether the last writes reached disk.
        let _ = self.flush_pending();
    }
}

fn flush_loop(table: Weak<Table>, interval: Duration) {
    loop {
        std::thread::park_timeout(interval);
        let Some(table) = table.upgrade() else {
            return;
        };
        // A failure is recorded by the table and reported to the next writer.
        let _ = table.flush_pending();
    }
}

fn open_error(path: &Path, e: fjall::Error) -> StateError {
    match e {
        fjall::Error::Locked => StateError::Storage(format!(
            "durable store at {}: the directory is in use by another process or another open \
             DurableState in this one; open a directory once and share the store (it is \
             cheap to clone), or give each process its own directory",
            path.display()
        )),
        e => StateError::Storage(format!(
            "durable store at {}: opening it failed: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batched(dir: &Path) -> Arc<Table> {
        let hour = Duration::from_secs(3600);
        Table::open(dir, Durability::Batched { interval: hour }, None, 100).unwrap()
    }

    /// Each flush is a consistent cut: a writer counting keys round robin never leaves disk
    /// with one key ahead of the prefix (a flush that copied shard after shard while the
    /// writer ran on did).
    #[test]
    fn every_flush_writes_a_consistent_cut_across_keys() {
        const KEYS: u64 = 7;
        let dir = tempfile::tempdir().unwrap();
        let table = batched(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, stop) = (Arc::clone(&table), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut counts = [0u64; KEYS as usize];
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let k = (i % KEYS) as usize;
                    counts[k] += 1;
                    let key = format!("k{k}");
                    let now = table.now_ms();
                    table
                        .write(
                            table.hash(&key),
                            &key,
                            now,
                            Some(&counts[k].to_le_bytes()),
                            None,
                        )
                        .unwrap();
                    i += 1;
                }
            })
        };
        for _ in 0..200 {
            table.flush_pending().unwrap();
            let on_disk: Vec<u64> = (0..KEYS)
                .map(|k| {
                    table
                        .keyspace
                        .get(format!("k{k}"))
                        .unwrap()
                        .map_or(0, |record| {
                            let (_, value) = record::decode(&record).unwrap();
                            u64::from_le_bytes(value.try_into().unwrap())
                        })
                })
                .collect();
            let total: u64 = on_disk.iter().sum();
            let prefix: Vec<u64> = (0..KEYS)
                .map(|k| total / KEYS + u64::from(k < total % KEYS))
                .collect();
            assert_eq!(
                on_disk, prefix,
                "the flushed counts are a prefix of the writes"
            );
        }
        stop.store(true, Ordering::Release);
        writer.join().unwrap();
    }

    #[test]
    fn a_failed_flush_keeps_its_writes_and_refuses_new_ones_until_a_flush_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let table = batched(dir.path());
        let (ha, hb) = (table.hash("a"), table.hash("b"));
        let now = table.now_ms();
        table.write(ha, "a", now, Some(b"1"), None).unwrap();
        table.fail_next_flush.store(true, Ordering::Release);
        let err = table.flush_pending().unwrap_err().to_string();
        assert!(err.contains("retries"), "{err}");

        let err = table.write(hb, "b", now, Some(b"2"), None).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("'b'") && err.contains("flush()"), "{err}");
        let mut seen = None;
        assert!(table
            .read(ha, "a", now, &mut |v| seen = Some(v.to_vec()))
            .unwrap());
        assert_eq!(
            seen.as_deref(),
            Some(&b"1"[..]),
            "still readable from memory"
        );

        assert_eq!(table.flush_pending().unwrap(), 1, "the retry writes it");
        table.write(hb, "b", now, Some(b"2"), None).unwrap();
        drop(table);
        let table = batched(dir.path());
        let mut seen = None;
        assert!(table
            .read(ha, "a", table.now_ms(), &mut |v| seen = Some(v.to_vec()))
            .unwrap());
        assert_eq!(seen.as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn the_pending_count_follows_dirty_entries_through_a_failed_flush() {
        let dir = tempfile::tempdir().unwrap();
        let table = batched(dir.path());
        let h = table.hash("k");
        let now = table.now_ms();
        table.write(h, "k", now, Some(b"old"), None).unwrap();
        table.fail_next_flush.store(true, Ordering::Release);
        let _ = table.flush_pending();
        // "k" is flushing (its flush failed); a new write makes it dirty again.
        let err = table.write(h, "k", now, Some(b"new"), None);
        assert!(err.is_err(), "writes refused while the failure stands");
        table.flush_pending().unwrap();
        table.write(h, "k", now, Some(b"new"), None).unwrap();
        assert_eq!(table.pending_len.load(Ordering::Relaxed), 1);
        table.flush_pending().unwrap();
        assert_eq!(table.pending_len.load(Ordering::Relaxed), 0);
        drop(table);
        let table = batched(dir.path());
        let mut seen = None;
        table
            .read(h, "k", table.now_ms(), &mut |v| seen = Some(v.to_vec()))
            .unwrap();
        assert_eq!(seen.as_deref(), Some(&b"new"[..]));
    }
}
