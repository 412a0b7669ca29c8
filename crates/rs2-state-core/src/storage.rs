//! The backend contract: bytes in, bytes out, per key.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::error::StateResult;
use crate::slot::Slot;

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

/// Synchronous slot access for in-process stores (implemented by `InMemoryState`).
///
/// A store hands out [`Slot`]s: shared cells that hold one key's bytes. Reading or writing an
/// attached slot is a lock and a copy, with no async dispatch. When the store evicts or removes
/// a key it [detaches](Slot::detach) the slot; a writer that finds its slot detached asks the
/// store again, so no write lands in a slot the store no longer holds.
pub trait LocalStorage: Send + Sync {
    /// The attached slot for `key`, if the store holds the key (expired or not).
    fn lookup(&self, key: &str) -> Option<Arc<Slot>>;

    /// The attached slot for `key`, inserting an empty one if absent. Inserting into a full
    /// store evicts before returning, so the store's bound holds after every insert.
    fn lookup_or_insert(&self, key: &str) -> StateResult<Arc<Slot>>;

    /// Tells the store `key` was used at `now_ms` (drives recency for eviction). Cheap to call
    /// on every access: stores rate-limit the work.
    fn touch(&self, key: &str, slot: &Slot, now_ms: u64);

    /// Removes `key` and detaches its slot.
    fn remove(&self, key: &str);

    /// The store's clock, in milliseconds.
    fn now_ms(&self) -> u64;

    /// How long a written value lives, in milliseconds.
    fn ttl_ms(&self) -> u64;
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
