//! The step behind `stateful_fold_rs2_par` and `stateful_reduce_rs2_par`: per event, load the
//! key's value, combine it with the event through the user's closure, store the result, emit
//! it, as the sequential fold and reduce do, but as one future per event so that the
//! engine ([`KeyedPar`](crate::engine::KeyedPar)) can run events of different keys at once.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use rs2_state_core::{SharedStorage, StateAccess, StateConfig, StateError, StateResult};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::accumulate::Seed;
use crate::engine::{save_detached, EventKey, InFlight, KeyedState, Landed, Loaded, StateIo};
use crate::engine::{ParStart, ParStep, Turn};

/// The step of [`StatefulFoldPar`](crate::StatefulFoldPar) and
/// [`StatefulReducePar`](crate::StatefulReducePar): the same state and error items as the
/// sequential operators (the value in namespace `fold` or `reduce`, the closure's user state in
/// `fold.user` or `reduce.user`; an undecodable stored value gives an `Err` item and is left
/// untouched). In a store that is not in-process an event reads its key's value under the
/// key's lock, and the save after the closure releases it.
pub struct AccumulateParStep<F, Fut, A, Sd> {
    acc_state: KeyedState,
    user_state: KeyedState,
    seed: Sd,
    f: F,
    _types: PhantomData<fn() -> (Fut, A)>,
}

/// A key's loaded value, handed back to [`AccumulateParStep`] to run the closure (after a
/// read from a remote store).
pub struct AccumulateParResume<T, A>(Landed<T, Loaded<A>>);

impl<F, Fut, A, Sd> AccumulateParStep<F, Fut, A, Sd> {
    pub(crate) fn new(config: &StateConfig, op: &'static str, seed: Sd, f: F) -> Self {
        Self {
            acc_state: KeyedState::new(config, op),
            user_state: KeyedState::new(config, &format!("{op}.user")),
            seed,
            f,
            _types: PhantomData,
        }
    }

    /// Goes on with a loaded value: seeds or runs the closure.
    fn run<T>(&mut self, landed: Landed<T, Loaded<A>>) -> AccumulateParFut<Fut, T, A>
    where
        Sd: Seed<T, A>,
        F: FnMut(A, T, StateAccess) -> Fut,
        A: Serialize,
    {
        let Landed {
            event,
            mut key,
            now,
            result,
        } = landed;
        let stored = match result {
            Ok(Loaded { value, lock }) => {
                // Held until the save releases it (a store that is not in-process).
                key.lock = lock;
                value
            }
            Err(err) => return AccumulateParFut::finished(Err(err)),
        };
        match self.seed.start(stored, event) {
            Ok((acc, event)) => {
                let access = match self.user_state.derived_key(key.user_key()) {
                    Ok(user_key) => self.user_state.access(user_key, now),
                    Err(err) => KeyedState::failed_access(err),
                };
                AccumulateParFut {
                    closure: Some((self.f)(acc, event, access)),
                    phase: Phase::Running {
                        storage: self.acc_state.storage().clone(),
                        ttl: self.acc_state.ttl(),
                        key,
                        now,
                    },
                }
            }
            Err(value) => {
                let io = self.acc_state.save(&mut key, &value, now);
                AccumulateParFut {
                    closure: None,
                    phase: Phase::Saving { value, io },
                }
            }
        }
    }
}

impl<T, F, Fut, A, Sd> ParStep<T> for AccumulateParStep<F, Fut, A, Sd>
where
    Sd: Seed<T, A>,
    F: FnMut(A, T, StateAccess) -> Fut,
    Fut: Future<Output = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = StateResult<A>;
    type Resume = AccumulateParResume<T, A>;
    type Fut = AccumulateParFut<Fut, T, A>;
}

impl<T, F, Fut, A, Sd> ParStart<T> for AccumulateParStep<F, Fut, A, Sd>
where
    Sd: Seed<T, A>,
    F: FnMut(A, T, StateAccess) -> Fut,
    Fut: Future<Output = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
{
    fn keyed(&mut self) -> &mut KeyedState {
        &mut self.acc_state
    }

    fn start(&mut self, event: T, key: StateResult<EventKey>) -> Self::Fut {
        let mut key = match key {
            Ok(key) => key,
            Err(err) => return AccumulateParFut::finished(Err(err)),
        };
        let now = self.acc_state.now();
        let io = self.acc_state.load_for_update(&mut key, now);
        // An in-process store has read already: run the closure now, without a round trip.
        match InFlight::new(event, key, now, io).try_land() {
            Ok(landed) => self.run(landed),
            Err(load) => AccumulateParFut {
                closure: None,
                phase: Phase::Loading(load),
            },
        }
    }

    fn resume(&mut self, AccumulateParResume(landed): Self::Resume) -> Self::Fut {
        self.run(landed)
    }
}

pin_project! {
    /// One event of a fold or reduce with keyed concurrency: load the key's value (a remote
    /// read hands back to the step to run the closure), run the closure, store its result.
    pub struct AccumulateParFut<Fut, T, A> {
        #[pin]
        closure: Option<Fut>,
        phase: Phase<T, A>,
    }
}

enum Phase<T, A> {
    /// Reading the key's value from a remote store.
    Loading(InFlight<T, Loaded<A>>),
    /// Running the closure; its result goes to `key` in `storage`.
    Running {
        storage: SharedStorage,
        ttl: Duration,
        key: EventKey,
        now: u64,
    },
    /// Storing the key's new value.
    Saving { value: A, io: StateIo<()> },
    /// Done without the closure (an error, or already yielded: `None`).
    Finished(Option<StateResult<A>>),
}

impl<Fut, T, A> AccumulateParFut<Fut, T, A> {
    fn finished(result: StateResult<A>) -> Self {
        Self {
            closure: None,
            phase: Phase::Finished(Some(result)),
        }
    }
}

impl<Fut, T, A> Future for AccumulateParFut<Fut, T, A>
where
    Fut: Future<Output = A>,
    A: Serialize,
{
    type Output = Turn<StateResult<A>, AccumulateParResume<T, A>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.phase, Phase::Finished(None)) {
                Phase::Loading(load) => match load.poll(cx) {
                    Ok(landed) => return Poll::Ready(Turn::Resume(AccumulateParResume(landed))),
                    Err(load) => {
                        *this.phase = Phase::Loading(load);
                        return Poll::Pending;
                    }
                },
                Phase::Running {
                    storage,
                    ttl,
                    mut key,
                    now,
                } => {
                    let Some(closure) = this.closure.as_mut().as_pin_mut() else {
                        return Poll::Ready(Turn::Done(Some(Err(StateError::Storage(
                            "accumulator future running without its closure".into(),
                        )))));
                    };
                    let Poll::Ready(value) = closure.poll(cx) else {
                        *this.phase = Phase::Running {
                            storage,
                            ttl,
                            key,
                            now,
                        };
                        return Poll::Pending;
                    };
                    this.closure.set(None);
                    let io = save_detached(&storage, ttl, &mut key, &value, now);
                    *this.phase = Phase::Saving { value, io };
                }
                Phase::Saving { value, mut io } => match Pin::new(&mut io).poll(cx) {
                    Poll::Ready(result) => {
                        return Poll::Ready(Turn::Done(Some(result.map(|()| value))))
                    }
                    Poll::Pending => {
                        *this.phase = Phase::Saving { value, io };
                        return Poll::Pending;
                    }
                },
                Phase::Finished(result) => {
                    return Poll::Ready(Turn::Done(Some(result.unwrap_or_else(|| {
                        Err(StateError::Storage(
                            "accumulator future polled after completion".into(),
                        ))
                    }))))
                }
            }
        }
    }
}
