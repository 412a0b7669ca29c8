//! Stateful deduplicate: request-level deduplication (the user documentation's
//! `short_lived()` example), keyed by `user_id:request_id` with a 5 minute window.
//!
//! A request passes the first time its key is seen; repeats within 5 minutes of that request
//! are dropped; after 5 minutes the next repeat passes again and opens a new window. The
//! example runs on tokio's paused clock (`start_paused`), so its eight minutes take no time
//! and the output is the same on every run. Run:
//! `cargo run --example stateful_deduplicate_example`.
//!
//! Expected output:
//!
//! ```text
//! 00:00  u1:r1  passed
//! 00:10  u1:r1  dropped (repeat)
//! 00:20  u2:r1  passed
//! 01:00  u1:r2  passed
//! 04:50  u1:r1  dropped (repeat)
//! 05:30  u1:r1  passed
//! 06:00  u2:r1  passed
//! 06:10  u1:r1  dropped (repeat)
//! 07:00  u1:r2  passed
//! ```
//!
//! followed by an expected-vs-actual check; the example exits with status 1 if any line
//! differs.
use std::time::Duration;

use rs2::prelude::*;

#[derive(Debug, Clone)]
struct Request {
    /// Seconds after the start at which the request arrives.
    at_s: u64,
    user_id: String,
    request_id: String,
}

/// The requests, arriving at their `at_s` (on tokio's clock).
fn requests() -> Vec<Request> {
    let req = |at_s, user: &str, id: &str| Request {
        at_s,
        user_id: user.into(),
        request_id: id.into(),
    };
    vec![
        req(0, "u1", "r1"),
        req(10, "u1", "r1"),  // repeat 10 s after the first: dropped
        req(20, "u2", "r1"),  // another user's r1: its own key
        req(60, "u1", "r2"),  // another request of u1
        req(290, "u1", "r1"), // 4:50 after u1:r1 passed: still a repeat
        req(330, "u1", "r1"), // 5:30 after it: passes, opens a new window
        req(360, "u2", "r1"), // 5:40 after u2:r1 passed: passes
        req(370, "u1", "r1"), // 40 s into u1:r1's new window: dropped
        req(420, "u1", "r2"), // 6:00 after u1:r2 passed: passes
    ]
}

fn arriving(requests: Vec<Request>) -> impl Stream<Item = Request> {
    let start = tokio::time::Instant::now();
    futures::stream::unfold(requests.into_iter(), move |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep_until(start + Duration::from_secs(next.at_s)).await;
        Some((next, rest))
    })
}

const EXPECTED_PASSED: [(u64, &str); 6] = [
    (0, "u1:r1"),
    (20, "u2:r1"),
    (60, "u1:r2"),
    (330, "u1:r1"),
    (360, "u2:r1"),
    (420, "u1:r2"),
];

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let all = requests();
    let mut unique = Box::pin(arriving(all.clone()).stateful_deduplicate_rs2(
        StateConfigs::short_lived(),
        CustomKeyExtractor::new(|event: &Request| {
            format!("{}:{}", event.user_id, event.request_id)
        }),
        Duration::from_secs(300), // 5 minute TTL
    ));

    let mut passed: Vec<(u64, String)> = Vec::new();
    while let Some(item) = unique.next().await {
        match item {
            Ok(r) => passed.push((r.at_s, format!("{}:{}", r.user_id, r.request_id))),
            // A state failure (backend down, say) is reported with the key, not hidden.
            Err(e) => eprintln!("state error: {e}"),
        }
    }

    for r in &all {
        let key = format!("{}:{}", r.user_id, r.request_id);
        let verdict = if passed.iter().any(|(at, k)| *at == r.at_s && *k == key) {
            "passed"
        } else {
            "dropped (repeat)"
        };
        println!("{:02}:{:02}  {key}  {verdict}", r.at_s / 60, r.at_s % 60);
    }

    println!("\nCheck (expected vs actual requests passed):");
    let mut ok = passed.len() == EXPECTED_PASSED.len();
    for (i, &(at, key)) in EXPECTED_PASSED.iter().enumerate() {
        let actual = passed.get(i);
        let matches = actual.is_some_and(|(a, k)| *a == at && k == key);
        ok &= matches;
        println!(
            "expected {key} at {at:>3} s, actual {}  {}",
            actual.map_or("nothing".to_string(), |(a, k)| format!("{k} at {a:>3} s")),
            if matches { "ok" } else { "MISMATCH" }
        );
    }
    if !ok {
        eprintln!("stateful_deduplicate_example: output differs from the expected output");
        std::process::exit(1);
    }
    println!(
        "All as expected: {} of {} requests passed.",
        passed.len(),
        all.len()
    );
}
