//! The kit itself: every check passes (none skipped) on a store that does everything the
//! contract allows (per-write TTL, prefixes on a shared server, server-held locks), and the
//! kit reports what a broken, hanging or panicking store gets wrong, by check name.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rs2::state::{
    async_trait, HeldLock, KeyLock, LockedWrite, StateError, StateResult, StateStorage, UpdateFn,
};
use rs2_state_testkit::{Conformance, Report, Status};

// --- a Redis-like server: values with expiry stamps and lock keys, in this process -----------

#[derive(Default)]
struct Server {
    data: HashMap<String, (Vec<u8>, Option<Instant>)>,
    locks: HashMap<String, u64>,
}

impl Server {
    fn live(&mut self, key: &str) -> Option<&Vec<u8>> {
        if let Some((_, Some(expires))) = self.data.get(key) {
            if *expires <= Instant::now() {
                self.data.remove(key);
            }
        }
        self.data.get(key).map(|(value, _)| value)
    }

    fn put(&mut self, key: String, value: &[u8], ttl: Option<Duration>) {
        self.data
            .insert(key, (value.to_vec(), ttl.map(|t| Instant::now() + t)));
    }
}

/// One server for the whole test binary; each client sees the keys under its prefix.
fn server() -> Arc<Mutex<Server>> {
    static SERVER: OnceLock<Arc<Mutex<Server>>> = OnceLock::new();
    Arc::clone(SERVER.get_or_init(Default::default))
}

/// A client of [`server`] under a prefix; `update` and `lock_key` take a lock on the server,
/// so two clients with one prefix are atomic against each other.
struct Client {
    server: Arc<Mutex<Server>>,
    prefix: String,
}

static TOKENS: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// A client under a prefix no other client has: a fresh, empty store.
    fn fresh() -> Self {
        static PREFIXES: AtomicU64 = AtomicU64::new(0);
        Self::with_prefix(format!("test{}:", PREFIXES.fetch_add(1, Ordering::Relaxed)))
    }

    fn with_prefix(prefix: String) -> Self {
        Self {
            server: server(),
            prefix,
        }
    }

    fn server(&self) -> MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A round trip: a yield, as a request in flight would.
    async fn call<R>(&self, op: impl FnOnce(&mut Server) -> R) -> R {
        tokio::task::yield_now().await;
        op(&mut self.server())
    }

    /// `SET lock:{key} token NX`, retried every millisecond.
    async fn acquire(&self, key: &str) -> StateResult<ServerLock> {
        let full = self.full(key);
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let taken = self
                .call(|s| {
                    if s.locks.contains_key(&full) {
                        false
                    } else {
                        s.locks.insert(full.clone(), token);
                        true
                    }
                })
                .await;
            if taken {
                return Ok(ServerLock {
                    server: Arc::clone(&self.server),
                    key: full,
                    token,
                });
            }
            if Instant::now() > deadline {
                return Err(StateError::storage_for(key, "lock not acquired in 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

struct ServerLock {
    server: Arc<Mutex<Server>>,
    key: String,
    token: u64,
}

impl ServerLock {
    /// Compare-and-delete, under the server's lock.
    fn release_in(&self, s: &mut Server) -> bool {
        if s.locks.get(&self.key) == Some(&self.token) {
            s.locks.remove(&self.key);
            true
        } else {
            false
        }
    }
}

#[async_trait]
impl HeldLock for ServerLock {
    async fn release(self: Box<Self>) -> StateResult<()> {
        let mut s = self.server.lock().unwrap_or_else(|p| p.into_inner());
        self.release_in(&mut s);
        Ok(())
    }
    fn as_any(&self) -> Option<&(dyn Any + Send + Sync)> {
        Some(self)
    }
}

#[async_trait]
impl StateStorage for Client {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        let full = self.full(key);
        Ok(self.call(|s| s.live(&full).cloned()).await)
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.set_with_ttl(key, value, None).await
    }
    async fn set_with_ttl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let full = self.full(key);
        self.call(|s| s.put(full, value, ttl)).await;
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        let full = self.full(key);
        self.call(|s| s.data.remove(&full)).await;
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        let full = self.full(key);
        Ok(self.call(|s| s.live(&full).is_some()).await)
    }
    async fn clear(&self) -> StateResult<()> {
        let prefix = self.prefix.clone();
        self.call(|s| s.data.retain(|k, _| !k.starts_with(&prefix)))
            .await;
        Ok(())
    }
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        self.update_with_ttl(key, None, f).await
    }
    async fn update_with_ttl(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: UpdateFn<'_>,
    ) -> StateResult<Vec<u8>> {
        let lock = self.acquire(key).await?;
        let result = async {
            let next = f(self.get(key).await?)?;
            self.set_with_ttl(key, &next, ttl).await?;
            Ok(next)
        }
        .await;
        KeyLock::new(lock).release().await?;
        result
    }
    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> StateResult<()> {
        let entries: Vec<(String, &[u8])> =
            entries.iter().map(|(k, v)| (self.full(k), *v)).collect();
        self.call(|s| {
            for (key, value) in entries {
                s.put(key, value, ttl);
            }
        })
        .await;
        Ok(())
    }
    async fn lock_key(&self, key: &str, _lease: Duration) -> StateResult<KeyLock> {
        Ok(KeyLock::new(self.acquire(key).await?))
    }
    /// One round trip: the write lands only if the lock is still this holder's.
    async fn write_and_release(
        &self,
        key: &str,
        lock: KeyLock,
        write: LockedWrite<'_>,
        ttl: Option<Duration>,
    ) -> StateResult<()> {
        let held = lock
            .downcast_ref::<ServerLock>()
            .ok_or_else(|| StateError::storage_for(key, "not this store's lock"))?;
        let full = self.full(key);
        let owned = self
            .call(|s| {
                if s.locks.get(&held.key) != Some(&held.token) {
                    return false;
                }
                match write {
                    LockedWrite::Keep => {}
                    LockedWrite::Set(value) => s.put(full, value, ttl),
                    LockedWrite::Delete => {
                        s.data.remove(&full);
                    }
                }
                held.release_in(s)
            })
            .await;
        if owned {
            Ok(())
        } else {
            Err(StateError::storage_for(key, "lock lost before the write"))
        }
    }
}

/// A second client with `client`'s prefix: the same keys.
fn same_keys(client: &Client) -> impl Future<Output = Client> {
    let prefix = client.prefix.clone();
    async move { Client::with_prefix(prefix) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_a_store_with_ttl_prefixes_and_server_locks() {
    let report = Conformance::new(|| async { Client::fresh() })
        .second_instance(same_keys)
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
    let skipped: Vec<_> = report
        .checks()
        .iter()
        .filter(|c| matches!(c.status, Status::Skipped(_)))
        .map(|c| c.name)
        .collect();
    assert!(skipped.is_empty(), "skipped: {skipped:?}");
}

/// Without `second_instance`, two stores from `make` (two prefixes) do not share keys: the
/// cross-instance checks say how to fix the setup instead of reporting lost updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_instance_checks_explain_instances_that_share_nothing() {
    let report = Conformance::new(|| async { Client::fresh() })
        .shared_between_instances(true)
        .run()
        .await;
    println!("{report}");
    let failed: Vec<_> = report.failures().iter().map(|c| c.name).collect();
    assert_eq!(
        failed,
        [
            "update_is_atomic_across_instances",
            "locked_counter_is_exact_across_instances"
        ]
    );
    for failure in report.failures() {
        assert!(
            failure.message().unwrap().contains("second_instance"),
            "{failure}"
        );
    }
}

// --- a store with faults the kit must find ---------------------------------------------------

/// A map store that claims per-write TTL but ignores it, whose `clear` does nothing, and whose
/// `update` reads and writes with a yield in between (no lock).
#[derive(Default)]
struct Sloppy(Mutex<HashMap<String, Vec<u8>>>);

impl Sloppy {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StateStorage for Sloppy {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.map().insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.map().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(self.map().contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        Ok(())
    }
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let current = self.get(key).await?;
        tokio::task::yield_now().await;
        let next = f(current)?;
        self.set(key, &next).await?;
        Ok(next)
    }
}

fn failed_names(report: &Report) -> Vec<&'static str> {
    report.failures().iter().map(|c| c.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_names_each_contract_violation() {
    let report = Conformance::new(|| async { Sloppy::default() }).run().await;
    println!("{report}");
    assert_eq!(
        failed_names(&report),
        [
            "clear_removes_every_key",
            "set_with_ttl_expires",
            "write_without_ttl_does_not_expire",
            "update_with_ttl_expires",
            "set_many_with_ttl_expires",
            "write_and_release_with_ttl_expires",
            "update_is_atomic_under_contention",
            "clear_removes_operator_state",
        ]
    );
    let panic = std::panic::catch_unwind(|| report.assert_passed()).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.starts_with("8 of 35 storage conformance checks failed"),
        "{message}"
    );
    assert!(
        message.contains("update_is_atomic_under_contention: 8 tasks x 50 updates"),
        "{message}"
    );
}

/// A store whose `delete` never returns and whose `get_many` panics: the checks that call
/// them fail (timed out, panicked), the others still run.
#[derive(Default)]
struct Misbehaving(Sloppy);

#[async_trait]
impl StateStorage for Misbehaving {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.0.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.0.set(key, value).await
    }
    async fn delete(&self, _key: &str) -> StateResult<()> {
        std::future::pending().await
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.0.exists(key).await
    }
    async fn clear(&self) -> StateResult<()> {
        self.0.map().clear();
        Ok(())
    }
    async fn get_many(&self, _keys: &[&str]) -> StateResult<Vec<Option<Vec<u8>>>> {
        panic!("get_many is not implemented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_panicking_store_fails_checks_without_stopping_the_run() {
    let report = Conformance::new(|| async { Misbehaving::default() })
        .per_write_ttl(false)
        .check_timeout(Duration::from_millis(500))
        .run()
        .await;
    println!("{report}");
    let hung = report.check("missing_key_reads_as_absent").unwrap();
    assert!(
        hung.message()
            .unwrap()
            .contains("did not finish within 500ms"),
        "{hung}"
    );
    let panicked = report.check("get_many_answers_in_order_asked").unwrap();
    assert!(
        panicked
            .message()
            .unwrap()
            .contains("panicked: get_many is not implemented"),
        "{panicked}"
    );
    assert_eq!(
        report
            .check("update_is_atomic_under_contention")
            .unwrap()
            .status,
        Status::Passed
    );
}

#[tokio::test]
#[should_panic(expected = "needs a multi-thread tokio runtime")]
async fn a_current_thread_runtime_is_refused() {
    let _ = Conformance::new(|| async { Sloppy::default() }).run().await;
}
