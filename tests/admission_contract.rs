//! The storage contract (rs2-state-testkit) on `AdmissionState`. It keeps the provided
//! `set_with_ttl` (the store expires by its config's TTL), so the per-write TTL checks are
//! skipped. Here rather than in rs2-state-memory's tests: the kit depends on rs2-operators,
//! which depends on rs2-state-memory.

use rs2::state::{AdmissionState, StateConfig};
use rs2_state_testkit::Conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_store_meets_the_storage_contract() {
    let report = Conformance::new(|| async { AdmissionState::new(&StateConfig::new()) })
        .per_write_ttl(false)
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
