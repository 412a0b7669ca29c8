//! Where an operator's own state lives: typed in a table of the operator's when its store is
//! private, as encoded bytes in the shared store otherwise. The operator writes its state
//! transition once, on a typed `Option<V>`, and [`OwnState::transition`] runs it either way.

use rs2_state_core::{StateConfig, StateResult};
use rs2_state_memory::TypedTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keyed::{decode, replace_encoded, Change, EventKey, KeyedState, StateIo};

/// An operator's own per-key state of type `V`.
pub(crate) struct OwnState<V> {
    /// `Some` when the operator's store is private: its state never leaves this table.
    table: Option<TypedTable<V>>,
}

impl<V> std::fmt::Debug for OwnState<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(table) => f.debug_tuple("Typed").field(table).finish(),
            None => f.write_str("Shared"),
        }
    }
}

impl<V> OwnState<V> {
    /// The state of an operator whose keyed state `keyed` was made from `config`.
    pub fn new(config: &StateConfig, keyed: &KeyedState) -> Self {
        Self {
            table: keyed.is_private().then(|| keyed.typed_table(config)),
        }
    }
}

impl<V: Serialize + DeserializeOwned + Send + 'static> OwnState<V> {
    /// Runs the transition `f` on the key's state: `f` gets the live value (`None` when the
    /// key has none, or it expired or was evicted) and says with its [`Change`] what becomes
    /// of it (`Store`: the option, which must then be `Some`, is the new value and its TTL
    /// starts again; `Keep`: unchanged, a use is recorded; `Remove`: the key is removed).
    /// On an error `f` must leave the option as it found it; nothing is written.
    ///
    /// Atomic per key: in the private table because the operator owns it, in a shared store
    /// through [`KeyedState::update_bytes`] (decoding before `f`, encoding after).
    pub fn transition<R, F>(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        f: F,
    ) -> StateIo<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Option<V>) -> StateResult<(Change, R)> + Send + 'static,
    {
        if let Some(table) = &mut self.table {
            return StateIo::ready(typed_transition(table, &key.storage_key, now, f));
        }
        keyed.update_bytes(key, now, move |user_key, bytes, existed| {
            let mut value = if existed {
                Some(decode::<V>(user_key, bytes)?)
            } else {
                None
            };
            let (change, r) = f(&mut value)?;
            if let (Change::Store, Some(value)) = (change, &value) {
                replace_encoded(user_key, bytes, value)?;
            }
            let change = match (change, value) {
                (Change::Store, None) => Change::Remove,
                (change, _) => change,
            };
            Ok((change, r))
        })
    }
}

/// [`OwnState::transition`] on the private table (also for operators whose shared-store state
/// has a byte layout of its own, such as window's event logs).
pub(crate) fn typed_transition<V, R>(
    table: &mut TypedTable<V>,
    key: &str,
    now: u64,
    f: impl FnOnce(&mut Option<V>) -> StateResult<(Change, R)>,
) -> StateResult<R> {
    let hash = table.hash(key);
    let mut value = table.take(hash, key, now);
    let had = value.is_some();
    let (change, r) = match f(&mut value) {
        Ok(done) => done,
        Err(err) => {
            if let Some(value) = value {
                table.restore(hash, key, value);
            }
            return Err(err);
        }
    };
    match (change, value) {
        (Change::Store, Some(value)) => table.put(hash, key, now, value),
        (Change::Keep, Some(value)) if had => table.restore(hash, key, value),
        (Change::Keep, _) => {}
        (Change::Remove | Change::Store, _) => {
            table.remove(hash, key);
        }
    }
    Ok(r)
}
