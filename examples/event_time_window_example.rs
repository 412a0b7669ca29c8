//! Event-time windows: per-user spend per minute from purchases that arrive out of order.
//! Run: `cargo run --example event_time_window_example`.
//!
//! Each purchase carries the time it happened (ms since the epoch); the stream delivers them
//! a few seconds out of order. 1-minute tumbling windows with `max_out_of_orderness` 10 s put
//! every purchase in the minute it happened, not the one it arrived in: a minute is reported
//! once the watermark (the latest purchase time seen, less 10 s) passes its end. One purchase
//! arrives after its minute was reported; it is late, changes nothing, and the advanced
//! stream hands it over as `EventTimeOutput::Late`.
//!
//! Expected output:
//!
//! ```text
//! Spend per user per minute:
//!   12:00 ann $24 (3 purchases)
//!   12:00 bob $5 (1 purchase)
//!   late: bob $9 at 12:00:50, after 12:00 was reported
//!   12:01 ann $3 (1 purchase)
//!   12:01 bob $7 (1 purchase)
//!   12:02 ann $6 (1 purchase)
//! Late purchases: 1
//! ```
//!
//! ann's $4 at 12:00:58 arrives after her 12:01:02 purchase, but within the 10 s allowed, so
//! it counts for 12:00. 12:02 is reported when the input ends. The example checks its output
//! against the block above and exits with status 1 on any difference.
use std::pin::pin;
use std::time::Duration;

use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{EventTimeOutput, EventTimeWindow, StateConfig, StatefulStreamExt, TimeWindow},
};
use serde::{Deserialize, Serialize};

/// 12:00 on the day of the example, in ms since the epoch (a whole minute).
const NOON: u64 = 1_700_006_400_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Purchase {
    user: String,
    ts_ms: u64,
    dollars: u64,
}

/// Purchases in arrival order: (user, seconds after 12:00, dollars).
fn purchases() -> impl futures::Stream<Item = Purchase> {
    let p = |user: &str, secs: u64, dollars: u64| Purchase {
        user: user.to_string(),
        ts_ms: NOON + secs * 1000,
        dollars,
    };
    futures::stream::iter(vec![
        p("ann", 5, 12),
        p("bob", 20, 5),
        p("ann", 55, 8),
        p("ann", 62, 3),
        p("ann", 58, 4), // 4 s out of order: still 12:00
        p("bob", 75, 7), // watermark 12:01:05: 12:00 is reported
        p("bob", 50, 9), // 12:00 was reported: late
        p("ann", 130, 6),
    ])
}

/// "12:01" for the minute starting at `ms`; "12:00:50" with seconds.
fn clock(ms: u64, seconds: bool) -> String {
    let secs = (ms - NOON) / 1000;
    let hm = format!("12:{:02}", secs / 60);
    if seconds {
        format!("{hm}:{:02}", secs % 60)
    } else {
        hm
    }
}

const EXPECTED: &str = "\
Spend per user per minute:
  12:00 ann $24 (3 purchases)
  12:00 bob $5 (1 purchase)
  late: bob $9 at 12:00:50, after 12:00 was reported
  12:01 ann $3 (1 purchase)
  12:01 bob $7 (1 purchase)
  12:02 ann $6 (1 purchase)
Late purchases: 1";

#[tokio::main]
async fn main() {
    let per_minute = EventTimeWindow::tumbling(Duration::from_secs(60))
        .max_out_of_orderness(Duration::from_secs(10));
    let spend = purchases().stateful_event_time_window_advanced_rs2(
        StateConfig::new(),
        |p: &Purchase| p.user.clone(),
        |p: &Purchase| p.ts_ms,
        per_minute,
        |w: TimeWindow<Purchase>, _state| async move {
            let total: u64 = w.events.iter().map(|p| p.dollars).sum();
            let n = w.events.len();
            let plural = if n == 1 { "" } else { "s" };
            format!(
                "  {} {} ${total} ({n} purchase{plural})",
                clock(w.start_ms, false),
                w.key
            )
        },
    );
    let mut spend = pin!(spend);
    let mut out = vec!["Spend per user per minute:".to_string()];
    while let Some(item) = spend.next().await {
        out.push(match item {
            Ok(EventTimeOutput::Window(line)) => line,
            Ok(EventTimeOutput::Late(p)) => format!(
                "  late: {} ${} at {}, after {} was reported",
                p.user,
                p.dollars,
                clock(p.ts_ms, true),
                clock(p.ts_ms - p.ts_ms % 60_000, false)
            ),
            Err(e) => format!("  state error: {e}"),
        });
    }
    out.push(format!("Late purchases: {}", spend.late_count()));
    for line in &out {
        println!("{line}");
    }

    let expected: Vec<&str> = EXPECTED.lines().collect();
    if out != expected {
        eprintln!("\nevent_time_window_example: output differs from the expected output:");
        for (i, line) in expected.iter().enumerate() {
            let actual = out.get(i).map(String::as_str).unwrap_or("<missing>");
            if actual != *line {
                eprintln!("  line {}: expected {line:?}, got {actual:?}", i + 1);
            }
        }
        std::process::exit(1);
    }
    println!("\nAll {} lines as expected.", out.len());
}
