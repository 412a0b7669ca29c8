//! Operators' in-memory state through a restart: operators given an `InMemoryState` the
//! application holds keep their state there, and a snapshot of it carries every operator's
//! keys (under their namespaces) into the next process.

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{InMemoryState, StateAccess, StateConfig, StatefulStreamExt};

fn config(store: &Arc<InMemoryState>) -> StateConfig {
    StateConfig::new()
        .ttl(Duration::from_secs(3600))
        .namespace("shop")
        .with_custom_storage(Arc::clone(store) as _)
}

/// Per-user totals (fold) and a per-user dedup of order ids, one pass over `orders`.
async fn run(store: &Arc<InMemoryState>, orders: &[(&str, u64, u64)]) -> (Vec<u64>, Vec<u64>) {
    let orders: Vec<(String, u64, u64)> = orders
        .iter()
        .map(|(u, id, amount)| (u.to_string(), *id, *amount))
        .collect();
    let totals = stream::iter(orders.clone())
        .stateful_fold_rs2(
            config(store),
            |o: &(String, u64, u64)| o.0.clone(),
            0u64,
            |sum, o, _s: StateAccess| async move { sum + o.2 },
        )
        .map(|t| t.expect("in-memory fold"))
        .collect()
        .await;
    let fresh_ids = stream::iter(orders)
        .stateful_deduplicate_rs2(
            config(store),
            |o: &(String, u64, u64)| format!("{}:{}", o.0, o.1),
            Duration::from_secs(600),
        )
        .map(|o| o.expect("in-memory dedup").1)
        .collect()
        .await;
    (totals, fresh_ids)
}

#[tokio::test]
async fn a_snapshot_carries_every_operators_state_into_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.snap");
    let settings = StateConfig::new().ttl(Duration::from_secs(3600));

    let store = Arc::new(InMemoryState::new(&settings));
    let (totals, ids) = run(&store, &[("ann", 1, 5), ("bob", 2, 7), ("ann", 3, 3)]).await;
    assert_eq!(totals, [5, 7, 8]);
    assert_eq!(ids, [1, 2, 3]);
    let written = store.snapshot_to(&path).unwrap();
    assert_eq!(written, 5, "2 fold totals + 3 dedup ids");
    drop(store);

    // The next process: restore, then the same operators go on where they were.
    let store = Arc::new(InMemoryState::new(&settings));
    assert_eq!(store.restore_from(&path).unwrap(), 5);
    let (totals, ids) = run(&store, &[("ann", 3, 3), ("bob", 4, 1)]).await;
    assert_eq!(totals, [11, 8], "totals continue");
    assert_eq!(ids, [4], "order 3 was seen before the restart");
}
