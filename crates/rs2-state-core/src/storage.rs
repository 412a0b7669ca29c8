//! The backend contract: bytes in, bytes out, per key.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::StateResult;
use crate::stats::StatsSource;

/// The read-modify-write function passed to [`StateStorage::update`]: it receives the current
/// bytes (or `None`) and returns the bytes to store, or an error to leave the key untouched.
pub type UpdateFn<'a> = Box<dyn FnOnce(Option<Vec<u8>>) -> StateResult<Vec<u8>> + Send + 'a>;

/// A key-value backend for keyed state.
///
/// A backend writes five methods: [`get`](Self::get), [`set`](Self::set),
/// [`delete`](Self::delete), [`exists`](Self::exists) and [`clear`](Self::clear). The provided
/// [`update`](Self::update) is an atomic read-modify-write that is correct within one process
/// (a lock per key held around get and set); a backend shared between processes overrides it
/// with a lock its store provides.
///
/// Errors should name the key (see [`StateError::storage_for`](crate::StateError::storage_for)).
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use rs2_state_core::{async_trait, StateResult, StateStorage};
///
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<String, Vec<u8>>>);
///
/// #[async_trait]
/// impl StateStorage for MapStore {
///     async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///     async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
///         self.0.lock().unwrap().insert(key.to_string(), value.to_vec());
///         Ok(())
///     }
///     async fn delete(&self, key: &str) -> StateResult<()> {
///         self.0.lock().unwrap().remove(key);
///         Ok(())
///     }
///     async fn exists(&self, key: &str) -> StateResult<bool> {
///         Ok(self.0.lock().unwrap().contains_key(key))
///     }
///     async fn clear(&self) -> StateResult<()> {
///         self.0.lock().unwrap().clear();
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait StateStorage: Send + Sync {
    /// The bytes stored under `key`, or `None`.
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>>;

    /// Stores `value` under `key`, replacing what was there.
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()>;

    /// Removes `key` (removing an absent key is not an error).
    async fn delete(&self, key: &str) -> StateResult<()>;

    /// Whether `key` holds a value.
    async fn exists(&self, key: &str) -> StateResult<bool>;

    /// Removes every key.
    async fn clear(&self) -> StateResult<()>;

    /// Atomically replaces the value under `key` with `f(current)` and returns what was stored.
    ///
    /// `f` runs at most once. If it returns an error nothing is written. The default holds a
    /// process-wide lock for `(self, key)` around [`get`](Self::get) and [`set`](Self::set), so
    /// concurrent updates through this method never lose a write within one process; writes
    /// made with plain `set` are not serialised against it.
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let _guard = update_lock(self as *const Self as *const () as usize, key)
            .lock()
            .await;
        let current = self.get(key).await?;
        let next = f(current)?;
        self.set(key, &next).await?;
        Ok(next)
    }

    /// [`set`](Self::set) with the time to live the writer's config gives the value: a store
    /// that can expire keys (Redis `SET .. PX`, a durable store's expiry stamp) should drop the
    /// value `ttl` after this write. `None` means the writer asks for no expiry.
    ///
    /// Operators and [`StateAccess`](crate::StateAccess) write through this method with their
    /// config's `ttl`. The provided method calls [`set`](Self::set), so a five-method backend
    /// keeps its own expiry rule (or none). `InMemoryState` expires by its own config's TTL.
    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let _ = ttl;
        self.set(key, value).await
    }

    /// [`update`](Self::update) whose write carries a time to live, as
    /// [`set_with_ttl`](Self::set_with_ttl). The provided method calls [`update`](Self::update)
    /// (so a backend that made `update` atomic across processes stays so); a backend with
    /// expiry overrides both.
    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        let _ = ttl;
        self.update(key, f).await
    }

    /// The values of several keys, in the order asked (`None` for a key without one). The
    /// provided method calls [`get`](Self::get) once per key; a remote backend overrides it
    /// with one batched request (`MGET`, a pipeline).
    async fn get_many(&self, keys: &[&str]) -> StateResult<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// Writes several keys, each with `ttl` as in [`set_with_ttl`](Self::set_with_ttl). The
    /// provided method writes them one by one in order and stops at the first error (keys
    /// before it are written); a remote backend overrides it with one batched request.
    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> StateResult<()> {
        for (key, value) in entries {
            self.set_with_ttl(key, value, ttl).await?;
        }
        Ok(())
    }

    /// Takes an exclusive lock on `key` for a read-compute-write that spans an `await` (an
    /// operator's state transition, or a fold whose closure is async): while one holder has
    /// it, every other `lock_key` of the same key in this store waits. Release it with
    /// [`KeyLock::release`] after the write.
    ///
    /// Operators take this lock around every transition of their own state in a store that is
    /// not in-process, so pipelines sharing the store never lose or double-apply an event.
    ///
    /// The provided lock is held in this process (one of a fixed set of async locks, picked by
    /// the store's address and the key; `lease` is not used): exact for pipelines in one
    /// process. A store shared between processes overrides it with a lock the server holds
    /// (Redis: `SET lock token NX PX lease`, released by a compare-and-delete script), whose
    /// `lease` bounds how long a crashed holder blocks the key. The lock is separate from the
    /// one behind the provided [`update`](Self::update); operators never hold both on one key.
    async fn lock_key(&self, key: &str, lease: Duration) -> StateResult<KeyLock> {
        let _ = lease;
        let guard = stripe(
            &TRANSITION_LOCKS,
            self as *const Self as *const () as usize,
            key,
        )
        .lock()
        .await;
        Ok(KeyLock::process(guard))
    }

    /// [`lock_key`](Self::lock_key) then [`get`](Self::get): the start of a state transition.
    /// Operators call this, so a remote backend can take the lock and read the value in one
    /// round trip (Redis: one script). If the read fails the lock is released and the error
    /// returned.
    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        let lock = self.lock_key(key, lease).await?;
        match self.get(key).await {
            Ok(value) => Ok((lock, value)),
            Err(err) => {
                // The read's error is the one to report; a failed release only delays the key.
                let _ = lock.release().await;
                Err(err)
            }
        }
    }

    /// The end of a state transition begun with [`lock_and_get`](Self::lock_and_get): applies
    /// `write` to `key` (with `ttl` as in [`set_with_ttl`](Self::set_with_ttl)) while `lock` is
    /// held, then releases it. The provided method writes, then releases (the lock is
    /// released even when the write fails; the write's error is returned). A remote backend
    /// overrides it with one round trip that applies the write only if `lock` is still held
    /// (its lease may have run out while the transition was slow), so a transition whose lock
    /// was lost fails instead of overwriting another holder's write.
    ///
    /// A store with [`as_local`](Self::as_local) whose lock is the provided in-process one
    /// ([`KeyLock::is_in_process`]) is written through
    /// [`LocalStorage::write_expiring`] instead, and the lock dropped: operators call this
    /// method only for other locks.
    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let written = match write {
            LockedWrite::Keep => Ok(()),
            LockedWrite::Set(value) => self.set_with_ttl(key, value, ttl).await,
            LockedWrite::Delete => self.delete(key).await,
        };
        let released = lock.release().await;
        written.and(released)
    }

    /// Synchronous access for stores whose values live in this process. Operators use it to
    /// skip async dispatch on the hot path; remote backends keep the default `None`.
    fn as_local(&self) -> Option<&dyn LocalStorage> {
        None
    }

    /// The store's own figures (entries, hits, misses, writes, evictions, expirations, bytes),
    /// for [`StateStats`](crate::StateStats). `None` (the default): operators count this
    /// store's reads and writes themselves. A store that counts returns the same source on
    /// every call, so a store shared by several operators is counted once.
    fn stats_source(&self) -> Option<Arc<dyn StatsSource>> {
        None
    }
}

/// Async locks, one picked per `(store, key)` by hashing.
type Stripes = OnceLock<Vec<futures::lock::Mutex<()>>>;

/// The locks behind the provided [`StateStorage::update`].
static UPDATE_LOCKS: Stripes = OnceLock::new();
/// The locks behind the provided [`StateStorage::lock_key`]: a set of their own, so a
/// transition holding a key's lock never waits on an `update` its own closure started.
static TRANSITION_LOCKS: Stripes = OnceLock::new();

fn update_lock(store: usize, key: &str) -> &'static futures::lock::Mutex<()> {
    stripe(&UPDATE_LOCKS, store, key)
}

/// One of a fixed set of async locks, picked by hashing the store's address and the key.
fn stripe(locks: &'static Stripes, store: usize, key: &str) -> &'static futures::lock::Mutex<()> {
    const STRIPES: usize = 4096;
    static HASHER: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let locks = locks.get_or_init(|| {
        (0..STRIPES)
            .map(|_| futures::lock::Mutex::new(()))
            .collect()
    });
    let mut h = HASHER.get_or_init(Default::default).build_hasher();
    store.hash(&mut h);
    key.hash(&mut h);
    &locks[(h.finish() as usize) % STRIPES]
}

/// A held lock on one key, from [`StateStorage::lock_key`].
///
/// [`release`](Self::release) it once the write it guards is done. Dropping it without
/// releasing frees an in-process lock at once; a server-held lock then stays until its lease
/// ends.
#[must_use = "a key lock guards a write: release it after the write"]
pub struct KeyLock {
    held: Box<dyn HeldLock>,
    in_process: bool,
}

impl KeyLock {
    /// Wraps a backend's lock.
    pub fn new(held: impl HeldLock + 'static) -> Self {
        Self {
            held: Box::new(held),
            in_process: false,
        }
    }

    /// The lock the provided [`StateStorage::lock_key`] takes on `key` of `store`, if no one
    /// holds it (no waiting). For an in-process store that keeps the provided `lock_key`: its
    /// [`LocalStorage::try_lock_key`] returns this, so an operator's transition takes the lock
    /// without an `await` when the key is free.
    ///
    /// `store` must be the store itself (the `self` of its `lock_key`), not a wrapper.
    pub fn try_in_process<S: ?Sized>(store: &S, key: &str) -> Option<KeyLock> {
        let guard = stripe(
            &TRANSITION_LOCKS,
            store as *const S as *const () as usize,
            key,
        )
        .try_lock()?;
        Some(Self::process(guard))
    }

    fn process(guard: futures::lock::MutexGuard<'static, ()>) -> Self {
        Self {
            held: Box::new(ProcessLock(guard)),
            in_process: true,
        }
    }

    /// Whether this is the provided in-process lock (from the provided
    /// [`StateStorage::lock_key`] or [`try_in_process`](Self::try_in_process)), which
    /// dropping frees at once: a writer may then write through [`LocalStorage`] and drop the
    /// lock instead of calling [`StateStorage::write_and_release`].
    pub fn is_in_process(&self) -> bool {
        self.in_process
    }

    /// Releases the lock.
    pub async fn release(self) -> StateResult<()> {
        self.held.release().await
    }

    /// The backend's lock, if it is a `T` (a backend overriding
    /// [`StateStorage::write_and_release`] reads its token from it). Needs the backend's
    /// [`HeldLock::as_any`].
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.held.as_any()?.downcast_ref()
    }
}

impl std::fmt::Debug for KeyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyLock")
    }
}

/// What [`StateStorage::write_and_release`] does with a locked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedWrite<'a> {
    /// Leave the value as it is (the transition changed nothing).
    Keep,
    /// Store these bytes as the key's value.
    Set(&'a [u8]),
    /// Remove the key.
    Delete,
}

/// A backend's held key lock (see [`KeyLock`]).
#[async_trait]
pub trait HeldLock: Send + Sync {
    /// Releases the lock (a server-held lock: only if this holder still owns it).
    async fn release(self: Box<Self>) -> StateResult<()>;

    /// The lock as [`Any`](std::any::Any), for [`KeyLock::downcast_ref`]; `None` (the
    /// default) when the backend does not need it.
    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        None
    }
}

/// The provided in-process lock: the guard is held only for its drop, which frees the lock.
struct ProcessLock(#[allow(dead_code)] futures::lock::MutexGuard<'static, ()>);

#[async_trait]
impl HeldLock for ProcessLock {
    async fn release(self: Box<Self>) -> StateResult<()> {
        Ok(())
    }
}

/// The read-modify-write step of [`LocalStorage::update`]: gets the live value (or `None`) and
/// writes the new value into the buffer.
pub type LocalUpdateFn<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> StateResult<()> + 'a;

/// The in-place step of [`LocalStorage::modify`]: edits the key's value (empty, with `false`,
/// when the key has none) and says what becomes of the key.
pub type LocalModifyFn<'a> = dyn FnMut(&mut Vec<u8>, bool) -> StateResult<ValueChange> + 'a;

/// What a [`LocalStorage::modify`] step does with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueChange {
    /// Leave the stored value as it is.
    Keep,
    /// Store the edited buffer as the key's value.
    Store,
    /// Remove the key.
    Remove,
}

/// Synchronous access for in-process stores (implemented by `InMemoryState`).
///
/// Every call is a lock and a lookup with no async dispatch and no allocation for an existing
/// key. Callers hash a key once with [`hash_key`](Self::hash_key) and pass the hash to every
/// call about that key, so an event that reads and writes its state hashes its key once.
/// Expiry is judged at the `now_ms` the caller passes (from [`now_ms`](Self::now_ms)).
pub trait LocalStorage: Send + Sync {
    /// The hash of `key` this store files it under.
    fn hash_key(&self, key: &str) -> u64;

    /// Calls `f` with the key's live value, if it has one; returns whether it did.
    fn read(&self, hash: u64, key: &str, now_ms: u64, f: &mut dyn FnMut(&[u8])) -> bool;

    /// Stores `value` as the key's value (its TTL starts again).
    fn write(&self, hash: u64, key: &str, now_ms: u64, value: &[u8]) -> StateResult<()>;

    /// Atomic read-modify-write: under the key's lock, `f` gets the live value (or `None`) and
    /// fills `buf` (cleared first) with the new value, which is then stored; if `f` fails,
    /// nothing is written.
    fn update(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        buf: &mut Vec<u8>,
        f: &mut LocalUpdateFn<'_>,
    ) -> StateResult<()>;

    /// In-place read-modify-write, for values that grow by small edits (an append to a log):
    /// under the key's lock, `f` gets the key's live value as a buffer it may edit (empty,
    /// with `false`, when the key has no live value) and says with its [`ValueChange`] what
    /// becomes of the key. With [`ValueChange::Store`] the buffer is the new value (its TTL
    /// starts again); [`ValueChange::Keep`] records a use as [`read`](Self::read) does;
    /// [`ValueChange::Remove`] removes the key. Returns `f`'s change, or `f`'s error.
    ///
    /// **`f` must leave the buffer as it found it unless it returns `Ok(Store)`**: a store may
    /// hand `f` the stored value itself (no copy), so an edit made before returning `Keep`,
    /// `Remove` or an error is not rolled back. `scratch` is a buffer the store may use for
    /// values it does not keep in a growable buffer.
    ///
    /// The provided method runs on [`update`](Self::update), copying the value in and out;
    /// `InMemoryState` edits a large value where it lies.
    fn modify(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        scratch: &mut Vec<u8>,
        f: &mut LocalModifyFn<'_>,
    ) -> StateResult<ValueChange> {
        let mut change = None;
        let stored = self.update(hash, key, now_ms, scratch, &mut |current, out| {
            out.extend_from_slice(current.unwrap_or_default());
            let c = f(out, current.is_some())?;
            change = Some(c);
            match c {
                ValueChange::Store => Ok(()),
                // Any error makes `update` write nothing; this one is never seen.
                ValueChange::Keep | ValueChange::Remove => {
                    Err(crate::StateError::Storage(String::new()))
                }
            }
        });
        match change {
            None => stored.map(|()| ValueChange::Keep),
            Some(ValueChange::Store) => stored.map(|()| ValueChange::Store),
            Some(ValueChange::Remove) => {
                self.remove(hash, key);
                Ok(ValueChange::Remove)
            }
            Some(ValueChange::Keep) => {
                self.read(hash, key, now_ms, &mut |_| {});
                Ok(ValueChange::Keep)
            }
        }
    }

    /// [`write`](Self::write) with the time to live the writer's config gives the value (as
    /// [`StateStorage::set_with_ttl`]; `None`: no expiry asked). Operators and `StateAccess`
    /// write through this. The provided method calls [`write`](Self::write): a store that
    /// expires by its own config (`InMemoryState`) keeps it; a store that stamps each value
    /// with its expiry (a durable store) overrides it.
    fn write_expiring(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let _ = ttl;
        self.write(hash, key, now_ms, value)
    }

    /// [`update`](Self::update) whose write carries a time to live, as
    /// [`write_expiring`](Self::write_expiring). The provided method calls
    /// [`update`](Self::update).
    fn update_expiring(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        ttl: Option<Duration>,
        buf: &mut Vec<u8>,
        f: &mut LocalUpdateFn<'_>,
    ) -> StateResult<()> {
        let _ = ttl;
        self.update(hash, key, now_ms, buf, f)
    }

    /// [`modify`](Self::modify) whose stored value carries a time to live, as
    /// [`write_expiring`](Self::write_expiring). The provided method calls
    /// [`modify`](Self::modify).
    fn modify_expiring(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        ttl: Option<Duration>,
        scratch: &mut Vec<u8>,
        f: &mut LocalModifyFn<'_>,
    ) -> StateResult<ValueChange> {
        let _ = ttl;
        self.modify(hash, key, now_ms, scratch, f)
    }

    /// Takes `key`'s transition lock (the one [`StateStorage::lock_key`] takes) if no one holds
    /// it, without waiting; `None` when it is held, and always `None` by default. An
    /// in-process store that keeps the provided `lock_key` returns
    /// [`KeyLock::try_in_process`]`(self, key)`, so operators whose key is free start a
    /// transition of a shared store with no `await` (they fall back to `lock_key` otherwise).
    fn try_lock_key(&self, key: &str) -> Option<KeyLock> {
        let _ = key;
        None
    }

    /// Whether the key has a live value.
    fn exists(&self, hash: u64, key: &str, now_ms: u64) -> bool;

    /// Removes the key.
    fn remove(&self, hash: u64, key: &str);

    /// [`read`](Self::read) for a store whose reads can fail (one that reads from disk):
    /// `Err` when the value could not be read, so a caller never takes an unreadable value
    /// for an absent one (and overwrites it). Operators and `StateAccess` call this; the
    /// provided method calls [`read`](Self::read), which cannot fail.
    fn try_read(
        &self,
        hash: u64,
        key: &str,
        now_ms: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> StateResult<bool> {
        Ok(self.read(hash, key, now_ms, f))
    }

    /// [`exists`](Self::exists) for a store whose reads can fail (see
    /// [`try_read`](Self::try_read)).
    fn try_exists(&self, hash: u64, key: &str, now_ms: u64) -> StateResult<bool> {
        Ok(self.exists(hash, key, now_ms))
    }

    /// [`remove`](Self::remove) for a store whose writes can fail (a removal that must reach
    /// disk): `Err` when the key could not be removed. Operators and `StateAccess` call this.
    fn try_remove(&self, hash: u64, key: &str) -> StateResult<()> {
        self.remove(hash, key);
        Ok(())
    }

    /// The store's clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// Shares one storage between many holders.
#[async_trait]
impl<S: StateStorage + ?Sized> StateStorage for Arc<S> {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        (**self).get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        (**self).set(key, value).await
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        (**self).delete(key).await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        (**self).exists(key).await
    }
    async fn clear(&self) -> StateResult<()> {
        (**self).clear().await
    }
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        (**self).update(key, f).await
    }
    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        (**self).set_with_ttl(key, value, ttl).await
    }
    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        (**self).update_with_ttl(key, ttl, f).await
    }
    async fn get_many(&self, keys: &[&str]) -> StateResult<Vec<Option<Vec<u8>>>> {
        (**self).get_many(keys).await
    }
    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> StateResult<()> {
        (**self).set_many(entries, ttl).await
    }
    async fn lock_key(&self, key: &str, lease: Duration) -> StateResult<KeyLock> {
        (**self).lock_key(key, lease).await
    }
    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        (**self).lock_and_get(key, lease).await
    }
    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        (**self).write_and_release(key, lock, write, ttl).await
    }
    fn as_local(&self) -> Option<&dyn LocalStorage> {
        (**self).as_local()
    }
    fn stats_source(&self) -> Option<Arc<dyn StatsSource>> {
        (**self).stats_source()
    }
}
