//! Stateful session: per-user sessions with a 30 minute inactivity timeout (after the user
//! documentation's `StateConfigs::session()` example). Run:
//! `cargo run --example stateful_session_example`.
//!
//! The clickstream covers 70 minutes. So the example runs in an instant, it uses tokio's paused
//! clock: the input stream sleeps for the gap before each click, and paused time jumps straight
//! to the end of each sleep. The operators read time from the same clock, so the gaps they see
//! are exactly the ones below.
//!
//! A click starts a new session when it is the user's first, or comes more than 30 minutes
//! after the user's previous click. The closure numbers each user's sessions and counts the
//! clicks in the current one, in the user's own state.
//!
//! Expected output:
//!
//! ```text
//! +00m alice login  -> session 1 starts
//! +05m alice view   -> session 1, click 2
//! +06m bob   login  -> session 1 starts
//! +12m alice cart   -> session 1, click 3
//! +20m bob   view   -> session 1, click 2
//! +50m alice view   -> session 2 starts (38 min since the last click)
//! +51m bob   view   -> session 2 starts (31 min since the last click)
//! +70m alice buy    -> session 2, click 2
//! ```
//!
//! The example checks its output against the block above and exits with status 1 on any
//! difference.
use std::time::Duration;

use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{CustomKeyExtractor, StateConfigs, StatefulStreamExt},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
struct Click {
    user_id: String,
    action: &'static str,
    /// Minutes since the start of the clickstream (for printing only: the operator uses its
    /// own clock).
    minute: u64,
}

/// A user's session bookkeeping, kept in the closure's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SessionInfo {
    number: u32,
    clicks: u32,
    last_minute: u64,
}

fn clickstream() -> impl futures::Stream<Item = Click> {
    let clicks = [
        (0, "alice", "login"),
        (5, "alice", "view"),
        (6, "bob", "login"),
        (12, "alice", "cart"),
        (20, "bob", "view"),
        (50, "alice", "view"),
        (51, "bob", "view"),
        (70, "alice", "buy"),
    ];
    let mut previous = 0;
    let timed: Vec<(u64, Click)> = clicks
        .into_iter()
        .map(|(minute, user, action)| {
            let gap = minute - previous;
            previous = minute;
            let click = Click {
                user_id: user.to_string(),
                action,
                minute,
            };
            (gap, click)
        })
        .collect();
    futures::stream::iter(timed).then(|(gap_minutes, click)| async move {
        tokio::time::sleep(Duration::from_secs(60 * gap_minutes)).await;
        click
    })
}

const EXPECTED: &str = "\
+00m alice login  -> session 1 starts
+05m alice view   -> session 1, click 2
+06m bob   login  -> session 1 starts
+12m alice cart   -> session 1, click 3
+20m bob   view   -> session 1, click 2
+50m alice view   -> session 2 starts (38 min since the last click)
+51m bob   view   -> session 2 starts (31 min since the last click)
+70m alice buy    -> session 2, click 2";

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let lines: Vec<String> = clickstream()
        .stateful_session_rs2(
            // The session preset, with a TTL of a day instead of 30 minutes: the TTL applies to
            // the closure's state too, and each user's session number must outlive a session.
            // (The operator's last-seen times need a TTL of at least the timeout.)
            StateConfigs::session().ttl(Duration::from_secs(24 * 3600)),
            CustomKeyExtractor::new(|click: &Click| click.user_id.clone()),
            Duration::from_secs(30 * 60),
            |click, is_new_session, state| async move {
                let previous: SessionInfo = state.get().await.unwrap_or_default();
                let info = if is_new_session {
                    SessionInfo {
                        number: previous.number + 1,
                        clicks: 1,
                        last_minute: click.minute,
                    }
                } else {
                    SessionInfo {
                        number: previous.number,
                        clicks: previous.clicks + 1,
                        last_minute: click.minute,
                    }
                };
                if let Err(e) = state.set(&info).await {
                    eprintln!("warning: session info of {} not saved: {e}", click.user_id);
                }
                let what = match (is_new_session, previous.number) {
                    (true, 0) => format!("session {} starts", info.number),
                    (true, _) => format!(
                        "session {} starts ({} min since the last click)",
                        info.number,
                        click.minute - previous.last_minute
                    ),
                    (false, _) => format!("session {}, click {}", info.number, info.clicks),
                };
                format!(
                    "+{:02}m {:<5} {:<6} -> {what}",
                    click.minute, click.user_id, click.action
                )
            },
        )
        .map(|item| item.unwrap_or_else(|e| format!("state error: {e}")))
        .collect()
        .await;

    for line in &lines {
        println!("{line}");
    }
    let expected: Vec<&str> = EXPECTED.lines().collect();
    if lines != expected {
        eprintln!("\nstateful_session_example: output differs from the expected output:");
        for (i, line) in expected.iter().enumerate() {
            let actual = lines.get(i).map(String::as_str).unwrap_or("<missing>");
            if actual != *line {
                eprintln!("  line {}: expected {line:?}, got {actual:?}", i + 1);
            }
        }
        std::process::exit(1);
    }
    println!("\nAll {} clicks as expected.", lines.len());
}
