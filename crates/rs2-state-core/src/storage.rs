//! The backend contract: bytes in, bytes out, per key.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::error::StateResult;

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

    /// Synchronous access for stores whose values live in this process. Operators use it to
    /// skip async dispatch on the hot path; remote backends keep the default `None`.
    fn as_local(&self) -> Option<&dyn LocalStorage> {
        None
    }
}

/// One of a fixed set of async locks, picked by hashing the store's address and the key.
fn update_lock(store: usize, key: &str) -> &'static futures::lock::Mutex<()> {
    const STRIPES: usize = 1024;
    static LOCKS: OnceLock<Vec<futures::lock::Mutex<()>>> = OnceLock::new();
    static HASHER: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let locks = LOCKS.get_or_init(|| {
        (0..STRIPES)
            .map(|_| futures::lock::Mutex::new(()))
            .collect()
    });
    let mut h = HASHER.get_or_init(Default::default).build_hasher();
    store.hash(&mut h);
    key.hash(&mut h);
    &locks[(h.finish() as usize) % STRIPES]
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

    /// Whether the key has a live value.
    fn exists(&self, hash: u64, key: &str, now_ms: u64) -> bool;

    /// Removes the key.
    fn remove(&self, hash: u64, key: &str);

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
    fn as_local(&self) -> Option<&dyn LocalStorage> {
        (**self).as_local()
    }
}
