//! The operator behind fold and reduce: load a key's value, combine it with the event through
//! the user's closure, store the result, emit it.

use std::future::Future;

use rs2_state_core::{StateAccess, StateConfig};
use rs2_state_memory::TypedTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::driver::{Emit, EventOp, Finish};
use crate::engine::{EventKey, KeyedState, Loaded, StateIo};

/// How an accumulating operator starts on an event, given the key's stored value.
pub trait Seed<T, A> {
    /// `Ok((value, event))` runs the closure on them; `Err(value)` stores and emits `value`
    /// without running it.
    fn start(&self, stored: Option<A>, event: T) -> Result<(A, T), A>;
}

/// The per-event operator behind [`StatefulFold`](crate::StatefulFold) and
/// [`StatefulReduce`](crate::StatefulReduce) (their docs state the rules).
///
/// With a private store the values stay typed in the operator's table: an event takes its
/// key's value out, the closure gets it by value, and the result is put back (no encoding,
/// no lock). In a shared store the value is read under the key's lock, which the save after
/// the closure releases, so pipelines sharing the store apply their events one at a time.
pub(crate) struct Accumulate<T, F, A, Sd> {
    values: Option<TypedTable<A>>,
    user_state: KeyedState,
    seed: Sd,
    f: F,
    /// The event whose value is being read.
    event: Option<T>,
    /// The value being saved, yielded once the save landed.
    saved: Option<A>,
    /// The event's key's hash in `values` (computed by `begin`, reused by the put-back).
    hash: u64,
}

impl<T, F, A, Sd> Accumulate<T, F, A, Sd> {
    /// The operator `op` (`"fold"` or `"reduce"`; its closure's state is `"{op}.user"`) whose
    /// own state is `keyed`.
    pub fn new(config: &StateConfig, op: &str, keyed: &KeyedState, seed: Sd, f: F) -> Self {
        Self {
            values: keyed.is_private().then(|| keyed.typed_table(config)),
            user_state: KeyedState::new(config, &format!("{op}.user")),
            seed,
            f,
            event: None,
            saved: None,
            hash: 0,
        }
    }
}

impl<T, F, Fut, A, Sd> EventOp<T> for Accumulate<T, F, A, Sd>
where
    Sd: Seed<T, A>,
    F: FnMut(A, T, StateAccess) -> Fut,
    Fut: Future<Output = A>,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    type Out = Loaded<A>;
    type Fut = Fut;
    type Item = A;

    fn begin(
        &mut self,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
        event: T,
    ) -> StateIo<Loaded<A>> {
        self.event = Some(event);
        match &mut self.values {
            Some(table) => {
                self.hash = table.hash(&key.storage_key);
                let value = table.take(self.hash, &key.storage_key, now);
                StateIo::ready(Ok(Loaded { value, lock: None }))
            }
            None => keyed.load_for_update(key, now),
        }
    }

    fn emit(
        &mut self,
        loaded: Loaded<A>,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> Emit<A, Fut> {
        let Loaded { value, lock } = loaded;
        // Held until the save after the closure releases it (a store that is not in-process).
        key.lock = lock;
        let Some(event) = self.event.take() else {
            return Emit::Skip;
        };
        match self.seed.start(value, event) {
            Ok((acc, event)) => {
                let access = self.user_state.access_for(key.user_key(), now);
                Emit::Run((self.f)(acc, event, access))
            }
            // Reduce's first event: stored and yielded as it is.
            Err(value) => match self.store(value, keyed, key, now) {
                Finish::Item(value) => Emit::Item(value),
                Finish::Save(io) => Emit::Save(io),
                Finish::Err(err) => Emit::Err(err),
                Finish::Skip => Emit::Skip,
            },
        }
    }

    fn finish(
        &mut self,
        value: A,
        keyed: &mut KeyedState,
        mut key: EventKey,
        now: u64,
    ) -> Finish<A> {
        self.store(value, keyed, &mut key, now)
    }

    fn saved(&mut self) -> Option<A> {
        self.saved.take()
    }
}

impl<T, F, A: Clone + Serialize, Sd> Accumulate<T, F, A, Sd> {
    /// Stores the key's new value and yields it (once the save landed).
    fn store(
        &mut self,
        value: A,
        keyed: &mut KeyedState,
        key: &mut EventKey,
        now: u64,
    ) -> Finish<A> {
        if let Some(table) = &mut self.values {
            table.put(self.hash, &key.storage_key, now, value.clone());
            return Finish::Item(value);
        }
        let io = keyed.save(key, &value, now);
        match io.into_ready() {
            Ok(Ok(())) => Finish::Item(value),
            Ok(Err(err)) => Finish::Err(err),
            Err(io) => {
                self.saved = Some(value);
                Finish::Save(io)
            }
        }
    }
}
