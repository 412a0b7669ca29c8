//! How often, how patiently and for how long a failed backend call is tried again.

use std::time::Duration;

/// How a backend call that failed for a transient reason (a `StateError::Storage` error: a
/// dropped connection, a server restarting, a timeout) is tried again.
///
/// A call is made at most `1 + max_retries` times. Before retry `n` (0-based) the caller waits
/// [`backoff(n)`](Self::backoff): `base_backoff`, doubling each time, at most `max_backoff`.
/// Each attempt is cut after [`call_timeout`](Self::call_timeout), which counts as a transient
/// failure. When the retries run out, the last error is returned (an operator yields it as the
/// event's `Err` item, naming the key, and goes on with the next event).
///
/// The policy is plain data; the operators apply it (see [`StateConfig::retry`]) to a custom
/// store, and `RedisState` applies its own to each request it sends.
///
/// [`StateConfig::retry`]: crate::StateConfig::retry
///
/// ```
/// use std::time::Duration;
/// use rs2_state_core::RetryPolicy;
///
/// // The default: 2 retries, after 10 ms then 20 ms; each call cut after 30 s.
/// let policy = RetryPolicy::default();
/// assert_eq!(policy.max_retries(), 2);
/// assert_eq!(policy.backoff(0), Duration::from_millis(10));
/// assert_eq!(policy.backoff(1), Duration::from_millis(20));
/// assert_eq!(policy.call_timeout(), Duration::from_secs(30));
///
/// // Ride out a restart of up to about ten seconds, cutting a call after 2 s.
/// let patient = RetryPolicy::new(12, Duration::from_millis(50), Duration::from_secs(1))
///     .with_call_timeout(Duration::from_secs(2));
/// assert_eq!(patient.total_backoff(), Duration::from_millis(50 + 100 + 200 + 400 + 800 + 7 * 1000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    max_retries: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    call_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 2 retries, after 10 ms then 20 ms (waits capped at 100 ms), each call cut after 30 s:
    /// enough to ride out a dropped connection or a failover's first moments while adding at
    /// most 30 ms of waiting to an event whose backend is down.
    fn default() -> Self {
        Self::new(2, Duration::from_millis(10), Duration::from_millis(100))
    }
}

impl RetryPolicy {
    /// The call timeout of [`new`](Self::new) and [`none`](Self::none) (and the default).
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

    /// Up to `max_retries` retries, the first after `base_backoff`, each wait twice the last,
    /// at most `max_backoff` (raised to `base_backoff` if smaller); each call cut after
    /// [`DEFAULT_CALL_TIMEOUT`](Self::DEFAULT_CALL_TIMEOUT).
    pub fn new(max_retries: u32, base_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_retries,
            base_backoff,
            max_backoff: max_backoff.max(base_backoff),
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
        }
    }

    /// No retries: the first failure is returned. Calls are still cut after
    /// [`DEFAULT_CALL_TIMEOUT`](Self::DEFAULT_CALL_TIMEOUT).
    pub fn none() -> Self {
        Self::new(0, Duration::ZERO, Duration::ZERO)
    }

    /// This policy with each attempt of a call cut after `timeout` (a cut attempt is a
    /// transient failure, retried like one). Zero is invalid: `StateConfig::validate` rejects
    /// it.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How many times a failed call is made again.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before the first retry.
    pub fn base_backoff(&self) -> Duration {
        self.base_backoff
    }

    /// The longest wait between two attempts.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// How long one attempt of a call may take before it is cut.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The wait before retry number `retry` (0-based): `base_backoff * 2^retry`, at most
    /// `max_backoff` (saturating: never overflows, whatever `retry` is).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The longest the retries of one call wait in all (the sum of every backoff; attempts'
    /// own time not counted), saturating at `Duration::MAX`.
    pub fn total_backoff(&self) -> Duration {
        // From retry 31 on, every wait is the same (`backoff` stops doubling there), so a
        // policy with `u32::MAX` retries is summed in 32 steps.
        let doubling = self.max_retries.min(32);
        let sum = (0..doubling)
            .map(|n| self.backoff(n))
            .fold(Duration::ZERO, Duration::saturating_add);
        sum.saturating_add(self.backoff(31).saturating_mul(self.max_retries - doubling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::new(5, ms(10), ms(50));
        let waits: Vec<_> = (0..5).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(p.total_backoff(), ms(170));
    }

    #[test]
    fn default_is_two_short_retries_and_a_30s_call_timeout() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries(), 2);
        assert_eq!((p.backoff(0), p.backoff(1)), (ms(10), ms(20)));
        assert_eq!(p.max_backoff(), ms(100));
        assert_eq!(p.total_backoff(), ms(30));
        assert_eq!(p.call_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn none_never_waits() {
        let p = RetryPolicy::none();
        assert_eq!(p.max_retries(), 0);
        assert_eq!(p.total_backoff(), Duration::ZERO);
        assert_eq!(p.backoff(3), Duration::ZERO);
        assert_eq!(p.call_timeout(), RetryPolicy::DEFAULT_CALL_TIMEOUT);
    }

    #[test]
    fn cap_below_base_is_raised_to_base() {
        let p = RetryPolicy::new(3, ms(40), ms(5));
        assert_eq!(p.max_backoff(), ms(40));
        assert_eq!(p.total_backoff(), ms(120));
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let p = RetryPolicy::new(u32::MAX, ms(10), Duration::MAX);
        assert_eq!(p.backoff(200), ms(10).saturating_mul(1 << 31));
        let p = RetryPolicy::new(u32::MAX, Duration::from_secs(1 << 40), Duration::MAX);
        assert_eq!(p.backoff(40), Duration::MAX);
        assert_eq!(p.total_backoff(), Duration::MAX);
        let p = RetryPolicy::new(u32::MAX, Duration::MAX, Duration::MAX);
        assert_eq!(p.backoff(0), Duration::MAX);
        assert_eq!(p.backoff(u32::MAX), Duration::MAX);
        assert_eq!(p.total_backoff(), Duration::MAX);
        // Many retries under a small cap: answered at once, exact.
        let p = RetryPolicy::new(u32::MAX, ms(1), ms(4));
        assert_eq!(
            p.total_backoff(),
            ms(1 + 2) + ms(4).saturating_mul(u32::MAX - 2)
        );
    }

    #[test]
    fn call_timeout_is_settable() {
        let p = RetryPolicy::none().with_call_timeout(ms(250));
        assert_eq!(p.call_timeout(), ms(250));
        assert_eq!(p.max_retries(), 0);
    }
}
