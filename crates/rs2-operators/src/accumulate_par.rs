//! The step behind `stateful_fold_rs2_par` and `stateful_reduce_rs2_par`: per event, load the
//! key's value, combine it with the event through the user's closure, store the result, emit
//! it, as the sequential fold and reduce do, but as one future per event so that the
//! engine ([`KeyedPar`](crate::engine::KeyedPar)) can run events of different keys at once.

use std::collections::VecDeque;
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
use crate::engine::{commit_detached, decode, encode, save_detached};
use crate::engine::{EventKey, InFlight, KeyedState, Landed, Loaded, StateIo};
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

/// Most waiting events of one key taken in one transition (a remote store only).
const GROUP_LIMIT: usize = 64;

/// What an event's future hands back to [`AccumulateParStep`] to run the user's closure:
/// a key's loaded value (after a read from a remote store), or a group of events of one key
/// going on to its next event.
pub struct AccumulateParResume<T, A>(ResumeWith<T, A>);

enum ResumeWith<T, A> {
    Loaded(Landed<T, Loaded<A>>),
    Group(Group<T, A>),
}

/// Events of one key waiting behind each other, taken in one transition on a remote store:
/// one locked read, each event's closure in order on the value the previous one made, one
/// write. Each event's item is what the sequential operator yields for it; if the write
/// fails, every event of the group yields the write's error (none of them is stored).
struct Group<T, A> {
    events: VecDeque<T>,
    /// Holds the key's lock.
    key: EventKey,
    now: u64,
    /// The value read, until the first event encodes it into `bytes`.
    loaded: Option<A>,
    /// The encoding of the value the next event starts from (`None`: the key has none).
    bytes: Option<Vec<u8>>,
    /// Whether an event changed the value (else the write only releases the lock).
    changed: bool,
    outputs: Vec<StateResult<A>>,
}

impl<T, A: Serialize + DeserializeOwned> Group<T, A> {
    /// The value the next event starts from.
    fn current(&self) -> StateResult<Option<A>> {
        let key = self.key.user_key();
        self.bytes.as_deref().map(|b| decode(key, b)).transpose()
    }

    /// An event's result: stored for the next event (if it encodes) and yielded.
    fn record(&mut self, value: A) {
        let mut bytes = Vec::new();
        match encode(self.key.user_key(), &value, &mut bytes) {
            Ok(()) => {
                self.bytes = Some(bytes);
                self.changed = true;
                self.outputs.push(Ok(value));
            }
            // As the sequential operator: this event's item is the error, the value stays.
            Err(err) => self.outputs.push(Err(err)),
        }
    }
}

impl<F, Fut, A, Sd> AccumulateParStep<F, Fut, A, Sd> {
    pub(crate) fn new(config: &StateConfig, op: &'static str, seed: Sd, f: F) -> Self {
        let config = &crate::engine::with_stats(config);
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
    fn error_of(item: &StateResult<A>) -> Option<&rs2_state_core::StateError> {
        item.as_ref().err()
    }

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

    fn resume(&mut self, AccumulateParResume(resume): Self::Resume) -> Self::Fut {
        match resume {
            ResumeWith::Loaded(landed) => self.run(landed),
            ResumeWith::Group(group) => self.advance(group),
        }
    }

    fn group_limit(&self) -> usize {
        // An in-process store answers at once: nothing to save by grouping.
        if self.acc_state.storage().as_local().is_some() {
            1
        } else {
            GROUP_LIMIT
        }
    }

    fn start_group(
        &mut self,
        events: Vec<T>,
        mut key: EventKey,
    ) -> Result<Self::Fut, (Vec<T>, EventKey)> {
        let now = self.acc_state.now();
        let io = self.acc_state.load_for_update(&mut key, now);
        Ok(AccumulateParFut {
            closure: None,
            phase: Phase::GroupLoading(InFlight::new(events.into(), key, now, io)),
        })
    }
}

impl<F, Fut, A, Sd> AccumulateParStep<F, Fut, A, Sd> {
    /// Goes on with a group: runs its events without a closure of their own (a reduce's first
    /// value) at once, and starts the closure of the next that has one; once every event ran,
    /// writes the value and releases the key.
    fn advance<T>(&mut self, mut group: Group<T, A>) -> AccumulateParFut<Fut, T, A>
    where
        Sd: Seed<T, A>,
        F: FnMut(A, T, StateAccess) -> Fut,
        A: Serialize + DeserializeOwned,
    {
        if let Some(value) = group.loaded.take() {
            let mut bytes = Vec::new();
            match encode(group.key.user_key(), &value, &mut bytes) {
                Ok(()) => group.bytes = Some(bytes),
                // A stored value that decodes but does not encode again: no event can run on
                // it, and it is left as it is.
                Err(err) => {
                    let events = std::mem::take(&mut group.events);
                    group
                        .outputs
                        .extend(events.iter().map(|_| Err(err.clone())));
                }
            }
        }
        while let Some(event) = group.events.pop_front() {
            let stored = match group.current() {
                Ok(stored) => stored,
                Err(err) => {
                    group.outputs.push(Err(err));
                    continue;
                }
            };
            match self.seed.start(stored, event) {
                Ok((acc, event)) => {
                    let access = match self.user_state.derived_key(group.key.user_key()) {
                        Ok(user_key) => self.user_state.access(user_key, group.now),
                        Err(err) => KeyedState::failed_access(err),
                    };
                    return AccumulateParFut {
                        closure: Some((self.f)(acc, event, access)),
                        phase: Phase::GroupRunning(group),
                    };
                }
                Err(value) => group.record(value),
            }
        }
        let bytes = group.changed.then(|| group.bytes.take()).flatten();
        let io = commit_detached(
            self.acc_state.storage(),
            self.acc_state.ttl(),
            &mut group.key,
            bytes,
        );
        AccumulateParFut {
            closure: None,
            phase: Phase::GroupSaving {
                outputs: group.outputs,
                io,
            },
        }
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
    /// A group's locked read.
    GroupLoading(InFlight<VecDeque<T>, Loaded<A>>),
    /// A group's event's closure running.
    GroupRunning(Group<T, A>),
    /// A group's write (and release of its key).
    GroupSaving {
        outputs: Vec<StateResult<A>>,
        io: StateIo<()>,
    },
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
    A: Serialize + DeserializeOwned,
{
    type Output = Turn<StateResult<A>, AccumulateParResume<T, A>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.phase, Phase::Finished(None)) {
                Phase::Loading(load) => match load.poll(cx) {
                    Ok(landed) => {
                        return Poll::Ready(Turn::Resume(AccumulateParResume(ResumeWith::Loaded(
                            landed,
                        ))))
                    }
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
                Phase::GroupLoading(load) => match load.poll(cx) {
                    Ok(Landed {
                        event: events,
                        mut key,
                        now,
                        result,
                    }) => {
                        let loaded = match result {
                            Ok(loaded) => loaded,
                            // No event of the group can run: each yields the read's error.
                            Err(err) => {
                                let outs = events.iter().map(|_| Some(Err(err.clone())));
                                return Poll::Ready(Turn::DoneGroup(outs.collect()));
                            }
                        };
                        key.lock = loaded.lock;
                        let group = Group {
                            outputs: Vec::with_capacity(events.len()),
                            events,
                            key,
                            now,
                            loaded: loaded.value,
                            bytes: None,
                            changed: false,
                        };
                        return Poll::Ready(Turn::Resume(AccumulateParResume(ResumeWith::Group(
                            group,
                        ))));
                    }
                    Err(load) => {
                        *this.phase = Phase::GroupLoading(load);
                        return Poll::Pending;
                    }
                },
                Phase::GroupRunning(mut group) => {
                    let Some(closure) = this.closure.as_mut().as_pin_mut() else {
                        let err = StateError::Storage("group running without its closure".into());
                        let outs = (0..=group.events.len()).map(|_| Some(Err(err.clone())));
                        let mut outputs: Vec<_> = group.outputs.into_iter().map(Some).collect();
                        outputs.extend(outs);
                        return Poll::Ready(Turn::DoneGroup(outputs));
                    };
                    let Poll::Ready(value) = closure.poll(cx) else {
                        *this.phase = Phase::GroupRunning(group);
                        return Poll::Pending;
                    };
                    this.closure.set(None);
                    group.record(value);
                    return Poll::Ready(Turn::Resume(AccumulateParResume(ResumeWith::Group(
                        group,
                    ))));
                }
                Phase::GroupSaving { outputs, mut io } => match Pin::new(&mut io).poll(cx) {
                    Poll::Ready(written) => {
                        let outs = outputs.into_iter().map(|out| {
                            Some(match (&written, out) {
                                // Not stored: no event of the group is acknowledged.
                                (Err(err), Ok(_)) => Err(err.clone()),
                                (_, out) => out,
                            })
                        });
                        return Poll::Ready(Turn::DoneGroup(outs.collect()));
                    }
                    Poll::Pending => {
                        *this.phase = Phase::GroupSaving { outputs, io };
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
