//! Where the tests find Redis: `RS2_REDIS_URL` (a standalone server) and
//! `RS2_REDIS_CLUSTER_NODES` (comma-separated `redis://` URLs of a cluster), as `.ci/run`
//! exports them after `scripts/redis-servers.sh start`.
//!
//! When a variable is missing the test fails in CI (`CI` or `RS2_REQUIRE_REDIS` set) and,
//! elsewhere, prints why it skips and passes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use rs2_state_redis::RedisState;

fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("RS2_REQUIRE_REDIS").is_some()
}

fn missing(var: &str) {
    let msg = format!(
        "{var} is not set: start the servers with `eval \"$(scripts/redis-servers.sh start)\"` \
         (needs redis-server and redis-tools)"
    );
    if required() {
        panic!("{msg}; CI must run the Redis tests");
    }
    eprintln!("skipping: {msg}");
}

/// The standalone server's URL, or `None` (the test skips) outside CI.
pub fn redis_url() -> Option<String> {
    match std::env::var("RS2_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            missing("RS2_REDIS_URL");
            None
        }
    }
}

/// The cluster's node URLs, or `None` (the test skips) outside CI.
pub fn cluster_nodes() -> Option<Vec<String>> {
    match std::env::var("RS2_REDIS_CLUSTER_NODES") {
        Ok(nodes) if !nodes.is_empty() => {
            Some(nodes.split(',').map(|n| n.trim().to_string()).collect())
        }
        _ => {
            missing("RS2_REDIS_CLUSTER_NODES");
            None
        }
    }
}

/// A prefix no other test (or earlier run) uses.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "rs2-test:{tag}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn standalone(url: &str, prefix: &str) -> RedisState {
    RedisState::connect(url)
        .await
        .expect("connect to RS2_REDIS_URL")
        .with_prefix(prefix)
}

pub async fn cluster(nodes: &[String], prefix: &str) -> RedisState {
    RedisState::connect_cluster(nodes)
        .await
        .expect("connect to RS2_REDIS_CLUSTER_NODES")
        .with_prefix(prefix)
}
