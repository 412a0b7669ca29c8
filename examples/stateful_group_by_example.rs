//! Stateful group by: plain and advanced grouping.
//!
//! 1. `stateful_group_by_rs2`: orders grouped by category; each category's group is handed to
//!    the closure when the input ends, in the order the categories first appeared.
//! 2. `stateful_group_by_advanced_rs2` with `max_group_size = 3` and a 2 s `group_timeout`:
//!    sensor readings batched per sensor. A batch is emitted when it has 3 readings, or 2 s
//!    after its first reading even though no further input arrives (a real timer), or at the
//!    end of input.
//! 3. `emit_on_key_change = true`: runs of consecutive page views of one user, emitted as soon
//!    as another user's view arrives.
//!
//! Part 2 runs on tokio's paused clock (`start_paused`), so its 10.5 s take no time and the
//! output is the same on every run. Run: `cargo run --example stateful_group_by_example`.
//!
//! Expected output:
//!
//! ```text
//! 1. orders by category (at end of input)
//!    books: 3 orders [1, 3, 6], total $50.00
//!    games: 2 orders [2, 5], total $79.98
//!    music: 1 orders [4], total $9.99
//! 2. sensor batches (max 3 readings, timeout 2 s)
//!    at  0.6 s  t1 [20.1, 20.3, 20.6] (full)
//!    at  2.4 s  t2 [18.0] (timed out while the input was idle)
//!    at 10.5 s  t1 [21.0, 21.2] (end of input)
//! 3. runs of page views (emit on key change)
//!    ann: home -> cart
//!    bob: home -> search -> item
//!    ann: checkout
//! ```
//!
//! followed by an expected-vs-actual check; the example exits with status 1 if any line
//! differs.
use std::time::Duration;

use rs2::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    category: String,
    amount: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    /// Milliseconds after the start at which the reading arrives.
    at_ms: u64,
    sensor: String,
    celsius: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PageView {
    user: String,
    page: String,
}

async fn orders_by_category() -> Vec<String> {
    let order = |id, category: &str, amount| Order {
        id,
        category: category.into(),
        amount,
    };
    let orders = futures::stream::iter(vec![
        order(1, "books", 12.50),
        order(2, "games", 59.99),
        order(3, "books", 7.50),
        order(4, "music", 9.99),
        order(5, "games", 19.99),
        order(6, "books", 30.00),
    ]);
    orders
        .stateful_group_by_rs2(
            StateConfigs::session(),
            CustomKeyExtractor::new(|o: &Order| o.category.clone()),
            |category, group: Vec<Order>, _state| async move {
                let ids: Vec<u32> = group.iter().map(|o| o.id).collect();
                let total: f64 = group.iter().map(|o| o.amount).sum();
                format!(
                    "{category}: {} orders {ids:?}, total ${total:.2}",
                    group.len()
                )
            },
        )
        .map(|r| r.unwrap_or_else(|e| format!("state error: {e}")))
        .collect()
        .await
}

async fn sensor_batches() -> Vec<String> {
    let reading = |at_ms, sensor: &str, celsius| Reading {
        at_ms,
        sensor: sensor.into(),
        celsius,
    };
    let readings = vec![
        reading(0, "t1", 20.1),
        reading(200, "t1", 20.3),
        reading(400, "t2", 18.0),
        reading(600, "t1", 20.6), // t1's third reading: its batch is full
        // Nothing for 9.4 s: t2's batch times out at 2.4 s, with no input to prompt it.
        reading(10_000, "t1", 21.0),
        reading(10_500, "t1", 21.2),
    ];
    let last_input_ms = readings.last().map_or(0, |r| r.at_ms);
    let start = tokio::time::Instant::now();
    let arriving = futures::stream::unfold(readings.into_iter(), move |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep_until(start + Duration::from_millis(next.at_ms)).await;
        Some((next, rest))
    });

    let max_group_size = 3;
    let mut batches = Box::pin(arriving.stateful_group_by_advanced_rs2(
        StateConfigs::high_performance(),
        CustomKeyExtractor::new(|r: &Reading| r.sensor.clone()),
        Some(max_group_size),
        Some(Duration::from_secs(2)),
        false,
        |sensor, group: Vec<Reading>, _state| async move {
            (sensor, group.iter().map(|r| r.celsius).collect::<Vec<_>>())
        },
    ));
    let mut lines = Vec::new();
    while let Some(item) = batches.next().await {
        let at_ms = start.elapsed().as_millis() as u64;
        match item {
            Ok((sensor, values)) => {
                let why = if values.len() == max_group_size {
                    "full"
                } else if at_ms < last_input_ms {
                    "timed out while the input was idle"
                } else {
                    "end of input"
                };
                let values: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
                lines.push(format!(
                    "at {:>4.1} s  {sensor} [{}] ({why})",
                    at_ms as f64 / 1000.0,
                    values.join(", ")
                ));
            }
            Err(e) => lines.push(format!("state error: {e}")),
        }
    }
    lines
}

async fn runs_of_page_views() -> Vec<String> {
    let view = |user: &str, page: &str| PageView {
        user: user.into(),
        page: page.into(),
    };
    futures::stream::iter(vec![
        view("ann", "home"),
        view("ann", "cart"),
        view("bob", "home"),
        view("bob", "search"),
        view("bob", "item"),
        view("ann", "checkout"),
    ])
    .stateful_group_by_advanced_rs2(
        StateConfigs::session(),
        CustomKeyExtractor::new(|v: &PageView| v.user.clone()),
        None,
        None,
        true,
        |user, run: Vec<PageView>, _state| async move {
            let pages: Vec<String> = run.into_iter().map(|v| v.page).collect();
            format!("{user}: {}", pages.join(" -> "))
        },
    )
    .map(|r| r.unwrap_or_else(|e| format!("state error: {e}")))
    .collect()
    .await
}

const EXPECTED: [&[&str]; 3] = [
    &[
        "books: 3 orders [1, 3, 6], total $50.00",
        "games: 2 orders [2, 5], total $79.98",
        "music: 1 orders [4], total $9.99",
    ],
    &[
        "at  0.6 s  t1 [20.1, 20.3, 20.6] (full)",
        "at  2.4 s  t2 [18.0] (timed out while the input was idle)",
        "at 10.5 s  t1 [21.0, 21.2] (end of input)",
    ],
    &[
        "ann: home -> cart",
        "bob: home -> search -> item",
        "ann: checkout",
    ],
];

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let parts = [
        (
            "1. orders by category (at end of input)",
            orders_by_category().await,
        ),
        (
            "2. sensor batches (max 3 readings, timeout 2 s)",
            sensor_batches().await,
        ),
        (
            "3. runs of page views (emit on key change)",
            runs_of_page_views().await,
        ),
    ];
    for (title, lines) in &parts {
        println!("{title}");
        for line in lines {
            println!("   {line}");
        }
    }

    println!("\nCheck (expected vs actual):");
    let mut ok = true;
    for ((title, lines), expected) in parts.iter().zip(EXPECTED) {
        let matches = lines
            .iter()
            .map(String::as_str)
            .eq(expected.iter().copied());
        ok &= matches;
        println!("{}: {}", title, if matches { "ok" } else { "MISMATCH" });
        if !matches {
            println!("   expected {expected:?}\n   actual   {lines:?}");
        }
    }
    if !ok {
        eprintln!("stateful_group_by_example: output differs from the expected output");
        std::process::exit(1);
    }
    println!("All groups as expected.");
}
