// The two custom stores of `custom_storage_example.rs`, in a file of their own so the storage
// conformance kit's tests (`crates/rs2-state-testkit/tests/stores.rs`) run against the very
// same code. Included with `#[path]` by the example and with `include!` by the tests (so this
// file has no inner attributes or `//!` docs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rs2::state::{async_trait, HeldLock, KeyLock, StateError, StateResult, StateStorage, UpdateFn};

// ---------------------------------------------------------------------------------------------
// Backend 1: a mutex-protected HashMap with its own atomic update.
// ---------------------------------------------------------------------------------------------

/// An in-process store: one `Mutex<HashMap>`, values are the encoded bytes rs2 hands it.
#[derive(Default)]
pub struct AtomicMemoryStorage {
    data: Mutex<HashMap<String, Vec<u8>>>,
    /// How many times `update` ran (to show that operators and `StateAccess::update` use it).
    pub updates: AtomicU64,
}

impl AtomicMemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map, or a `StateError` naming the key if a panic poisoned the lock.
    fn data(&self, key: &str) -> StateResult<MutexGuard<'_, HashMap<String, Vec<u8>>>> {
        self.data
            .lock()
            .map_err(|_| StateError::storage_for(key, "store lock poisoned by a panic"))
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match self.data.lock() {
            Ok(data) => data.keys().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().keys().cloned().collect(),
        };
        keys.sort();
        keys
    }
}

#[async_trait]
impl StateStorage for AtomicMemoryStorage {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self.data(key)?.get(key).cloned())
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.data(key)?.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.data(key)?.remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(self.data(key)?.contains_key(key))
    }

    async fn clear(&self) -> StateResult<()> {
        self.data("*")?.clear();
        Ok(())
    }

    /// Atomic read-modify-write: the lock is held from the read to the write, so no other
    /// `get`, `set` or `update` of any key can interleave. `f` runs exactly once; if it fails,
    /// nothing is written.
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let mut data = self.data(key)?;
        let next = f(data.get(key).cloned())?;
        data.insert(key.to_string(), next.clone());
        self.updates.fetch_add(1, Ordering::Relaxed);
        Ok(next)
    }
}

// ---------------------------------------------------------------------------------------------
// Backend 2: a simulated Redis.
// ---------------------------------------------------------------------------------------------

/// What the "server" holds: values, and lock keys with their owner token and expiry.
#[derive(Default)]
struct FakeServer {
    data: HashMap<String, Vec<u8>>,
    locks: HashMap<String, (u64, Instant)>,
}

/// A client of a simulated Redis server: 1 ms per operation, an operation counter, and an
/// outage switch. A real backend would hold a connection (pool) instead of `server`.
pub struct RedisLikeStorage {
    server: Arc<Mutex<FakeServer>>,
    latency: Duration,
    round_trips: AtomicU64,
    available: AtomicBool,
    next_token: AtomicU64,
}

/// A crashed lock holder blocks a key for at most this long (Redis: the lock key's `PX`).
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long `update` waits for a key's lock before giving up with an error.
const LOCK_WAIT: Duration = Duration::from_secs(10);

impl RedisLikeStorage {
    pub fn new(latency: Duration) -> Self {
        Self {
            server: Arc::new(Mutex::new(FakeServer::default())),
            latency,
            round_trips: AtomicU64::new(0),
            available: AtomicBool::new(true),
            next_token: AtomicU64::new(1),
        }
    }

    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::SeqCst);
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match self.server.lock() {
            Ok(server) => server.data.keys().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().data.keys().cloned().collect(),
        };
        keys.sort();
        keys
    }

    /// One network round trip, then `op` on the server. Fails like a refused connection when
    /// the server is "down".
    async fn call<R>(&self, key: &str, op: impl FnOnce(&mut FakeServer) -> R) -> StateResult<R> {
        tokio::time::sleep(self.latency).await;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if !self.available.load(Ordering::SeqCst) {
            return Err(StateError::storage_for(
                key,
                "connection refused (simulated outage)",
            ));
        }
        let mut server = self
            .server
            .lock()
            .map_err(|_| StateError::storage_for(key, "server state poisoned"))?;
        Ok(op(&mut server))
    }

    /// `SET lock:{key} token NX PX ttl`: takes the key's lock if it is free or its holder's
    /// lease ran out.
    async fn try_lock(&self, key: &str, token: u64) -> StateResult<bool> {
        self.call(key, |s| {
            let now = Instant::now();
            let lock_key = format!("lock:{key}");
            match s.locks.get(&lock_key) {
                Some(&(_, expires)) if expires > now => false,
                _ => {
                    s.locks.insert(lock_key, (token, now + LOCK_TTL));
                    true
                }
            }
        })
        .await
    }

    /// Compare-and-delete (a Lua script in Redis): releases the key's lock only if we still
    /// own it.
    async fn unlock(&self, key: &str, token: u64) -> StateResult<()> {
        self.call(key, |s| release(s, key, token)).await
    }

    /// Takes the key's server-side lock, retrying until `LOCK_WAIT` has passed; its token.
    async fn acquire(&self, key: &str) -> StateResult<u64> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + LOCK_WAIT;
        while !self.try_lock(key, token).await? {
            if Instant::now() > deadline {
                return Err(StateError::storage_for(
                    key,
                    format!("lock not acquired within {LOCK_WAIT:?}"),
                ));
            }
            tokio::time::sleep(self.latency).await;
        }
        Ok(token)
    }
}

/// Deletes the key's lock if `token` still owns it.
fn release(s: &mut FakeServer, key: &str, token: u64) {
    let lock_key = format!("lock:{key}");
    if s.locks.get(&lock_key).is_some_and(|&(t, _)| t == token) {
        s.locks.remove(&lock_key);
    }
}

/// A held server-side lock (what `lock_key` hands the operators): released by
/// compare-and-delete, so a holder whose lease ran out cannot free another's lock.
struct ServerLock {
    server: Arc<Mutex<FakeServer>>,
    key: String,
    token: u64,
    latency: Duration,
}

#[async_trait]
impl HeldLock for ServerLock {
    async fn release(self: Box<Self>) -> StateResult<()> {
        tokio::time::sleep(self.latency).await;
        let mut server = self
            .server
            .lock()
            .map_err(|_| StateError::storage_for(&self.key, "server state poisoned"))?;
        release(&mut server, &self.key, self.token);
        Ok(())
    }
}

#[async_trait]
impl StateStorage for RedisLikeStorage {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.call(key, |s| s.data.get(key).cloned()).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.call(key, |s| {
            s.data.insert(key.to_string(), value.to_vec());
        })
        .await
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        self.call(key, |s| {
            s.data.remove(key);
        })
        .await
    }

    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.call(key, |s| s.data.contains_key(key)).await
    }

    async fn clear(&self) -> StateResult<()> {
        self.call("*", |s| s.data.clear()).await
    }

    /// Atomic across every client of the server: a per-key lock held on the server around
    /// get-compute-set (never re-running `f`, which may run only once).
    async fn update(&self, key: &str, f: UpdateFn<'_>) -> StateResult<Vec<u8>> {
        let token = self.acquire(key).await?;
        let result = async {
            let current = self.get(key).await?;
            let next = f(current)?;
            self.set(key, &next).await?;
            Ok(next)
        }
        .await;
        // If the release fails (server down), the lock's expiry frees the key; the update's
        // own outcome is what the caller needs to see.
        let _ = self.unlock(key, token).await;
        result
    }

    /// The same server-side lock for the operators' own transitions (a throttle's check and
    /// append, a fold's read, closure and write), so pipelines in different processes sharing
    /// this server apply each event once. `lease` would be the lock key's `PX`.
    async fn lock_key(&self, key: &str, _lease: Duration) -> StateResult<KeyLock> {
        let token = self.acquire(key).await?;
        Ok(KeyLock::new(ServerLock {
            server: Arc::clone(&self.server),
            key: key.to_string(),
            token,
            latency: self.latency,
        }))
    }
}
