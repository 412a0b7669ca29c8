//! The one clock every store and operator reads.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, monotonic for the life of the clock.
///
/// The clock reads the wall clock once, when it is created, and from then on adds the elapsed
/// time of [`tokio::time::Instant`]. So:
/// * timestamps are wall-clock milliseconds, meaningful in state that outlives the process;
/// * within one clock, time never goes backwards, and a wall-clock step (NTP, a user changing
///   the date) neither panics nor wraps;
/// * under tokio's paused time (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`)
///   the clock follows the paused time, so time rules are tested without real sleeps.
///
/// ```
/// use rs2_state_memory::StateClock;
/// let clock = StateClock::new();
/// let a = clock.now_ms();
/// assert!(clock.now_ms() >= a);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct StateClock {
    base_wall_ms: u64,
    base: tokio::time::Instant,
}

impl Default for StateClock {
    fn default() -> Self {
        Self::new()
    }
}

impl StateClock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Self {
        let base_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            base_wall_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_wall_ms.saturating_add(elapsed.as_millis() as u64)
    }
}
