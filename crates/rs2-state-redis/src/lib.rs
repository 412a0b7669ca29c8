//! # rs2-state-redis: keyed state in Redis, shared by every replica of a pipeline
//!
//! [`RedisState`] is a [`StateStorage`] on a standalone Redis server or a Redis Cluster. Plug
//! it into any operator's config and several processes running the same pipeline share one
//! state: one total per user, one rate limit for all, each id passed once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use futures::{stream, StreamExt};
//! use rs2_operators::StatefulStreamExt;
//! use rs2_state_core::{StateAccess, StateConfig};
//! use rs2_state_redis::RedisState;
//!
//! # #[tokio::main] async fn main() -> Result<(), rs2_state_core::StateError> {
//! let redis = RedisState::connect("redis://127.0.0.1:6379").await?.with_prefix("shop:");
//! let config = StateConfig::new().with_custom_storage(Arc::new(redis));
//! let totals: Vec<u64> = stream::iter([("ann", 5u64), ("bob", 7), ("ann", 3)])
//!     .stateful_fold_rs2_par(config, |e: &(&str, u64)| e.0.to_string(), 64, 0u64,
//!         |sum, e, _state: StateAccess| async move { sum + e.1 })
//!     .map(|total| total.expect("redis reachable"))
//!     .collect()
//!     .await;
//! # Ok(()) }
//! ```
//!
//! ## What the store guarantees
//! * **Every write carries the config's TTL** (`SET .. PX`): Redis drops a key `ttl` after
//!   its last write, so idle state ends without a cleanup task.
//! * **Transitions are atomic across processes.** [`update`](StateStorage::update) and every
//!   operator's state transition run under a lock the server holds: one Lua script takes the
//!   lock and reads the value, one writes the new value and releases the lock, and it writes
//!   only if the lock is still held (a holder that stalled past its lease fails instead of
//!   overwriting). A crashed holder blocks its key until the lease ends (30 s for operators).
//! * **Faults are retried, boundedly.** A request that fails because the server cannot be
//!   reached is retried by the [`RetryPolicy`]; every request is safe to repeat, so an update
//!   whose reply was lost is applied once. When retries run out the error is returned and an
//!   operator yields it as that event's `Err` item.
//! * **Keys live under a prefix** (`rs2:` unless [`with_prefix`](RedisState::with_prefix)
//!   says otherwise). A state key `k` is stored as `<prefix>{k}` and its lock as
//!   `<prefix>{k}:lock`: the braces are a Cluster hash tag, so a key and its lock share a slot
//!   and one script can touch both. [`clear`](StateStorage::clear) deletes the prefix's keys
//!   (`SCAN` + `UNLINK` in batches, on every primary of a cluster), never the database.
//!
//! ## Speed
//! Every request goes over one multiplexed connection per server, so requests from
//! concurrent tasks are pipelined. The keyed-concurrency operators (`stateful_*_rs2_par`)
//! keep many events of different keys in flight and so pipeline their transitions;
//! [`get_many`](StateStorage::get_many) is one `MGET` and [`set_many`](StateStorage::set_many)
//! one pipeline on a standalone server. The sequential operators wait for each event's
//! round trips before the next event.
#![warn(missing_docs)]

mod batch;
mod conn;
mod scripts;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{cmd, pipe, RedisError, Value};
use rs2_state_core::{
    async_trait, HeldLock, KeyLock, LockedWrite, StateError, StateResult, StateStorage, UpdateFn,
};

use batch::{Batcher, Op, OpKind};
use conn::Conn;
pub use conn::{default_retry_policy, RetryPolicy};

/// The lease of the lock an [`update`](StateStorage::update) holds around its closure.
const UPDATE_LEASE: Duration = Duration::from_secs(30);
/// How long a commit mark stays (see `scripts`): longer than any retry of the write.
const MIN_COMMIT_MARK: Duration = Duration::from_secs(10);
/// Keys asked for per `SCAN` step and removed per `UNLINK` in `clear`.
const CLEAR_BATCH: usize = 1000;
/// The longest wait between two tries of a lock another holder has.
const MAX_LOCK_POLL: Duration = Duration::from_millis(20);

/// Keyed state in Redis (standalone or Cluster), shared by every process that connects to
/// the same server with the same prefix. See the [crate docs](crate) for its guarantees.
///
/// Cloning is cheap and shares the connection. The connection (and, on a standalone server,
/// the task that batches lock requests) runs on the tokio runtime `connect` was called on:
/// use the store while that runtime runs; connect once per runtime otherwise.
#[derive(Clone)]
pub struct RedisState {
    conn: Conn,
    /// Sends lock and write requests together (a standalone server; `None` on a cluster,
    /// where each goes alone to its key's node).
    batcher: Option<Batcher>,
    prefix: String,
    retry: RetryPolicy,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .field("cluster", &self.is_cluster())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects to a standalone server, e.g. `redis://127.0.0.1:6379` (`rediss://` for TLS is
    /// not built in; `redis://user:password@host:port/db` selects a user and database).
    ///
    /// The connection reconnects by itself when the server goes away; requests made
    /// meanwhile are retried as the [`RetryPolicy`] says.
    pub async fn connect(url: &str) -> StateResult<RedisState> {
        let client = redis::Client::open(url).map_err(|e| connect_error(url, e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| connect_error(url, e))?;
        let batcher = Batcher::start(Conn::Single(manager.clone()));
        Ok(Self::new(Conn::Single(manager), Some(batcher)))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each); the
    /// client discovers the rest and follows slot moves.
    pub async fn connect_cluster(nodes: &[String]) -> StateResult<RedisState> {
        let listed = nodes.join(",");
        if nodes.is_empty() {
            return Err(StateError::Validation(
                "connect_cluster needs at least one node URL, e.g. redis://127.0.0.1:7000".into(),
            ));
        }
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(500)
            .build()
            .map_err(|e| connect_error(&listed, e))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| connect_error(&listed, e))?;
        Ok(Self::new(Conn::Cluster(conn), None))
    }

    fn new(conn: Conn, batcher: Option<Batcher>) -> Self {
        Self {
            batcher,
            conn,
            prefix: "rs2:".into(),
            retry: default_retry_policy(),
        }
    }

    /// This store with every key it touches under `prefix` (`rs2:` by default), so several
    /// applications can share a server and [`clear`](StateStorage::clear) removes only this
    /// prefix's keys. Stores with the same prefix on the same server share their state.
    ///
    /// The characters `{`, `}` and `%` are written as `%7B`, `%7D` and `%25` in the prefix,
    /// so that the prefix never holds a Cluster hash tag of its own.
    pub fn with_prefix(mut self, prefix: &str) -> RedisState {
        self.prefix = prefix
            .replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D");
        self
    }

    /// This store with `policy` for requests that fail because the server cannot be reached
    /// (the default is [`default_retry_policy`]). The policy's `call_timeout` is not used here:
    /// the connection has response timeouts of its own. Operators apply their config's
    /// `StateConfig::retry` on top, to what the store still reports after its own retries.
    pub fn with_retry(mut self, policy: RetryPolicy) -> RedisState {
        self.retry = policy;
        self
    }

    /// The prefix every key is under, as written to Redis (with `{`, `}` and `%`
    /// percent-encoded; to share a store's keys, clone it or pass the original prefix to
    /// [`with_prefix`](Self::with_prefix) again).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this store talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.prefix)
    }

    fn lock_key_name(&self, key: &str) -> String {
        format!("{}{{{key}}}:lock", self.prefix)
    }

    /// Sends `cmd`, retrying as the policy says.
    async fn query<T: redis::FromRedisValue>(&self, key: &str, cmd: &redis::Cmd) -> StateResult<T> {
        conn::run(&self.retry, || {
            let mut conn = self.conn.clone();
            async move { cmd.query_async(&mut conn).await }
        })
        .await
        .map_err(|e| redis_error(key, e))
    }

    /// Sends a lock or write request (with others waiting, on a standalone server), retrying
    /// as the policy says.
    async fn send_op(&self, key: &str, op: Op) -> StateResult<(i64, Value)> {
        let op = Arc::new(op);
        let (status, datum) = conn::run(&self.retry, || {
            let op = Arc::clone(&op);
            let mut conn = self.conn.clone();
            async move {
                match &self.batcher {
                    Some(batcher) => batcher.call(op).await,
                    None => batch::call_one(&mut conn, &op).await,
                }
            }
        })
        .await
        .map_err(|e| redis_error(key, e))?;
        match status {
            0 | 1 => Ok((status, datum)),
            _ => Err(StateError::storage_for(
                key,
                format!("unexpected reply to the lock script: {status}, {datum:?}"),
            )),
        }
    }

    /// Takes `key`'s lock (waiting while another holder has it) and, if `read`, reads its
    /// value in the same round trip.
    async fn acquire(
        &self,
        key: &str,
        lease: Duration,
        read: bool,
    ) -> StateResult<(RedisLock, Option<Vec<u8>>)> {
        let lock = RedisLock {
            conn: self.conn.clone(),
            retry: self.retry,
            lock_key: self.lock_key_name(key),
            token: new_token(),
        };
        let give_up =
            tokio::time::Instant::now() + lease.saturating_mul(2) + Duration::from_secs(1);
        let mut wait = Duration::from_millis(1);
        loop {
            let op = Op {
                lock_key: lock.lock_key.clone(),
                value_key: self.value_key(key),
                kind: if read { OpKind::LockRead } else { OpKind::Lock },
                token: lock.token.clone(),
                ms: millis(lease),
                value: Vec::new(),
                mark_ms: 0,
            };
            let (held, datum) = self.send_op(key, op).await?;
            if held == 1 {
                let value = match datum {
                    Value::Nil => None,
                    Value::BulkString(bytes) => Some(bytes),
                    other => {
                        return Err(StateError::storage_for(
                            key,
                            format!("unexpected value in the lock script's reply: {other:?}"),
                        ))
                    }
                };
                return Ok((lock, value));
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(StateError::storage_for(
                    key,
                    format!(
                        "another writer has held this key's lock for longer than its lease \
                         ({} ms); if no writer is running, delete the lock key '{}'",
                        lease.as_millis(),
                        lock.lock_key
                    ),
                ));
            }
            // The holder's transition is a couple of round trips: poll soon, then less often,
            // never past the lock's lease.
            let left = match datum {
                Value::Int(ms) if ms > 0 => Duration::from_millis(ms as u64),
                _ => wait,
            };
            tokio::time::sleep(wait.min(left)).await;
            wait = (wait * 2).min(MAX_LOCK_POLL);
        }
    }

    /// The commit mark's lifetime: longer than every retry of the write that leaves it.
    fn commit_mark(&self) -> Duration {
        self.retry.total_backoff().saturating_mul(2) + MIN_COMMIT_MARK
    }

    /// Writes under `lock` and releases it in one script; fails, writing nothing, if the
    /// lock was lost.
    async fn commit(
        &self,
        key: &str,
        lock: &RedisLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let (kind, value) = match write {
            LockedWrite::Keep => (OpKind::Keep, Vec::new()),
            LockedWrite::Set(bytes) => (OpKind::Set, bytes.to_vec()),
            LockedWrite::Delete => (OpKind::Delete, Vec::new()),
        };
        let op = Op {
            lock_key: lock.lock_key.clone(),
            value_key: self.value_key(key),
            kind,
            token: lock.token.clone(),
            ms: ttl.map_or(0, millis),
            value,
            mark_ms: millis(self.commit_mark()),
        };
        let (applied, _) = self.send_op(key, op).await?;
        if applied == 1 {
            Ok(())
        } else {
            Err(StateError::storage_for(
                key,
                "the key's lock expired before the write (the transition took longer than its \
                 lease) and another writer may have changed the key; nothing was written, \
                 retry the event",
            ))
        }
    }

    /// The primaries' addresses (a cluster) from `CLUSTER SLOTS`.
    async fn primaries(&self) -> StateResult<Vec<(String, u16)>> {
        let slots: Value = self
            .query("*", &cmd("CLUSTER").arg("SLOTS").to_owned())
            .await?;
        let mut found = Vec::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                let Value::Array(parts) = range else { continue };
                let Some(Value::Array(primary)) = parts.get(2) else {
                    continue;
                };
                let host = match primary.first() {
                    Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                    Some(Value::SimpleString(h)) => h.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = primary.get(1) else {
                    continue;
                };
                let addr = (host, *port as u16);
                if !found.contains(&addr) {
                    found.push(addr);
                }
            }
        }
        if found.is_empty() {
            return Err(StateError::Storage(
                "CLUSTER SLOTS listed no primaries; is every slot assigned?".into(),
            ));
        }
        Ok(found)
    }

    /// Deletes the prefix's keys on one server: the standalone one (`node` `None`), or the
    /// cluster primary `node` routes to.
    async fn clear_node(&self, node: Option<(&ClusterConnection, RoutingInfo)>) -> StateResult<()> {
        let pattern = format!("{}{{*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let mut scan = cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CLEAR_BATCH);
            let (next, keys): (u64, Vec<String>) = match &node {
                None => self.query(&self.prefix, &scan).await?,
                Some((conn, routing)) => {
                    let reply = conn::run(&self.retry, || {
                        let mut conn = (*conn).clone();
                        let (scan, routing) = (scan.clone(), routing.clone());
                        async move { conn.route_command(scan, routing).await }
                    })
                    .await
                    .map_err(|e| redis_error(&self.prefix, e))?;
                    redis::from_redis_value(reply)
                        .map_err(|e| redis_error(&self.prefix, e.into()))?
                }
            };
            if !keys.is_empty() {
                if node.is_some() {
                    // Keys of different slots cannot share a command: one UNLINK each,
                    // pipelined by the connection.
                    let unlinks = keys.iter().map(|k| async move {
                        self.query::<i64>(k, &cmd("UNLINK").arg(k).to_owned()).await
                    });
                    for result in futures::future::join_all(unlinks).await {
                        result?;
                    }
                } else {
                    self.query::<i64>(&self.prefix, cmd("UNLINK").arg(&keys))
                        .await?;
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl StateStorage for RedisState {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.query(key, cmd("GET").arg(self.value_key(key))).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.set_with_ttl(key, value, None).await
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.query::<i64>(key, cmd("DEL").arg(self.value_key(key)))
            .await
            .map(drop)
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.query(key, cmd("EXISTS").arg(self.value_key(key)))
            .await
    }

    async fn clear(&self) -> StateResult<()> {
        let Conn::Cluster(conn) = &self.conn else {
            return self.clear_node(None).await;
        };
        for (host, port) in self.primaries().await? {
            let primary = SingleNodeRoutingInfo::ByAddress { host, port };
            self.clear_node(Some((conn, RoutingInfo::SingleNode(primary))))
                .await?;
        }
        Ok(())
    }

    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        self.update_with_ttl(key, None, f).await
    }

    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let mut set = cmd("SET");
        set.arg(self.value_key(key)).arg(value);
        if let Some(ttl) = ttl {
            set.arg("PX").arg(millis(ttl));
        }
        self.query::<()>(key, &set).await
    }

    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        let (lock, current) = self.acquire(key, UPDATE_LEASE, true).await?;
        match f(current) {
            Ok(next) => {
                self.commit(key, &lock, LockedWrite::Set(&next), ttl)
                    .await?;
                Ok(next)
            }
            Err(err) => {
                // The closure's error is the one to report; a failed release only delays the
                // key until the lease ends.
                let _ = Box::new(lock).release().await;
                Err(err)
            }
        }
    }

    async fn get_many(&self, keys: &[&str]) -> StateResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_cluster() {
            let gets = keys.iter().map(|k| self.get(k));
            return futures::future::join_all(gets).await.into_iter().collect();
        }
        let mut mget = cmd("MGET");
        for key in keys {
            mget.arg(self.value_key(key));
        }
        self.query(keys[0], &mget).await
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> StateResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.is_cluster() {
            let sets = entries.iter().map(|(k, v)| self.set_with_ttl(k, v, ttl));
            return futures::future::join_all(sets).await.into_iter().collect();
        }
        let mut batch = pipe();
        for (key, value) in entries {
            let set = batch.cmd("SET").arg(self.value_key(key)).arg(*value);
            if let Some(ttl) = ttl {
                set.arg("PX").arg(millis(ttl));
            }
            set.ignore();
        }
        conn::run(&self.retry, || {
            let mut conn = self.conn.clone();
            let batch = &batch;
            async move { batch.query_async::<()>(&mut conn).await }
        })
        .await
        .map_err(|e| redis_error(entries[0].0, e))
    }

    async fn lock_key(&self, key: &str, lease: Duration) -> StateResult<KeyLock> {
        let (lock, _) = self.acquire(key, lease, false).await?;
        Ok(KeyLock::new(lock))
    }

    async fn lock_and_get(
        &self,
        key: &str,
        lease: Duration,
    ) -> StateResult<(KeyLock, Option<Vec<u8>>)> {
        let (lock, value) = self.acquire(key, lease, true).await?;
        Ok((KeyLock::new(lock), value))
    }

    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        match lock.downcast_ref::<RedisLock>() {
            Some(held) if held.lock_key == self.lock_key_name(key) => {
                self.commit(key, held, write, ttl).await
            }
            // A lock this store did not hand out for this key: write, then release it.
            _ => {
                let written = match write {
                    LockedWrite::Keep => Ok(()),
                    LockedWrite::Set(value) => self.set_with_ttl(key, value, ttl).await,
                    LockedWrite::Delete => self.delete(key).await,
                };
                written.and(lock.release().await)
            }
        }
    }
}

/// A lock held on the server: the lock key holds `token` until released, written through, or
/// its lease ends.
struct RedisLock {
    conn: Conn,
    retry: RetryPolicy,
    lock_key: String,
    token: String,
}

#[async_trait]
impl HeldLock for RedisLock {
    async fn release(self: Box<Self>) -> StateResult<()> {
        let mut invocation = scripts::RELEASE.key(&self.lock_key);
        invocation.arg(&self.token);
        conn::run(&self.retry, || {
            let mut conn = self.conn.clone();
            let invocation = &invocation;
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        })
        .await
        .map(drop)
        .map_err(|e| redis_error(&self.lock_key, e))
    }

    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        Some(self)
    }
}

/// A token no other lock holder has: 128 random bits (the standard library's per-process
/// random hasher keys, a counter and the time), in hex.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let keys = KEYS.get_or_init(Default::default);
    let half = |salt: u64| {
        let mut h = keys.build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u64(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// `d` in whole milliseconds, at least 1 (Redis rejects `PX 0`).
fn millis(d: Duration) -> u64 {
    // Redis refuses an expiry past i64 milliseconds from now: a longer TTL is clamped to one
    // (146 million years) instead of failing every write.
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64 / 2)
}

/// Escapes the characters `SCAN MATCH` treats as a pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn redis_error(key: &str, err: RedisError) -> StateError {
    let hint = if err.is_connection_refusal() || err.is_io_error() || err.is_timeout() {
        " (the Redis server could not be reached; the request was retried as the store's \
         RetryPolicy allows)"
    } else {
        ""
    };
    StateError::storage_for(key, format!("redis: {err}{hint}"))
}

fn connect_error(target: &str, err: RedisError) -> StateError {
    StateError::Storage(format!(
        "could not connect to Redis at {target}: {err}; check that the server is running and \
         the URL is redis://host:port"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(!a.starts_with("c:"));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("plain:"), "plain:");
    }

    #[test]
    fn millis_is_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
