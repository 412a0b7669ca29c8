//! One connection type over standalone Redis and Redis Cluster, and the retry loop around
//! every request.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RetryMethod, Value};
pub use rs2_state_core::RetryPolicy;

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

/// The retry policy a [`RedisState`](crate::RedisState) starts with: 8 retries, from 25 ms
/// doubling to 1 s (about 3.6 s of waiting in all), to ride out a restart or a failover.
///
/// A request is sent at most `1 + max_retries` times. Errors the server gives for the request
/// itself (a wrong type, a script error) are not retried. When retries run out, the request's
/// error is returned (an operator yields it as the event's `Err` item). Every request the
/// store sends is safe to repeat: reads and plain writes are idempotent, and a locked write
/// whose reply was lost is recognised when it is sent again, so a retried update is applied
/// once. (The store sets its own response timeouts; the policy's `call_timeout` is not used
/// by the store itself.)
///
/// ```
/// use std::time::Duration;
/// use rs2_state_redis::{default_retry_policy, RetryPolicy};
///
/// assert_eq!(default_retry_policy().max_retries(), 8);
/// // Ride out a restart of up to about ten seconds.
/// let policy = RetryPolicy::new(12, Duration::from_millis(50), Duration::from_secs(1));
/// assert_eq!(policy.max_retries(), 12);
/// ```
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy::new(8, Duration::from_millis(25), Duration::from_secs(1))
}

/// Runs `request` until it succeeds, fails with an error that a retry cannot fix, or the
/// retries `policy` allows run out.
pub(crate) async fn run<T, F, Fut>(policy: &RetryPolicy, mut request: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < policy.max_retries() && retryable(&err) => {
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
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
    fn default_policy_keeps_the_stores_old_numbers() {
        let p = default_retry_policy();
        assert_eq!(p.max_retries(), 8);
        let waits: Vec<_> = (0..8).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.total_backoff(), Duration::from_millis(3575));
    }
}
