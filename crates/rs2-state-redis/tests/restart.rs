//! A Redis restart mid-stream: the store retries (bounded, with backoff) and the pipeline
//! finishes with exact counts; with no retries left, the affected event is an `Err` item.
//!
//! Each test runs a server of its own (`redis-server` on a free loopback port, appending every
//! write to its log before answering, so a killed server restarts with every acknowledged
//! write) and kills it with SIGKILL.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{StateAccess, StateConfig};
use rs2_state_redis::{RedisState, RetryPolicy};

/// A `redis-server` of this test's own.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts a server, or `None` (the test skips) when `redis-server` is not installed
    /// outside CI.
    fn start(tag: &str) -> Option<Server> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            let msg = "redis-server is not installed (apt-get install -y redis-server)";
            if std::env::var_os("CI").is_some() || std::env::var_os("RS2_REQUIRE_REDIS").is_some() {
                panic!("{msg}; CI must run the restart tests");
            }
            eprintln!("skipping: {msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("rs2-restart-{tag}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Server {
            port,
            dir,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// SIGKILL: no shutdown, no final save.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(store: RedisState) -> StateConfig {
    StateConfig::new()
        .ttl(Duration::from_secs(600))
        .with_custom_storage(Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_is_survived_with_exact_counts() {
    let Some(server) = Server::start("survive") else {
        return;
    };
    let server = Arc::new(std::sync::Mutex::new(server));
    let url = server.lock().unwrap().url();
    let store = RedisState::connect(&url)
        .await
        .unwrap()
        .with_retry(RetryPolicy::new(
            40,
            Duration::from_millis(20),
            Duration::from_millis(250),
        ));
    const KEYS: usize = 8;
    const EVENTS: usize = 480;
    // Events arrive over about a second; the server is killed and restarted in the middle.
    let events = stream::iter(0..EVENTS).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        i
    });
    let restarter = {
        let server = Arc::clone(&server);
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            server.lock().unwrap().kill();
            std::thread::sleep(Duration::from_millis(300));
            server.lock().unwrap().spawn();
        })
    };
    let out: Vec<(usize, u64)> = events
        .stateful_fold_rs2(
            config(store.clone()),
            |i: &usize| format!("k{}", i % KEYS),
            0u64,
            |n, _i, _s: StateAccess| async move { n + 1 },
        )
        .zip(stream::iter(0..EVENTS))
        .map(|(r, i)| (i % KEYS, r.unwrap_or_else(|e| panic!("event {i}: {e}"))))
        .collect()
        .await;
    restarter.await.unwrap();
    let mut per_key: HashMap<usize, Vec<u64>> = HashMap::new();
    for (k, n) in out {
        per_key.entry(k).or_default().push(n);
    }
    for (k, counts) in per_key {
        let want: Vec<u64> = (1..=(EVENTS / KEYS) as u64).collect();
        assert_eq!(
            counts, want,
            "key k{k}: every event applied exactly once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_retries_run_out_the_event_is_an_error_item() {
    let Some(mut server) = Server::start("give-up") else {
        return;
    };
    let store = RedisState::connect(&server.url())
        .await
        .unwrap()
        .with_retry(RetryPolicy::new(
            2,
            Duration::from_millis(10),
            Duration::from_millis(20),
        ));
    let fold = |config| {
        stream::iter(["ann"])
            .stateful_fold_rs2(
                config,
                |u: &&str| u.to_string(),
                0u64,
                |n, _u, _s: StateAccess| async move { n + 1 },
            )
            .collect::<Vec<_>>()
    };
    assert_eq!(fold(config(store.clone())).await, [Ok(1)]);
    server.kill();
    let out = fold(config(store.clone())).await;
    assert_eq!(out.len(), 1, "the event still comes out");
    let err = out[0].clone().expect_err("no server: an error item");
    assert!(err.to_string().contains("ann"), "names the key: {err}");
    // Back up: the next event continues from the acknowledged count.
    server.spawn();
    let mut after = Vec::new();
    for _ in 0..50 {
        after = fold(config(store.clone())).await;
        if after[0].is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        after,
        [Ok(2)],
        "the count acknowledged before the restart survived"
    );
}
