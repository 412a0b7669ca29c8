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
    let mut join = std::pin::pin!(all_orders
        .stateful_join_rs2(
            late_payment,
            StateConfig::new(),
            |o: &Order| o.id.clone(),
            |p: &Payment| p.order_id.clone(),
            Duration::from_secs(60),
            |o, _p, _state: StateAccess| async move { o.amount },
        )
        .max_buffered(2));
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

/// Without `max_buffered` a key's side holds 10,000 events, whatever the config's `max_size`
/// (which counts keys, not events).
#[tokio::test(start_paused = true)]
async fn the_default_bound_is_ten_thousand_events_per_side() {
    for config in [StateConfig::new().max_size(3), StateConfig::new()] {
        let orders = stream::iter((0..10_001).map(|n| order("a", n)));
        let late_payment = timed(vec![(10, payment("a", "card"))]);
        let mut join = std::pin::pin!(orders.stateful_join_rs2(
            late_payment,
            config,
            |o: &Order| o.id.clone(),
            |p: &Payment| p.order_id.clone(),
            Duration::from_secs(60),
            |o, _p, _state: StateAccess| async move { o.amount },
        ));
        let mut amounts = Vec::new();
        while let Some(row) = join.next().await {
            amounts.push(row.unwrap());
        }
        assert!(
            amounts.iter().copied().eq(1..10_001),
            "the oldest order went"
        );
        assert_eq!(join.dropped(), 1);
    }
}

#[tokio::test]
async fn max_buffered_zero_is_one_validation_item_and_the_end() {
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = read.clone();
    let orders = stream::iter(vec![order("a", 1)]).inspect(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let rows: Vec<_> = orders
        .stateful_join_rs2(
            stream::iter(vec![payment("a", "card")]),
            StateConfig::new(),
            |o: &Order| o.id.clone(),
            |p: &Payment| p.order_id.clone(),
            Duration::from_secs(1),
            |o, _p, _state: StateAccess| async move { o.amount },
        )
        .max_buffered(0)
        .collect()
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let err = rows[0].as_ref().unwrap_err();
    assert!(matches!(err, StateError::Validation(_)), "{err}");
    assert!(err.to_string().contains("max_buffered"), "{err}");
    assert_eq!(
        read.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "inputs not read"
    );
}

use rs2_suite::{Backend, MapStore};

/// One scripted arrival: side, key, delay before it (ms).
type Script = Vec<(bool, u8, u64)>;

/// The nested-loop reference: arrival `i` meets each earlier event `j` of the other side and
/// the same key that arrived at most `window` before it and is among the last `max` events of
/// its side and key before `i` (a full side pushes out its oldest). Also counts the events
/// pushed out: `j` is, when the `max`-th later event of its side and key arrives while `j` is
/// still within the window. Pairs are (left index, right index), per arrival.
fn nested_loop(script: &Script, window: u64, max: usize) -> (Vec<Vec<(usize, usize)>>, u64) {
    let times: Vec<u64> = script
        .iter()
        .scan(0, |t, (_, _, d)| {
            *t += d;
            Some(*t)
        })
        .collect();
    let mut out = Vec::new();
    let mut dropped = 0;
    for (i, &(side, key, _)) in script.iter().enumerate() {
        let mut pairs = Vec::new();
        for (j, &(s, k, _)) in script[..i].iter().enumerate() {
            let newer_same = script[j..i]
                .iter()
                .filter(|(s2, k2, _)| *s2 == s && *k2 == k)
                .count();
            if s != side && k == key && times[i] - times[j] <= window && newer_same <= max {
                pairs.push(if side { (i, j) } else { (j, i) });
            }
        }
        out.push(pairs);
    }
    for (j, &(s, k, _)) in script.iter().enumerate() {
        let pusher = script
            .iter()
            .enumerate()
            .skip(j + 1)
            .filter(|(_, (s2, k2, _))| *s2 == s && *k2 == k)
            .nth(max - 1);
        if let Some((i, _)) = pusher {
            dropped += u64::from(times[i] - times[j] <= window);
        }
    }
    (out, dropped)
}

/// Runs the join over `script` on paused time, one arrival at a time; the pairs each arrival
/// made and the join's `dropped()`.
async fn run_script(
    script: &Script,
    config: StateConfig,
    window: u64,
    max: usize,
) -> (Vec<Vec<(usize, usize)>>, u64) {
    let (ltx, lrx) = futures::channel::mpsc::unbounded::<(String, usize)>();
    let (rtx, rrx) = futures::channel::mpsc::unbounded::<(String, usize)>();
    let mut join = std::pin::pin!(lrx
        .stateful_join_rs2(
            rrx,
            config,
            |e: &(String, usize)| e.0.clone(),
            |e: &(String, usize)| e.0.clone(),
            Duration::from_millis(window),
            |l, r, _s: StateAccess| async move { (l.1, r.1) },
        )
        .max_buffered(max));
    let mut out = Vec::new();
    for (i, &(left, key, delay)) in script.iter().enumerate() {
        tokio::time::advance(Duration::from_millis(delay)).await;
        let event = (format!("k{key}"), i);
        if left {
            ltx.unbounded_send(event).unwrap();
        } else {
            rtx.unbounded_send(event).unwrap();
        }
        let mut pairs = Vec::new();
        while let Some(Some(row)) = futures::FutureExt::now_or_never(join.next()) {
            pairs.push(row.expect("no error"));
        }
        out.push(pairs);
    }
    drop((ltx, rtx));
    assert!(join.next().await.is_none());
    (out, join.dropped())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Windows by arrival time and the per-side bound, on the private table, a shared
    /// in-process store and a remote one: each arrival makes exactly the nested-loop model's
    /// pairs, in order, and `dropped()` counts the events the bound pushed out.
    #[test]
    fn matches_the_nested_loop_model_with_window_and_bound(
        script in proptest::collection::vec((any::<bool>(), 0u8..3, 0u64..12), 0..80),
        window in 0u64..40,
        max in 1usize..6,
    ) {
        let (expected, expected_dropped) = nested_loop(&script, window, max);
        for backend in [Backend::Private, Backend::SharedMemory, Backend::Remote] {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let (config, _) = backend.config();
            let (got, dropped) = rt.block_on(run_script(&script, config, window, max));
            prop_assert_eq!(&got, &expected, "{:?}", backend);
            prop_assert_eq!(dropped, expected_dropped, "{:?}", backend);
        }
    }
}

/// Stored buffers that cannot be read (cut short, another layout, the version-1 layout
/// `{left: Vec<(u64, T)>, right: Vec<(u64, U)>}`, a spoiled event) give an `Err` naming the
/// key; the bytes are left exactly as they were, and the join goes on with other keys.
#[tokio::test]
async fn spoiled_buffers_are_errors_naming_the_key_and_never_overwritten() {
    #[derive(Serialize)]
    struct Version1 {
        left: Vec<(u64, Order)>,
        right: Vec<(u64, Payment)>,
    }
    let store = Arc::new(MapStore::default());
    let config = || StateConfig::new().with_custom_storage(store.clone());
    let rows = join_all(
        stream::iter(vec![order("a", 1), order("a", 2)]),
        stream::empty(),
        config(),
        Duration::from_secs(60),
    )
    .await;
    assert!(rows.is_empty());
    let good = store.0.lock().unwrap()["join.buffers:a"].clone();
    let mut old = Vec::new();
    let v1 = Version1 {
        left: vec![(1, order("a", 1))],
        right: vec![],
    };
    <rs2::state::Postcard as rs2::state::Codec>::encode(&v1, &mut old).unwrap();
    let mut flipped_event = good.clone();
    *flipped_event.last_mut().unwrap() = 0xFF;
    let mut flipped_tag = good.clone();
    flipped_tag[0] ^= 0x01;
    let spoiled = [
        ("cut short", good[..good.len() - 1].to_vec()),
        ("header only", good[..20].to_vec()),
        ("empty", Vec::new()),
        ("another tag", flipped_tag),
        ("version 1", old),
        ("spoiled event", flipped_event),
    ];
    for (what, bytes) in spoiled {
        store
            .0
            .lock()
            .unwrap()
            .insert("join.buffers:a".into(), bytes.clone());
        let rows = join_all(
            stream::iter(vec![order("b", 7)]),
            stream::iter(vec![payment("a", "card"), payment("b", "cash")]),
            config(),
            Duration::from_secs(60),
        )
        .await;
        let errors: Vec<String> = rows
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert_eq!(errors.len(), 1, "{what}: {rows:?}");
        assert!(errors[0].contains("'a'"), "{what}: {}", errors[0]);
        assert!(errors[0].contains("join buffers"), "{what}: {}", errors[0]);
        assert!(
            rows.iter().flatten().any(|(id, _, _)| id == "b"),
            "{what}: other keys go on"
        );
        let kept = store.0.lock().unwrap()["join.buffers:a"].clone();
        assert_eq!(kept, bytes, "{what}: never overwritten");
        store.0.lock().unwrap().remove("join.buffers:b");
    }
}

/// A waker that notes it was woken.
struct Woken(std::sync::atomic::AtomicBool);

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Polls `s` until it waits for input (a `Pending` that did not wake itself, as an operator
/// does after a long run of events); how many items it yielded.
fn settle<S: Stream + ?Sized>(mut s: std::pin::Pin<&mut S>) -> usize {
    use std::sync::atomic::Ordering::SeqCst;
    let flag = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
    let waker = futures::task::waker(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut items = 0;
    loop {
        flag.0.store(false, SeqCst);
        match s.as_mut().poll_next(&mut cx) {
            std::task::Poll::Ready(Some(_)) => items += 1,
            std::task::Poll::Pending if flag.0.load(SeqCst) => {}
            _ => return items,
        }
    }
}

thread_local! {
    /// (encodings, decodings, clones) of `Counted` values on this thread.
    static CALLS: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

fn count(f: impl FnOnce(&mut (u64, u64, u64))) {
    CALLS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

/// An event that counts its encodings, decodings and clones.
#[derive(Debug, PartialEq)]
struct Counted(u64);

impl Clone for Counted {
    fn clone(&self) -> Self {
        count(|c| c.2 += 1);
        Counted(self.0)
    }
}

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        count(|c| c.0 += 1);
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        count(|c| c.1 += 1);
        u64::deserialize(d).map(Counted)
    }
}

/// The issue-11 finding: an arrival decoded and re-encoded (or scanned) the key's whole
/// buffers. Now a left arrival against a key with 1,000 and then 20,000 buffered left events
/// encodes itself once and decodes and clones nothing, on every kind of store.
#[tokio::test]
async fn an_arrival_costs_the_same_however_big_its_buffer() {
    const ARRIVALS: u64 = 100;
    for backend in [Backend::Private, Backend::SharedMemory, Backend::Remote] {
        let (config, _) = backend.config();
        let (ltx, lrx) = futures::channel::mpsc::unbounded::<Counted>();
        let (_rtx, rrx) = futures::channel::mpsc::unbounded::<Counted>();
        let mut join = std::pin::pin!(lrx
            .stateful_join_rs2(
                rrx,
                config,
                |_: &Counted| "hot".to_string(),
                |_: &Counted| "hot".to_string(),
                Duration::from_secs(3600),
                |l, r, _s: StateAccess| async move { l.0 + r.0 },
            )
            .max_buffered(50_000));
        let mut sent = 0;
        let mut per_arrival = Vec::new();
        for buffered in [1_000, 20_000] {
            while sent < buffered {
                ltx.unbounded_send(Counted(sent)).unwrap();
                sent += 1;
            }
            assert_eq!(settle(join.as_mut()), 0);
            let before = CALLS.with(|c| c.get());
            for _ in 0..ARRIVALS {
                ltx.unbounded_send(Counted(sent)).unwrap();
                sent += 1;
                assert_eq!(settle(join.as_mut()), 0);
            }
            let after = CALLS.with(|c| c.get());
            per_arrival.push((after.0 - before.0, after.1 - before.1, after.2 - before.2));
        }
        let encodes = if backend == Backend::Private {
            0
        } else {
            ARRIVALS
        };
        assert_eq!(
            per_arrival,
            [(encodes, 0, 0), (encodes, 0, 0)],
            "{backend:?}: (encodings, decodings, clones) of {ARRIVALS} arrivals against 1,000 \
             and 20,000 buffered events"
        );
    }
}
