//! Dedup over 1,000,000 distinct keys with `max_size` 10,000: memory must stay bounded by the
//! store's bound, not grow with the key count. Prints events/s and the process's peak resident
//! set (VmHWM), and the peak taken by the pre-built input alone for comparison.
//! Run: `cargo bench -p rs2-benches --bench dedup_memory`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rs2::state::{StateConfig, StatefulStreamExt};
use rs2_suite::UserEvent;

const EVENTS: usize = 1_000_000;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let events: Vec<UserEvent> = (0..EVENTS)
        .map(|i| UserEvent {
            user_id: format!("user-{i}"),
            amount: 1.0,
            timestamp: i as u64,
        })
        .collect();
    let input_peak_mb = status_kb("VmHWM:") as f64 / 1024.0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let kept = rt.block_on(
        futures::stream::iter(events)
            .stateful_deduplicate_rs2(
                StateConfig::new().max_size(10_000),
                |e: &UserEvent| e.user_id.clone(),
                Duration::from_secs(3600),
            )
            .fold(0usize, |n, r| {
                assert!(r.is_ok(), "dedup error: {r:?}");
                futures::future::ready(n + 1)
            }),
    );
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(kept, EVENTS, "every key is new, so every event is kept");
    println!(
        "dedup, {EVENTS} distinct keys, max_size 10,000: {:.2} M events/s, peak RSS {:.0} MB \
         (the pre-built input alone: {:.0} MB)",
        EVENTS as f64 / secs / 1e6,
        status_kb("VmHWM:") as f64 / 1024.0,
        input_peak_mb
    );
}
