//! Stateful throttle: API rate limiting (the user documentation's `high_performance()`
//! example), at most 100 requests per user in any sliding minute.
//!
//! alice bursts 150 requests in 15 s: 100 pass, the other 50 are dropped (not delayed) and
//! counted. bob's 15 requests in the same 15 s all pass, each the moment it arrives: a busy
//! user never slows another down. At 65 s alice sends 20 more: her requests from 0-5 s have
//! left the window, so 20 pass. From 67 s she sends 100 more in one second: 51 slots are
//! free (49 of her passed requests are still in the window), and 9 more free up as her
//! requests from 7.0-7.9 s leave it, so 60 pass. The example runs on tokio's paused clock
//! (`start_paused`), so its 68 s take no time and the output is the same on every run. Run:
//! `cargo run --example stateful_throttle_example`.
//!
//! Expected output:
//!
//! ```text
//! burst (0-15 s):     alice sent 150, passed 100, dropped 50 | bob sent 15, passed 15
//! later (65-67 s):    alice sent  20, passed  20, dropped  0 | bob sent  0, passed  0
//! again (67-68 s):    alice sent 100, passed  60, dropped 40 | bob sent  0, passed  0
//! slowest pass: 0 ms after arrival
//! dropped in total: 90
//! ```
//!
//! followed by an expected-vs-actual check; the example exits with status 1 if any line
//! differs.
use std::time::Duration;

use rs2::prelude::*;

#[derive(Debug, Clone)]
struct ApiRequest {
    user_id: String,
    /// Milliseconds after the start at which the request arrives.
    at_ms: u64,
}

fn requests() -> Vec<ApiRequest> {
    let req = |user: &str, at_ms| ApiRequest {
        user_id: user.into(),
        at_ms,
    };
    let mut all = Vec::new();
    // Burst: alice every 100 ms for 15 s, bob once a second.
    for i in 0..150 {
        all.push(req("alice", i * 100));
        if i % 10 == 5 {
            all.push(req("bob", i * 100));
        }
    }
    // Later: 20 from alice, one every 100 ms from 65 s.
    all.extend((0..20).map(|i| req("alice", 65_000 + i * 100)));
    // Again: 100 from alice, one every 10 ms from 67 s.
    all.extend((0..100).map(|i| req("alice", 67_000 + i * 10)));
    all
}

fn arriving(requests: Vec<ApiRequest>) -> impl Stream<Item = ApiRequest> {
    let start = tokio::time::Instant::now();
    futures::stream::unfold(requests.into_iter(), move |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep_until(start + Duration::from_millis(next.at_ms)).await;
        Some((next, rest))
    })
}

/// (label, from ms, to ms)
const PHASES: [(&str, u64, u64); 3] = [
    ("burst (0-15 s):  ", 0, 15_000),
    ("later (65-67 s): ", 65_000, 67_000),
    ("again (67-68 s): ", 67_000, 68_000),
];

/// Per phase: (alice sent, alice passed, bob sent, bob passed).
const EXPECTED: [(usize, usize, usize, usize); 3] =
    [(150, 100, 15, 15), (20, 20, 0, 0), (100, 60, 0, 0)];

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let all = requests();
    let start = tokio::time::Instant::now();
    let mut throttled = Box::pin(arriving(all.clone()).stateful_throttle_rs2(
        StateConfigs::high_performance(),
        CustomKeyExtractor::new(|event: &ApiRequest| event.user_id.clone()),
        100,                     // 100 events per window
        Duration::from_secs(60), // 1 minute window
    ));

    let mut passed: Vec<ApiRequest> = Vec::new();
    let mut slowest_ms = 0;
    while let Some(item) = throttled.next().await {
        match item {
            Ok(r) => {
                let out_ms = start.elapsed().as_millis() as u64;
                slowest_ms = slowest_ms.max(out_ms - r.at_ms);
                passed.push(r);
            }
            // A state failure (backend down, say) is reported with the key, not hidden.
            Err(e) => eprintln!("state error: {e}"),
        }
    }

    let count = |list: &[ApiRequest], user: &str, from: u64, to: u64| {
        list.iter()
            .filter(|r| r.user_id == user && (from..to).contains(&r.at_ms))
            .count()
    };
    let mut actual = Vec::new();
    for &(label, from, to) in &PHASES {
        let row = (
            count(&all, "alice", from, to),
            count(&passed, "alice", from, to),
            count(&all, "bob", from, to),
            count(&passed, "bob", from, to),
        );
        println!(
            "{label}   alice sent {:>3}, passed {:>3}, dropped {:>2} | bob sent {:>2}, passed {:>2}",
            row.0,
            row.1,
            row.0 - row.1,
            row.2,
            row.3
        );
        actual.push(row);
    }
    println!("slowest pass: {slowest_ms} ms after arrival");
    println!("dropped in total: {}", throttled.dropped());

    println!("\nCheck (expected vs actual alice sent/passed, bob sent/passed):");
    let mut ok = true;
    for ((label, ..), (want, got)) in PHASES.iter().zip(EXPECTED.iter().zip(&actual)) {
        ok &= want == got;
        println!(
            "{} expected {want:?}, actual {got:?}  {}",
            label.trim_end(),
            if want == got { "ok" } else { "MISMATCH" }
        );
    }
    let dropped_ok = throttled.dropped() == 90 && slowest_ms == 0;
    ok &= dropped_ok;
    println!(
        "dropped 90 and no pass delayed: {}",
        if dropped_ok { "ok" } else { "MISMATCH" }
    );
    if !ok {
        eprintln!("stateful_throttle_example: output differs from the expected output");
        std::process::exit(1);
    }
    println!("All as expected.");
}
