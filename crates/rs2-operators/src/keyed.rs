//! The one keyed-state helper every operator uses: storage choice, key namespacing, the clock,
//! slot handles for in-process stores, codec-typed loads and saves, and `StateAccess` recycling.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rs2_state_core::{
    Codec, KeyExtractor, Postcard, SharedStorage, Slot, SlotRead, StateAccess, StateConfig,
    StateError, StateResult, StateStorageType,
};
use rs2_state_memory::{InMemoryState, StateClock};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A key of one event, as the user wrote it and as the store sees it.
pub(crate) struct EventKey {
    /// The namespaced key; the user's key is `storage_key[key_start..]`.
    pub storage_key: String,
    pub key_start: usize,
}

impl EventKey {
    pub fn user_key(&self) -> &str {
        &self.storage_key[self.key_start..]
    }
}

/// Per-operator view of one namespace in the configured storage.
pub(crate) struct KeyedState {
    storage: SharedStorage,
    /// Whether `storage` is an in-process store (slots, no async dispatch).
    local: bool,
    /// `""` when the store is private to this operator, else `"{namespace}/{operator}:"`.
    prefix: String,
    clock: StateClock,
    /// Slot handles of an in-process store, so an event of a known key skips the store's index.
    handles: HashMap<String, Arc<Slot>>,
    max_handles: usize,
    /// The config was invalid: every event reports this.
    error: Option<StateError>,
    /// Recycled between events (see `StateAccess::rebind`).
    template: StateAccess,
    scratch: Vec<u8>,
}

impl KeyedState {
    /// State for operator `op` (a short name such as `"fold"`) under `config`.
    pub fn new(config: &StateConfig, op: &str) -> Self {
        let error = config
            .validate()
            .err()
            .map(|e| StateError::Validation(format!("{op} operator: {e}")));
        let (storage, prefix): (SharedStorage, String) =
            match (config.storage_type, &config.custom_storage) {
                (StateStorageType::Custom, Some(custom)) => {
                    let ns = config
                        .namespace
                        .as_deref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default();
                    (Arc::clone(custom), format!("{ns}{op}:"))
                }
                _ => (Arc::new(InMemoryState::new(config)), String::new()),
            };
        let local = storage.as_local().is_some();
        let clock = StateClock::new();
        let max_handles = match config.max_size {
            Some(n) if n < usize::MAX / 2 => (2 * n).max(1024),
            _ => usize::MAX,
        };
        let template = StateAccess::new(Arc::clone(&storage), String::new());
        Self {
            storage,
            local,
            prefix,
            clock,
            handles: HashMap::new(),
            max_handles,
            error,
            template,
            scratch: Vec::new(),
        }
    }

    /// The instant an event is judged at.
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The event's key, namespaced; builds the key `String` once (twice only for a shared
    /// store, where the namespace must be part of it).
    pub fn key_of<T, K: KeyExtractor<T>>(&self, extractor: &K, event: &T) -> StateResult<EventKey> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let key = extractor.try_extract_key(event)?;
        Ok(self.namespaced(key))
    }

    /// A key in this namespace for a user key already extracted (by another `KeyedState`).
    pub fn derived_key(&self, user_key: &str) -> StateResult<EventKey> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        Ok(self.namespaced(user_key.to_owned()))
    }

    fn namespaced(&self, key: String) -> EventKey {
        if self.prefix.is_empty() {
            EventKey {
                storage_key: key,
                key_start: 0,
            }
        } else {
            let mut storage_key = String::with_capacity(self.prefix.len() + key.len());
            storage_key.push_str(&self.prefix);
            storage_key.push_str(&key);
            EventKey {
                storage_key,
                key_start: self.prefix.len(),
            }
        }
    }

    /// The slot of `key` in an in-process store, if the store holds the key.
    fn slot(&mut self, storage_key: &str, now: u64) -> Option<Arc<Slot>> {
        let local = self.storage.as_local()?;
        if let Some(slot) = self.handles.get(storage_key) {
            if !slot.is_detached() {
                local.touch(storage_key, slot, now);
                return Some(Arc::clone(slot));
            }
        }
        let slot = local.lookup(storage_key)?;
        if self.handles.len() >= self.max_handles {
            self.handles.retain(|_, slot| !slot.is_detached());
            if self.handles.len() >= self.max_handles / 2 {
                self.handles.clear();
            }
        }
        self.handles
            .insert(storage_key.to_owned(), Arc::clone(&slot));
        Some(slot)
    }

    /// The slot of `key` in an in-process store, inserted if absent.
    fn slot_for_write(&mut self, storage_key: &str, now: u64) -> StateResult<Arc<Slot>> {
        match self.slot(storage_key, now) {
            Some(slot) => Ok(slot),
            None => match self.storage.as_local() {
                Some(local) => local.lookup_or_insert(storage_key),
                None => Err(StateError::Storage("not an in-process store".into())),
            },
        }
    }

    /// A `StateAccess` for the closure, bound to `key` (reusing the previous event's allocation
    /// when the closure kept no clone). With `eager`, an in-process slot is looked up now.
    pub fn access(&mut self, key: EventKey, now: u64, eager: bool) -> StateAccess {
        let slot = if eager && self.local {
            self.slot(&key.storage_key, now)
        } else {
            None
        };
        let storage = Arc::clone(&self.storage);
        self.template
            .rebind(&storage, key.storage_key, key.key_start, slot, now)
    }

    /// A `StateAccess` for a closure when the key could not be had: every call reports `err`.
    pub fn failed_access(err: StateError) -> StateAccess {
        StateAccess::failed(String::new(), err)
    }

    /// Reads the operator's own state for `key`.
    pub fn load<S>(&mut self, key: &EventKey, now: u64) -> StateIo<Option<S>>
    where
        S: DeserializeOwned + Send + 'static,
    {
        if self.local {
            for _ in 0..3 {
                let Some(slot) = self.slot(&key.storage_key, now) else {
                    return StateIo::ready(Ok(None));
                };
                match slot.read(now, |bytes| decode::<S>(key.user_key(), bytes)) {
                    SlotRead::Value(value) => return StateIo::ready(value.map(Some)),
                    SlotRead::Absent => return StateIo::ready(Ok(None)),
                    SlotRead::Detached => {
                        self.handles.remove(&key.storage_key);
                    }
                }
            }
            return StateIo::ready(Ok(None));
        }
        let storage = Arc::clone(&self.storage);
        let storage_key = key.storage_key.clone();
        let key_start = key.key_start;
        StateIo::remote(async move {
            match storage.get(&storage_key).await? {
                Some(bytes) => decode(&storage_key[key_start..], &bytes).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Writes the operator's own state for `key`.
    pub fn save<S: Serialize + ?Sized>(
        &mut self,
        key: &EventKey,
        value: &S,
        now: u64,
    ) -> StateIo<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        if let Err(err) = encode(key.user_key(), value, &mut buf) {
            return StateIo::ready(Err(err));
        }
        if let Some(ttl) = self.storage.as_local().map(|l| l.ttl_ms()) {
            loop {
                let slot = match self.slot_for_write(&key.storage_key, now) {
                    Ok(slot) => slot,
                    Err(err) => return StateIo::ready(Err(err)),
                };
                if slot.write(now, ttl, &mut buf) {
                    self.scratch = buf;
                    return StateIo::ready(Ok(()));
                }
                self.handles.remove(&key.storage_key);
            }
        }
        let storage = Arc::clone(&self.storage);
        let storage_key = key.storage_key.clone();
        StateIo::remote(async move { storage.set(&storage_key, &buf).await })
    }
}

fn decode<S: DeserializeOwned>(key: &str, bytes: &[u8]) -> StateResult<S> {
    Postcard::decode(bytes).map_err(|e| StateError::decode_for(key, std::any::type_name::<S>(), e))
}

fn encode<S: Serialize + ?Sized>(key: &str, value: &S, buf: &mut Vec<u8>) -> StateResult<()> {
    Postcard::encode(value, buf)
        .map_err(|e| StateError::encode_for(key, std::any::type_name::<S>(), e))
}

/// A state read or write: done already (in-process store) or in flight (remote store).
pub(crate) enum StateIo<T> {
    Ready(Option<StateResult<T>>),
    Remote(Pin<Box<dyn Future<Output = StateResult<T>> + Send>>),
}

impl<T> StateIo<T> {
    fn ready(result: StateResult<T>) -> Self {
        StateIo::Ready(Some(result))
    }

    fn remote(fut: impl Future<Output = StateResult<T>> + Send + 'static) -> Self {
        StateIo::Remote(Box::pin(fut))
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
