//! The storage contract (rs2-state-testkit) on the durable store, in each durability mode.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rs2_state_durable::{Durability, DurableState};
use rs2_state_testkit::Conformance;

async fn run_kit(durability: Durability) {
    let base = tempfile::tempdir().expect("temp dir");
    let root: Arc<PathBuf> = Arc::new(base.path().to_path_buf());
    let next = Arc::new(AtomicUsize::new(0));
    let report = Conformance::new(move || {
        let dir = root.join(format!("store-{}", next.fetch_add(1, Ordering::Relaxed)));
        async move {
            DurableState::builder(dir)
                .durability(durability)
                .open()
                .expect("open a fresh store")
        }
    })
    .run()
    .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_store_meets_the_storage_contract() {
    run_kit(Durability::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_store_meets_the_storage_contract() {
    run_kit(Durability::Strict).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_store_meets_the_storage_contract() {
    run_kit(Durability::Synced).await;
}
