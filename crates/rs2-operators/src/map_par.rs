//! `stateful_map_rs2_par`: `stateful_map_rs2` with up to `n` events of different keys in flight.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Fuse, FusedStream, FuturesUnordered, StreamExt};
use futures::Stream;
use pin_project_lite::pin_project;
use rs2_state_core::{KeyExtractor, StateAccess, StateConfig};

use crate::keyed::KeyedState;

pin_project! {
    /// Stream returned by
    /// [`stateful_map_rs2_par`](crate::StatefulStreamExt::stateful_map_rs2_par).
    ///
    /// Like [`StatefulMap`](crate::StatefulMap), but up to `concurrency` events are in flight
    /// at once, so a closure that awaits I/O (or state behind a slow backend) overlaps with the
    /// closures of other keys. Guarantees:
    /// * events of **one key** run strictly one after another, in input order (an event waits
    ///   until the previous event of its key has finished, state writes included);
    /// * outputs are yielded in **input order**, whatever order the closures finish in;
    /// * at most `concurrency` events are taken from the input and not yet yielded (running,
    ///   waiting for their key, or finished but waiting for an earlier event's output), which
    ///   bounds memory; nothing is dropped or duplicated.
    ///
    /// `concurrency` 0 is treated as 1 (the sequential operator's behaviour).
    #[must_use = "streams do nothing unless polled"]
    pub struct StatefulMapPar<S: Stream, K, F, Fut: Future> {
        #[pin]
        stream: Fuse<S>,
        running: FuturesUnordered<Tagged<Fut>>,
        // Keys with an event running, and the events waiting behind it.
        busy: HashMap<String, VecDeque<(u64, S::Item)>>,
        // Finished outputs waiting for the outputs of earlier events.
        done: BTreeMap<u64, Fut::Output>,
        next_seq: u64,
        next_out: u64,
        concurrency: u64,
        keyed: KeyedState,
        key_extractor: K,
        f: F,
    }
}

pin_project! {
    /// A closure's future tagged with its event's sequence number and key.
    struct Tagged<Fut> {
        #[pin]
        fut: Fut,
        seq: u64,
        key: Option<String>,
    }
}

impl<Fut: Future> Future for Tagged<Fut> {
    type Output = (u64, Option<String>, Fut::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = futures::ready!(this.fut.poll(cx));
        Poll::Ready((*this.seq, this.key.take(), out))
    }
}

impl<S: Stream, K, F, Fut: Future> StatefulMapPar<S, K, F, Fut> {
    pub(crate) fn new(
        stream: S,
        config: StateConfig,
        key_extractor: K,
        concurrency: usize,
        f: F,
    ) -> Self {
        Self {
            stream: stream.fuse(),
            running: FuturesUnordered::new(),
            busy: HashMap::new(),
            done: BTreeMap::new(),
            next_seq: 0,
            next_out: 0,
            concurrency: concurrency.max(1) as u64,
            keyed: KeyedState::new(&config, "map"),
            key_extractor,
            f,
        }
    }
}

impl<S, K, F, Fut> Stream for StatefulMapPar<S, K, F, Fut>
where
    S: Stream,
    K: KeyExtractor<S::Item>,
    F: FnMut(S::Item, StateAccess) -> Fut,
    Fut: Future,
{
    type Item = Fut::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(out) = this.done.remove(this.next_out) {
                *this.next_out += 1;
                return Poll::Ready(Some(out));
            }
            // Take events while fewer than `concurrency` are outstanding.
            while *this.next_seq - *this.next_out < *this.concurrency {
                let Poll::Ready(Some(event)) = this.stream.as_mut().poll_next(cx) else {
                    break;
                };
                let seq = *this.next_seq;
                *this.next_seq += 1;
                match this.keyed.key_of(this.key_extractor, &event) {
                    Ok(key) => {
                        let user_key = key.user_key().to_owned();
                        if let Some(queue) = this.busy.get_mut(&user_key) {
                            queue.push_back((seq, event));
                            continue;
                        }
                        this.busy.insert(user_key.clone(), VecDeque::new());
                        let now = this.keyed.now();
                        let access = this.keyed.access(key, now);
                        this.running.push(Tagged {
                            fut: (this.f)(event, access),
                            seq,
                            key: Some(user_key),
                        });
                    }
                    // No key: nothing to serialise against; the closure sees the error
                    // through its access, as with the sequential operator.
                    Err(err) => this.running.push(Tagged {
                        fut: (this.f)(event, KeyedState::failed_access(err)),
                        seq,
                        key: None,
                    }),
                }
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((seq, key, out))) => {
                    this.done.insert(seq, out);
                    let Some(user_key) = key else { continue };
                    match this.busy.get_mut(&user_key).and_then(VecDeque::pop_front) {
                        Some((next_seq, event)) => {
                            let access = match this.keyed.derived_key(&user_key) {
                                Ok(key) => {
                                    let now = this.keyed.now();
                                    this.keyed.access(key, now)
                                }
                                Err(err) => KeyedState::failed_access(err),
                            };
                            this.running.push(Tagged {
                                fut: (this.f)(event, access),
                                seq: next_seq,
                                key: Some(user_key),
                            });
                        }
                        None => {
                            this.busy.remove(&user_key);
                        }
                    }
                }
                Poll::Ready(None) | Poll::Pending => {
                    if this.done.contains_key(this.next_out) {
                        continue;
                    }
                    let finished = this.stream.is_terminated() && this.running.is_empty();
                    return if finished && this.busy.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
    }
}
