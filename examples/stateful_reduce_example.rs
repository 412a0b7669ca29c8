//! Stateful reduce: per-sensor running statistics, seeded by each sensor's first reading.
//!
//! `stateful_reduce_rs2` combines each new reading with the sensor's running value; the first
//! reading of a sensor seeds it and is emitted as is. The running value here carries min, max,
//! count and the number of alerts (readings above 30.0 °C).
//! Run: `cargo run --example stateful_reduce_example`.
//!
//! Expected output:
//!
//! ```text
//! kitchen  reading 21.0 -> min 21.0 max 21.0 (1 readings), alerts 0
//! garage   reading 12.5 -> min 12.5 max 12.5 (1 readings), alerts 0
//! kitchen  reading 23.5 -> min 21.0 max 23.5 (2 readings), alerts 0
//! kitchen  reading 31.0 -> min 21.0 max 31.0 (3 readings), alerts 1
//! garage   reading  9.0 -> min  9.0 max 12.5 (2 readings), alerts 0
//! kitchen  reading 19.5 -> min 19.5 max 31.0 (4 readings), alerts 1
//! ```
//!
//! followed by an expected-vs-actual check; the example exits with status 1 if any line
//! differs.
use rs2::prelude::*;
use serde::{Deserialize, Serialize};

/// A reading, and (as the reduced value) a sensor's running statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stats {
    sensor: String,
    last: f64,
    min: f64,
    max: f64,
    count: u64,
    alerts: u64,
}

fn reading(sensor: &str, celsius: f64) -> Stats {
    Stats {
        sensor: sensor.to_string(),
        last: celsius,
        min: celsius,
        max: celsius,
        count: 1,
        alerts: u64::from(celsius > 30.0),
    }
}

#[tokio::main]
async fn main() {
    let readings = futures::stream::iter(vec![
        reading("kitchen", 21.0),
        reading("garage", 12.5),
        reading("kitchen", 23.5),
        reading("kitchen", 31.0),
        reading("garage", 9.0),
        reading("kitchen", 19.5),
    ]);

    let lines: Vec<String> = readings
        .stateful_reduce_rs2(
            StateConfigs::high_performance(),
            CustomKeyExtractor::new(|r: &Stats| r.sensor.clone()),
            |running: Stats, next: Stats, _state: StateAccess| async move {
                Stats {
                    sensor: running.sensor,
                    last: next.last,
                    min: running.min.min(next.last),
                    max: running.max.max(next.last),
                    count: running.count + 1,
                    alerts: running.alerts + next.alerts,
                }
            },
        )
        .then(|result| async move {
            match result {
                Ok(s) => format!(
                    "{:<8} reading {:>4.1} -> min {:>4.1} max {:>4.1} ({} readings), alerts {}",
                    s.sensor, s.last, s.min, s.max, s.count, s.alerts
                ),
                Err(e) => format!("state error: {e}"),
            }
        })
        .collect()
        .await;

    let expected = [
        "kitchen  reading 21.0 -> min 21.0 max 21.0 (1 readings), alerts 0",
        "garage   reading 12.5 -> min 12.5 max 12.5 (1 readings), alerts 0",
        "kitchen  reading 23.5 -> min 21.0 max 23.5 (2 readings), alerts 0",
        "kitchen  reading 31.0 -> min 21.0 max 31.0 (3 readings), alerts 1",
        "garage   reading  9.0 -> min  9.0 max 12.5 (2 readings), alerts 0",
        "kitchen  reading 19.5 -> min 19.5 max 31.0 (4 readings), alerts 1",
    ];
    for line in &lines {
        println!("{line}");
    }
    println!();
    let mut ok = lines.len() == expected.len();
    for (actual, expected) in lines.iter().zip(expected) {
        let same = actual == expected;
        ok &= same;
        println!("{} {actual}", if same { "ok  " } else { "DIFF" });
        if !same {
            println!("     expected: {expected}");
        }
    }
    if !ok {
        std::process::exit(1);
    }
}
