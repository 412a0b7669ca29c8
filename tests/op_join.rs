//! `stateful_join_rs2`: symmetric inner join within a time window, until both inputs end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use proptest::prelude::*;
use rs2::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: String,
    amount: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payment {
    order_id: String,
    method: String,
}

fn order(id: &str, amount: u32) -> Order {
    Order {
        id: id.into(),
        amount,
    }
}

fn payment(order_id: &str, method: &str) -> Payment {
    Payment {
        order_id: order_id.into(),
        method: method.into(),
    }
}

/// Items of `items` after the given delays (paused time makes the delays instant and exact).
fn timed<T: Send + 'static>(items: Vec<(u64, T)>) -> BoxStream<'static, T> {
    stream::iter(items)
        .then(|(delay_ms, item)| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            item
        })
        .boxed()
}

async fn join_all(
    orders: impl Stream<Item = Order> + Send + 'static,
    payments: impl Stream<Item = Payment> + Send + 'static,
    config: StateConfig,
    window: Duration,
) -> Vec<Result<(String, u32, String), StateError>> {
    orders
        .stateful_join_rs2(
            payments,
            config,
            |o: &Order| o.id.clone(),
            |p: &Payment| p.order_id.clone(),
            window,
            |o, p, _state: StateAccess| async move { (o.id, o.amount, p.method) },
        )
        .collect()
        .await
}

fn ok(rows: Vec<Result<(String, u32, String), StateError>>) -> Vec<(String, u32, String)> {
    rows.into_iter().map(|r| r.expect("join row")).collect()
}

#[tokio::test(start_paused = true)]
async fn matches_within_the_window_in_either_order() {
    let orders = timed(vec![(0, order("a", 1)), (100, order("b", 2))]);
    let payments = timed(vec![
        (50, payment("a", "card")),
        (100, payment("b", "cash")),
    ]);
    let rows = ok(join_all(orders, payments, StateConfig::new(), Duration::from_secs(1)).await);
    let mut rows = rows;
    rows.sort();
    assert_eq!(
        rows,
        [
            ("a".into(), 1, "card".into()),
            ("b".into(), 2, "cash".into())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn events_further_apart_than_the_window_do_not_meet() {
    let orders = timed(vec![(0, order("a", 1))]);
    let payments = timed(vec![(1_500, payment("a", "card"))]);
    let rows = join_all(orders, payments, StateConfig::new(), Duration::from_secs(1)).await;
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test(start_paused = true)]
async fn every_buffered_event_of_the_other_side_is_met() {
    let orders = timed(vec![
        (0, order("a", 1)),
        (0, order("a", 2)),
        (0, order("z", 9)),
    ]);
    let payments = timed(vec![(10, payment("a", "card"))]);
    let rows = ok(join_all(orders, payments, StateConfig::new(), Duration::from_secs(5)).await);
    assert_eq!(
        rows,
        [
            ("a".into(), 1, "card".into()),
            ("a".into(), 2, "card".into())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn runs_until_both_inputs_end() {
    // Orders end at once; payments keep coming for a while and still meet the buffered orders.
    let orders = timed(vec![(0, order("a", 1)), (0, order("b", 2))]);
    let payments = timed(vec![
        (200, payment("a", "card")),
        (200, payment("x", "none")),
        (200, payment("b", "cash")),
    ]);
    let rows = ok(join_all(
        orders,
        payments,
        StateConfig::new(),
        Duration::from_secs(10),
    )
    .await);
    assert_eq!(
        rows,
        [
            ("a".into(), 1, "card".into()),
            ("b".into(), 2, "cash".into())
        ]
    );
}

#[tokio::test]
async fn empty_inputs_end_the_join() {
    let rows = join_all(
        stream::empty(),
        stream::empty(),
        StateConfig::new(),
        Duration::from_secs(1),
    )
    .await;
    assert!(rows.is_empty());
    let rows = join_all(
        stream::iter(vec![order("a", 1)]),
        stream::empty(),
        StateConfig::new(),
        Duration::from_secs(1),
    )
    .await;
    assert!(rows.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_drops_its_oldest_event_and_counts_it() {
    let all_orders = stream::iter(vec![order("a", 1), order("a", 2), order("a", 3)]);
    let late_payment = timed(vec![(10, payment("a", "card"))]);
    let mut join = std::pin::pin!(all_orders.stateful_join_rs2(
        late_payment,
        StateConfig::new().max_size(2),
        |o: &Order| o.id.clone(),
        |p: &Payment| p.order_id.clone(),
        Duration::from_secs(60),
        |o, _p, _state: StateAccess| async move { o.amount },
    ));
    let mut amounts = Vec::new();
    while let Some(row) = join.next().await {
        amounts.push(row.unwrap());
    }
    assert_eq!(amounts, [2, 3], "only the two newest orders are kept");
    assert_eq!(join.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_buffers_are_removed_from_the_store() {
    let store = InMemoryState::new(&StateConfig::new());
    let shared: Arc<dyn StateStorage + Send + Sync> = Arc::new(store.clone());
    let config = StateConfig::new().with_custom_storage(shared);
    let orders = timed(vec![(0, order("a", 1)), (0, order("b", 2))]);
    // After the window, touching each key prunes its old events; empty buffers are deleted.
    let payments = timed(vec![(2_000, payment("a", "x")), (0, payment("b", "y"))]);
    let rows = join_all(orders, payments, config, Duration::from_secs(1)).await;
    assert!(rows.is_empty());
    // Only the two late payments remain buffered (the expired orders were removed).
    assert_eq!(store.len(), 2);
}

use rs2_suite::FailingStore;

#[tokio::test]
async fn backend_failures_are_error_items_naming_the_key() {
    let config = StateConfig::new().with_custom_storage(Arc::new(FailingStore));
    let rows = join_all(
        stream::iter(vec![order("k1", 1), order("k2", 2)]),
        stream::iter(vec![payment("k1", "card")]),
        config,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        rows.len(),
        3,
        "one error per arrival, and the join ran to the end"
    );
    for row in rows {
        let err = row.unwrap_err().to_string();
        assert!(err.contains("k1") || err.contains("k2"), "{err}");
        assert!(err.contains("connection refused"), "{err}");
    }
}

#[tokio::test]
async fn invalid_config_is_an_error_item_per_arrival() {
    let rows = join_all(
        stream::iter(vec![order("a", 1)]),
        stream::iter(vec![payment("a", "card")]),
        StateConfig::new().ttl(Duration::ZERO),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| matches!(r, Err(StateError::Validation(_)))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// With every event inside the window, each arrival meets exactly the earlier events of
    /// the other side with its key (a `HashMap` reference model), whatever the interleaving.
    #[test]
    fn matches_the_reference_model(
        events in proptest::collection::vec((any::<bool>(), 0u8..6, 0u32..1000), 0..120)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        // Drive both inputs from one ordered script through channels, so arrival order is
        // exactly the script's order.
        let (rows, expected) = rt.block_on(async {
            let (ltx, lrx) = futures::channel::mpsc::unbounded::<Order>();
            let (rtx, rrx) = futures::channel::mpsc::unbounded::<Payment>();
            let mut join = std::pin::pin!(lrx.stateful_join_rs2(
                rrx,
                StateConfig::new().max_size(1_000_000),
                |o: &Order| o.id.clone(),
                |p: &Payment| p.order_id.clone(),
                Duration::from_secs(3600),
                |o, p, _state: StateAccess| async move { (o.id, o.amount, p.method) },
            ));
            let mut left: HashMap<String, Vec<u32>> = HashMap::new();
            let mut right: HashMap<String, Vec<String>> = HashMap::new();
            let mut expected = Vec::new();
            let mut rows = Vec::new();
            for (is_left, key, n) in events {
                let key = format!("k{key}");
                let mut got = Vec::new();
                if is_left {
                    for m in right.get(&key).into_iter().flatten() {
                        expected.push((key.clone(), n, m.clone()));
                    }
                    left.entry(key.clone()).or_default().push(n);
                    ltx.unbounded_send(order(&key, n)).unwrap();
                } else {
                    let method = format!("m{n}");
                    for &a in left.get(&key).into_iter().flatten() {
                        expected.push((key.clone(), a, method.clone()));
                    }
                    right.entry(key.clone()).or_default().push(method.clone());
                    rtx.unbounded_send(payment(&key, &method)).unwrap();
                }
                // Drain what this arrival produced before sending the next one.
                while let Some(Some(row)) = futures::FutureExt::now_or_never(join.next()) {
                    got.push(row.unwrap());
                }
                rows.extend(got);
            }
            drop(ltx);
            drop(rtx);
            while let Some(row) = join.next().await {
                rows.push(row.unwrap());
            }
            (rows, expected)
        });
        prop_assert_eq!(rows, expected);
    }
}

#[tokio::test]
async fn fifty_thousand_keys_lose_nothing() {
    const KEYS: u32 = 50_000;
    let orders: Vec<Order> = (0..KEYS).map(|k| order(&format!("k{k}"), k)).collect();
    let payments: Vec<Payment> = (0..KEYS)
        .map(|k| payment(&format!("k{k}"), "card"))
        .collect();
    let rows = ok(join_all(
        stream::iter(orders),
        stream::iter(payments),
        StateConfig::new().max_size(1_000_000),
        Duration::from_secs(3600),
    )
    .await);
    assert_eq!(
        rows.len(),
        KEYS as usize,
        "every key's order meets its payment"
    );
    let mut amounts: Vec<u32> = rows.iter().map(|(_, amount, _)| *amount).collect();
    amounts.sort_unstable();
    assert!(amounts.iter().copied().eq(0..KEYS));
}
