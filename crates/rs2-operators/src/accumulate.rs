//! The engine behind fold and reduce: load a key's value, combine it with the event through
//! the user's closure, store the result, emit it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::{EventKey, InFlight, KeyedState, Landed, Loaded, StateIo};

/// How an accumulating operator starts on an event, given the key's stored value.
pub trait Seed<T, A> {
    /// `Ok((value, event))` runs the closure on them; `Err(value)` stores and emits `value`
    /// without running it.
    fn start(&self, stored: Option<A>, event: T) -> Result<(A, T), A>;
}

pin_project! {
    /// The stream behind [`StatefulFold`](crate::StatefulFold) and
    /// [`StatefulReduce`](crate::StatefulReduce): per key, load the stored value, combine it
    /// with the event, store the result and yield it.
    ///
    /// The stored value lives in the configured storage (namespace `fold` or `reduce`), so TTL
    /// and `max_size` apply: a key whose value expired or was evicted starts again. The closure
    /// also gets a [`StateAccess`] for the key's own user state (namespace `fold.user` or
    /// `reduce.user`, separate from the stored value).
    ///
    /// An `Err` item reports a failure for that event (invalid config, key extraction, backend,
    /// or a stored value that cannot be decoded, which is left untouched); the stream goes on
    /// with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct Accumulate<S: futures::Stream, K, F, Fut, A, Sd> {
        #[pin]
        stream: S,
        #[pin]
        pending: Option<Fut>,
        step: Step<S::Item, A>,
        acc_state: KeyedState,
        user_state: KeyedState,
        key_extractor: K,
        seed: Sd,
        f: F,
    }
}

enum Step<T, A> {
    Idle,
    Loading(InFlight<T, Loaded<A>>),
    Running { key: EventKey, now: u64 },
    Saving { value: A, io: StateIo<()> },
}

impl<S: Stream, K, F, Fut, A, Sd> Accumulate<S, K, F, Fut, A, Sd> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        op: &'static str,
        key_extractor: K,
        seed: Sd,
        f: F,
    ) -> Self {
        Self {
            stream,
            pending: None,
            step: Step::Idle,
            acc_state: KeyedState::new(&config, op),
            user_state: KeyedState::new(&config, &format!("{op}.user")),
            key_extractor,
            seed,
            f,
        }
    }
}

impl<S, K, F, Fut, A, Sd> Stream for Accumulate<S, K, F, Fut, A, Sd>
where
    S: Stream,
    Sd: Seed<S::Item, A>,
    K: KeyExtractor<S::Item>,
    F: FnMut(A, S::Item, StateAccess) -> Fut,
    Fut: Future<Output = A>,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<A, StateError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            let landed = match std::mem::replace(this.step, Step::Idle) {
                Step::Idle => {
                    let Some(event) = ready!(this.stream.as_mut().poll_next(cx)) else {
                        return Poll::Ready(None);
                    };
                    // An in-process store has read already: go on without a round trip
                    // through `step`.
                    match this.acc_state.begin(this.key_extractor, event) {
                        Ok(load) => match load.try_land() {
                            Ok(landed) => landed,
                            Err(load) => {
                                *this.step = Step::Loading(load);
                                continue;
                            }
                        },
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    }
                }
                Step::Loading(load) => match load.poll(cx) {
                    Ok(landed) => landed,
                    Err(load) => {
                        *this.step = Step::Loading(load);
                        return Poll::Pending;
                    }
                },
                Step::Running { mut key, now } => {
                    // Running is only entered with the closure's future set.
                    let Some(fut) = this.pending.as_mut().as_pin_mut() else {
                        continue;
                    };
                    let value = match fut.poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Running { key, now };
                            return Poll::Pending;
                        }
                        Poll::Ready(value) => value,
                    };
                    this.pending.set(None);
                    let io = this.acc_state.save(&mut key, &value, now);
                    match io.into_ready() {
                        Ok(result) => return Poll::Ready(Some(result.map(|()| value))),
                        Err(io) => *this.step = Step::Saving { value, io },
                    }
                    continue;
                }
                Step::Saving { value, mut io } => match Pin::new(&mut io).poll(cx) {
                    Poll::Pending => {
                        *this.step = Step::Saving { value, io };
                        return Poll::Pending;
                    }
                    Poll::Ready(result) => return Poll::Ready(Some(result.map(|()| value))),
                },
            };
            let Landed {
                event,
                mut key,
                now,
                result,
            } = landed;
            let stored = match result {
                Ok(Loaded { value, lock }) => {
                    // Held until the save below releases it (a store that is not in-process).
                    key.lock = lock;
                    value
                }
                Err(err) => return Poll::Ready(Some(Err(err))),
            };
            let (acc, event) = match this.seed.start(stored, event) {
                Ok(start) => start,
                Err(value) => {
                    let io = this.acc_state.save(&mut key, &value, now);
                    *this.step = Step::Saving { value, io };
                    continue;
                }
            };
            let access = match this.user_state.derived_key(key.user_key()) {
                Ok(user_key) => this.user_state.access(user_key, now),
                Err(err) => KeyedState::failed_access(err),
            };
            this.pending.set(Some((this.f)(acc, event, access)));
            *this.step = Step::Running { key, now };
        }
    }
}
