//! Issue 8, item 3: every operator's per-key state transition is atomic across pipelines that
//! share one custom store.
//!
//! Each test runs the same operator in two pipelines, each on its own OS thread with its own
//! tokio runtime (as two processes would), with one config: the same [`RacyStore`] and the
//! same namespace, so the two share the operator's state. The store is a remote backend as a
//! user writes one: the five required methods, no `update` override (the provided one is what
//! the operators must rely on), every call taking a random short while. Between a pipeline's
//! read of a key and its write, the other pipeline may read and write the same key, so a
//! get → compute → set transition loses the other pipeline's write. The two inputs meet at a
//! rendezvous every [`RENDEZVOUS_EVERY`] events, so the pipelines stay abreast and contend for
//! the same keys all along, not just at the start.
//!
//! Every event carries a unique number (`Ev::n`: the pipeline times 100,000 plus its index), so
//! the checks name what was lost or repeated. Each check holds for any interleaving of the two
//! pipelines' transitions as long as each transition is atomic (run one pipeline after the
//! other, every check passes).
//!
//! The runtimes run on real time, not paused: a paused runtime waiting for the other thread
//! (a lock held there, the rendezvous) with a timer pending would jump its clock forward, and
//! a paused sleep would not let the other thread in between a read and its write. The store's
//! latency is therefore a real, blocking sleep of at most 120 µs (each runtime runs one
//! pipeline, so there is nothing for it to block).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::async_trait;
use rs2_suite::{by_user, ev, Ev};

/// A window (throttle, dedup, join, session) no test comes near: every event is in it.
const HOUR: Duration = Duration::from_secs(3600);

/// The two pipelines' inputs meet every this many events.
const RENDEZVOUS_EVERY: usize = 2;

/// A pipeline that has not finished by then is reported as hung (a deadlock).
const HANG_AFTER: Duration = Duration::from_secs(20);

// --- the shared store ------------------------------------------------------------------------

/// A remote-like backend shared by both pipelines: a map behind a mutex, each call in flight
/// for a random while (0–3 tokio yields, and three times in four a real sleep of 30–120 µs).
/// A read returns what the map held before its latency, a write lands after its latency.
/// Only the five required methods: the provided `update` is used as is.
struct RacyStore {
    map: Mutex<HashMap<String, Vec<u8>>>,
    calls: AtomicU64,
    seed: u64,
}

impl RacyStore {
    fn config(seed: u64) -> StateConfig {
        let store = Arc::new(RacyStore {
            map: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            seed,
        });
        StateConfig::new().with_custom_storage(store)
    }

    /// The network's share of a call: a random short while, different for every call.
    async fn in_flight(&self) {
        let r = mix(self.seed ^ self.calls.fetch_add(1, Ordering::Relaxed));
        for _ in 0..r % 4 {
            tokio::task::yield_now().await;
        }
        let micros = (r >> 8) % 120;
        if micros >= 30 {
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
}

#[async_trait]
impl StateStorage for RacyStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let value = self.map.lock().unwrap().get(key).cloned();
        self.in_flight().await;
        Ok(value)
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.in_flight().await;
        self.map
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.in_flight().await;
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        let exists = self.map.lock().unwrap().contains_key(key);
        self.in_flight().await;
        Ok(exists)
    }
    async fn clear(&self) -> StateResult<()> {
        self.in_flight().await;
        self.map.lock().unwrap().clear();
        Ok(())
    }
}

// --- randomness ------------------------------------------------------------------------------

/// splitmix64's finaliser: a well-spread `u64` from any `u64`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic xorshift generator (no rand dependency).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(mix(seed) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// --- two pipelines on two runtimes -----------------------------------------------------------

/// Runs `pipeline(p, inputs[p])` for `p` 0 and 1, each on its own OS thread with its own
/// current-thread runtime, and returns their outputs.
fn on_two_runtimes<I, O, F, Fut>(inputs: [I; 2], pipeline: F) -> [O; 2]
where
    I: Send,
    O: Send,
    F: Fn(usize, I) -> Fut + Sync,
    Fut: Future<Output = O>,
{
    let pipeline = &pipeline;
    std::thread::scope(|scope| {
        let threads: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(p, input)| {
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("a runtime");
                    runtime.block_on(async {
                        tokio::time::timeout(HANG_AFTER, pipeline(p, input))
                            .await
                            .unwrap_or_else(|_| panic!("pipeline {p} hung"))
                    })
                })
            })
            .collect();
        let mut outputs = threads.into_iter().enumerate().map(|(p, t)| {
            t.join().unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                panic!("pipeline {p} panicked: {msg}")
            })
        });
        [outputs.next().unwrap(), outputs.next().unwrap()]
    })
}

/// The rendezvous of two inputs (one per pipeline): each waits for the other every
/// [`RENDEZVOUS_EVERY`] events. Both inputs must have the same length. If the other does not
/// come within [`GIVE_UP_AFTER`] (its pipeline panicked, or the machine is very busy), both
/// stop waiting from then on: the test goes on, with less contention, instead of hanging.
#[derive(Clone)]
struct Lockstep(Arc<(tokio::sync::Barrier, AtomicBool)>);

const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

impl Lockstep {
    fn new() -> Self {
        Lockstep(Arc::new((
            tokio::sync::Barrier::new(2),
            AtomicBool::new(false),
        )))
    }

    fn feed<T>(&self, events: Vec<T>) -> impl Stream<Item = T> {
        let gate = Arc::clone(&self.0);
        futures::stream::unfold(
            (events.into_iter(), 0usize, gate),
            |(mut rest, taken, gate)| async move {
                let event = rest.next()?;
                let (barrier, gave_up) = &*gate;
                if taken % RENDEZVOUS_EVERY == 0
                    && !gave_up.load(Ordering::Relaxed)
                    && tokio::time::timeout(GIVE_UP_AFTER, barrier.wait())
                        .await
                        .is_err()
                {
                    gave_up.store(true, Ordering::Relaxed);
                }
                Some((event, (rest, taken + 1, gate)))
            },
        )
    }
}

/// Pipeline `p`'s input: `per_key` events of each of `keys`, numbered `p * 100_000 + i`, in a
/// random order (seeded by `seed` and `p`).
fn keyed_input(p: usize, keys: &[&str], per_key: usize, seed: u64) -> Vec<Ev> {
    let mut events: Vec<Ev> = keys
        .iter()
        .flat_map(|k| std::iter::repeat_n(*k, per_key))
        .enumerate()
        .map(|(i, k)| ev(k, (p * 100_000 + i) as u32))
        .collect();
    Rng::new(seed * 2 + p as u64).shuffle(&mut events);
    events
}

/// Pipeline `p`'s input for operators whose race is on a key's first events (dedup, session):
/// `rounds` times every key `k0` ... of `keys`, in the same blocks of [`RENDEZVOUS_EVERY`] keys
/// in both pipelines (so the two take a key's first events at the same time), each block
/// shuffled its own way; numbered as in [`keyed_input`].
fn aligned_input(p: usize, keys: usize, rounds: usize, seed: u64) -> Vec<Ev> {
    let mut rng = Rng::new(seed * 2 + p as u64);
    let mut order = Vec::with_capacity(keys * rounds);
    for _ in 0..rounds {
        let mut round: Vec<usize> = (0..keys).collect();
        for block in round.chunks_mut(RENDEZVOUS_EVERY) {
            rng.shuffle(block);
        }
        order.extend(round);
    }
    order
        .into_iter()
        .enumerate()
        .map(|(i, k)| ev(&format!("k{k}"), (p * 100_000 + i) as u32))
        .collect()
}

/// The `Ok` items of pipeline `p`, or a panic naming its `Err` items.
fn oks<R>(p: usize, items: Vec<Result<R, StateError>>) -> Vec<R> {
    let (oks, errs): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
    let errs: Vec<StateError> = errs.into_iter().filter_map(Result::err).collect();
    assert!(
        errs.is_empty(),
        "pipeline {p} yielded {} Err item(s): {}",
        errs.len(),
        brief(&errs)
    );
    oks.into_iter().filter_map(Result::ok).collect()
}

/// At most the first 6 of `items`, and how many there are.
fn brief<T: Debug>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(6).map(|x| format!("{x:?}")).collect();
    let more = if items.len() > 6 { ", ..." } else { "" };
    format!("[{}{more}] ({} in all)", shown.join(", "), items.len())
}

/// What of `expected` was `seen` other than exactly once (`None`: each exactly once).
fn exactly_once(
    what: &str,
    expected: impl IntoIterator<Item = u32>,
    seen: impl IntoIterator<Item = u32>,
) -> Option<String> {
    let mut counts: BTreeMap<u32, usize> = expected.into_iter().map(|x| (x, 0)).collect();
    let mut unexpected = Vec::new();
    for x in seen {
        match counts.get_mut(&x) {
            Some(c) => *c += 1,
            None => unexpected.push(x),
        }
    }
    let missing: Vec<u32> = counts.iter().filter(|c| *c.1 == 0).map(|c| *c.0).collect();
    let repeated: Vec<(u32, usize)> = counts
        .iter()
        .filter(|c| *c.1 > 1)
        .map(|(x, c)| (*x, *c))
        .collect();
    if missing.is_empty() && repeated.is_empty() && unexpected.is_empty() {
        return None;
    }
    Some(format!(
        "{what}: missing {}, more than once (value, times) {}, unexpected {}",
        brief(&missing),
        brief(&repeated),
        brief(&unexpected)
    ))
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The events of both inputs, by key.
fn by_key<'a>(inputs: impl IntoIterator<Item = &'a Vec<Ev>>) -> BTreeMap<String, Vec<u32>> {
    let mut keys: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for e in inputs.into_iter().flatten() {
        keys.entry(e.user.clone()).or_default().push(e.n);
    }
    keys
}

// --- throttle --------------------------------------------------------------------------------

#[test]
fn throttle_passes_exactly_the_limit_across_two_pipelines() {
    const LIMIT: u32 = 50;
    const PER_USER: usize = 100;
    let users = ["ann", "bob", "cy"];
    let config = RacyStore::config(1);
    let gate = Lockstep::new();
    let inputs = [0, 1].map(|p| keyed_input(p, &users, PER_USER, 1));
    let outputs = on_two_runtimes(inputs, |_, input| {
        let (config, gate) = (config.clone(), gate.clone());
        async move {
            let throttled = gate
                .feed(input)
                .stateful_throttle_rs2(config, by_user, LIMIT, HOUR);
            let dropped = throttled.dropped_counter();
            let items: Vec<_> = throttled.collect().await;
            (items, dropped.get())
        }
    });
    let mut passed: BTreeMap<&str, [usize; 2]> = users.iter().map(|u| (*u, [0, 0])).collect();
    let mut dropped = 0;
    for (p, (items, d)) in outputs.into_iter().enumerate() {
        dropped += d;
        for e in oks(p, items) {
            passed.get_mut(e.user.as_str()).expect("a known user")[p] += 1;
        }
    }
    let mut problems = Vec::new();
    for (user, [a, b]) in &passed {
        if a + b != LIMIT as usize {
            problems.push(format!(
                "user {user}: {} events passed ({a} in pipeline 0, {b} in pipeline 1), limit {LIMIT}",
                a + b
            ));
        }
    }
    let total: usize = passed.values().map(|[a, b]| a + b).sum();
    if total as u64 + dropped != 2 * (users.len() * PER_USER) as u64 {
        problems.push(format!("{total} passed + {dropped} dropped != every event"));
    }
    assert_no_problems(problems);
}

// --- dedup -----------------------------------------------------------------------------------

#[test]
fn dedup_passes_each_id_once_across_two_pipelines() {
    const IDS: usize = 200;
    let config = RacyStore::config(2);
    let gate = Lockstep::new();
    let inputs = [0, 1].map(|p| aligned_input(p, IDS, 1, 2));
    let outputs = on_two_runtimes(inputs, |_, input| {
        let (config, gate) = (config.clone(), gate.clone());
        async move {
            gate.feed(input)
                .stateful_deduplicate_rs2(config, by_user, HOUR)
                .collect::<Vec<_>>()
                .await
        }
    });
    let passed: Vec<u32> = outputs
        .into_iter()
        .enumerate()
        .flat_map(|(p, items)| oks(p, items))
        .map(|e| e.user[1..].parse().expect("a numbered key"))
        .collect();
    assert_no_problems(
        exactly_once("ids let through", 0..IDS as u32, passed)
            .into_iter()
            .collect(),
    );
}

// --- fold and reduce -------------------------------------------------------------------------

/// Runs `op` (a counting fold or reduce: each event adds 1 to its key's value) in both
/// pipelines over 4 keys and checks that each key's emitted values, across both, are exactly
/// `1..=` its number of events: every event saw its key's value after all earlier events of
/// either pipeline, so the final count is exact.
fn check_counter<F, Fut>(seed: u64, op: F)
where
    F: Fn(StateConfig, Lockstep, Vec<Ev>) -> Fut + Sync,
    Fut: Future<Output = Vec<Result<u64, StateError>>>,
{
    let keys = ["k0", "k1", "k2", "k3"];
    let config = RacyStore::config(seed);
    let gate = Lockstep::new();
    let inputs = [0, 1].map(|p| keyed_input(p, &keys, 40, seed));
    let outputs = on_two_runtimes(inputs.clone(), |_, input| {
        op(config.clone(), gate.clone(), input)
    });
    let mut values: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (p, items) in outputs.into_iter().enumerate() {
        let items = oks(p, items);
        assert_eq!(items.len(), inputs[p].len(), "one value per event");
        for (e, value) in inputs[p].iter().zip(items) {
            values.entry(e.user.clone()).or_default().push(value as u32);
        }
    }
    let mut problems = Vec::new();
    for (key, events) in by_key(&inputs) {
        let seen = values.remove(&key).unwrap_or_default();
        let last = seen.iter().max().copied().unwrap_or(0);
        problems.extend(exactly_once(
            &format!(
                "key {key} ({} events, final value {last}): values emitted",
                events.len()
            ),
            1..=events.len() as u32,
            seen,
        ));
    }
    assert_no_problems(problems);
}

async fn count(n: u64, _e: Ev, _state: StateAccess) -> u64 {
    n + 1
}

/// Reduce's running value is an `Ev` whose `n` counts the events (each input event has `n` 1,
/// so the key's first event seeds the count with 1).
async fn add(running: Ev, e: Ev, _state: StateAccess) -> Ev {
    Ev {
        user: running.user,
        n: running.n + e.n,
    }
}

fn ones(events: Vec<Ev>) -> Vec<Ev> {
    events.into_iter().map(|e| Ev { n: 1, ..e }).collect()
}

#[test]
fn fold_counts_exactly_across_two_pipelines() {
    check_counter(3, |config, gate, input| async move {
        gate.feed(input)
            .stateful_fold_rs2(config, by_user, 0u64, count)
            .collect()
            .await
    });
}

#[test]
fn fold_par_counts_exactly_across_two_pipelines() {
    check_counter(4, |config, gate, input| async move {
        gate.feed(input)
            .stateful_fold_rs2_par(config, by_user, 4, 0u64, count)
            .collect()
            .await
    });
}

#[test]
fn reduce_sums_exactly_across_two_pipelines() {
    check_counter(5, |config, gate, input| async move {
        gate.feed(ones(input))
            .stateful_reduce_rs2(config, by_user, add)
            .map(|r| r.map(|e| u64::from(e.n)))
            .collect()
            .await
    });
}

#[test]
fn reduce_par_sums_exactly_across_two_pipelines() {
    check_counter(6, |config, gate, input| async move {
        gate.feed(ones(input))
            .stateful_reduce_rs2_par(config, by_user, 4, add)
            .map(|r| r.map(|e| u64::from(e.n)))
            .collect()
            .await
    });
}

// --- window ----------------------------------------------------------------------------------

#[test]
fn window_loses_no_event_across_two_pipelines() {
    const W: usize = 4;
    let keys = ["ann", "bob", "cy"];
    let config = RacyStore::config(7);
    let gate = Lockstep::new();
    // 48 events of each key per pipeline: each key's 96 fill exactly 24 windows.
    let inputs = [0, 1].map(|p| keyed_input(p, &keys, 12 * W, 7));
    let outputs = on_two_runtimes(inputs.clone(), |_, input| {
        let (config, gate) = (config.clone(), gate.clone());
        async move {
            gate.feed(input)
                .stateful_window_rs2(config, by_user, W, |events, _| async move { events })
                .collect::<Vec<_>>()
                .await
        }
    });
    let windows: Vec<Vec<Ev>> = outputs
        .into_iter()
        .enumerate()
        .flat_map(|(p, items)| oks(p, items))
        .collect();
    let mut problems = Vec::new();
    let malformed: Vec<Vec<(String, u32)>> = windows
        .iter()
        .filter(|w| w.len() != W || w.iter().any(|e| e.user != w[0].user))
        .map(|w| w.iter().map(|e| (e.user.clone(), e.n)).collect())
        .collect();
    if !malformed.is_empty() {
        problems.push(format!(
            "windows not of {W} events of one key: {}",
            brief(&malformed)
        ));
    }
    for (key, events) in by_key(&inputs) {
        let seen = windows.iter().flatten().filter(|e| e.user == key);
        problems.extend(exactly_once(
            &format!("key {key} ({} events): events in windows", events.len()),
            events,
            seen.map(|e| e.n),
        ));
    }
    assert_no_problems(problems);
}

// --- pattern ---------------------------------------------------------------------------------

/// With `pattern_size` 2 a key's pairs are (previous event, event) for each of its events but
/// the first, in the order the store took them. So across both pipelines the pairs of a key
/// must chain all its events into one sequence: one event starts it, every event is followed
/// by at most one event, and walking the chain from the start visits every event. When two
/// pipelines append to the same stored events at once, one append is lost: the event before
/// them is followed by both (a fork), and the lost one is followed by none.
#[test]
fn pattern_loses_no_append_across_two_pipelines() {
    let keys = ["ann", "bob", "cy"];
    let config = RacyStore::config(8);
    let gate = Lockstep::new();
    let inputs = [0, 1].map(|p| keyed_input(p, &keys, 40, 8));
    let outputs = on_two_runtimes(inputs.clone(), |_, input| {
        let (config, gate) = (config.clone(), gate.clone());
        async move {
            gate.feed(input)
                .stateful_pattern_rs2(config, by_user, 2, |events, _| async move { Some(events) })
                .collect::<Vec<_>>()
                .await
        }
    });
    let pairs: Vec<Vec<Ev>> = outputs
        .into_iter()
        .enumerate()
        .flat_map(|(p, items)| oks(p, items))
        .collect();
    let mut problems = Vec::new();
    for (key, events) in by_key(&inputs) {
        let mut next: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut has_prev: BTreeMap<u32, usize> = BTreeMap::new();
        for pair in pairs.iter().filter(|pair| pair[1].user == key) {
            assert!(
                pair.len() == 2 && pair[0].user == key,
                "a pair of one key: {pair:?}"
            );
            next.entry(pair[0].n).or_default().push(pair[1].n);
            *has_prev.entry(pair[1].n).or_default() += 1;
        }
        let forks: Vec<(u32, Vec<u32>)> = next
            .iter()
            .filter(|(_, after)| after.len() > 1)
            .map(|(e, after)| (*e, after.clone()))
            .collect();
        let starts: Vec<u32> = events
            .iter()
            .copied()
            .filter(|e| !has_prev.contains_key(e))
            .collect();
        let mut chained = 0;
        let mut at = starts.first().copied();
        while let Some(e) = at {
            chained += 1;
            at = next
                .get(&e)
                .and_then(|after| after.first().copied())
                .filter(|_| chained <= events.len());
        }
        if !forks.is_empty() || starts.len() != 1 || chained != events.len() {
            problems.push(format!(
                "key {key} ({} events, {} pairs): events followed by more than one (event, \
                 followers) {}; events with no predecessor {} (expected exactly one); the \
                 chain from the first covers {chained} events",
                events.len(),
                has_prev.values().sum::<usize>(),
                brief(&forks),
                brief(&starts)
            ));
        }
    }
    assert_no_problems(problems);
}

// --- group_by --------------------------------------------------------------------------------

/// What "lose no event" can mean for group_by on a shared store.
///
/// group_by keeps its open groups in the store (`group_by:{key}#{chunk}`, up to 64 events per
/// entry) but their lengths and chunk numbers in an index in each operator's own memory, and
/// it flushes "its" open groups at the end of its input. Two pipelines sharing the store and
/// namespace can be made exact in two ways, and this test holds under either:
/// * groups are shared: the open group of a key, its length included, lives in the store; an
///   event is added atomically; the pipeline whose event fills a group emits it; a pipeline
///   whose input ends flushes the shared open groups of its keys (with whatever the other
///   pipeline put in them so far);
/// * groups are per pipeline: each operator instance keeps its groups under keys of its own,
///   so the pipelines never touch each other's groups.
///
/// So the test asserts what both give: across both pipelines, every event is in exactly one
/// emitted group; no `Err` item (no group reported lost); each group holds events of its own
/// key only, at most `max_group_size` of them, and each pipeline's events in it in that
/// pipeline's input order. It does not assert that groups are full (a shared group can be
/// flushed early by the pipeline that ends first) nor which pipeline emits a group.
#[test]
fn group_by_loses_no_event_across_two_pipelines() {
    const G: usize = 5;
    let keys = ["ann", "bob", "cy"];
    let config = RacyStore::config(9);
    let gate = Lockstep::new();
    let inputs = [0, 1].map(|p| keyed_input(p, &keys, 10 * G, 9));
    let outputs = on_two_runtimes(inputs.clone(), |_, input| {
        let (config, gate) = (config.clone(), gate.clone());
        async move {
            gate.feed(input)
                .stateful_group_by_advanced_rs2(
                    config,
                    by_user,
                    Some(G),
                    None,
                    false,
                    |key, events, _| async move { (key, events) },
                )
                .collect::<Vec<_>>()
                .await
        }
    });
    let (groups, errs): (Vec<_>, Vec<_>) = outputs.into_iter().flatten().partition(Result::is_ok);
    let groups: Vec<(String, Vec<Ev>)> = groups.into_iter().filter_map(Result::ok).collect();
    let errs: Vec<StateError> = errs.into_iter().filter_map(Result::err).collect();
    // Where each event stands in its pipeline's input.
    let position: HashMap<u32, usize> = inputs
        .iter()
        .flat_map(|input| input.iter().enumerate().map(|(i, e)| (e.n, i)))
        .collect();
    let mut problems = Vec::new();
    if !errs.is_empty() {
        problems.push(format!(
            "Err items (groups reported lost): {}",
            brief(&errs)
        ));
    }
    let malformed: Vec<(String, Vec<u32>)> = groups
        .iter()
        .filter(|(key, events)| {
            let in_order = |p: u32| {
                let mine: Vec<usize> = events
                    .iter()
                    .filter(|e| e.n / 100_000 == p)
                    .map(|e| position[&e.n])
                    .collect();
                mine.windows(2).all(|w| w[0] < w[1])
            };
            events.is_empty()
                || events.len() > G
                || events.iter().any(|e| e.user != *key)
                || !in_order(0)
                || !in_order(1)
        })
        .map(|(key, events)| (key.clone(), events.iter().map(|e| e.n).collect()))
        .collect();
    if !malformed.is_empty() {
        problems.push(format!(
            "groups empty, over {G} events, mixing keys or out of input order: {}",
            brief(&malformed)
        ));
    }
    for (key, events) in by_key(&inputs) {
        let seen = groups
            .iter()
            .filter(|(k, _)| *k == key)
            .flat_map(|(_, events)| events.iter().map(|e| e.n));
        problems.extend(exactly_once(
            &format!("key {key} ({} events): events in groups", events.len()),
            events,
            seen,
        ));
    }
    assert_no_problems(problems);
}

// --- session ---------------------------------------------------------------------------------

/// Every event comes within the timeout of the key's previous one, whichever pipeline had it,
/// so across both pipelines exactly one event per key starts a session. (The race is on a
/// key's first event: both pipelines take the first events of the same keys at once.)
#[test]
fn session_starts_once_per_key_across_two_pipelines() {
    const KEYS: usize = 100;
    let config = RacyStore::config(10);
    let gate = Lockstep::new();
    let inputs = [0, 1].map(|p| aligned_input(p, KEYS, 2, 10));
    let outputs = on_two_runtimes(inputs, |_, input| {
        let (config, gate) = (config.clone(), gate.clone());
        async move {
            gate.feed(input)
                .stateful_session_rs2(config, by_user, HOUR, |e, new, _| async move { (e, new) })
                .collect::<Vec<_>>()
                .await
        }
    });
    let mut starts: BTreeMap<String, Vec<u32>> =
        (0..KEYS).map(|k| (format!("k{k}"), Vec::new())).collect();
    for (p, items) in outputs.into_iter().enumerate() {
        for (e, new) in oks(p, items) {
            if new {
                starts.entry(e.user).or_default().push(e.n);
            }
        }
    }
    let wrong: Vec<(String, Vec<u32>)> = starts
        .into_iter()
        .filter(|(_, started)| started.len() != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {KEYS} keys did not have exactly one event start a session (key, events that \
         did): {}",
        wrong.len(),
        brief(&wrong)
    );
}

// --- join ------------------------------------------------------------------------------------

/// On a shared store the two pipelines' joins are one join over the union of their inputs:
/// each key's left and right buffers are shared, so a left event of one pipeline meets the
/// right events of both. Every (left, right) pair of a key is emitted exactly once, by the
/// pipeline whose event of the pair arrived second. This needs an arrival's read of both of
/// its key's buffers and its append to its own side to be one atomic step.
#[test]
fn join_emits_every_pair_once_across_two_pipelines() {
    let keys = ["ann", "bob"];
    let config = RacyStore::config(11);
    let (left_gate, right_gate) = (Lockstep::new(), Lockstep::new());
    let inputs = [0, 1].map(|p| {
        let left = keyed_input(p, &keys, 20, 11);
        let right: Vec<Ev> = keyed_input(p, &keys, 20, 12)
            .into_iter()
            .map(|e| Ev {
                n: e.n + 50_000,
                ..e
            })
            .collect();
        (left, right)
    });
    let outputs = on_two_runtimes(inputs.clone(), |_, (left, right)| {
        let config = config.clone();
        let (left, right) = (left_gate.feed(left), right_gate.feed(right));
        async move {
            left.stateful_join_rs2(
                right,
                config,
                by_user,
                by_user,
                HOUR,
                |l, r, _| async move { (l, r) },
            )
            .collect::<Vec<_>>()
            .await
        }
    });
    let pairs: Vec<(Ev, Ev)> = outputs
        .into_iter()
        .enumerate()
        .flat_map(|(p, items)| oks(p, items))
        .collect();
    let lefts = by_key(inputs.iter().map(|(l, _)| l));
    let rights = by_key(inputs.iter().map(|(_, r)| r));
    let mut problems = Vec::new();
    for key in keys {
        // A pair (l, r) as one number: l's number in the high half.
        let code = |l: u32, r: u32| (u64::from(l) << 32) | u64::from(r);
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for l in &lefts[key] {
            for r in &rights[key] {
                counts.insert(code(*l, *r), 0);
            }
        }
        let expected = counts.len();
        let mut strays = 0;
        for (l, r) in pairs.iter().filter(|(l, _)| l.user == key) {
            match counts.get_mut(&code(l.n, r.n)) {
                Some(c) if r.user == key => *c += 1,
                _ => strays += 1,
            }
        }
        let pair = |c: &u64| ((c >> 32) as u32, *c as u32);
        let missing: Vec<(u32, u32)> = counts
            .iter()
            .filter(|c| *c.1 == 0)
            .map(|c| pair(c.0))
            .collect();
        let repeated: Vec<(u32, u32)> = counts
            .iter()
            .filter(|c| *c.1 > 1)
            .map(|c| pair(c.0))
            .collect();
        if !missing.is_empty() || !repeated.is_empty() || strays > 0 {
            problems.push(format!(
                "key {key} ({expected} pairs): pairs never emitted {}; pairs emitted more than \
                 once {}; {strays} pairs of mismatched keys",
                brief(&missing),
                brief(&repeated)
            ));
        }
    }
    assert_no_problems(problems);
}

/// A store whose reads of a join's buffers take one tokio yield (a load that is not ready at
/// once).
#[derive(Default)]
struct LeftSlow(rs2_suite::MapStore);

#[async_trait]
impl StateStorage for LeftSlow {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        if key.starts_with("join.buffers:") {
            tokio::task::yield_now().await;
        }
        self.0.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.0.set(key, value).await
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.0.delete(key).await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.0.exists(key).await
    }
    async fn clear(&self) -> StateResult<()> {
        self.0.clear().await
    }
}

/// One pipeline, no sharing, on a store whose loads are not ready at once: every pair is
/// emitted (the join once dropped a buffer whose load landed before the other side's).
#[tokio::test]
async fn join_keeps_a_buffer_that_loaded_before_the_other() {
    let config = StateConfig::new().with_custom_storage(Arc::new(LeftSlow::default()));
    let left = futures::stream::iter([ev("a", 1), ev("a", 2)]);
    let right = futures::stream::iter([ev("a", 10)]);
    let joined = left.stateful_join_rs2(
        right,
        config,
        by_user,
        by_user,
        HOUR,
        |l, r, _| async move { (l.n, r.n) },
    );
    let mut pairs: Vec<(u32, u32)> = tokio::time::timeout(HANG_AFTER, joined.collect::<Vec<_>>())
        .await
        .expect("join hung")
        .into_iter()
        .map(|r| r.expect("no state error"))
        .collect();
    pairs.sort_unstable();
    assert_eq!(pairs, [(1, 10), (2, 10)]);
}
