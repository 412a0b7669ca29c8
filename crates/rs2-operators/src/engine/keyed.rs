//! The one keyed-state helper every operator uses: storage choice, key namespacing, the clock,
//! codec-typed loads and saves, and `StateAccess` recycling.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rs2_state_core::{
    Codec, KeyExtractor, KeyLock, LocalStorage, LockedWrite, Postcard, SharedStorage, StateAccess,
    StateConfig, StateError, StateResult, StateStats, StateStorage, StateStorageType,
};
use rs2_state_memory::{AdmissionState, InMemoryState, StateClock};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::observe::{note_error, observed, operator_span, retry_hook};

/// A key of one event, as the user wrote it and as the store sees it.
pub(crate) struct EventKey {
    /// The namespaced key; the user's key is `storage_key[key_start..]`.
    pub storage_key: String,
    pub key_start: usize,
    /// `storage_key`'s hash in an in-process store, computed by the first `load`/`save`.
    pub hash: Option<u64>,
    /// The key's lock in a store that is not in-process, held from
    /// [`KeyedState::load_for_update`] until the next save of the key releases it.
    pub lock: Option<KeyLock>,
}

impl EventKey {
    fn new(storage_key: String, key_start: usize) -> Self {
        Self {
            storage_key,
            key_start,
            hash: None,
            lock: None,
        }
    }

    pub fn user_key(&self) -> &str {
        &self.storage_key[self.key_start..]
    }

    /// `storage_key`'s hash in the in-process store `local`, computed once.
    pub fn local_hash(&mut self, local: &dyn LocalStorage) -> u64 {
        *self
            .hash
            .get_or_insert_with(|| local.hash_key(&self.storage_key))
    }
}

/// Per-operator view of one namespace in the configured storage.
pub(crate) struct KeyedState {
    storage: SharedStorage,
    /// The config's TTL, carried by every write to a store that is not in-process.
    ttl: Duration,
    /// The store was made for this operator alone and the operator may keep its own state
    /// typed, outside it (an `InMemory` config; not `InMemoryAdmission`, see `new`).
    private: bool,
    /// `""` when the store was made for this operator alone (`InMemory`, `InMemoryAdmission`),
    /// else `"{namespace}/{operator}:"`.
    prefix: String,
    clock: StateClock,
    /// The config was invalid: every event reports this.
    error: Option<StateError>,
    /// Recycled between events (see `StateAccess::rebind`).
    template: StateAccess,
    scratch: Vec<u8>,
    /// The previous event's key buffer, reused by `derived_key`.
    spare_key: String,
    /// Where this operator's figures go: the config's handle, or the operator's own (see
    /// `observe::with_stats`).
    stats: StateStats,
    /// The operator's name (`"fold"`, `"fold.user"`), for logs.
    op: Box<str>,
    /// `rs2.operator`, entered on every poll of the operator's stream.
    span: tracing::Span,
}

impl KeyedState {
    /// State for operator `op` (a short name such as `"fold"`) under `config`.
    pub fn new(config: &StateConfig, op: &str) -> Self {
        let error = config
            .validate()
            .err()
            .map(|e| StateError::Validation(format!("{op} operator: {e}")));
        let stats = config.stats.clone().unwrap_or_default();
        // (store, prefix, private): a private store is this operator's alone and its own
        // state may stay typed in tables of the operator's (`is_private`). An admission store
        // is this operator's alone too (so no prefix), but is not private: the operator's own
        // state must live in the store, under its admission policy, or a key flood would
        // still evict it from the typed tables' exact LRU.
        let (storage, prefix, private): (SharedStorage, String, bool) =
            match (config.storage_type, &config.custom_storage) {
                (StateStorageType::Custom, Some(custom)) => {
                    let ns = config
                        .namespace
                        .as_deref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default();
                    // Every call of this operator and its closures' `StateAccess` goes through
                    // the config's retry policy (an in-process store is left as it is), and is
                    // counted once outside it (one logical call, however many attempts).
                    let retrying = super::retry::RetryingStorage::wrap(
                        Arc::clone(custom),
                        config.retry,
                        Some(retry_hook(&stats, op)),
                    );
                    (observed(&retrying, &stats), format!("{ns}{op}:"), false)
                }
                (StateStorageType::InMemoryAdmission, _) => {
                    (Arc::new(AdmissionState::new(config)), String::new(), false)
                }
                _ => (Arc::new(InMemoryState::new(config)), String::new(), true),
            };
        if let (StateStorageType::InMemory | StateStorageType::InMemoryAdmission, Some(source)) =
            (config.storage_type, storage.stats_source())
        {
            stats.register(source);
        }
        let span = operator_span(op, config.namespace.as_deref());
        let clock = StateClock::new();
        let template = StateAccess::new(Arc::clone(&storage), String::new())
            .with_ttl(Some(config.ttl))
            .with_stats(Some(stats.clone()));
        Self {
            storage,
            ttl: config.ttl,
            private,
            prefix,
            clock,
            error,
            template,
            scratch: Vec::new(),
            spare_key: String::new(),
            stats,
            op: op.into(),
            span,
        }
    }

    /// The operator's figures (see `StatefulStreamExt`'s operators' `stats()`).
    pub fn stats(&self) -> &StateStats {
        &self.stats
    }

    /// A typed table of the operator's own (for a private store, see `is_private`), whose
    /// figures feed this operator's handle.
    pub fn typed_table<V>(&self, config: &StateConfig) -> rs2_state_memory::TypedTable<V> {
        let table = rs2_state_memory::TypedTable::new(config);
        self.stats.register(table.stats_source());
        table
    }

    /// The operator's name (`"fold"`).
    pub fn name(&self) -> &str {
        &self.op
    }

    /// The operator's span (`rs2.operator`).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Counts and logs a failed event (see `observe::note_error`).
    pub fn note_error(&self, err: &StateError) {
        note_error(&self.stats, &self.op, err);
    }

    /// Whether this operator's store is private to it and it may keep its own state typed
    /// (see `engine::own`): an `InMemory` config, where nothing but this operator reads or
    /// writes its namespace. `false` for a shared custom store and for `InMemoryAdmission`
    /// (whose store is the operator's alone, but whose admission policy must govern the
    /// operator's state too), where the operator's state goes through the store as bytes under
    /// its key lock.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// A `StateAccess` for the user's closure on user key `user_key` in this namespace (one
    /// whose every call reports the error when the config is invalid).
    pub fn access_for(&mut self, user_key: &str, now: u64) -> StateAccess {
        match self.derived_key(user_key) {
            Ok(key) => self.access(key, now),
            Err(err) => Self::failed_access(err),
        }
    }

    /// The instant an event is judged at: the store's clock for an in-process store, so
    /// writes and the store's expiry agree.
    #[inline]
    pub fn now(&self) -> u64 {
        match self.storage.as_local() {
            Some(local) => local.now_ms(),
            None => self.clock.now_ms(),
        }
    }

    /// The event's key, namespaced. The extractor's `String` is the key when the store is
    /// private to this operator; a shared store's namespaced key reuses a recycled buffer.
    pub fn key_of<T, K: KeyExtractor<T>>(
        &mut self,
        extractor: &K,
        event: &T,
    ) -> StateResult<EventKey> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let key = extractor.try_extract_key(event)?;
        if self.prefix.is_empty() {
            Ok(EventKey::new(key, 0))
        } else {
            self.derived_key(&key)
        }
    }

    /// A hash of `key` that tells keys of this namespace apart (two keys may share one, rarely):
    /// the in-process store's hash, which its reads and writes then reuse, else SipHash.
    pub fn key_hash(&self, key: &mut EventKey) -> u64 {
        match self.storage.as_local() {
            Some(local) => key.local_hash(local),
            None => {
                static SEED: OnceLock<RandomState> = OnceLock::new();
                SEED.get_or_init(RandomState::new)
                    .hash_one(&key.storage_key)
            }
        }
    }

    /// A key in this namespace for a user key already extracted (by another `KeyedState`).
    /// Reuses the previous event's key buffer, so this allocates only when a key outgrows it.
    pub fn derived_key(&mut self, user_key: &str) -> StateResult<EventKey> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let mut storage_key = std::mem::take(&mut self.spare_key);
        storage_key.clear();
        storage_key.push_str(&self.prefix);
        storage_key.push_str(user_key);
        Ok(EventKey::new(storage_key, self.prefix.len()))
    }

    /// Reads the operator's own state for `key` to write it back after an `await` (a fold's
    /// closure): in a store other pipelines may share (a custom store, remote or in-process),
    /// first takes the key's lock
    /// ([`StateStorage::lock_key`](rs2_state_core::StateStorage::lock_key)), which the caller
    /// puts in [`EventKey::lock`] and the next [`save`](Self::save) of the key releases, so
    /// pipelines sharing the store apply their events one at a time. A private store's
    /// operator is its only writer and needs no lock.
    pub fn load_for_update<S>(&mut self, key: &mut EventKey, now: u64) -> StateIo<Loaded<S>>
    where
        S: DeserializeOwned + Send + 'static,
    {
        // A private store has no other writer. A shared one (even in this process) needs the
        // key's lock: the closure may await, and another pipeline's event of the key with it.
        if self.private && self.storage.as_local().is_some() {
            return self
                .load(key, now)
                .map(|value| Loaded { value, lock: None });
        }
        // An in-process store whose key lock is free: lock and read with no `await`.
        if let Some(local) = self.storage.as_local() {
            if let Some(lock) = local.try_lock_key(&key.storage_key) {
                // On failure the lock is dropped here, which frees an in-process lock at once.
                let value = read_local(local, key, now).map(|value| Loaded {
                    value,
                    lock: Some(lock),
                });
                return StateIo::ready(value);
            }
        }
        let storage = Arc::clone(&self.storage);
        let storage_key = key.storage_key.clone();
        let key_start = key.key_start;
        StateIo::remote(async move {
            let key = &storage_key[key_start..];
            let (lock, current) = lock_and_get(&storage, &storage_key, key).await?;
            let value = match current.map(|bytes| decode(key, &bytes)).transpose() {
                Ok(value) => value,
                // Undecodable state is left as it is; the key is freed for whoever can read it.
                Err(err) => return fail_releasing(lock, err).await,
            };
            Ok(Loaded {
                value,
                lock: Some(lock),
            })
        })
    }

    /// A `StateAccess` for the closure, bound to `key` (reusing the previous event's allocation
    /// when the closure kept no clone).
    pub fn access(&mut self, key: EventKey, now: u64) -> StateAccess {
        let mut storage_key = key.storage_key;
        let access = self.template.rebind(
            &self.storage,
            &mut storage_key,
            key.key_start,
            key.hash,
            now,
        );
        self.spare_key = storage_key;
        access
    }

    /// A `StateAccess` for a closure when the key could not be had: every call reports `err`.
    pub fn failed_access(err: StateError) -> StateAccess {
        StateAccess::failed(String::new(), err)
    }

    /// Reads the operator's own state for `key`.
    pub fn load<S>(&mut self, key: &mut EventKey, now: u64) -> StateIo<Option<S>>
    where
        S: DeserializeOwned + Send + 'static,
    {
        if let Some(local) = self.storage.as_local() {
            return StateIo::ready(read_local(local, key, now));
        }
        let storage = Arc::clone(&self.storage);
        let storage_key = key.storage_key.clone();
        let key_start = key.key_start;
        StateIo::remote(async move {
            let key = &storage_key[key_start..];
            match storage
                .get(&storage_key)
                .await
                .map_err(|e| e.with_key(key))?
            {
                Some(bytes) => decode(key, &bytes).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Removes the operator's own state for `key`.
    pub fn remove(&mut self, key: &mut EventKey) -> StateIo<()> {
        if let Some(local) = self.storage.as_local() {
            let hash = key.local_hash(local);
            let removed = local.try_remove(hash, &key.storage_key);
            return StateIo::ready(removed.map_err(|e| e.with_key(key.user_key())));
        }
        let storage = Arc::clone(&self.storage);
        let storage_key = key.storage_key.clone();
        let key_start = key.key_start;
        StateIo::remote(async move {
            storage
                .delete(&storage_key)
                .await
                .map_err(|e| e.with_key(&storage_key[key_start..]))
        })
    }

    /// Writes the operator's own state for `key`.
    pub fn save<S: Serialize + ?Sized>(
        &mut self,
        key: &mut EventKey,
        value: &S,
        now: u64,
    ) -> StateIo<()> {
        save_in(&self.storage, self.ttl, &mut self.scratch, key, value, now)
    }

    /// The config's TTL (what writes to a store that is not in-process carry).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store this operator's state lives in, for an event's future that saves state
    /// after the operator handed it off (see [`save_detached`]).
    pub fn storage(&self) -> &SharedStorage {
        &self.storage
    }

    /// Writes the operator's own state for `key` as the bytes `build` (given the user key)
    /// writes into an empty buffer; nothing is written if it fails. For states in a layout of
    /// the operator's own (see `event_log`), where [`save`](Self::save) encodes a typed value.
    pub fn write_bytes(
        &mut self,
        key: &mut EventKey,
        now: u64,
        build: impl FnOnce(&str, &mut Vec<u8>) -> StateResult<()>,
    ) -> StateIo<()> {
        write_in(&self.storage, self.ttl, &mut self.scratch, key, now, build)
    }

    /// Read-modify-write of the operator's own state for `key`, as bytes edited in place: `f`
    /// gets the user key, a buffer holding the stored bytes (empty, with `false`, when there
    /// are none or they expired), and says what becomes of the key with its [`Change`] (with
    /// [`Change::Store`] the buffer is stored). `f` must leave the buffer as it was unless it
    /// returns `Ok(Store)`: an in-process store hands it the stored value itself (see
    /// `LocalStorage::modify`), so appending an event to a log costs that event, not the log.
    /// For operators whose state is too large to decode and re-encode on every event.
    ///
    /// In a store that is not in-process this is `get`, `f`, then `set_with_ttl` or `delete`
    /// under the key's [`lock_key`](rs2_state_core::StateStorage::lock_key), so the transition
    /// is atomic against every pipeline sharing the store (an in-process `modify` is atomic
    /// under the store's own lock).
    ///
    /// When `f` keeps the key or fails, the key's use is recorded as by `load` (its recency for
    /// `max_size`; its TTL does not start again).
    pub fn update_bytes<R, F>(&mut self, key: &mut EventKey, now: u64, f: F) -> StateIo<R>
    where
        R: Send + 'static,
        F: FnOnce(&str, &mut Vec<u8>, bool) -> StateResult<(Change, R)> + Send + 'static,
    {
        if let Some(local) = self.storage.as_local() {
            let hash = key.local_hash(local);
            let user_key = &key.storage_key[key.key_start..];
            let mut f = Some(f);
            let mut out = None;
            let result = local.modify_expiring(
                hash,
                &key.storage_key,
                now,
                Some(self.ttl),
                &mut self.scratch,
                &mut |bytes, existed| {
                    let f = f.take().ok_or_else(|| {
                        StateError::storage_for(user_key, "update function called twice")
                    })?;
                    let (change, r) = f(user_key, bytes, existed)?;
                    out = Some(r);
                    Ok(change)
                },
            );
            let result = result.and_then(|_| {
                out.ok_or_else(|| StateError::storage_for(user_key, "update function not run"))
            });
            return StateIo::ready(result);
        }
        let storage = Arc::clone(&self.storage);
        let storage_key = key.storage_key.clone();
        let key_start = key.key_start;
        let ttl = self.ttl;
        StateIo::remote(async move {
            let key = &storage_key[key_start..];
            let (lock, current) = lock_and_get(&storage, &storage_key, key).await?;
            let existed = current.is_some();
            let mut bytes = current.unwrap_or_default();
            let (change, r) = match f(key, &mut bytes, existed) {
                Ok(done) => done,
                Err(err) => return fail_releasing(lock, err).await,
            };
            let write = match change {
                Change::Keep => LockedWrite::Keep,
                Change::Store => LockedWrite::Set(&bytes),
                Change::Remove => LockedWrite::Delete,
            };
            storage
                .write_and_release(&storage_key, lock, write, Some(ttl))
                .await
                .map_err(|e| e.with_key(key))?;
            Ok(r)
        })
    }
}

/// How long a server-held key lock outlives a holder that crashed (see
/// `StateStorage::lock_key`); a transition finishes far sooner.
const LOCK_LEASE: Duration = Duration::from_secs(30);

/// Takes `storage_key`'s lock, then reads its bytes (errors name the user key `key`).
async fn lock_and_get(
    storage: &SharedStorage,
    storage_key: &str,
    key: &str,
) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
    storage
        .lock_and_get(storage_key, LOCK_LEASE)
        .await
        .map_err(|e| e.with_key(key))
}

/// Ends a transition that failed before its write: releases the key's lock now (a
/// server-held lock would otherwise block the key for its whole lease) and returns `err`,
/// which is the one to report (a failed release only delays the key).
async fn fail_releasing<T>(lock: KeyLock, err: StateError) -> StateResult<T> {
    let _ = lock.release().await;
    Err(err)
}

/// A key's state read by [`KeyedState::load_for_update`], with the key's lock in a store that
/// is not in-process.
pub(crate) struct Loaded<S> {
    pub value: Option<S>,
    pub lock: Option<KeyLock>,
}

/// Writes `value` as `key`'s state in `storage`, encoding into `scratch`.
fn save_in<S: Serialize + ?Sized>(
    storage: &SharedStorage,
    ttl: Duration,
    scratch: &mut Vec<u8>,
    key: &mut EventKey,
    value: &S,
    now: u64,
) -> StateIo<()> {
    write_in(storage, ttl, scratch, key, now, |user_key, buf| {
        encode(user_key, value, buf)
    })
}

/// Reads and decodes `key`'s value from an in-process store (a failed read is an `Err`
/// naming the key, never an absent value).
fn read_local<S: DeserializeOwned>(
    local: &dyn LocalStorage,
    key: &mut EventKey,
    now: u64,
) -> StateResult<Option<S>> {
    let hash = key.local_hash(local);
    let mut value = None;
    let read = local.try_read(hash, &key.storage_key, now, &mut |bytes| {
        value = Some(decode::<S>(key.user_key(), bytes))
    });
    match read {
        Ok(_) => value.transpose(),
        Err(err) => Err(err.with_key(key.user_key())),
    }
}

/// Writes to `key` in `storage` the bytes `build` (given the user key) writes into `scratch`,
/// cleared first; nothing is written if it fails. Releases the key's lock, if it holds one,
/// after the write (or when the write fails).
fn write_in(
    storage: &SharedStorage,
    ttl: Duration,
    scratch: &mut Vec<u8>,
    key: &mut EventKey,
    now: u64,
    build: impl FnOnce(&str, &mut Vec<u8>) -> StateResult<()>,
) -> StateIo<()> {
    scratch.clear();
    if let Err(err) = build(key.user_key(), scratch) {
        // Nothing to write; a held lock is freed now rather than at the end of its lease.
        return match key.lock.take() {
            Some(lock) => StateIo::remote(fail_releasing(lock, err)),
            None => StateIo::ready(Err(err)),
        };
    }
    // An in-process store writes here; a held in-process lock is freed by dropping it once
    // the write is done. Any other held lock is released by `write_and_release`, below.
    if let Some(local) = storage.as_local() {
        if key.lock.as_ref().is_none_or(KeyLock::is_in_process) {
            let hash = key.local_hash(local);
            let written = local.write_expiring(hash, &key.storage_key, now, scratch, Some(ttl));
            drop(key.lock.take());
            return StateIo::ready(written);
        }
    }
    let storage = Arc::clone(storage);
    let storage_key = key.storage_key.clone();
    let key_start = key.key_start;
    let bytes = scratch.clone();
    let lock = key.lock.take();
    StateIo::remote(async move {
        let key = &storage_key[key_start..];
        match lock {
            Some(lock) => {
                storage
                    .write_and_release(&storage_key, lock, LockedWrite::Set(&bytes), Some(ttl))
                    .await
            }
            None => storage.set_with_ttl(&storage_key, &bytes, Some(ttl)).await,
        }
        .map_err(|e| e.with_key(key))
    })
}

thread_local! {
    /// Encoding buffer for [`save_detached`]: an in-process store copies the bytes, so one
    /// buffer per thread serves every event without allocating.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`KeyedState::save`] for a future that runs apart from its operator (the keyed-concurrency
/// operators): writes `value` as `key`'s state in `storage` (from [`KeyedState::storage`]),
/// encoding into a per-thread buffer.
pub(crate) fn save_detached<S: Serialize + ?Sized>(
    storage: &SharedStorage,
    ttl: Duration,
    key: &mut EventKey,
    value: &S,
    now: u64,
) -> StateIo<()> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let io = save_in(storage, ttl, &mut scratch, key, value, now);
            if scratch.capacity() > 64 * 1024 {
                *scratch = Vec::new();
            }
            io
        }
        // Re-entered (a value whose `Serialize` saves state): use a fresh buffer.
        Err(_) => save_in(storage, ttl, &mut Vec::new(), key, value, now),
    })
}

/// Ends a transition that read `key` under its lock with
/// [`KeyedState::load_for_update`] and worked on the value apart from its operator (a group of
/// events of one key, in the keyed-concurrency operators): writes `bytes` (`None`: the value
/// is unchanged) and releases the lock, in one `write_and_release`.
pub(crate) fn commit_detached(
    storage: &SharedStorage,
    ttl: Duration,
    key: &mut EventKey,
    bytes: Option<Vec<u8>>,
) -> StateIo<()> {
    let storage = Arc::clone(storage);
    let storage_key = key.storage_key.clone();
    let key_start = key.key_start;
    let lock = key.lock.take();
    StateIo::remote(async move {
        let key = &storage_key[key_start..];
        let write = match &bytes {
            Some(bytes) => LockedWrite::Set(bytes),
            None => LockedWrite::Keep,
        };
        match lock {
            Some(lock) => {
                storage
                    .write_and_release(&storage_key, lock, write, Some(ttl))
                    .await
            }
            None => match write {
                LockedWrite::Set(bytes) => {
                    storage.set_with_ttl(&storage_key, bytes, Some(ttl)).await
                }
                _ => Ok(()),
            },
        }
        .map_err(|e| e.with_key(key))
    })
}

/// What an [`update_bytes`](KeyedState::update_bytes) function does with the key.
pub(crate) use rs2_state_core::ValueChange as Change;

/// Replaces `bytes` with `value`'s encoding, for an [`update_bytes`](KeyedState::update_bytes)
/// function: on an error `bytes` is left as it was (the encoding goes after the old bytes,
/// which are cut only once it succeeded).
pub(crate) fn replace_encoded<S: Serialize + ?Sized>(
    key: &str,
    bytes: &mut Vec<u8>,
    value: &S,
) -> StateResult<()> {
    let old = bytes.len();
    encode(key, value, bytes).inspect_err(|_| bytes.truncate(old))?;
    bytes.drain(..old);
    Ok(())
}

/// Decodes user key `key`'s stored state.
pub(crate) fn decode<S: DeserializeOwned>(key: &str, bytes: &[u8]) -> StateResult<S> {
    Postcard::decode(bytes).map_err(|e| StateError::decode_for(key, std::any::type_name::<S>(), e))
}

pub(crate) fn encode<S: Serialize + ?Sized>(
    key: &str,
    value: &S,
    buf: &mut Vec<u8>,
) -> StateResult<()> {
    Postcard::encode(value, buf)
        .map_err(|e| StateError::encode_for(key, std::any::type_name::<S>(), e))
}

/// A state read or write: done already (in-process store) or in flight (remote store).
pub(crate) enum StateIo<T> {
    Ready(Option<StateResult<T>>),
    Remote(Pin<Box<dyn Future<Output = StateResult<T>> + Send>>),
}

impl<T> StateIo<T> {
    pub fn ready(result: StateResult<T>) -> Self {
        StateIo::Ready(Some(result))
    }

    pub fn remote(fut: impl Future<Output = StateResult<T>> + Send + 'static) -> Self {
        StateIo::Remote(Box::pin(fut))
    }

    /// The I/O with its result mapped by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> StateIo<U>
    where
        T: 'static,
        U: 'static,
    {
        match self {
            StateIo::Ready(result) => StateIo::Ready(result.map(|r| r.map(f))),
            StateIo::Remote(fut) => StateIo::remote(async move { fut.await.map(f) }),
        }
    }

    /// The result without polling: `Ok` when the I/O was done already (an in-process store),
    /// `Err(self)` when it is in flight.
    pub fn into_ready(self) -> Result<StateResult<T>, Self> {
        match self {
            StateIo::Ready(Some(result)) => Ok(result),
            io => Err(io),
        }
    }
}

// Nothing in a `StateIo` is pinned in place: the result is moved out and the remote future is
// boxed.
impl<T> Unpin for StateIo<T> {}

impl<T> Future for StateIo<T> {
    type Output = StateResult<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            StateIo::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(StateError::Storage(
                    "state operation polled after completion".into(),
                ))
            })),
            StateIo::Remote(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// An event waiting on a read or write of its key's state: the step every operator goes
/// through between taking an event and acting on it.
pub(crate) struct InFlight<T, O> {
    event: T,
    key: EventKey,
    now: u64,
    io: StateIo<O>,
}

/// A finished [`InFlight`]: the event, its key, its instant, and the I/O's result.
pub(crate) struct Landed<T, O> {
    pub event: T,
    pub key: EventKey,
    pub now: u64,
    pub result: StateResult<O>,
}

impl<T, O> InFlight<T, O> {
    /// `event`'s I/O `io` on `key`, judged at `now`.
    pub fn new(event: T, key: EventKey, now: u64, io: StateIo<O>) -> Self {
        Self {
            event,
            key,
            now,
            io,
        }
    }

    /// The finished I/O without polling: `Ok` when it was done already (an in-process store),
    /// `Err(self)` when it is in flight.
    pub fn try_land(self) -> Result<Landed<T, O>, Self> {
        match self.io {
            StateIo::Ready(Some(result)) => Ok(Landed {
                event: self.event,
                key: self.key,
                now: self.now,
                result,
            }),
            io => Err(Self { io, ..self }),
        }
    }

    /// Polls the I/O: `Ok` once it finished, `Err(self)` (to be polled again) while pending.
    pub fn poll(mut self, cx: &mut Context<'_>) -> Result<Landed<T, O>, Self> {
        match Pin::new(&mut self.io).poll(cx) {
            Poll::Ready(result) => Ok(Landed {
                event: self.event,
                key: self.key,
                now: self.now,
                result,
            }),
            Poll::Pending => Err(self),
        }
    }
}

/// Whole milliseconds covering `d` (a positive sub-millisecond duration counts as 1 ms).
pub(crate) fn ceil_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
