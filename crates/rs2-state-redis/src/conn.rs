//! One connection type over standalone Redis and Redis Cluster, and the retry loop around
//! every request.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RetryMethod, Value};

/// A multiplexed connection: every clone shares one socket per server, and requests from
/// concurrent tasks are pipelined on it.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server; reconnects by itself after the server went away.
    Single(ConnectionManager),
    /// A cluster; routes each request to the node owning its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How a [`RedisState`](crate::RedisState) retries a request that failed because the server
/// could not be reached (restarting, a failover, a dropped connection, a timeout).
///
/// A request is sent at most `1 + max_retries` times, waiting `base_backoff`, then twice as
/// long each time up to `max_backoff`, between attempts. Errors the server gives for the
/// request itself (a wrong type, a script error) are not retried. When retries run out, the
/// request's error is returned (an operator yields it as the event's `Err` item).
///
/// Every request the store sends is safe to repeat: reads and plain writes are idempotent,
/// and a locked write whose reply was lost is recognised when it is sent again, so a retried
/// update is applied once.
///
/// ```
/// use std::time::Duration;
/// use rs2_state_redis::RetryPolicy;
///
/// // Ride out a restart of up to about ten seconds.
/// let policy = RetryPolicy::new(12, Duration::from_millis(50), Duration::from_secs(1));
/// assert_eq!(policy.max_retries(), 12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    base_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 retries, from 25 ms doubling to 1 s: about 3.6 s of waiting in all.
    fn default() -> Self {
        Self::new(8, Duration::from_millis(25), Duration::from_secs(1))
    }
}

impl RetryPolicy {
    /// Up to `max_retries` retries, the first after `base_backoff`, each wait twice the last,
    /// at most `max_backoff`.
    pub fn new(max_retries: u32, base_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_retries,
            base_backoff,
            max_backoff: max_backoff.max(base_backoff),
        }
    }

    /// No retries: the first failure is returned.
    pub fn none() -> Self {
        Self::new(0, Duration::ZERO, Duration::ZERO)
    }

    /// How many times a failed request is sent again.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before retry number `attempt` (0-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The longest the retries of one request wait in all.
    pub(crate) fn total_backoff(&self) -> Duration {
        (0..self.max_retries)
            .map(|a| self.backoff(a))
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// Runs `request` until it succeeds, fails with an error that a retry cannot fix, or
    /// the retries run out.
    pub(crate) async fn run<T, F, Fut>(&self, mut request: F) -> Result<T, RedisError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut attempt = 0;
        loop {
            match request().await {
                Ok(value) => return Ok(value),
                Err(err) if attempt < self.max_retries && retryable(&err) => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Whether `err` says the server could not be reached or was not ready, rather than that the
/// request was wrong.
fn retryable(err: &RedisError) -> bool {
    err.is_timeout()
        || err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || !matches!(err.retry_method(), RetryMethod::NoRetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::new(5, Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<_> = (0..5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(p.total_backoff(), Duration::from_millis(170));
        assert_eq!(RetryPolicy::none().total_backoff(), Duration::ZERO);
        // No overflow for absurd attempt counts.
        assert_eq!(p.backoff(200), Duration::from_millis(50));
    }
}
