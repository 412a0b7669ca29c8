//! `StateAccess`: a closure's typed handle on one key's state.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, Postcard};
use crate::error::{StateError, StateResult};
use crate::stats::StateStats;
use crate::storage::{LocalStorage, StateStorage};

/// A shared storage handle.
pub type SharedStorage = Arc<dyn StateStorage + Send + Sync>;

/// Typed access to one key's state, handed to a stateful operator's closure.
///
/// Values are encoded with the codec `C` (postcard by default). Cloning is cheap (one reference
/// count) and clones share everything, including the read-failure rule below.
///
/// * [`get`](Self::get) returns `None` for a missing key, and also when the backend failed or
///   the stored bytes could not be decoded; in those two cases a later [`set`](Self::set) or
///   [`update`](Self::update) through this access returns an error instead of overwriting state
///   it could not read. [`try_get`](Self::try_get) reports such failures directly;
///   [`delete`](Self::delete) is the explicit way to reset unreadable state.
/// * [`update`](Self::update) is atomic per key, even when several streams or tasks share one
///   storage: its closure runs once, under the key's lock. Do not touch the same key through
///   another access from inside the closure.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use rs2_state_core::{StateAccess, SharedStorage};
/// # use rs2_state_core::{async_trait, StateResult, StateStorage};
/// # #[derive(Default)] struct MapStore(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);
/// # #[async_trait] impl StateStorage for MapStore {
/// #   async fn get(&self, k: &str) -> StateResult<Option<Vec<u8>>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
/// #   async fn set(&self, k: &str, v: &[u8]) -> StateResult<()> { self.0.lock().unwrap().insert(k.into(), v.to_vec()); Ok(()) }
/// #   async fn delete(&self, k: &str) -> StateResult<()> { self.0.lock().unwrap().remove(k); Ok(()) }
/// #   async fn exists(&self, k: &str) -> StateResult<bool> { Ok(self.0.lock().unwrap().contains_key(k)) }
/// #   async fn clear(&self) -> StateResult<()> { self.0.lock().unwrap().clear(); Ok(()) }
/// # }
/// let storage: SharedStorage = Arc::new(MapStore::default());
/// let access: StateAccess = StateAccess::new(storage, "user-1".to_string());
/// let count = access.update(|n: Option<u64>| n.unwrap_or(0) + 1).await.unwrap();
/// assert_eq!(count, 1);
/// assert_eq!(access.get::<u64>().await, Some(1));
/// # });
/// ```
pub struct StateAccess<C: Codec = Postcard> {
    inner: Arc<Inner>,
    _codec: PhantomData<fn() -> C>,
}

struct Inner {
    /// `None` when the access is invalid (see `error`).
    storage: Option<SharedStorage>,
    /// The key as the store sees it: an operator's namespace followed by the user's key.
    storage_key: String,
    /// Where the user's key starts in `storage_key`.
    key_start: usize,
    /// `storage_key`'s hash in an in-process store (see `LocalStorage::hash_key`), computed on
    /// first use: a closure that never touches its state never pays for hashing.
    hash: AtomicU64,
    hashed: AtomicBool,
    /// The instant the operator started this event; `None`: ask the store on every call.
    now_ms: Option<u64>,
    /// The time to live writes carry to a store that is not in-process (see
    /// `StateStorage::set_with_ttl`).
    ttl: Option<Duration>,
    /// Set when the config or the key extractor failed: every call reports it.
    error: Option<StateError>,
    /// Whether `get` hid a failure; later writes through this access are then refused.
    read_failed: AtomicBool,
    read_error: Mutex<Option<StateError>>,
    /// Where failed calls are counted (`errors`).
    stats: Option<StateStats>,
}

impl Inner {
    fn new(storage: Option<SharedStorage>, storage_key: String, error: Option<StateError>) -> Self {
        Self {
            storage,
            storage_key,
            key_start: 0,
            hash: AtomicU64::new(0),
            hashed: AtomicBool::new(false),
            now_ms: None,
            ttl: None,
            error,
            read_failed: AtomicBool::new(false),
            read_error: Mutex::new(None),
            stats: None,
        }
    }
}

thread_local! {
    /// Encoding buffer for in-process stores: the encoded value is copied into the store, so
    /// one buffer per thread serves every access without allocating.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let result = f(&mut buf);
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            result
        }
        // Re-entered (an update closure writing another key): use a fresh buffer.
        Err(_) => f(&mut Vec::new()),
    })
}

impl<C: Codec> Clone for StateAccess<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _codec: PhantomData,
        }
    }
}

impl<C: Codec> fmt::Debug for StateAccess<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateAccess")
            .field("key", &self.key())
            .field("storage_key", &self.inner.storage_key)
            .field("codec", &C::NAME)
            .field("error", &self.inner.error)
            .finish()
    }
}

impl StateAccess {
    /// Access to `key` in `storage` (the key is used as is, without a namespace), with the
    /// default codec; [`with_codec`](Self::with_codec) switches codecs.
    pub fn new(storage: SharedStorage, key: String) -> Self {
        Self::from_inner(Inner::new(Some(storage), key, None))
    }

    /// An access whose every call fails with `error` (`get` returns `None`). Operators hand
    /// this to a closure when the config is invalid or the key could not be extracted.
    pub fn failed(key: String, error: StateError) -> Self {
        Self::from_inner(Inner::new(None, key, Some(error)))
    }
}

impl<C: Codec> StateAccess<C> {
    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            _codec: PhantomData,
        }
    }

    /// For operator authors: points this access at another key, reusing its allocation when
    /// no clone of it is alive, and returns the access to hand to the closure.
    ///
    /// `storage_key` is the full key in the store and `key_start` where the user's key begins
    /// in it; on return it holds the previous key's `String` (empty if none could be reclaimed),
    /// so the caller can reuse its buffer. `hash` is the key's [`LocalStorage::hash_key`] if
    /// the caller already computed it (else it is computed on first use), and `now_ms` the
    /// instant the event is judged at.
    pub fn rebind(
        &mut self,
        storage: &SharedStorage,
        storage_key: &mut String,
        key_start: usize,
        hash: Option<u64>,
        now_ms: u64,
    ) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                if !inner
                    .storage
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, storage))
                {
                    inner.storage = Some(Arc::clone(storage));
                }
                std::mem::swap(&mut inner.storage_key, storage_key);
                inner.key_start = key_start;
                *inner.hash.get_mut() = hash.unwrap_or(0);
                *inner.hashed.get_mut() = hash.is_some();
                inner.now_ms = Some(now_ms);
                inner.error = None;
                if *inner.read_failed.get_mut() {
                    *inner.read_failed.get_mut() = false;
                    *inner
                        .read_error
                        .get_mut()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                }
            }
            None => {
                let mut inner = Inner::new(None, std::mem::take(storage_key), None);
                inner.storage = Some(Arc::clone(storage));
                inner.ttl = self.inner.ttl;
                inner.stats = self.inner.stats.clone();
                inner.key_start = key_start;
                *inner.hash.get_mut() = hash.unwrap_or(0);
                *inner.hashed.get_mut() = hash.is_some();
                inner.now_ms = Some(now_ms);
                *self = Self::from_inner(inner);
            }
        }
        self.clone()
    }

    /// The same access whose writes ask the store to expire the value `ttl` after the write
    /// (passed to [`StateStorage::set_with_ttl`] and [`StateStorage::update_with_ttl`]; an
    /// in-process store expires by its own config instead). Operators set their config's
    /// `ttl`; `None`, the default of [`StateAccess::new`], asks for no expiry. Clones made
    /// before this call keep their own setting.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use rs2_state_core::{StateAccess, SharedStorage};
    /// # fn demo(storage: SharedStorage) {
    /// let access: StateAccess = StateAccess::new(storage, "user-1".into())
    ///     .with_ttl(Some(Duration::from_secs(300)));
    /// assert_eq!(access.ttl(), Some(Duration::from_secs(300)));
    /// # }
    /// ```
    pub fn with_ttl(self, ttl: Option<Duration>) -> Self {
        self.edited(|inner| inner.ttl = ttl)
    }

    /// The same access counting each failed call (`try_get`, `set`, `update`, `try_exists`,
    /// `delete`, and `get` / `exists` failing open) as an error in `stats`. Operators set
    /// their stats handle. Clones made before this call keep their own setting.
    pub fn with_stats(self, stats: Option<StateStats>) -> Self {
        self.edited(|inner| inner.stats = stats)
    }

    /// This access with `edit` applied to its settings: in place when no clone of it is alive,
    /// else on a copy of its key and settings (clones keep theirs).
    fn edited(mut self, edit: impl FnOnce(&mut Inner)) -> Self {
        if Arc::get_mut(&mut self.inner).is_none() {
            let old = &self.inner;
            let mut inner = Inner::new(
                old.storage.clone(),
                old.storage_key.clone(),
                old.error.clone(),
            );
            inner.key_start = old.key_start;
            inner.now_ms = old.now_ms;
            inner.ttl = old.ttl;
            inner.stats = old.stats.clone();
            self = Self::from_inner(inner);
        }
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            edit(inner);
        }
        self
    }

    /// Counts `result`'s error, if any, in the access's stats handle.
    #[inline]
    fn counted<T>(&self, result: StateResult<T>) -> StateResult<T> {
        if result.is_err() {
            if let Some(stats) = &self.inner.stats {
                stats.counters().errors.add(1);
            }
        }
        result
    }

    /// The time to live this access's writes carry (see [`with_ttl`](Self::with_ttl)).
    pub fn ttl(&self) -> Option<Duration> {
        self.inner.ttl
    }

    /// The same state read and written with another codec.
    pub fn with_codec<C2: Codec>(&self) -> StateAccess<C2> {
        StateAccess {
            inner: Arc::clone(&self.inner),
            _codec: PhantomData,
        }
    }

    /// The user's key (without the operator's namespace).
    pub fn key(&self) -> &str {
        &self.inner.storage_key[self.inner.key_start..]
    }

    /// The key as the store sees it (namespace included).
    pub fn storage_key(&self) -> &str {
        &self.inner.storage_key
    }

    fn storage(&self) -> StateResult<&SharedStorage> {
        match (&self.inner.error, &self.inner.storage) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(storage)) => Ok(storage),
            (None, None) => Err(StateError::Storage(format!(
                "key {}: this access has no storage",
                crate::KeyDisplay(self.key())
            ))),
        }
    }

    fn hash(&self, local: &dyn LocalStorage) -> u64 {
        if self.inner.hashed.load(Ordering::Acquire) {
            return self.inner.hash.load(Ordering::Relaxed);
        }
        let hash = local.hash_key(&self.inner.storage_key);
        self.inner.hash.store(hash, Ordering::Relaxed);
        self.inner.hashed.store(true, Ordering::Release);
        hash
    }

    fn now(&self, local: &dyn LocalStorage) -> u64 {
        self.inner.now_ms.unwrap_or_else(|| local.now_ms())
    }

    fn decode<S: DeserializeOwned>(&self, bytes: &[u8]) -> StateResult<S> {
        C::decode(bytes)
            .map_err(|e| StateError::decode_for(self.key(), std::any::type_name::<S>(), e))
    }

    fn encode<S: Serialize + ?Sized>(&self, value: &S, buf: &mut Vec<u8>) -> StateResult<()> {
        buf.clear();
        C::encode(value, buf)
            .map_err(|e| StateError::encode_for(self.key(), std::any::type_name::<S>(), e))
    }

    fn record_read_failure(&self, err: StateError) {
        *self
            .inner
            .read_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(err);
        self.inner.read_failed.store(true, Ordering::Release);
    }

    fn check_writable(&self) -> StateResult<()> {
        if !self.inner.read_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self
            .inner
            .read_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map_or_else(String::new, ToString::to_string);
        Err(StateError::Validation(format!(
            "key {}: refusing to overwrite state that could not be read ({cause}); call \
             try_get to see the failure, or delete() to reset the key explicitly",
            crate::KeyDisplay(self.key())
        )))
    }

    /// The key's state, or `None` if it has none, it expired, or it could not be read (see the
    /// type's docs: a later write through this access is then refused).
    ///
    /// **Fails open: a backend error reads as `None`**; use [`try_get`](Self::try_get) where
    /// an outage must not look like "no state".
    pub async fn get<S: DeserializeOwned>(&self) -> Option<S> {
        match self.try_get().await {
            Ok(value) => value,
            Err(err) => {
                self.record_read_failure(err);
                None
            }
        }
    }

    /// The key's state, `Ok(None)` if it has none, or the backend or decode error.
    pub async fn try_get<S: DeserializeOwned>(&self) -> StateResult<Option<S>> {
        // Each public call counts its error once; the in-process path stays one synchronous
        // block (no nested future), which is what operators' hot paths run.
        let storage = match self.storage() {
            Ok(storage) => storage,
            Err(err) => return self.counted(Err(err)),
        };
        if let Some(local) = storage.as_local() {
            let mut value = None;
            let read = local
                .try_read(
                    self.hash(local),
                    &self.inner.storage_key,
                    self.now(local),
                    &mut |bytes| value = Some(self.decode::<S>(bytes)),
                )
                .map_err(|e| e.with_key(self.key()));
            return self.counted(read.and_then(|_| value.transpose()));
        }
        let got = storage
            .get(&self.inner.storage_key)
            .await
            .map_err(|e| e.with_key(self.key()));
        self.counted(got.and_then(|bytes| bytes.map(|b| self.decode(&b)).transpose()))
    }

    /// Stores `value` as the key's state (its TTL starts again).
    pub async fn set<S: Serialize + ?Sized>(&self, value: &S) -> StateResult<()> {
        let storage = match self.writable_storage() {
            Ok(storage) => storage,
            Err(err) => return self.counted(Err(err)),
        };
        if let Some(local) = storage.as_local() {
            return self.counted(with_scratch(|buf| {
                self.encode(value, buf)?;
                local.write_expiring(
                    self.hash(local),
                    &self.inner.storage_key,
                    self.now(local),
                    buf,
                    self.inner.ttl,
                )
            }));
        }
        let mut buf = Vec::new();
        if let Err(err) = self.encode(value, &mut buf) {
            return self.counted(Err(err));
        }
        let written = storage
            .set_with_ttl(&self.inner.storage_key, &buf, self.inner.ttl)
            .await
            .map_err(|e| e.with_key(self.key()));
        self.counted(written)
    }

    /// Atomically replaces the key's state with `f(current)` and returns the new state.
    ///
    /// `f` runs exactly once (unless reading the current state fails, in which case it does
    /// not run and nothing is written).
    pub async fn update<S, F>(&self, f: F) -> StateResult<S>
    where
        S: Serialize + DeserializeOwned + Send,
        F: FnOnce(Option<S>) -> S + Send,
    {
        let storage = match self.writable_storage() {
            Ok(storage) => storage,
            Err(err) => return self.counted(Err(err)),
        };
        let mut f = Some(f);
        let mut out: Option<S> = None;
        let done = if let Some(local) = storage.as_local() {
            with_scratch(|buf| {
                local.update_expiring(
                    self.hash(local),
                    &self.inner.storage_key,
                    self.now(local),
                    self.inner.ttl,
                    buf,
                    &mut |current, buf| {
                        let current = current.map(|b| self.decode::<S>(b)).transpose()?;
                        let Some(f) = f.take() else {
                            return Err(self.update_ran_twice());
                        };
                        let next = f(current);
                        self.encode(&next, buf)?;
                        out = Some(next);
                        Ok(())
                    },
                )
            })
        } else {
            let out_ref = &mut out;
            storage
                .update_with_ttl(
                    &self.inner.storage_key,
                    self.inner.ttl,
                    Box::new(move |current: Option<Vec<u8>>| {
                        let current = current.map(|b| self.decode::<S>(&b)).transpose()?;
                        let Some(f) = f.take() else {
                            return Err(self.update_ran_twice());
                        };
                        let next = f(current);
                        let mut buf = Vec::new();
                        self.encode(&next, &mut buf)?;
                        *out_ref = Some(next);
                        Ok(buf)
                    }),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.with_key(self.key()))
        };
        self.counted(done.and_then(|()| {
            out.ok_or_else(|| {
                StateError::Storage(format!(
                    "key {}: the backend's update returned without running the update function",
                    crate::KeyDisplay(self.key())
                ))
            })
        }))
    }

    /// The storage, if this access may write (see `check_writable`).
    fn writable_storage(&self) -> StateResult<&SharedStorage> {
        let storage = self.storage()?;
        self.check_writable()?;
        Ok(storage)
    }

    fn update_ran_twice(&self) -> StateError {
        StateError::Storage(format!(
            "key {}: the backend called the update function twice; an update runs it once",
            crate::KeyDisplay(self.key())
        ))
    }

    /// Whether the key has live state.
    ///
    /// **Fails open: a backend error reads as `false`.** A check that must fail closed (a
    /// blocklist, "has this payment been seen?") must use [`try_exists`](Self::try_exists),
    /// which returns the error, or an outage lets everything through. (`get` likewise reads an
    /// error as `None`; [`try_get`](Self::try_get) returns it.)
    pub async fn exists(&self) -> bool {
        self.try_exists().await.unwrap_or(false)
    }

    /// Whether the key has live state, or the backend's error (naming the key).
    pub async fn try_exists(&self) -> StateResult<bool> {
        let storage = match self.storage() {
            Ok(storage) => storage,
            Err(err) => return self.counted(Err(err)),
        };
        let found = match storage.as_local() {
            Some(local) => {
                local.try_exists(self.hash(local), &self.inner.storage_key, self.now(local))
            }
            None => storage.exists(&self.inner.storage_key).await,
        };
        self.counted(found.map_err(|e| e.with_key(self.key())))
    }

    /// Removes the key's state. This also lifts a write block left by a failed `get`.
    pub async fn delete(&self) -> StateResult<()> {
        let storage = match self.storage() {
            Ok(storage) => storage,
            Err(err) => return self.counted(Err(err)),
        };
        let removed = match storage.as_local() {
            Some(local) => local.try_remove(self.hash(local), &self.inner.storage_key),
            None => storage.delete(&self.inner.storage_key).await,
        };
        self.counted(removed.map_err(|e| e.with_key(self.key())))?;
        self.inner.read_failed.store(false, Ordering::Release);
        Ok(())
    }
}
