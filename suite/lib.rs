//! Shared fixtures for the workspace's tests, benches and examples (not published).
//!
//! The root package exists to host `examples/`, `tests/` and `benches/`; this library holds the
//! event generators they share so every bench measures the same input.

use serde::{Deserialize, Serialize};

/// A keyed event with an amount, as in the user documentation's Quick Start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEvent {
    /// The key.
    pub user_id: String,
    /// Amount of the event.
    pub amount: f64,
    /// Seconds since the epoch.
    pub timestamp: u64,
}

/// A small keyed event for the operator tests: a user and a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ev {
    /// The key.
    pub user: String,
    /// The event's number.
    pub n: u32,
}

/// An [`Ev`].
pub fn ev(user: &str, n: u32) -> Ev {
    Ev {
        user: user.to_string(),
        n,
    }
}

/// The key extractor of [`Ev`]s.
pub fn by_user(e: &Ev) -> String {
    e.user.clone()
}

/// Counts how many closures are inside [`Overlap::hold`] at once: the keyed-concurrency tests'
/// probe. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Overlap {
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Overlap {
    /// Waits 5 ms (of tokio's time) counted as one of the closures running, then gives `out`.
    pub async fn hold<T>(self, out: T) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        self.running.fetch_sub(1, SeqCst);
        out
    }

    /// The most closures that were inside [`hold`](Self::hold) at once.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `n` events spread over `keys` users (`user-0` ...), in a fixed pseudo-random order.
pub fn keyed_events(n: usize, keys: usize) -> Vec<UserEvent> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            // xorshift: reproducible without a rand dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            UserEvent {
                user_id: format!("user-{}", x % keys.max(1) as u64),
                amount: (i % 100) as f64,
                timestamp: i as u64,
            }
        })
        .collect()
}

/// A backend whose every call fails with `connection refused` (naming the key), for tests of
/// how operators report backend failures.
#[derive(Debug, Default, Clone, Copy)]
pub struct FailingStore;

#[rs2::state::async_trait]
impl rs2::state::StateStorage for FailingStore {
    async fn get(&self, key: &str) -> rs2::state::StateResult<Option<Vec<u8>>> {
        Err(refused(key))
    }
    async fn set(&self, key: &str, _value: &[u8]) -> rs2::state::StateResult<()> {
        Err(refused(key))
    }
    async fn delete(&self, key: &str) -> rs2::state::StateResult<()> {
        Err(refused(key))
    }
    async fn exists(&self, key: &str) -> rs2::state::StateResult<bool> {
        Err(refused(key))
    }
    async fn clear(&self) -> rs2::state::StateResult<()> {
        Err(rs2::state::StateError::Storage("connection refused".into()))
    }
}

fn refused(key: &str) -> rs2::state::StateError {
    rs2::state::StateError::storage_for(key, "connection refused")
}

/// A plain in-process backend: a `HashMap` behind a mutex, with the provided (process-wide)
/// atomic `update`. Tests read and write its map directly through `.0` (to plant bytes a
/// pipeline must not overwrite, or to look at what a pipeline stored).
#[derive(Debug, Default)]
pub struct MapStore(pub std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);

#[rs2::state::async_trait]
impl rs2::state::StateStorage for MapStore {
    async fn get(&self, key: &str) -> rs2::state::StateResult<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> rs2::state::StateResult<()> {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> rs2::state::StateResult<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> rs2::state::StateResult<bool> {
        Ok(self.0.lock().unwrap().contains_key(key))
    }
    async fn clear(&self) -> rs2::state::StateResult<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

/// A [`MapStore`] whose every call first sleeps 1 ms on tokio's clock: a remote backend whose
/// reads and writes are really in flight while other events run.
#[derive(Debug, Default)]
pub struct SlowStore(pub MapStore);

async fn io_latency() {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}

#[rs2::state::async_trait]
impl rs2::state::StateStorage for SlowStore {
    async fn get(&self, key: &str) -> rs2::state::StateResult<Option<Vec<u8>>> {
        io_latency().await;
        self.0.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> rs2::state::StateResult<()> {
        io_latency().await;
        self.0.set(key, value).await
    }
    async fn delete(&self, key: &str) -> rs2::state::StateResult<()> {
        io_latency().await;
        self.0.delete(key).await
    }
    async fn exists(&self, key: &str) -> rs2::state::StateResult<bool> {
        io_latency().await;
        self.0.exists(key).await
    }
    async fn clear(&self) -> rs2::state::StateResult<()> {
        io_latency().await;
        self.0.clear().await
    }
}

/// A config with room for every key the tests use, so nothing is evicted.
pub fn roomy() -> rs2::state::StateConfig {
    rs2::state::StateConfig::new().max_size(1_000_000)
}

/// `(ms to sleep before the item, item)` as a stream that sleeps on tokio's (paused) clock.
pub fn timed<T: Send + 'static>(items: Vec<(u64, T)>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(items.into_iter(), |mut it| async move {
        let (delay, item) = it.next()?;
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        Some((item, it))
    })
}

/// `f`, failing the test if it has not finished within a day of (paused) time: a pipeline
/// that hangs fails instead of blocking the suite.
pub async fn no_hang<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(24 * 3600), f)
        .await
        .expect("pipeline hung")
}

/// Where a test keeps an operator's state, to run the same pipeline on each kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The operator's private in-memory store (`StateStorageType::InMemory`).
    Private,
    /// A shared `InMemoryState` as the custom store (in-process, namespaced keys).
    SharedMemory,
    /// A [`MapStore`] as the custom store (the remote path: every read and write awaited).
    Remote,
    /// A [`SlowStore`] as the custom store: the remote path, every call taking 1 ms.
    SlowRemote,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 4] = [
        Backend::Private,
        Backend::SharedMemory,
        Backend::Remote,
        Backend::SlowRemote,
    ];

    /// A [`roomy`] config on a fresh store of this kind, and the store when it is shared (to
    /// read the state a pipeline left).
    pub fn config(self) -> (rs2::state::StateConfig, Option<rs2::state::SharedStorage>) {
        let store: rs2::state::SharedStorage = match self {
            Backend::Private => return (roomy(), None),
            Backend::SharedMemory => std::sync::Arc::new(rs2::state::InMemoryState::new(&roomy())),
            Backend::Remote => std::sync::Arc::new(MapStore::default()),
            Backend::SlowRemote => std::sync::Arc::new(SlowStore::default()),
        };
        (roomy().with_custom_storage(store.clone()), Some(store))
    }
}

/// The value stored under `key` (namespace included) in `store`, decoded as `T`, or the error.
pub async fn stored<T: serde::de::DeserializeOwned>(
    store: &rs2::state::SharedStorage,
    key: &str,
) -> rs2::state::StateResult<Option<T>> {
    let access: rs2::state::StateAccess =
        rs2::state::StateAccess::new(store.clone(), key.to_string());
    access.try_get().await
}
