//! Issue 8's reference loop, its events, and the four operator workloads measured against it.
//!
//! The reference loop is the yardstick every throughput figure in `docs/performance.md` is
//! also given against ("× reference loop"): 1,000,000 pre-built [`Ev`]s over 10,000 keys, the
//! key `e.key.to_string()`, a `std::collections::HashMap<String, u64>` counter, run as
//! `stream::iter(events).then(..)` yielding `ready(count)` and folded into a sum on a
//! current-thread tokio runtime. Each bench group that times an operator times this loop too,
//! in the same run.
//!
//! The four workloads of the table ([`op_map`], [`op_fold`], [`op_dedup`],
//! [`op_window`]) run over the same events with the same key, and fold their outputs into a
//! sum the same way.
//!
//! This file is a module of `rs2-benches` (`rs2_benches::reference`) and is also compiled into
//! `crates/rs2-operators/benches/operators.rs` with `#[path]`, so the per-crate bench measures
//! exactly the same code; it may only use what both packages depend on (`futures`, `serde`,
//! `tokio`, `rs2-operators`, `rs2-state-core`).

use std::collections::HashMap;
use std::future::ready;
use std::time::Duration;

use futures::{stream, Stream, StreamExt};
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{StateAccess, StateConfig, StateError};
use serde::{Deserialize, Serialize};

/// Events per run.
pub const EVENTS: usize = 1_000_000;
/// Distinct keys.
pub const KEYS: usize = 10_000;
/// Events per window of the window workload (tumbling).
pub const WINDOW: usize = 100;
/// The dedup workload's TTL: longer than a run, so each key's first event is kept and every
/// later one dropped.
pub const DEDUP_TTL: Duration = Duration::from_secs(3600);

/// The event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ev {
    /// The event's number.
    pub id: u64,
    /// The key, `0..keys`; pipelines key by `key.to_string()`.
    pub key: u64,
    /// A value (`id % 100`).
    pub v: u64,
}

/// `n` events over `keys` keys, drawn by the same fixed xorshift sequence as
/// `rs2_suite::keyed_events` (so the key order matches the other benches' input).
pub fn events(n: usize, keys: usize) -> Vec<Ev> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n as u64)
        .map(|id| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Ev {
                id,
                key: x % keys.max(1) as u64,
                v: id % 100,
            }
        })
        .collect()
}

/// The key extractor every workload uses: `e.key.to_string()`.
pub fn key(e: &Ev) -> String {
    e.key.to_string()
}

/// A current-thread tokio runtime with time enabled (the operators read tokio's clock).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Room for every key: the workloads measure the hot path, not eviction.
pub fn roomy() -> StateConfig {
    StateConfig::new().max_size(100_000)
}

/// The reference loop, exactly as issue 8 describes it: a per-key count in a
/// `HashMap<String, u64>` keyed by `e.key.to_string()`, inside `then`, folded into a sum.
pub async fn reference_loop(events: Vec<Ev>) -> u64 {
    let mut map: HashMap<String, u64> = HashMap::new();
    stream::iter(events)
        .then(|e| {
            let count = map.entry(e.key.to_string()).or_insert(0);
            *count += 1;
            ready(*count)
        })
        .fold(0u64, |sum, count| ready(sum + count))
        .await
}

/// Sums a stream of `u64`s (the reference loop's fold).
pub async fn sum(s: impl Stream<Item = u64>) -> u64 {
    s.fold(0u64, |sum, x| ready(sum + x)).await
}

fn ok<T>(r: Result<T, StateError>) -> T {
    r.expect("in-memory operator")
}

/// `stateful_map_rs2` as a keyed counter: `get`, add one, `set`, yield the count. Its sum
/// equals [`reference_loop`]'s.
pub async fn op_map(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events).stateful_map_rs2(
        roomy(),
        key,
        |_e: Ev, state: StateAccess| async move {
            let n = state.get::<u64>().await.unwrap_or(0) + 1;
            state.set(&n).await.expect("in-memory set");
            n
        },
    ))
    .await
}

/// `stateful_fold_rs2` as a keyed counter (yields each key's running count). Its sum equals
/// [`reference_loop`]'s.
pub async fn op_fold(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events)
        .stateful_fold_rs2(
            roomy(),
            key,
            0u64,
            |n, _e: Ev, _s: StateAccess| async move { n + 1 },
        )
        .map(ok))
    .await
}

/// `stateful_deduplicate_rs2` (TTL [`DEDUP_TTL`]): the sum of the kept events' `v`.
pub async fn op_dedup(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events)
        .stateful_deduplicate_rs2(roomy(), key, DEDUP_TTL)
        .map(|e| ok(e).v))
    .await
}

/// `stateful_window_rs2` (tumbling, [`WINDOW`] events): the sum of each full window's `v`s,
/// summed.
pub async fn op_window(events: Vec<Ev>) -> u64 {
    sum(stream::iter(events)
        .stateful_window_rs2(
            roomy(),
            key,
            WINDOW,
            |w: Vec<Ev>, _s: StateAccess| async move { w.iter().map(|e| e.v).sum::<u64>() },
        )
        .map(ok))
    .await
}
