//! The conformance kit against the workspace's stores: `InMemoryState`, a five-method map
//! store, and the two stores of `examples/custom_storage_example.rs`.

use std::time::Duration;

use rs2::state::{InMemoryState, StateConfig};
use rs2_state_testkit::{Conformance, Report, Status};
use rs2_suite::MapStore;

/// The example's `AtomicMemoryStorage` and `RedisLikeStorage`, the same code the example runs.
#[allow(dead_code)]
mod example {
    include!("../../../examples/custom_storage/stores.rs");
}

/// Prints the report (shown for a failing test) and asserts it passed with only the expected
/// checks skipped.
fn check(report: Report, skipped_for: &[&str]) {
    println!("{report}");
    report.assert_passed();
    for outcome in report.checks() {
        if let Status::Skipped(reason) = &outcome.status {
            assert!(
                skipped_for.iter().any(|r| reason.contains(r)),
                "{} was skipped ({reason})",
                outcome.name
            );
        }
    }
}

/// `InMemoryState` expires by its own config's TTL, not per write.
fn in_memory_state() -> Conformance<impl Fn() -> std::future::Ready<InMemoryState>> {
    Conformance::new(|| std::future::ready(InMemoryState::new(&StateConfig::new())))
        .per_write_ttl(false)
}

/// `InMemoryState` as a custom store shared by pipelines: a fold whose closure awaits holds
/// the key's lock across it (an earlier engine skipped the lock for in-process stores, and
/// two pipelines lost and double-counted events: the kit's `concurrent_folds_emit_every_count_once`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_state_meets_the_contract() {
    let report = in_memory_state().run().await;
    check(
        report,
        &["per_write_ttl(false)", "shared_between_instances(false)"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_method_map_store_meets_the_contract() {
    let report = Conformance::new(|| async { MapStore::default() })
        .per_write_ttl(false)
        .run()
        .await;
    check(
        report,
        &["per_write_ttl(false)", "shared_between_instances(false)"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_atomic_memory_storage_meets_the_contract() {
    let report = Conformance::new(|| async { example::AtomicMemoryStorage::new() })
        .per_write_ttl(false)
        .run()
        .await;
    check(
        report,
        &["per_write_ttl(false)", "shared_between_instances(false)"],
    );
}

/// Each `RedisLikeStorage::new` is a server of its own, so instances share nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_redis_like_storage_meets_the_contract() {
    let report =
        Conformance::new(|| async { example::RedisLikeStorage::new(Duration::from_millis(1)) })
            .per_write_ttl(false)
            .run()
            .await;
    check(
        report,
        &["per_write_ttl(false)", "shared_between_instances(false)"],
    );
}
