//! `stateful_group_by_rs2` and `stateful_group_by_advanced_rs2`: collect each key's events into
//! groups and hand every group to the user's closure.
//!
//! Both operators are one stream type: the basic one is the advanced one with no size limit, no
//! timeout and no emission on key change.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Sleep;

use crate::engine::timer::poll_timer;
use crate::engine::{ceil_ms, KeyedState, YieldBudget};

mod groups;

pub(crate) use groups::GROUP_CHUNK;
use groups::{event_not_grouped, into_user_key, Core, Emission, OpenGroups, Step};

/// Stream returned by
/// [`stateful_group_by_advanced_rs2`](crate::StatefulStreamExt::stateful_group_by_advanced_rs2)
/// (the same type as the basic operator's; see [`StatefulGroupBy`]).
pub type StatefulGroupByAdvanced<S, K, F, Fut> = StatefulGroupBy<S, K, F, Fut>;

pin_project! {
    /// Stream returned by [`stateful_group_by_rs2`](crate::StatefulStreamExt::stateful_group_by_rs2)
    /// and [`stateful_group_by_advanced_rs2`](crate::StatefulStreamExt::stateful_group_by_advanced_rs2).
    ///
    /// Each key's events are collected, in input order, into an open group. A group is
    /// **emitted**, that is handed to the closure as `f(key, events, state)` whose output is
    /// yielded as `Ok`, and closed (the key's next event opens a new group):
    ///
    /// * **full**: when it reaches `max_group_size` events (that event completes it);
    /// * **timed out**: `group_timeout` after the group's **first** event, by a tokio timer, so
    ///   it is emitted even while the input is idle (its own later events do not extend it);
    /// * **key change**: with `emit_on_key_change`, when an event's key differs from the
    ///   previous event's key, the previous key's open group is emitted before that event is
    ///   taken in;
    /// * **storage limits** (see State below): when the config's `max_size` is reached the
    ///   oldest open group is emitted early, and a group is emitted before its buffer could
    ///   expire from storage (when it has been open for the config's `ttl` less a margin of a
    ///   tenth of it, at most one second);
    /// * **end of input**: all groups still open, in the order of their first events.
    ///
    /// No group is dropped: every event taken in is emitted in exactly one group, or reported
    /// in an `Err` item. Groups due at the same moment are emitted oldest first; events are
    /// never reordered within a group. The basic operator has no size limit, no timeout and no
    /// key-change rule, so (within the storage limits) it emits each key's one group at the end
    /// of input, in the order of the keys' first events.
    ///
    /// **State.** Open groups live in the configured storage (namespace `group_by`), in
    /// entries of up to 64 events under the keys `{key}#0`, `{key}#1`, ...; an event is
    /// encoded once and appended to its group's last entry, in place in an in-process store
    /// (a remote store reads and writes that entry: at most 64 events). Events are decoded
    /// only when their group is emitted. Beside it the operator keeps an ordered index
    /// of its open groups (key, time of first event, length) in its own memory. The number of
    /// storage entries it holds never exceeds the config's `max_size`: when taking an event in
    /// would need one more, the oldest open group is emitted first (early). So `max_size`
    /// bounds the buffered events at `64 × max_size` and the open groups at `max_size`.
    /// The closure's [`StateAccess`] is the key's own user state (namespace `group_by.user`).
    ///
    /// **Timer.** Timeouts (and the storage-TTL guard) are tokio timers: poll this stream
    /// inside a tokio runtime with time enabled. Outside any tokio runtime (say under
    /// `futures::executor::block_on`) they are checked only when the stream is polled.
    ///
    /// **Errors.** `max_group_size == Some(0)` or a zero `group_timeout` yields one
    /// [`StateError::Validation`] item and ends the stream. An invalid config, a failing key
    /// extractor, or a backend failure while taking an event in yields an `Err` item for that
    /// event (naming the key) and the key's open group stays as it was. A group whose entries
    /// cannot be read back when it is emitted (backend failure, undecodable bytes) yields one
    /// `Err` item naming the key, removes nothing, and is kept to be emitted at its next
    /// trigger (up to 3 failed reads in a row; at the end of input it is left in storage). A
    /// group whose buffer vanished from storage yields one `Err` item naming the key and the
    /// number of events lost. After any `Err` the stream goes on with the next event.
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulGroupBy<S: futures::Stream, K, F, Fut> {
        #[pin]
        stream: S,
        #[pin]
        pending: Option<Fut>,
        #[pin]
        timer: Option<Sleep>,
        step: Step<S::Item>,
        core: Core<S::Item>,
        key_extractor: K,
        f: F,
    }
}

impl<S, K, F, Fut> StatefulGroupBy<S, K, F, Fut>
where
    S: Stream,
{
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        max_group_size: Option<usize>,
        group_timeout: Option<Duration>,
        emit_on_key_change: bool,
        f: F,
    ) -> Self {
        let config = crate::engine::with_stats(&config);
        let step = if max_group_size == Some(0) {
            Step::Invalid(StateError::Validation(
                "group_by operator: max_group_size cannot be Some(0); pass None for no size \
                 limit, or the number of events that completes a group (at least 1)"
                    .into(),
            ))
        } else if group_timeout.is_some_and(|t| t.is_zero()) {
            Step::Invalid(StateError::Validation(
                "group_by operator: group_timeout cannot be zero; pass None for no timeout, or \
                 how long after its first event a group is emitted"
                    .into(),
            ))
        } else {
            Step::Idle
        };
        // A group's entries are written no earlier than its first event, so emitting it
        // before `ttl` has passed since then (less a margin for a late timer) keeps every
        // entry live until it is read back.
        let ttl_ms = u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX);
        let ttl_guard = ttl_ms.saturating_sub((ttl_ms / 10).clamp(1, 1000));
        let due_after_ms = group_timeout.map_or(ttl_guard, |t| ceil_ms(t).min(ttl_guard));
        let groups = KeyedState::new(&config, "group_by");
        Self {
            stream,
            pending: None,
            timer: None,
            step,
            core: Core {
                instance: if groups.is_private() {
                    String::new()
                } else {
                    groups::instance_tag()
                },
                groups,
                user_state: KeyedState::new(&config, "group_by.user"),
                index: OpenGroups::default(),
                parked: None,
                prev_key: None,
                max_group_size,
                emit_on_key_change,
                due_after_ms,
                max_entries: config.max_size.filter(|&n| n != usize::MAX),
                input_done: false,
                armed_for: None,
                key_buf: String::new(),
                entry_log: groups::entry_writer(),
                read_failures: Default::default(),
            },
            key_extractor,
            f,
        }
    }

    /// This operator's figures, readable while the stream runs (clone the handle before
    /// consuming the stream): its store's entries, hits, misses, writes, evictions and
    /// expirations, and its `Err` items as `errors`. The config's handle
    /// ([`StateConfig::stats`]) if it has one, else the operator's own.
    pub fn stats(&self) -> rs2_state_core::StateStats {
        self.core.groups.stats().clone()
    }
}

impl<S, K, F, Fut, R> Stream for StatefulGroupBy<S, K, F, Fut>
where
    S: Stream,
    S::Item: Serialize + DeserializeOwned + Send + 'static,
    K: KeyExtractor<S::Item>,
    F: FnMut(String, Vec<S::Item>, StateAccess) -> Fut,
    Fut: Future<Output = R>,
{
    type Item = Result<R, StateError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let span = self.core.groups.span().clone();
        let _entered = span.enter();
        let polled = self.as_mut().poll_events(cx);
        if let Poll::Ready(Some(Err(err))) = &polled {
            self.core.groups.note_error(err);
        }
        polled
    }
}

impl<S, K, F, Fut> StatefulGroupBy<S, K, F, Fut>
where
    S: Stream,
    S::Item: Serialize + DeserializeOwned + Send + 'static,
    K: KeyExtractor<S::Item>,
    F: FnMut(String, Vec<S::Item>, StateAccess) -> Fut,
    Fut: Future,
{
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Fut::Output, StateError>>> {
        let mut this = self.project();
        let core = this.core;
        let mut budget = YieldBudget::default();
        loop {
            match std::mem::replace(this.step, Step::Idle) {
                Step::Idle => {
                    let now = core.groups.now();
                    if core.due(now) {
                        if let Some(step) = core.emit_oldest() {
                            *this.step = step;
                        }
                        continue;
                    }
                    if let Some((event, key)) = core.parked.take() {
                        match core.route(event, key, now) {
                            Ok(step) => *this.step = step,
                            Err(err) => return Poll::Ready(Some(Err(err))),
                        }
                        continue;
                    }
                    if core.input_done {
                        match core.emit_oldest() {
                            Some(step) => *this.step = step,
                            None => {
                                *this.step = Step::Done;
                                return Poll::Ready(None);
                            }
                        }
                        continue;
                    }
                    let event = match this.stream.as_mut().poll_next(cx) {
                        Poll::Ready(Some(event)) => event,
                        Poll::Ready(None) => {
                            core.input_done = true;
                            this.timer.set(None);
                            continue;
                        }
                        Poll::Pending => {
                            let Some(deadline) = core.next_deadline() else {
                                return Poll::Pending;
                            };
                            let timer = this.timer.as_mut();
                            match poll_timer(timer, &mut core.armed_for, &core.groups, deadline, cx)
                            {
                                Poll::Ready(()) => continue,
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                    };
                    let key = match core.groups.key_of(this.key_extractor, &event) {
                        Ok(key) => into_user_key(key),
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    };
                    if core.emit_on_key_change {
                        let prev = core.prev_key.replace(key.clone());
                        if let Some(prev) = prev.filter(|p| *p != key && core.index.contains(p)) {
                            let len = core.index.close(&prev).unwrap_or(0);
                            core.parked = Some((event, key));
                            *this.step = Step::Emitting(Emission::stored(prev, len));
                            continue;
                        }
                    }
                    match core.route(event, key, now) {
                        Ok(step) => *this.step = step,
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    }
                }
                Step::Completing {
                    event,
                    key,
                    len,
                    mut io,
                } => {
                    let loaded = match Pin::new(&mut io).poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Completing {
                                event,
                                key,
                                len,
                                io,
                            };
                            return Poll::Pending;
                        }
                        Poll::Ready(loaded) => loaded,
                    };
                    match loaded {
                        Ok(Some(mut tail)) => {
                            tail.push(event);
                            core.index.close(&key);
                            let stored = len / GROUP_CHUNK;
                            let em = Emission::new(key, len + 1, stored, stored + 1, Some(tail));
                            *this.step = Step::Emitting(em);
                        }
                        Ok(None) => *this.step = core.group_vanished(key, event),
                        Err(err) => return Poll::Ready(Some(Err(event_not_grouped(err, &key)))),
                    }
                }
                Step::Saving {
                    key,
                    new_group,
                    now,
                    mut io,
                } => match Pin::new(&mut io).poll(cx) {
                    Poll::Pending => {
                        *this.step = Step::Saving {
                            key,
                            new_group,
                            now,
                            io,
                        };
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Some(Err(event_not_grouped(err, &key))))
                    }
                    Poll::Ready(Ok(Some(event))) => *this.step = core.group_vanished(key, event),
                    Poll::Ready(Ok(None)) => {
                        if new_group {
                            core.index.open(key, now);
                        } else {
                            core.index.grow(&key);
                        }
                        if budget.spend(cx) {
                            return Poll::Pending;
                        }
                    }
                },
                Step::Emitting(mut em) => {
                    if core.poll_emission(&mut em, cx).is_pending() {
                        *this.step = Step::Emitting(em);
                        return Poll::Pending;
                    }
                    if let Some(cause) = em.unread.take() {
                        return Poll::Ready(Some(Err(core.keep_unread(em, cause))));
                    }
                    if let Some(err) = em.error {
                        return Poll::Ready(Some(Err(err)));
                    }
                    core.read_failures.remove(&em.key);
                    let mut events = em.events;
                    if let Some(tail) = em.tail {
                        if events.is_empty() {
                            events = tail;
                        } else {
                            events.extend(tail);
                        }
                    }
                    let now = core.groups.now();
                    let access = match core.user_state.derived_key(&em.key) {
                        Ok(user_key) => core.user_state.access(user_key, now),
                        Err(err) => KeyedState::failed_access(err),
                    };
                    this.pending.set(Some((this.f)(em.key, events, access)));
                    *this.step = Step::Running;
                }
                Step::Running => {
                    let Some(fut) = this.pending.as_mut().as_pin_mut() else {
                        continue;
                    };
                    match fut.poll(cx) {
                        Poll::Pending => {
                            *this.step = Step::Running;
                            return Poll::Pending;
                        }
                        Poll::Ready(out) => {
                            this.pending.set(None);
                            return Poll::Ready(Some(Ok(out)));
                        }
                    }
                }
                Step::Invalid(err) => {
                    *this.step = Step::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                Step::Done => {
                    *this.step = Step::Done;
                    return Poll::Ready(None);
                }
            }
        }
    }
}
