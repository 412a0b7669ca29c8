//! Stateful pattern: fraud detection — flag a card whose last three payments rise in a row.
//! Run: `cargo run --example stateful_pattern_example`.
//!
//! For each payment, once its card has made three, the detector gets the card's last three
//! payments (oldest first) and returns `Some(alert)` when the amounts rise strictly; only the
//! alerts come out of the stream. The detector counts each card's alerts in the card's own
//! state.
//!
//! Expected output:
//!
//! ```text
//! ALERT c1: $20 -> $35 -> $50 (payment #6, alert 1 for this card)
//! ALERT c1: $35 -> $50 -> $80 (payment #8, alert 2 for this card)
//! ALERT c2: $90 -> $95 -> $97 (payment #9, alert 1 for this card)
//! ALERT c1: $10 -> $15 -> $30 (payment #12, alert 3 for this card)
//! 12 payments, 4 alerts
//! ```
//!
//! (c2's 100 -> 90 -> 95 and c1's 80 -> 10 -> 15 do not rise; c3 never has three payments.)
//! The example checks its output against the block above and exits with status 1 on any
//! difference.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{CustomKeyExtractor, StateConfigs, StatefulStreamExt},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    id: u32,
    card: String,
    amount: u32,
}

fn payments() -> Vec<Payment> {
    [
        ("c1", 20),
        ("c2", 100),
        ("c1", 35),
        ("c3", 5),
        ("c2", 90),
        ("c1", 50),
        ("c2", 95),
        ("c1", 80),
        ("c2", 97),
        ("c1", 10),
        ("c1", 15),
        ("c1", 30),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (card, amount))| Payment {
        id: i as u32 + 1,
        card: card.to_string(),
        amount,
    })
    .collect()
}

const EXPECTED: &str = "\
ALERT c1: $20 -> $35 -> $50 (payment #6, alert 1 for this card)
ALERT c1: $35 -> $50 -> $80 (payment #8, alert 2 for this card)
ALERT c2: $90 -> $95 -> $97 (payment #9, alert 1 for this card)
ALERT c1: $10 -> $15 -> $30 (payment #12, alert 3 for this card)
12 payments, 4 alerts";

#[tokio::main]
async fn main() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let input = futures::stream::iter(payments()).inspect(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });

    let mut lines: Vec<String> = input
        .stateful_pattern_rs2(
            // Card histories: 1 hour TTL, 10,000 cards at most.
            StateConfigs::high_performance(),
            CustomKeyExtractor::new(|p: &Payment| p.card.clone()),
            3,
            |last_three, state| async move {
                let rising = last_three.windows(2).all(|w| w[0].amount < w[1].amount);
                if !rising {
                    return None;
                }
                let alerts = match state.update(|n: Option<u32>| n.unwrap_or(0) + 1).await {
                    Ok(n) => n.to_string(),
                    Err(e) => format!("? (state error: {e})"),
                };
                let amounts: Vec<String> = last_three
                    .iter()
                    .map(|p| format!("${}", p.amount))
                    .collect();
                let current = &last_three[2];
                Some(format!(
                    "ALERT {}: {} (payment #{}, alert {alerts} for this card)",
                    current.card,
                    amounts.join(" -> "),
                    current.id
                ))
            },
        )
        .map(|item| item.unwrap_or_else(|e| format!("state error: {e}")))
        .collect()
        .await;
    lines.push(format!(
        "{} payments, {} alerts",
        seen.load(Ordering::Relaxed),
        lines.len()
    ));

    for line in &lines {
        println!("{line}");
    }
    let expected: Vec<&str> = EXPECTED.lines().collect();
    if lines != expected {
        eprintln!("\nstateful_pattern_example: output differs from the expected output:");
        for (i, line) in expected.iter().enumerate() {
            let actual = lines.get(i).map(String::as_str).unwrap_or("<missing>");
            if actual != *line {
                eprintln!("  line {}: expected {line:?}, got {actual:?}", i + 1);
            }
        }
        std::process::exit(1);
    }
    println!("\nAll lines as expected.");
}
