//! Stateful map: user profile enrichment (the user documentation's `long_lived()` example).
//!
//! Each purchase is enriched with the user's running profile (purchases, total spent, last
//! seen), kept per user in keyed state. Run: `cargo run --example stateful_map_example`.
//!
//! Expected output (one enriched event per input, in input order):
//!
//! ```text
//! #1 alice  $25.00 -> purchases 1, spent $25.00, avg $25.00, last seen 1000
//! #2 bob    $10.00 -> purchases 1, spent $10.00, avg $10.00, last seen 1001
//! #3 alice  $15.50 -> purchases 2, spent $40.50, avg $20.25, last seen 1002
//! #4 carol  $99.99 -> purchases 1, spent $99.99, avg $99.99, last seen 1003
//! #5 bob    $40.00 -> purchases 2, spent $50.00, avg $25.00, last seen 1004
//! #6 alice   $9.50 -> purchases 3, spent $50.00, avg $16.67, last seen 1005
//! ```
//!
//! followed by an expected-vs-actual check of every line; the example exits with status 1 if
//! any line differs.
use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{CustomKeyExtractor, StateConfigs, StatefulStreamExt},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PurchaseEvent {
    id: u32,
    user_id: String,
    amount: f64,
    timestamp: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserProfile {
    total_purchases: u64,
    total_spent: f64,
    last_seen: u64,
}

#[derive(Debug, Clone)]
struct EnrichedEvent {
    event: PurchaseEvent,
    profile: UserProfile,
    /// Set when the profile could not be saved; the event is still delivered, enriched with
    /// the profile as computed, so nothing is lost silently.
    state_error: Option<String>,
}

fn create_purchase_events() -> impl futures::Stream<Item = PurchaseEvent> {
    let event = |id: u32, user: &str, amount: f64| PurchaseEvent {
        id,
        user_id: user.to_string(),
        amount,
        timestamp: 999 + u64::from(id),
    };
    futures::stream::iter(vec![
        event(1, "alice", 25.00),
        event(2, "bob", 10.00),
        event(3, "alice", 15.50),
        event(4, "carol", 99.99),
        event(5, "bob", 40.00),
        event(6, "alice", 9.50),
    ])
}

/// (event id, purchases, total spent) each enriched event should carry.
const EXPECTED: [(u32, u64, f64); 6] = [
    (1, 1, 25.00),
    (2, 1, 10.00),
    (3, 2, 40.50),
    (4, 1, 99.99),
    (5, 2, 50.00),
    (6, 3, 50.00),
];

#[tokio::main]
async fn main() {
    let enriched: Vec<EnrichedEvent> = create_purchase_events()
        .stateful_map_rs2(
            // User profiles: 7 day TTL, 100,000 users at most.
            StateConfigs::long_lived(),
            CustomKeyExtractor::new(|event: &PurchaseEvent| event.user_id.clone()),
            |event, state_access| async move {
                let mut profile: UserProfile =
                    state_access.get().await.unwrap_or(UserProfile::default());

                profile.total_purchases += 1;
                profile.total_spent += event.amount;
                profile.last_seen = event.timestamp;

                // A failed write (backend down, or a stored profile that could not be read and
                // must not be overwritten) is reported with the event instead of panicking.
                let state_error = match state_access.set(&profile).await {
                    Ok(()) => None,
                    Err(e) => {
                        eprintln!("warning: profile of {} not saved: {e}", event.user_id);
                        Some(e.to_string())
                    }
                };

                EnrichedEvent {
                    event,
                    profile,
                    state_error,
                }
            },
        )
        .collect()
        .await;

    println!("Enriched events:");
    for e in &enriched {
        let p = &e.profile;
        println!(
            "#{} {:<6} {:>6} -> purchases {}, spent ${:.2}, avg ${:.2}, last seen {}{}",
            e.event.id,
            e.event.user_id,
            format!("${:.2}", e.event.amount),
            p.total_purchases,
            p.total_spent,
            p.total_spent / p.total_purchases as f64,
            p.last_seen,
            e.state_error
                .as_deref()
                .map(|err| format!("  [state error: {err}]"))
                .unwrap_or_default(),
        );
    }

    println!("\nCheck (expected vs actual purchases / spent):");
    let mut ok = enriched.len() == EXPECTED.len();
    for (e, &(id, purchases, spent)) in enriched.iter().zip(EXPECTED.iter()) {
        let matches = e.event.id == id
            && e.profile.total_purchases == purchases
            && (e.profile.total_spent - spent).abs() < 1e-9
            && e.state_error.is_none();
        ok &= matches;
        println!(
            "#{id}: expected {purchases} / ${spent:.2}, actual {} / ${:.2}  {}",
            e.profile.total_purchases,
            e.profile.total_spent,
            if matches { "ok" } else { "MISMATCH" }
        );
    }
    if !ok {
        eprintln!("stateful_map_example: output differs from the expected output");
        std::process::exit(1);
    }
    println!("All {} enriched events as expected.", enriched.len());
}
