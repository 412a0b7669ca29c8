//! What one read of the operators' clock costs (`StateClock::now_ms`, read once per event by
//! the in-memory store), inside a current-thread tokio runtime as the operators read it.
//!
//! Run it both ways to see what tokio's `test-util` adds to every read (decision 003):
//!
//! ```sh
//! cargo bench -p rs2-benches --bench clock
//! cargo bench -p rs2-benches --bench clock --features tokio-test-util
//! ```
//!
//! The bench's name says whether this package's `tokio-test-util` feature was on; run it with
//! `-p rs2-benches` (a `--workspace` build unifies features, and `rs2-operators`' dev-dependencies
//! turn `test-util` on for everyone).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rs2::state::StateClock;

fn clock(c: &mut Criterion) {
    let rt = rs2_benches::reference::runtime();
    let _in_runtime = rt.enter();
    let clock = StateClock::new();
    let name = if cfg!(feature = "tokio-test-util") {
        "state_clock_now_ms/tokio_test_util"
    } else {
        "state_clock_now_ms/as_users_build"
    };
    c.bench_function(name, |b| b.iter(|| black_box(clock.now_ms())));
}

criterion_group!(benches, clock);
criterion_main!(benches);
