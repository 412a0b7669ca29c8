//! The one clock every store and operator reads.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, monotonic for the life of the clock.
///
/// The process reads the wall clock once, at the first use of any `StateClock`, and from then on
/// every clock adds the elapsed time of [`tokio::time::Instant`] since that moment. So:
/// * timestamps are wall-clock milliseconds, meaningful in state that outlives the process;
/// * every clock in a process (every store, every operator) agrees, time never goes backwards,
///   and a wall-clock step (NTP, a user changing the date) neither panics nor wraps;
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
    /// The process's clock (see the type's docs).
    pub fn new() -> Self {
        static ANCHOR: OnceLock<(u64, std::time::Instant)> = OnceLock::new();
        let &(base_wall_ms, base) = ANCHOR.get_or_init(|| {
            let wall_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // Anchor a day in the past (or as far back as the monotonic clock goes), so a
            // paused tokio runtime created before this first read still reads times after the
            // anchor instead of a clock stuck at the anchor.
            let now = std::time::Instant::now();
            let back = [86_400, 3_600, 60, 1, 0]
                .into_iter()
                .map(Duration::from_secs)
                .find(|d| now.checked_sub(*d).is_some())
                .unwrap_or_default();
            let anchor = now.checked_sub(back).unwrap_or(now);
            (wall_ms.saturating_sub(back.as_millis() as u64), anchor)
        });
        Self {
            base_wall_ms,
            base: tokio::time::Instant::from_std(base),
        }
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_wall_ms.saturating_add(elapsed.as_millis() as u64)
    }
}
