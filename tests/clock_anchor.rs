//! The process clock is anchored at its first read. A paused tokio runtime built *before* that
//! read must still see every millisecond it advances (the anchor used to sit after the paused
//! clock, which then read a frozen time until it caught up). One test per binary, so this read
//! is the first in the process.

use std::time::Duration;

use rs2::state::StateClock;

#[test]
fn a_paused_runtime_built_before_the_first_clock_read_sees_every_millisecond() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    std::thread::sleep(Duration::from_millis(20));
    runtime.block_on(async {
        let clock = StateClock::new();
        let start = clock.now_ms();
        for step in 1..=5u64 {
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(clock.now_ms(), start + step);
        }
    });
}
