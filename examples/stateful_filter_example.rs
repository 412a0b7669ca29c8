//! Stateful filter: a per-user rate limit and a per-user fraud rule.
//!
//! 1. Rate limit: at most 3 purchases per user are let through; later ones are dropped.
//! 2. Fraud rule: a purchase larger than 3x the user's running average of accepted purchases
//!    is blocked (and does not move the average); a user's first purchase always passes.
//!
//! A filter closure gets `&Purchase`, but the future it returns cannot borrow the event: copy
//! what the future needs (here `id`, `amount`) out of the reference before `async move`.
//!
//! Run: `cargo run --example stateful_filter_example`. Expected output:
//!
//! ```text
//! == 1. Rate limit: at most 3 purchases per user ==
//!   dropped #6 (alice's purchase 4 of max 3)
//!   dropped #8 (alice's purchase 5 of max 3)
//! passed:   [1, 2, 3, 4, 5, 7]
//! expected: [1, 2, 3, 4, 5, 7]  ok
//!
//! == 2. Fraud rule: block amount > 3x the user's running average ==
//!   blocked #4: alice $200.00 > 3 x avg $25.00
//!   blocked #8: bob $500.00 > 3 x avg $110.00
//!   blocked #11: carol $16.00 > 3 x avg $5.00
//! passed:   [1, 2, 3, 5, 6, 7, 9, 10]
//! expected: [1, 2, 3, 5, 6, 7, 9, 10]  ok
//! ```
//!
//! The example exits with status 1 if either list differs from the expected one.
use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{CustomKeyExtractor, FieldKeyExtractor, StateConfigs, StatefulStreamExt},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Purchase {
    id: u32,
    user_id: String,
    amount: f64,
}

/// Accepted purchases of one user, for the running average.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SpendingHistory {
    count: u64,
    total: f64,
}

const MAX_PURCHASES_PER_USER: u32 = 3;
const FRAUD_FACTOR: f64 = 3.0;

fn purchases(list: &[(u32, &str, f64)]) -> impl futures::Stream<Item = Purchase> {
    let events: Vec<Purchase> = list
        .iter()
        .map(|&(id, user, amount)| Purchase {
            id,
            user_id: user.to_string(),
            amount,
        })
        .collect();
    futures::stream::iter(events)
}

fn report(passed: &[u32], expected: &[u32]) -> bool {
    let ok = passed == expected;
    println!("passed:   {passed:?}");
    println!(
        "expected: {expected:?}  {}",
        if ok { "ok" } else { "MISMATCH" }
    );
    ok
}

async fn rate_limit() -> bool {
    println!("== 1. Rate limit: at most {MAX_PURCHASES_PER_USER} purchases per user ==");
    let input = purchases(&[
        (1, "alice", 10.0),
        (2, "bob", 20.0),
        (3, "alice", 11.0),
        (4, "alice", 12.0),
        (5, "bob", 21.0),
        (6, "alice", 13.0),
        (7, "bob", 22.0),
        (8, "alice", 14.0),
    ]);

    let passed: Vec<u32> = input
        .stateful_filter_rs2(
            StateConfigs::high_performance(),
            // The key is read from the `user_id` field through serde.
            FieldKeyExtractor::new("user_id"),
            |purchase: &Purchase, state| {
                // Copied out of `&Purchase` before `async move`: the future cannot borrow it.
                let id = purchase.id;
                let user = purchase.user_id.clone();
                async move {
                    // Atomic per key: count this attempt and read the new count in one step.
                    match state
                        .update(|seen: Option<u32>| seen.unwrap_or(0) + 1)
                        .await
                    {
                        Ok(n) if n <= MAX_PURCHASES_PER_USER => true,
                        Ok(n) => {
                            println!(
                                "  dropped #{id} ({user}'s purchase {n} of max {MAX_PURCHASES_PER_USER})"
                            );
                            false
                        }
                        Err(e) => {
                            // Fail closed: without a count we cannot enforce the limit.
                            eprintln!("  dropped #{id}: rate-limit state unavailable: {e}");
                            false
                        }
                    }
                }
            },
        )
        .map(|purchase| purchase.id)
        .collect()
        .await;

    report(&passed, &[1, 2, 3, 4, 5, 7])
}

async fn fraud_rule() -> bool {
    println!("\n== 2. Fraud rule: block amount > {FRAUD_FACTOR}x the user's running average ==");
    let input = purchases(&[
        (1, "alice", 20.0),
        (2, "alice", 30.0),
        (3, "bob", 100.0),
        (4, "alice", 200.0), // avg 25 -> limit 75: blocked
        (5, "alice", 25.0),  // avg stays 25 (the blocked one is not counted)
        (6, "bob", 120.0),
        (7, "alice", 70.0),  // avg 25 -> limit 75: passes
        (8, "bob", 500.0),   // avg 110 -> limit 330: blocked
        (9, "bob", 300.0),   // passes
        (10, "carol", 5.0),  // first purchase: passes
        (11, "carol", 16.0), // avg 5 -> limit 15: blocked
    ]);

    let passed: Vec<u32> = input
        .stateful_filter_rs2(
            StateConfigs::session(),
            CustomKeyExtractor::new(|p: &Purchase| p.user_id.clone()),
            |purchase: &Purchase, state| {
                let id = purchase.id;
                let amount = purchase.amount;
                let user = purchase.user_id.clone();
                async move {
                    let mut history: SpendingHistory = match state.try_get().await {
                        Ok(history) => history.unwrap_or_default(),
                        Err(e) => {
                            eprintln!("  blocked #{id}: spending history unreadable: {e}");
                            return false;
                        }
                    };
                    if history.count > 0 {
                        let average = history.total / history.count as f64;
                        if amount > FRAUD_FACTOR * average {
                            println!(
                                "  blocked #{id}: {user} ${amount:.2} > {FRAUD_FACTOR} x avg ${average:.2}"
                            );
                            return false;
                        }
                    }
                    history.count += 1;
                    history.total += amount;
                    if let Err(e) = state.set(&history).await {
                        // The purchase is legitimate; only the history update failed.
                        eprintln!("  warning: history of {user} not updated after #{id}: {e}");
                    }
                    true
                }
            },
        )
        .map(|purchase| purchase.id)
        .collect()
        .await;

    report(&passed, &[1, 2, 3, 5, 6, 7, 9, 10])
}

#[tokio::main]
async fn main() {
    let rate_limit_ok = rate_limit().await;
    let fraud_ok = fraud_rule().await;
    if !(rate_limit_ok && fraud_ok) {
        eprintln!("stateful_filter_example: output differs from the expected output");
        std::process::exit(1);
    }
}
