//! `StateAccess`: a closure's typed handle on one key's state.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, Postcard};
use crate::error::{StateError, StateResult};
use crate::slot::{Slot, SlotRead};
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
    /// The instant the operator started this event; `None`: ask the store on every call.
    now_ms: Option<u64>,
    /// Set when the config or the key extractor failed: every call reports it.
    error: Option<StateError>,
    state: Mutex<Mutable>,
}

#[derive(Default)]
struct Mutable {
    /// The slot of an in-process store, once looked up.
    slot: Option<Arc<Slot>>,
    /// Encoding buffer, reused across calls (and across events when the operator recycles).
    scratch: Vec<u8>,
    /// A failure hidden by `get`: blocks later writes through this access.
    read_error: Option<StateError>,
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

impl<C: Codec> StateAccess<C> {
    /// Access to `key` in `storage` (the key is used as is, without a namespace).
    pub fn new(storage: SharedStorage, key: String) -> Self {
        Self::from_inner(Inner {
            storage: Some(storage),
            storage_key: key,
            key_start: 0,
            now_ms: None,
            error: None,
            state: Mutex::default(),
        })
    }

    /// An access whose every call fails with `error` (`get` returns `None`). Operators hand
    /// this to a closure when the config is invalid or the key could not be extracted.
    pub fn failed(key: String, error: StateError) -> Self {
        Self::from_inner(Inner {
            storage: None,
            storage_key: key,
            key_start: 0,
            now_ms: None,
            error: Some(error),
            state: Mutex::default(),
        })
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            _codec: PhantomData,
        }
    }

    /// For operator authors: points this access at another key, reusing its allocation (and
    /// encoding buffer) when no clone of it is alive, and returns the access to hand to the
    /// closure.
    ///
    /// `storage_key` is the full key in the store and `key_start` where the user's key begins
    /// in it; `slot` is the key's slot when the caller already looked it up in an in-process
    /// store; `now_ms` is the instant the event is judged at.
    pub fn rebind(
        &mut self,
        storage: &SharedStorage,
        storage_key: String,
        key_start: usize,
        slot: Option<Arc<Slot>>,
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
                inner.storage_key = storage_key;
                inner.key_start = key_start;
                inner.now_ms = Some(now_ms);
                inner.error = None;
                let state = inner
                    .state
                    .get_mut()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                state.slot = slot;
                state.read_error = None;
            }
            None => {
                *self = Self::from_inner(Inner {
                    storage: Some(Arc::clone(storage)),
                    storage_key,
                    key_start,
                    now_ms: Some(now_ms),
                    error: None,
                    state: Mutex::new(Mutable {
                        slot,
                        ..Mutable::default()
                    }),
                })
            }
        }
        self.clone()
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

    fn state(&self) -> MutexGuard<'_, Mutable> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn storage(&self) -> StateResult<&SharedStorage> {
        match (&self.inner.error, &self.inner.storage) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(storage)) => Ok(storage),
            (None, None) => Err(StateError::Storage(format!(
                "key '{}': this access has no storage",
                self.key()
            ))),
        }
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

    fn check_writable(&self, state: &Mutable) -> StateResult<()> {
        match &state.read_error {
            None => Ok(()),
            Some(err) => Err(StateError::Validation(format!(
                "key '{}': refusing to overwrite state that could not be read ({err}); call \
                 try_get to see the failure, or delete() to reset the key explicitly",
                self.key()
            ))),
        }
    }

    /// The key's slot in an in-process store, if it has one (cached after the first lookup).
    fn find_slot(&self, local: &dyn LocalStorage, state: &mut Mutable) -> Option<Arc<Slot>> {
        match &state.slot {
            Some(slot) if !slot.is_detached() => Some(Arc::clone(slot)),
            _ => {
                state.slot = local.lookup(&self.inner.storage_key);
                state.slot.clone()
            }
        }
    }

    /// The key's slot in an in-process store, inserted if absent.
    fn slot_for_write(
        &self,
        local: &dyn LocalStorage,
        state: &mut Mutable,
    ) -> StateResult<Arc<Slot>> {
        match &state.slot {
            Some(slot) if !slot.is_detached() => Ok(Arc::clone(slot)),
            _ => {
                let slot = local.lookup_or_insert(&self.inner.storage_key)?;
                state.slot = Some(Arc::clone(&slot));
                Ok(slot)
            }
        }
    }

    /// The key's state, or `None` if it has none, it expired, or it could not be read (see the
    /// type's docs: a later write through this access is then refused).
    pub async fn get<S: DeserializeOwned>(&self) -> Option<S> {
        match self.try_get().await {
            Ok(value) => value,
            Err(err) => {
                self.state().read_error = Some(err);
                None
            }
        }
    }

    /// The key's state, `Ok(None)` if it has none, or the backend or decode error.
    pub async fn try_get<S: DeserializeOwned>(&self) -> StateResult<Option<S>> {
        let storage = self.storage()?;
        if let Some(local) = storage.as_local() {
            let now = self.now(local);
            let mut state = self.state();
            // A detached slot means the store evicted the key between calls: look again.
            for _ in 0..3 {
                let Some(slot) = self.find_slot(local, &mut state) else {
                    return Ok(None);
                };
                match slot.read(now, |bytes| self.decode::<S>(bytes)) {
                    SlotRead::Value(value) => return value.map(Some),
                    SlotRead::Absent => return Ok(None),
                    SlotRead::Detached => state.slot = None,
                }
            }
            return Ok(None);
        }
        match storage.get(&self.inner.storage_key).await? {
            Some(bytes) => self.decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` as the key's state (its TTL starts again).
    pub async fn set<S: Serialize + ?Sized>(&self, value: &S) -> StateResult<()> {
        let storage = self.storage()?;
        if let Some(local) = storage.as_local() {
            let now = self.now(local);
            let ttl = local.ttl_ms();
            let mut state = self.state();
            self.check_writable(&state)?;
            let mut buf = std::mem::take(&mut state.scratch);
            self.encode(value, &mut buf)?;
            loop {
                let slot = self.slot_for_write(local, &mut state)?;
                if slot.write(now, ttl, &mut buf) {
                    state.scratch = buf;
                    return Ok(());
                }
                state.slot = None;
            }
        }
        self.check_writable(&self.state())?;
        let mut buf = Vec::new();
        self.encode(value, &mut buf)?;
        storage.set(&self.inner.storage_key, &buf).await
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
        let storage = self.storage()?;
        let mut f = Some(f);
        if let Some(local) = storage.as_local() {
            let now = self.now(local);
            let ttl = local.ttl_ms();
            let mut state = self.state();
            self.check_writable(&state)?;
            let mut buf = std::mem::take(&mut state.scratch);
            loop {
                let slot = self.slot_for_write(local, &mut state)?;
                let result = slot.update(now, ttl, &mut buf, |current, out| {
                    let current = current.map(|b| self.decode::<S>(b)).transpose()?;
                    let f = f.take().expect("update closure runs once");
                    let next = f(current);
                    self.encode(&next, out)?;
                    Ok::<S, StateError>(next)
                });
                match result {
                    Some(result) => {
                        state.scratch = buf;
                        return result;
                    }
                    None => state.slot = None,
                }
            }
        }
        self.check_writable(&self.state())?;
        let mut out: Option<S> = None;
        let out_ref = &mut out;
        storage
            .update(
                &self.inner.storage_key,
                Box::new(move |current: Option<Vec<u8>>| {
                    let current = current.map(|b| self.decode::<S>(&b)).transpose()?;
                    let f = f.take().expect("update closure runs once");
                    let next = f(current);
                    let mut buf = Vec::new();
                    self.encode(&next, &mut buf)?;
                    *out_ref = Some(next);
                    Ok(buf)
                }),
            )
            .await?;
        out.ok_or_else(|| {
            StateError::Storage(format!(
                "key '{}': the backend's update returned without running the update function",
                self.key()
            ))
        })
    }

    /// Whether the key has live state (`false` on a backend error).
    pub async fn exists(&self) -> bool {
        let Ok(storage) = self.storage() else {
            return false;
        };
        if let Some(local) = storage.as_local() {
            let now = self.now(local);
            let mut state = self.state();
            for _ in 0..3 {
                match self.find_slot(local, &mut state) {
                    Some(slot) => match slot.is_live(now) {
                        Some(live) => return live,
                        None => state.slot = None,
                    },
                    None => return false,
                }
            }
            return false;
        }
        storage
            .exists(&self.inner.storage_key)
            .await
            .unwrap_or(false)
    }

    /// Removes the key's state. This also lifts a write block left by a failed `get`.
    pub async fn delete(&self) -> StateResult<()> {
        let storage = self.storage()?;
        if let Some(local) = storage.as_local() {
            local.remove(&self.inner.storage_key);
            let mut state = self.state();
            state.slot = None;
            state.read_error = None;
            return Ok(());
        }
        storage.delete(&self.inner.storage_key).await?;
        self.state().read_error = None;
        Ok(())
    }
}
