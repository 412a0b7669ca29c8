//! Stateful window: per-sensor count windows — tumbling, sliding, and partial windows at the
//! end of input. Run: `cargo run --example stateful_window_example`.
//!
//! Two sensors report temperatures, interleaved. Each window is emitted on the reading that
//! completes it, so windows of different sensors come out in input order.
//!
//! Expected output:
//!
//! ```text
//! Tumbling windows of 3 (stateful_window_rs2):
//!   s1 [10, 12, 14] avg 12.0
//!   s2 [5, 7, 9] avg 7.0
//!   s1 [16, 18, 20] avg 18.0
//! Sliding windows of 3, slide 1 (moving average):
//!   s1 [10, 12, 14] avg 12.0
//!   s1 [12, 14, 16] avg 14.0
//!   s2 [5, 7, 9] avg 7.0
//!   s1 [14, 16, 18] avg 16.0
//!   s1 [16, 18, 20] avg 18.0
//!   s2 [7, 9, 11] avg 9.0
//!   s1 [18, 20, 22] avg 20.0
//! Tumbling windows of 3 with partial windows at the end:
//!   s1 [10, 12, 14] avg 12.0
//!   s2 [5, 7, 9] avg 7.0
//!   s1 [16, 18, 20] avg 18.0
//!   s2 [11] avg 11.0 (partial)
//!   s1 [22] avg 22.0 (partial)
//! ```
//!
//! Without `emit_partial` the last readings (s2's 11, s1's 22) never fill a window and are not
//! emitted; with it they come out at the end, in the order their windows were started (s2's 11
//! arrived before s1's 22). The example checks its output against the block above and exits
//! with status 1 on any difference.
use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{CustomKeyExtractor, StateConfig, StateError, StatefulStreamExt},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: u32,
}

fn readings() -> impl futures::Stream<Item = Reading> {
    let r = |sensor: &str, celsius: u32| Reading {
        sensor: sensor.to_string(),
        celsius,
    };
    futures::stream::iter(vec![
        r("s1", 10),
        r("s2", 5),
        r("s1", 12),
        r("s1", 14),
        r("s2", 7),
        r("s1", 16),
        r("s2", 9),
        r("s1", 18),
        r("s1", 20),
        r("s2", 11),
        r("s1", 22),
    ])
}

/// One window, summarised as a line of output.
fn describe(window: &[Reading], size: usize) -> String {
    let temps: Vec<u32> = window.iter().map(|r| r.celsius).collect();
    let avg = temps.iter().sum::<u32>() as f64 / temps.len() as f64;
    let partial = if window.len() < size {
        " (partial)"
    } else {
        ""
    };
    format!(
        "  {} {:?} avg {:.1}{}",
        window[0].sensor, temps, avg, partial
    )
}

/// Prints each item; a state error becomes a line of its own instead of a panic.
fn print_all(title: &str, items: Vec<Result<String, StateError>>, out: &mut Vec<String>) {
    println!("{title}");
    out.push(title.to_string());
    for item in items {
        let line = item.unwrap_or_else(|e| format!("  state error: {e}"));
        println!("{line}");
        out.push(line);
    }
}

const EXPECTED: &str = "\
Tumbling windows of 3 (stateful_window_rs2):
  s1 [10, 12, 14] avg 12.0
  s2 [5, 7, 9] avg 7.0
  s1 [16, 18, 20] avg 18.0
Sliding windows of 3, slide 1 (moving average):
  s1 [10, 12, 14] avg 12.0
  s1 [12, 14, 16] avg 14.0
  s2 [5, 7, 9] avg 7.0
  s1 [14, 16, 18] avg 16.0
  s1 [16, 18, 20] avg 18.0
  s2 [7, 9, 11] avg 9.0
  s1 [18, 20, 22] avg 20.0
Tumbling windows of 3 with partial windows at the end:
  s1 [10, 12, 14] avg 12.0
  s2 [5, 7, 9] avg 7.0
  s1 [16, 18, 20] avg 18.0
  s2 [11] avg 11.0 (partial)
  s1 [22] avg 22.0 (partial)";

#[tokio::main]
async fn main() {
    let by_sensor = || CustomKeyExtractor::new(|r: &Reading| r.sensor.clone());
    let mut out = Vec::new();

    let tumbling = readings()
        .stateful_window_rs2(
            StateConfig::new(),
            by_sensor(),
            3,
            |window, _state| async move { describe(&window, 3) },
        )
        .collect()
        .await;
    print_all(
        "Tumbling windows of 3 (stateful_window_rs2):",
        tumbling,
        &mut out,
    );

    let sliding = readings()
        .stateful_window_rs2_advanced(
            StateConfig::new(),
            by_sensor(),
            3,
            Some(1), // slide by one reading: a moving average
            false,
            |window, _state| async move { describe(&window, 3) },
        )
        .collect()
        .await;
    print_all(
        "Sliding windows of 3, slide 1 (moving average):",
        sliding,
        &mut out,
    );

    let with_partial = readings()
        .stateful_window_rs2_advanced(
            StateConfig::new(),
            by_sensor(),
            3,
            None, // tumbling
            true, // emit what is left of each sensor's window when the input ends
            |window, _state| async move { describe(&window, 3) },
        )
        .collect()
        .await;
    print_all(
        "Tumbling windows of 3 with partial windows at the end:",
        with_partial,
        &mut out,
    );

    let expected: Vec<&str> = EXPECTED.lines().collect();
    if out != expected {
        eprintln!("\nstateful_window_example: output differs from the expected output:");
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
