//! State management overview: the user documentation's fold, window and join examples, and two
//! operators chained, in one program. Run: `cargo run --example state_management_example`.
//!
//! Each pipeline uses its own state configuration (`session()`, `short_lived()`, a validated
//! `StateConfigBuilder` config, `long_lived()` and `high_performance()`) and a key extractor
//! that suits it: `FieldKeyExtractor::new("user_id")` reads the serialized field,
//! `CustomKeyExtractor::new(|e: &Event| ..)` computes a key, and a plain closure keys the join's
//! second input. Every `Err` item and every `StateAccess` result is handled, and the edge cases
//! are visible: a guest purchase without a user id (its key cannot be extracted: an `Err` item
//! from fold, a failing `StateAccess` in filter), a window size of 0, the partial window left at
//! the end of the input, a duplicate payment and join partners that never meet.
//!
//! The purchases (id, user, category, amount) are #1 alice books $12, #2 bob games $30,
//! #3 alice games $5, #4 guest books $7, #5 carol books $20, #6 bob books $8, #7 alice books
//! $15, #8 carol games $25, #9 bob games $40. Expected output:
//!
//! ```text
//! == Fold: running totals per user ==
//! #1 alice    $12.00 -> 1 purchase(s), total $12.00
//! #2 bob      $30.00 -> 1 purchase(s), total $30.00
//! #3 alice     $5.00 -> 2 purchase(s), total $17.00
//! #4 (guest)   $7.00 -> Err(KeyExtraction): no user key; event skipped, the stream goes on
//!    reason: key extraction failed: field 'user_id' of event type ... is None, so this event has no key; ...
//! #5 carol    $20.00 -> 1 purchase(s), total $20.00
//! #6 bob       $8.00 -> 2 purchase(s), total $38.00
//! #7 alice    $15.00 -> 3 purchase(s), total $32.00
//! #8 carol    $25.00 -> 2 purchase(s), total $45.00
//! #9 bob      $40.00 -> 3 purchase(s), total $78.00
//! == Window: spending per category, tumbling windows of 2 purchases ==
//! games window 1: [#2 $30.00, #3 $5.00] total $35.00
//! books window 1: [#1 $12.00, #4 $7.00] total $19.00
//! books window 2: [#5 $20.00, #6 $8.00] total $28.00
//! games window 2: [#8 $25.00, #9 $40.00] total $65.00
//! books window 3: [#7 $15.00] total $15.00 (partial: input ended)
//! window_size 0 -> 1 item: Err(Validation), input not read
//!    reason: invalid state configuration: window operator: window_size must be at least 1 (got 0)
//! == Join: orders with their payments (same order id, within 60 s) ==
//! o2 bob   $30.00 paid by card
//! o1 alice $12.00 paid by paypal
//! o1 alice $12.00 paid by card -> DUPLICATE: payment 2 for this order
//! not joined (inner join): order o3 (no payment), payment for o4 (no order)
//! buffered events dropped for a full buffer: 0
//! == Combining operators: first 2 purchases per user (filter) -> totals per category (fold) ==
//! #1 books +$12.00 -> books: 1 purchase(s), $12.00
//! #2 games +$30.00 -> games: 1 purchase(s), $30.00
//! #3 games  +$5.00 -> games: 2 purchase(s), $35.00
//! #5 books +$20.00 -> books: 2 purchase(s), $32.00
//! #6 books  +$8.00 -> books: 3 purchase(s), $40.00
//! #8 games +$25.00 -> games: 3 purchase(s), $60.00
//! filter dropped #4: no user key (Err(KeyExtraction) from its StateAccess)
//! filter dropped #7: purchase 3 of alice
//! filter dropped #9: purchase 3 of bob
//! ```
//!
//! followed by an expected-vs-actual check of every line except the `reason:` lines (which
//! quote the operators' error messages for information); the example exits with status 1 if
//! any checked line differs.
//!
//! Why the output is deterministic: fold and window emit in input order; the join polls its two
//! inputs alternately (order, payment, order, ...), every event arrives well within the 60 s
//! window, and each pair is emitted when its second event arrives.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rs2::prelude::*;
use serde::{Deserialize, Serialize};

/// A purchase in the shop.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    id: u32,
    /// `None` for a guest checkout: such an event has no user key.
    user_id: Option<String>,
    category: String,
    cents: u64,
}

fn purchases() -> Vec<Event> {
    let event = |id: u32, user: Option<&str>, category: &str, cents: u64| Event {
        id,
        user_id: user.map(str::to_string),
        category: category.to_string(),
        cents,
    };
    vec![
        event(1, Some("alice"), "books", 1200),
        event(2, Some("bob"), "games", 3000),
        event(3, Some("alice"), "games", 500),
        event(4, None, "books", 700),
        event(5, Some("carol"), "books", 2000),
        event(6, Some("bob"), "books", 800),
        event(7, Some("alice"), "books", 1500),
        event(8, Some("carol"), "games", 2500),
        event(9, Some("bob"), "games", 4000),
    ]
}

fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn user_of(e: &Event) -> &str {
    e.user_id.as_deref().unwrap_or("(guest)")
}

/// The variant of a state error, for lines that must not depend on message wording.
fn kind(err: &StateError) -> &'static str {
    match err {
        StateError::Storage(_) => "Storage",
        StateError::Serialization(_) => "Serialization",
        StateError::Validation(_) => "Validation",
        StateError::KeyExtraction(_) => "KeyExtraction",
        _ => "other",
    }
}

/// Collects the lines a section prints: checked lines go to `checked`, `reason:` lines (error
/// messages, for information) are printed only.
#[derive(Default)]
struct Section {
    checked: Vec<String>,
}

impl Section {
    fn line(&mut self, line: String) {
        println!("{line}");
        self.checked.push(line);
    }

    fn reason(&self, err: &StateError) {
        println!("   reason: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Fold: running totals per user.

/// A user's running totals (the fold's accumulator).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Totals {
    purchases: u32,
    cents: u64,
}

async fn fold_section(out: &mut Section) {
    out.line("== Fold: running totals per user ==".into());
    let events = purchases();
    let results: Vec<Result<Totals, StateError>> = futures::stream::iter(events.clone())
        .stateful_fold_rs2(
            // User-level totals: 30 minute TTL, at most 1,000 users.
            StateConfigs::session(),
            // Reads the serialized `user_id` field; `Some(..)` is looked through, and a `None`
            // is reported as an error item instead of being filed under a made-up key.
            FieldKeyExtractor::new("user_id"),
            Totals::default(),
            |mut totals: Totals, event: Event, _state: StateAccess| async move {
                totals.purchases += 1;
                totals.cents += event.cents;
                totals
            },
        )
        .collect()
        .await;

    // Fold yields exactly one item per event, in input order, so the items line up with the
    // events (an `Err` item stands in place of its event).
    for (event, result) in events.iter().zip(results) {
        let head = format!(
            "#{} {:<7} {:>7} ->",
            event.id,
            user_of(event),
            dollars(event.cents)
        );
        match result {
            Ok(totals) => out.line(format!(
                "{head} {} purchase(s), total {}",
                totals.purchases,
                dollars(totals.cents)
            )),
            Err(err @ StateError::KeyExtraction(_)) => {
                out.line(format!(
                    "{head} Err(KeyExtraction): no user key; event skipped, the stream goes on"
                ));
                out.reason(&err);
            }
            Err(err) => {
                out.line(format!("{head} Err({}): state not updated", kind(&err)));
                out.reason(&err);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Window: spending per category.

async fn window_section(out: &mut Section) {
    out.line("== Window: spending per category, tumbling windows of 2 purchases ==".into());
    const SIZE: usize = 2;
    let by_category = || CustomKeyExtractor::new(|e: &Event| e.category.clone());

    let items: Vec<Result<String, StateError>> = futures::stream::iter(purchases())
        .stateful_window_rs2_advanced(
            // Short-lived buffers: 5 minute TTL, at most 100 categories.
            StateConfigs::short_lived(),
            by_category(),
            SIZE,
            None, // tumbling: each purchase is in exactly one window
            true, // emit what is left of each category's window when the input ends
            |window: Vec<Event>, state: StateAccess| async move {
                // The key's user state outlives its windows: here, a window counter.
                let number = match state.update(|n: Option<u32>| n.unwrap_or(0) + 1).await {
                    Ok(n) => n.to_string(),
                    Err(err) => format!("? (counter not saved: {})", kind(&err)),
                };
                let events: Vec<String> = window
                    .iter()
                    .map(|e| format!("#{} {}", e.id, dollars(e.cents)))
                    .collect();
                let total: u64 = window.iter().map(|e| e.cents).sum();
                let partial = if window.len() < SIZE {
                    " (partial: input ended)"
                } else {
                    ""
                };
                format!(
                    "{} window {number}: [{}] total {}{partial}",
                    state.key(),
                    events.join(", "),
                    dollars(total)
                )
            },
        )
        .collect()
        .await;
    for item in items {
        match item {
            Ok(line) => out.line(line),
            Err(err) => {
                out.line(format!("window: Err({})", kind(&err)));
                out.reason(&err);
            }
        }
    }

    // Edge case: an invalid window size is one `Validation` item, and the input is not read.
    let items: Vec<Result<usize, StateError>> = futures::stream::iter(purchases())
        .stateful_window_rs2(
            StateConfigs::short_lived(),
            by_category(),
            0,
            |window: Vec<Event>, _state: StateAccess| async move { window.len() },
        )
        .collect()
        .await;
    match items.as_slice() {
        [Err(err)] => {
            out.line(format!(
                "window_size 0 -> 1 item: Err({}), input not read",
                kind(err)
            ));
            out.reason(err);
        }
        other => out.line(format!(
            "window_size 0 -> {} item(s), expected a single Err",
            other.len()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Join: orders with their payments.

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    user_id: String,
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    order_id: String,
    method: String,
}

async fn join_section(out: &mut Section) {
    out.line("== Join: orders with their payments (same order id, within 60 s) ==".into());
    let order = |id: &str, user: &str, cents: u64| Order {
        order_id: id.to_string(),
        user_id: user.to_string(),
        cents,
    };
    let payment = |id: &str, method: &str| Payment {
        order_id: id.to_string(),
        method: method.to_string(),
    };
    let orders = vec![
        order("o1", "alice", 1200),
        order("o2", "bob", 3000),
        order("o3", "carol", 2000),
    ];
    let payments = vec![
        payment("o2", "card"),
        payment("o1", "paypal"),
        payment("o1", "card"), // a second payment for o1
        payment("o4", "card"), // no such order
    ];

    // A validated config: 10 minute TTL, cleanup every minute, at most 1,000 order ids (also
    // the most events one order id may buffer per side).
    let config = match StateConfigBuilder::new()
        .ttl(Duration::from_secs(600))
        .cleanup_interval(Duration::from_secs(60))
        .max_size(1_000)
        .build()
    {
        Ok(config) => config,
        Err(err) => {
            eprintln!("join config rejected: {err}");
            std::process::exit(1);
        }
    };

    let joined = futures::stream::iter(orders.clone()).stateful_join_rs2(
        futures::stream::iter(payments.clone()),
        config,
        CustomKeyExtractor::new(|o: &Order| o.order_id.clone()),
        |p: &Payment| p.order_id.clone(), // a plain closure is a key extractor too
        Duration::from_secs(60),
        |order: Order, payment: Payment, state: StateAccess| async move {
            // The join's user state for the order id counts the payments that met the order.
            let nth = state.update(|n: Option<u32>| n.unwrap_or(0) + 1).await;
            (order, payment, nth)
        },
    );
    let mut joined = std::pin::pin!(joined);

    let mut paid: Vec<String> = Vec::new();
    let mut matched_payments: Vec<String> = Vec::new();
    while let Some(item) = joined.next().await {
        match item {
            Ok((order, payment, nth)) => {
                let head = format!(
                    "{} {:<5} {} paid by {}",
                    order.order_id,
                    order.user_id,
                    dollars(order.cents),
                    payment.method
                );
                match nth {
                    Ok(1) => out.line(head),
                    Ok(n) => out.line(format!("{head} -> DUPLICATE: payment {n} for this order")),
                    Err(err) => {
                        out.line(format!("{head} (payment count not saved: {})", kind(&err)));
                        out.reason(&err);
                    }
                }
                paid.push(order.order_id);
                matched_payments.push(payment.order_id);
            }
            Err(err) => {
                out.line(format!("join: Err({}), the join goes on", kind(&err)));
                out.reason(&err);
            }
        }
    }

    // An inner join emits nothing for a partner that never arrives.
    let unpaid: Vec<String> = orders
        .iter()
        .filter(|o| !paid.contains(&o.order_id))
        .map(|o| format!("order {} (no payment)", o.order_id))
        .collect();
    let orphan: Vec<String> = payments
        .iter()
        .filter(|p| !matched_payments.contains(&p.order_id))
        .map(|p| format!("payment for {} (no order)", p.order_id))
        .collect();
    out.line(format!(
        "not joined (inner join): {}",
        [unpaid, orphan].concat().join(", ")
    ));
    out.line(format!(
        "buffered events dropped for a full buffer: {}",
        joined.dropped()
    ));
}

// ---------------------------------------------------------------------------------------------
// Combining operators: a stateful filter feeding a stateful fold.

/// A category's running totals, with the purchase that last changed them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CategoryTotals {
    category: String,
    last_id: u32,
    last_cents: u64,
    purchases: u32,
    cents: u64,
}

async fn combining_section(out: &mut Section) {
    out.line(
        "== Combining operators: first 2 purchases per user (filter) -> totals per category (fold) =="
            .into(),
    );
    // Why the filter dropped what it dropped (the filter yields only the events it keeps).
    let drops: Arc<Mutex<Vec<String>>> = Arc::default();
    let filter_drops = Arc::clone(&drops);

    let results: Vec<Result<CategoryTotals, StateError>> = futures::stream::iter(purchases())
        .stateful_filter_rs2(
            // Per-user purchase counts: 7 day TTL, at most 100,000 users.
            StateConfigs::long_lived(),
            FieldKeyExtractor::new("user_id"),
            move |event: &Event, state: StateAccess| {
                let id = event.id; // copied out of the reference before `async move`
                let drops = Arc::clone(&filter_drops);
                async move {
                    let why = match state.update(|n: Option<u32>| n.unwrap_or(0) + 1).await {
                        Ok(n) if n <= 2 => return true,
                        Ok(n) => format!("purchase {n} of {}", state.key()),
                        // A guest purchase: the key could not be extracted, so every call on
                        // this access returns that error.
                        Err(err) => {
                            format!("no user key (Err({}) from its StateAccess)", kind(&err))
                        }
                    };
                    drops
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(format!("filter dropped #{id}: {why}"));
                    false
                }
            },
        )
        .stateful_fold_rs2(
            // Category totals: 1 hour TTL, at most 10,000 categories.
            StateConfigs::high_performance(),
            CustomKeyExtractor::new(|e: &Event| e.category.clone()),
            CategoryTotals::default(),
            |mut totals: CategoryTotals, event: Event, _state: StateAccess| async move {
                totals.category = event.category;
                totals.last_id = event.id;
                totals.last_cents = event.cents;
                totals.purchases += 1;
                totals.cents += event.cents;
                totals
            },
        )
        .collect()
        .await;

    for result in results {
        match result {
            Ok(t) => {
                out.line(format!(
                    "#{} {} {:>7} -> {}: {} purchase(s), {}",
                    t.last_id,
                    t.category,
                    format!("+{}", dollars(t.last_cents)),
                    t.category,
                    t.purchases,
                    dollars(t.cents)
                ));
            }
            Err(err) => {
                out.line(format!("fold: Err({}), the stream goes on", kind(&err)));
                out.reason(&err);
            }
        }
    }
    let drops = std::mem::take(&mut *drops.lock().unwrap_or_else(|p| p.into_inner()));
    for line in drops {
        out.line(line);
    }
}

// ---------------------------------------------------------------------------------------------

const EXPECTED: &str = "\
== Fold: running totals per user ==
#1 alice    $12.00 -> 1 purchase(s), total $12.00
#2 bob      $30.00 -> 1 purchase(s), total $30.00
#3 alice     $5.00 -> 2 purchase(s), total $17.00
#4 (guest)   $7.00 -> Err(KeyExtraction): no user key; event skipped, the stream goes on
#5 carol    $20.00 -> 1 purchase(s), total $20.00
#6 bob       $8.00 -> 2 purchase(s), total $38.00
#7 alice    $15.00 -> 3 purchase(s), total $32.00
#8 carol    $25.00 -> 2 purchase(s), total $45.00
#9 bob      $40.00 -> 3 purchase(s), total $78.00
== Window: spending per category, tumbling windows of 2 purchases ==
games window 1: [#2 $30.00, #3 $5.00] total $35.00
books window 1: [#1 $12.00, #4 $7.00] total $19.00
books window 2: [#5 $20.00, #6 $8.00] total $28.00
games window 2: [#8 $25.00, #9 $40.00] total $65.00
books window 3: [#7 $15.00] total $15.00 (partial: input ended)
window_size 0 -> 1 item: Err(Validation), input not read
== Join: orders with their payments (same order id, within 60 s) ==
o2 bob   $30.00 paid by card
o1 alice $12.00 paid by paypal
o1 alice $12.00 paid by card -> DUPLICATE: payment 2 for this order
not joined (inner join): order o3 (no payment), payment for o4 (no order)
buffered events dropped for a full buffer: 0
== Combining operators: first 2 purchases per user (filter) -> totals per category (fold) ==
#1 books +$12.00 -> books: 1 purchase(s), $12.00
#2 games +$30.00 -> games: 1 purchase(s), $30.00
#3 games  +$5.00 -> games: 2 purchase(s), $35.00
#5 books +$20.00 -> books: 2 purchase(s), $32.00
#6 books  +$8.00 -> books: 3 purchase(s), $40.00
#8 games +$25.00 -> games: 3 purchase(s), $60.00
filter dropped #4: no user key (Err(KeyExtraction) from its StateAccess)
filter dropped #7: purchase 3 of alice
filter dropped #9: purchase 3 of bob";

#[tokio::main]
async fn main() {
    let mut out = Section::default();
    fold_section(&mut out).await;
    window_section(&mut out).await;
    join_section(&mut out).await;
    combining_section(&mut out).await;

    println!("\n== Check: expected vs actual ==");
    let expected: Vec<&str> = EXPECTED.lines().collect();
    let actual = &out.checked;
    let mut ok = actual.len() == expected.len();
    for i in 0..actual.len().max(expected.len()) {
        let a = actual.get(i).map(String::as_str).unwrap_or("<missing>");
        let e = expected.get(i).copied().unwrap_or("<nothing expected>");
        if a == e {
            println!("ok   {a}");
        } else {
            ok = false;
            println!("DIFF {a}");
            println!("     expected: {e}");
        }
    }
    if !ok {
        eprintln!("state_management_example: output differs from the expected output");
        std::process::exit(1);
    }
    println!("All {} checked lines as expected.", actual.len());
}
