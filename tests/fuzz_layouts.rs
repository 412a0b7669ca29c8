//! Fuzzing on the stable toolchain: property tests that hand every stored layout arbitrary
//! bytes, and `FieldKeyExtractor` arbitrary values. Whatever the bytes, an operator yields an
//! `Ok` or an `Err` item per event and goes on; nothing panics or hangs.
//!
//! The default case count keeps CI fast; the long run, with the codec's and the event logs'
//! fuzzing (`docs/reliability.md` records what it found):
//! `RS2_FUZZ_CASES=100000 cargo test --release -p rs2-suite -p rs2-operators --lib --test fuzz_layouts --test fuzz_codec`.

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use proptest::prelude::*;
use rs2::prelude::*;
use rs2_suite::MapStore;

fn cases() -> u32 {
    std::env::var("RS2_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

type Ev = (String, u64);

fn config(store: &Arc<MapStore>) -> StateConfig {
    StateConfig::new()
        .ttl(Duration::from_secs(3600))
        .with_custom_storage(store.clone())
}

fn by_key(e: &Ev) -> String {
    e.0.clone()
}

/// Runs every operator over `events` on `store`; returns how many items each yielded.
async fn run_all(store: &Arc<MapStore>, events: Vec<Ev>) -> Vec<usize> {
    let c = || config(store);
    let ev = || stream::iter(events.clone());
    vec![
        ev().stateful_fold_rs2(
            c(),
            by_key,
            0u64,
            |n, e, _s: StateAccess| async move { n + e.1 },
        )
        .count()
        .await,
        ev().stateful_reduce_rs2(c(), by_key, |a, e, _s: StateAccess| async move {
            (a.0, a.1 + e.1)
        })
        .count()
        .await,
        ev().stateful_map_rs2(c(), by_key, |e, s: StateAccess| async move {
            let n = s.get::<u64>().await.unwrap_or(0) + e.1;
            let _ = s.set(&n).await;
            n
        })
        .count()
        .await,
        ev().stateful_window_rs2(c(), by_key, 2, |w: Vec<Ev>, _s: StateAccess| async move {
            w.len()
        })
        .count()
        .await,
        ev().stateful_pattern_rs2(c(), by_key, 2, |w: Vec<Ev>, _s: StateAccess| async move {
            Some(w.len())
        })
        .count()
        .await,
        ev().stateful_deduplicate_rs2(c(), by_key, Duration::from_secs(60))
            .count()
            .await,
        ev().stateful_throttle_rs2(c(), by_key, 3, Duration::from_secs(60))
            .count()
            .await,
        ev().stateful_session_rs2(
            c(),
            by_key,
            Duration::from_secs(60),
            |e, new, _s: StateAccess| async move { (e, new) },
        )
        .count()
        .await,
        ev().stateful_group_by_advanced_rs2(
            c(),
            by_key,
            Some(3),
            None,
            false,
            |k, g: Vec<Ev>, _s: StateAccess| async move { (k, g.len()) },
        )
        .count()
        .await,
        ev().stateful_filter_rs2(
            c(),
            by_key,
            |_e, s: StateAccess| async move { count(s).await },
        )
        .count()
        .await,
        // The keyed-concurrency operators, over the same stored values as their sequential
        // twins (they share the namespaces).
        ev().stateful_fold_rs2_par(c(), by_key, 4, 0u64, |n, e, _s: StateAccess| async move {
            n + e.1
        })
        .count()
        .await,
        ev().stateful_reduce_rs2_par(c(), by_key, 4, |a, e, _s: StateAccess| async move {
            (a.0, a.1 + e.1)
        })
        .count()
        .await,
        ev().stateful_map_rs2_par(c(), by_key, 4, |_e, s: StateAccess| count(s))
            .count()
            .await,
        ev().stateful_filter_rs2_par(c(), by_key, 4, |_e, s: StateAccess| count(s))
            .count()
            .await,
    ]
}

/// A closure's read and write of the key's count: whether both worked.
async fn count(s: StateAccess) -> bool {
    let n = s.get::<u64>().await.unwrap_or(0) + 1;
    s.set(&n).await.is_ok()
}

/// Found by fuzzing the event logs: a window (or pattern, or group) of events that encode to
/// no bytes, over a stored log claiming 2^64 - 1 of them, decoded that many: the stream hung.
/// It is now an error item naming the key.
#[test]
fn a_window_of_unit_events_over_a_garbage_count_is_an_error_not_a_hang() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let store = Arc::new(MapStore::default());
        let mut log = vec![0x77];
        log.extend([0u8; 12]);
        log.extend(u64::MAX.to_le_bytes());
        store.0.lock().unwrap().insert("window:k".into(), log);
        let out: Vec<_> = rt.block_on(
            stream::iter([(), ()])
                .stateful_window_rs2(
                    config(&store),
                    |_: &()| "k".to_string(),
                    2,
                    |w: Vec<()>, _s: StateAccess| async move { w.len() },
                )
                .collect(),
        );
        let _ = tx.send(
            out.into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect::<Vec<_>>(),
        );
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the window finished");
    assert_eq!(out.len(), 2, "{out:?}");
    for item in out {
        let err = item.expect_err("the garbage is reported");
        assert!(err.contains("'k'") && err.contains("events in"), "{err}");
    }
}

/// The property above would pass if garbage were never read: with bytes no layout accepts,
/// every operator reports errors instead of taking the garbage for empty state.
#[tokio::test]
async fn garbage_is_read_and_reported() {
    let store = Arc::new(MapStore::default());
    let events: Vec<Ev> = (0..6u64).map(|i| (format!("k{}", i % 2), i)).collect();
    run_all(&store, events.clone()).await;
    for value in store.0.lock().unwrap().values_mut() {
        *value = vec![0xFF; 5];
    }
    let c = || config(&store);
    let fold_errors = stream::iter(events.clone())
        .stateful_fold_rs2(
            c(),
            by_key,
            0u64,
            |n, e, _s: StateAccess| async move { n + e.1 },
        )
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(fold_errors, 6, "every fold event meets the garbage");
    let dedup_errors = stream::iter(events)
        .stateful_deduplicate_rs2(c(), by_key, Duration::from_secs(60))
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    assert!(dedup_errors > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Every value any operator stored is replaced by arbitrary bytes; the operators run again
    /// over the same keys and still yield at most one item per event (no panic, no hang).
    #[test]
    fn operators_survive_arbitrary_stored_bytes(
        garbage in proptest::collection::vec(arb_stored(), 1..16),
        keys in 1usize..4,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let store = Arc::new(MapStore::default());
            let events: Vec<Ev> = (0..9u64).map(|i| (format!("k{}", i as usize % keys), i)).collect();
            run_all(&store, events.clone()).await;
            {
                let mut map = store.0.lock().unwrap();
                for (i, value) in map.values_mut().enumerate() {
                    *value = garbage[i % garbage.len()].clone();
                }
            }
            let counts = tokio::time::timeout(Duration::from_secs(30), run_all(&store, events))
                .await
                .expect("no hang");
            for n in counts {
                // Windows and groups emit fewer items than events; none emits more (+1: a
                // final partial group).
                prop_assert!(n <= 10, "{n} items from 9 events");
            }
            Ok(())
        })?;
    }

    /// `FieldKeyExtractor` on arbitrary JSON values: a key or an error, never a panic.
    #[test]
    fn field_key_extractor_takes_any_value(value in arb_json(), path in "[a-z]{1,3}(\\.[a-z0-9]{1,3}){0,3}") {
        let extractor = FieldKeyExtractor::new(&path);
        let _ = extractor.try_extract_key(&value);
    }

    /// `FieldKeyExtractor` on JSON values whose field names the path often names: the key is
    /// the documented one (the model above), and where there is none, an error naming the path.
    #[test]
    fn field_key_extractor_reads_the_documented_key(value in arb_json_abc(), path in "[abc](\\.[abc]){0,2}") {
        let got = FieldKeyExtractor::new(&path).try_extract_key(&value);
        match (model_key(&value, &path), got) {
            (Some(want), Ok(got)) => prop_assert_eq!(want, got),
            (None, Err(err)) => prop_assert!(err.to_string().contains(&path), "{}", err),
            (want, got) => prop_assert!(false, "{:?} in {}: model {:?}, got {:?}", path, value, want, got),
        }
    }
}

/// Bytes to store in place of an operator's value: anything, or what passes the first checks
/// of an event log (a tag the window, pattern or group_by writes, a full header with any
/// count, often small) or of a time log, followed by anything.
fn arb_stored() -> impl Strategy<Value = Vec<u8>> {
    let any_bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    let count = prop_oneof![0u64..5, any::<u64>()];
    let event_log = (
        proptest::sample::select(vec![0x77u8, 0x70, 0x67]),
        any::<[u8; 12]>(),
        count,
        any_bytes(),
    )
        .prop_map(|(tag, stamp_and_skip, count, events)| {
            let mut out = vec![tag];
            out.extend(stamp_and_skip);
            out.extend(count.to_le_bytes());
            out.extend(events);
            out
        });
    let time_log = proptest::collection::vec(any::<u64>(), 0..6).prop_map(|times| {
        let mut out = vec![0x74];
        times.iter().for_each(|t| out.extend(t.to_le_bytes()));
        out
    });
    prop_oneof![any_bytes(), event_log, time_log]
}

/// The key `FieldKeyExtractor` documents for `path` in `value`: walk the objects, then a string
/// as it is, a number or bool through `Display`; anything else (null, an array, an object, a
/// path through a non-object) is no key.
fn model_key(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let mut at = value;
    for segment in path.split('.') {
        at = at.as_object()?.get(segment)?;
    }
    match at {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => return None,
        }),
        _ => None,
    }
}

/// JSON values over three field names, so that paths over the same names often hit.
fn arb_json_abc() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-z0-9 .\\\\\"]{0,8}".prop_map(serde_json::Value::from),
    ];
    fn object(inner: BoxedStrategy<serde_json::Value>) -> BoxedStrategy<serde_json::Value> {
        proptest::collection::btree_map("[abc]", inner, 1..4)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
            .boxed()
    }
    // Mostly keys, some arrays and objects, at each of three levels; events are objects.
    let level = |inner: BoxedStrategy<serde_json::Value>| {
        prop_oneof![
            3 => leaf.clone(),
            1 => proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
            2 => object(inner),
        ]
        .boxed()
    };
    object(level(level(leaf.clone().boxed())))
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-z0-9 .\\\\\"]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z0-9]{1,3}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
