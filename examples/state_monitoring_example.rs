//! Watching state while pipelines run: four pipelines report into `StateStats` handles, and
//! the example prints their figures every second (the user documentation's "monitor state
//! size", "track state size and growth patterns").
//!
//! * `counters`: per-user event counts (`stateful_map_rs2`, 1,000 users): entries grow to the
//!   number of users, the hit rate climbs towards 100 % as users return; `bytes` is the
//!   store's size (88 bytes a key: these keys and values are short enough to live in it).
//! * `bounded`: per-key totals (`stateful_fold_rs2`) over 1,000 keys with `max_size` 100:
//!   entries stay at 100, every new key evicts the least recently used one.
//! * `dedup`: request deduplication with a 200 ms TTL: markers expire and cleanup passes drop
//!   them (`expirations`).
//! * `flaky`: per-key totals in a store failing 1 % of its calls
//!   (`rs2_state_testkit::FaultyStorage`): the config's default `RetryPolicy` tries each
//!   failed call again (`retries`); an event whose call still fails after 2 retries would be an
//!   `Err` item, counted in `errors`, and the stream would go on.
//!
//! Run: `cargo run --example state_monitoring_example -- --seconds 5` (default 3 seconds).
//! With `RUST_LOG`-style logging set up by a `tracing` subscriber in your application, the
//! same pipelines also log each failed event (warn), each retry and each cleanup pass (debug); see the
//! README's "Stats and logs".
//!
//! Output (one block per second; the numbers vary with the machine's speed):
//!
//! ```text
//! t=1s
//!   counters  entries=1000 hits=8990 misses=1000 hit_rate=90.0% writes=9990 ... bytes=88000
//!   bounded   entries=100 hits=0 misses=9990 hit_rate=0.0% writes=9990 evictions=9890 ...
//!   ...
//! ```
//!
//! At the end it checks the figures are plausible (entries bounded, evictions, expirations and
//! retries seen where they must be, none where they must not) and exits with status 1 if not.
use std::sync::Arc;
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::{StateStats, StatsSnapshot};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::MapStore;

/// Events per millisecond each pipeline takes in.
const PER_MS: usize = 10;

/// `key(i)` for i = 0, 1, 2, ... at about `PER_MS` events per millisecond, for `run_for`.
fn source(
    run_for: Duration,
    key: impl Fn(u64) -> String + Send + 'static,
) -> impl Stream<Item = String> + Send {
    let end = tokio::time::Instant::now() + run_for;
    futures::stream::unfold(0u64, move |i| {
        let next = key(i);
        async move {
            if i % PER_MS as u64 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if tokio::time::Instant::now() >= end {
                    return None;
                }
            }
            Some((next, i + 1))
        }
    })
}

#[allow(clippy::ptr_arg)] // a key extractor takes `&T`, and `T` is `String` here
fn by_key(k: &String) -> String {
    k.clone()
}

fn seconds_arg() -> Result<u64, String> {
    let mut args = std::env::args().skip(1);
    let mut seconds = 3;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--seconds needs a whole number above 0")?;
            }
            other => return Err(format!("unknown argument {other:?}; use --seconds N")),
        }
    }
    Ok(seconds)
}

#[tokio::main]
async fn main() {
    let seconds = match seconds_arg() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // The sources run half a second past the last print, so every print sees them running.
    let run_for = Duration::from_secs(seconds) + Duration::from_millis(500);
    let handles: Vec<(&str, StateStats)> = ["counters", "bounded", "dedup", "flaky"]
        .into_iter()
        .map(|name| (name, StateStats::new()))
        .collect();
    let stats = |name: &str| {
        handles
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .expect("a handle per pipeline")
    };

    let mut tasks = Vec::new();
    // counters: 1,000 users, each event counts one more for its user.
    let config = StateConfigs::high_performance().stats(stats("counters"));
    tasks.push(tokio::spawn(
        source(run_for, |i| format!("user-{}", i % 1_000))
            .stateful_map_rs2(config, by_key, |user, state| async move {
                let n = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
                (user, n)
            })
            .for_each(|_| async {}),
    ));
    // bounded: 1,000 keys into a store of 100.
    let config = StateConfig::new().max_size(100).stats(stats("bounded"));
    tasks.push(tokio::spawn(
        source(run_for, |i| format!("key-{}", i % 1_000))
            .stateful_fold_rs2(config, by_key, 0u64, |n, _k, _s| async move { n + 1 })
            .for_each(|_| async {}),
    ));
    // dedup: markers live 200 ms (the config's TTL), cleaned every 100 ms.
    let config = StateConfig::new()
        .ttl(Duration::from_millis(200))
        .cleanup_interval(Duration::from_millis(100))
        .stats(stats("dedup"));
    tasks.push(tokio::spawn(
        source(run_for, |i| format!("request-{}", i % 5_000))
            .stateful_deduplicate_rs2(config, by_key, Duration::from_millis(200))
            .for_each(|_| async {}),
    ));
    // flaky: a store failing 1 % of its calls (seeded: the same calls fail on every run).
    let store = Arc::new(FaultyStorage::new(MapStore::default()).fail_fraction(0.01, 42));
    let config = StateConfig::new()
        .with_custom_storage(store)
        .stats(stats("flaky"));
    tasks.push(tokio::spawn(
        source(run_for, |i| format!("key-{}", i % 100))
            .stateful_fold_rs2(config, by_key, 0u64, |n, _k, _s| async move { n + 1 })
            .for_each(|_| async {}),
    ));

    let mut last: Vec<(&str, StatsSnapshot)> = Vec::new();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for t in 1..=seconds {
        ticks.tick().await;
        println!("t={t}s");
        last = handles.iter().map(|(n, s)| (*n, s.snapshot())).collect();
        for (name, s) in &last {
            println!("  {name:<9} {s}");
        }
    }
    for task in tasks {
        task.await.expect("a pipeline panicked");
    }

    let problems = check(&last);
    if problems.is_empty() {
        println!("figures plausible");
    } else {
        for p in &problems {
            eprintln!("implausible: {p}");
        }
        std::process::exit(1);
    }
}

/// What the figures must show, read while the pipelines ran (at the last tick).
fn check(last: &[(&str, StatsSnapshot)]) -> Vec<String> {
    let get = |name: &str| {
        last.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: &str, s: &StatsSnapshot| {
        if !ok {
            problems.push(format!("{what}: {s}"));
        }
    };
    let s = get("counters");
    expect(
        s.writes > 0 && s.entries > 0 && s.entries <= 1_000,
        "counters: 1..=1000 entries",
        &s,
    );
    expect(
        s.evictions == 0 && s.errors == 0,
        "counters: no evictions, no errors",
        &s,
    );
    expect(
        s.bytes.is_some_and(|b| b >= 88 * s.entries),
        "counters: the store's bytes are known",
        &s,
    );
    expect(
        s.entries < 1_000 || s.hit_rate().is_some_and(|r| r > 0.5),
        "counters: returning users are hits",
        &s,
    );
    let s = get("bounded");
    expect(s.entries <= 100, "bounded: at most max_size entries", &s);
    expect(
        s.writes <= 100 || s.evictions > 0,
        "bounded: new keys evict",
        &s,
    );
    let s = get("dedup");
    expect(
        s.writes > 0 && s.expirations > 0,
        "dedup: markers expire",
        &s,
    );
    let s = get("flaky");
    expect(s.retries > 0, "flaky: the failed calls are retried", &s);
    expect(
        s.errors <= s.retries && s.errors < s.writes,
        "flaky: retries turn failures into results",
        &s,
    );
    problems
}
