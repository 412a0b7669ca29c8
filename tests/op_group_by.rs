//! `stateful_group_by_rs2` and `stateful_group_by_advanced_rs2`: every event taken in is
//! emitted in exactly one group (or reported in an `Err`); groups are emitted when full, when
//! their timeout passes (a real timer: it fires while the input is idle), on a key change if
//! asked, early when storage limits require, and at the end of input in first-event order.
//! Time rules run under tokio's paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rs2::prelude::*;
use rs2::state::async_trait;
use rs2_suite::{by_user, ev, no_hang, roomy, timed, Ev};

type Group = (String, Vec<u32>);

fn g(key: &str, ns: &[u32]) -> Group {
    (key.to_string(), ns.to_vec())
}

async fn as_group(key: String, events: Vec<Ev>, _state: StateAccess) -> Group {
    assert!(
        events.iter().all(|e| e.user == key),
        "a group holds one key"
    );
    (key, events.into_iter().map(|e| e.n).collect())
}

fn evs(spec: &[(&str, u32)]) -> Vec<Ev> {
    spec.iter().map(|&(u, n)| ev(u, n)).collect()
}

async fn group_by(events: Vec<Ev>, config: StateConfig) -> Vec<Group> {
    no_hang(
        futures::stream::iter(events)
            .stateful_group_by_rs2(config, by_user, as_group)
            .map(|r| r.expect("no state error"))
            .collect(),
    )
    .await
}

async fn advanced(
    events: Vec<Ev>,
    max: Option<usize>,
    timeout: Option<Duration>,
    on_key_change: bool,
) -> Vec<Group> {
    no_hang(
        futures::stream::iter(events)
            .stateful_group_by_advanced_rs2(roomy(), by_user, max, timeout, on_key_change, as_group)
            .map(|r| r.expect("no state error"))
            .collect(),
    )
    .await
}

/// Output items with the paused clock's time (ms since start) at which each came out.
async fn timed_output<S>(stream: S) -> Vec<(u64, Group)>
where
    S: Stream<Item = Result<Group, StateError>>,
{
    let start = tokio::time::Instant::now();
    let mut stream = Box::pin(stream);
    let mut out = Vec::new();
    while let Some(item) = no_hang(stream.next()).await {
        out.push((
            start.elapsed().as_millis() as u64,
            item.expect("no state error"),
        ));
    }
    out
}

/// A well-behaved shared map store that the test can tamper with.
#[derive(Default)]
struct MapStore {
    map: Mutex<HashMap<String, Vec<u8>>>,
    fail_gets: bool,
    fail_all: bool,
}

impl MapStore {
    fn check(&self, key: &str, get: bool) -> StateResult<()> {
        if self.fail_all || (get && self.fail_gets) {
            Err(StateError::Storage(format!(
                "key '{key}': connection reset"
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl StateStorage for MapStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        self.check(key, true)?;
        Ok(self.map.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.check(key, false)?;
        self.map
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.check(key, false)?;
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        self.check(key, true)?;
        Ok(self.map.lock().unwrap().contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }
}

// --- basic group_by ----------------------------------------------------------------------------

#[tokio::test]
async fn groups_every_key_at_the_end_in_first_event_order() {
    let out = group_by(
        evs(&[("b", 0), ("a", 1), ("b", 2), ("c", 3), ("a", 4), ("b", 5)]),
        roomy(),
    )
    .await;
    assert_eq!(out, [g("b", &[0, 2, 5]), g("a", &[1, 4]), g("c", &[3])]);
}

#[tokio::test]
async fn empty_input_emits_nothing_and_never_calls_the_closure() {
    let out: Vec<Result<(), StateError>> = no_hang(
        futures::stream::iter(Vec::<Ev>::new())
            .stateful_group_by_rs2(roomy(), by_user, |_k, _g: Vec<Ev>, _s| async move {
                panic!("no group to emit")
            })
            .collect(),
    )
    .await;
    assert!(out.is_empty());
}

#[tokio::test]
async fn one_key_is_one_group_of_all_its_events_in_order() {
    let events: Vec<Ev> = (0..10_000).map(|n| ev("only", n)).collect();
    let out = group_by(events, roomy()).await;
    assert_eq!(out, [("only".to_string(), (0..10_000).collect::<Vec<_>>())]);
}

#[tokio::test]
async fn fifty_thousand_keys_lose_nothing() {
    let events: Vec<Ev> = (0..150_000)
        .map(|n| ev(&format!("k{}", n % 50_000), n))
        .collect();
    let out = group_by(events, roomy()).await;
    assert_eq!(out.len(), 50_000);
    for (i, (key, ns)) in out.iter().enumerate() {
        let i = i as u32;
        assert_eq!(key, &format!("k{i}"));
        assert_eq!(ns, &[i, i + 50_000, i + 100_000]);
    }
}

#[test]
fn works_outside_a_tokio_runtime() {
    let out: Vec<Group> = futures::executor::block_on(
        futures::stream::iter(evs(&[("a", 0), ("b", 1), ("a", 2)]))
            .stateful_group_by_rs2(roomy(), by_user, as_group)
            .map(Result::unwrap)
            .collect(),
    );
    assert_eq!(out, [g("a", &[0, 2]), g("b", &[1])]);
}

#[tokio::test]
async fn the_closure_gets_the_keys_own_state() {
    // max 2 per group: "a" has three groups; the closure counts them per key.
    let out: Vec<(String, u64, usize)> = no_hang(
        futures::stream::iter(evs(&[
            ("a", 0),
            ("a", 1),
            ("b", 2),
            ("a", 3),
            ("a", 4),
            ("a", 5),
        ]))
        .stateful_group_by_advanced_rs2(
            roomy(),
            by_user,
            Some(2),
            None,
            false,
            |key, group: Vec<Ev>, state: StateAccess| async move {
                let seen = state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                (key, seen, group.len())
            },
        )
        .map(Result::unwrap)
        .collect(),
    )
    .await;
    assert_eq!(
        out,
        [
            ("a".into(), 1, 2),
            ("a".into(), 2, 2),
            ("b".into(), 1, 1),
            ("a".into(), 3, 1)
        ]
    );
}

#[tokio::test]
async fn a_long_ready_input_yields_to_the_executor_while_buffering() {
    let events: Vec<Ev> = (0..10_000).map(|n| ev("a", n)).collect();
    let mut stream =
        Box::pin(futures::stream::iter(events).stateful_group_by_rs2(roomy(), by_user, as_group));
    assert!(futures::poll!(stream.next()).is_pending());
    let (key, ns) = no_hang(stream.next()).await.unwrap().unwrap();
    assert_eq!((key.as_str(), ns.len()), ("a", 10_000));
    assert!(stream.next().await.is_none());
}

// --- advanced: size and key change --------------------------------------------------------------

#[tokio::test]
async fn a_group_is_emitted_when_full_and_the_rest_at_the_end() {
    let out = advanced(
        evs(&[("a", 0), ("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5)]),
        Some(2),
        None,
        false,
    )
    .await;
    assert_eq!(
        out,
        [g("a", &[0, 1]), g("a", &[3, 4]), g("b", &[2]), g("a", &[5])]
    );
}

#[tokio::test]
async fn max_group_size_one_emits_every_event_alone() {
    let out = advanced(evs(&[("a", 0), ("b", 1), ("a", 2)]), Some(1), None, false).await;
    assert_eq!(out, [g("a", &[0]), g("b", &[1]), g("a", &[2])]);
}

#[tokio::test]
async fn full_groups_longer_than_one_storage_entry() {
    // 64 events per storage entry: groups of 64, 65 and 200 cross entry boundaries.
    for max in [63usize, 64, 65, 128, 200] {
        let events: Vec<Ev> = (0..450).map(|n| ev("a", n)).collect();
        let out = advanced(events, Some(max), None, false).await;
        let expected: Vec<Group> = (0..450u32)
            .collect::<Vec<_>>()
            .chunks(max)
            .map(|c| g("a", c))
            .collect();
        assert_eq!(out, expected, "max {max}");
    }
}

#[tokio::test]
async fn a_key_change_emits_the_previous_keys_group_first() {
    let out = advanced(
        evs(&[("a", 0), ("a", 1), ("b", 2), ("b", 3), ("a", 4), ("c", 5)]),
        None,
        None,
        true,
    )
    .await;
    assert_eq!(
        out,
        [g("a", &[0, 1]), g("b", &[2, 3]), g("a", &[4]), g("c", &[5])]
    );
}

#[tokio::test]
async fn key_change_and_size_together() {
    let out = advanced(
        evs(&[("a", 0), ("a", 1), ("a", 2), ("b", 3), ("a", 4)]),
        Some(2),
        None,
        true,
    )
    .await;
    assert_eq!(
        out,
        [g("a", &[0, 1]), g("a", &[2]), g("b", &[3]), g("a", &[4])]
    );
}

// --- advanced: timeouts (a real timer) ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_timed_out_group_is_emitted_while_the_input_is_idle() {
    // a and b at 0 ms, then nothing for an hour: both groups come out at 1 s, not at 1 h.
    let input = vec![
        (0, ev("a", 0)),
        (0, ev("b", 1)),
        (0, ev("a", 2)),
        (3_600_000, ev("a", 3)),
    ];
    let out = timed_output(timed(input).stateful_group_by_advanced_rs2(
        roomy(),
        by_user,
        None,
        Some(Duration::from_secs(1)),
        false,
        as_group,
    ))
    .await;
    assert_eq!(
        out,
        [
            (1_000, g("a", &[0, 2])),
            (1_000, g("b", &[1])),
            (3_600_000, g("a", &[3]))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_timer_fires_on_a_channel_that_stays_open() {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Ev>();
    tx.unbounded_send(ev("a", 0)).unwrap();
    let mut stream = Box::pin(rx.stateful_group_by_advanced_rs2(
        roomy(),
        by_user,
        None,
        Some(Duration::from_millis(250)),
        false,
        as_group,
    ));
    let start = tokio::time::Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the timeout fires with no further input");
    assert_eq!(first.unwrap().unwrap(), g("a", &[0]));
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    // The sender is still open: nothing more until it sends or closes.
    assert!(tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .is_err());
    tx.unbounded_send(ev("b", 1)).unwrap();
    drop(tx);
    assert_eq!(stream.next().await.unwrap().unwrap(), g("b", &[1]));
    assert!(stream.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_timeout_counts_from_the_groups_first_event() {
    // timeout 1 s: a@0, a@600, a@900 -> [0,1,2] at 1000 (later events do not extend it);
    // a@1100 opens a new group, emitted at 2100.
    let input = vec![
        (0, ev("a", 0)),
        (600, ev("a", 1)),
        (300, ev("a", 2)),
        (200, ev("a", 3)),
        (5_000, ev("b", 4)),
    ];
    let out = timed_output(timed(input).stateful_group_by_advanced_rs2(
        roomy(),
        by_user,
        None,
        Some(Duration::from_secs(1)),
        false,
        as_group,
    ))
    .await;
    assert_eq!(
        out,
        [
            (1_000, g("a", &[0, 1, 2])),
            (2_100, g("a", &[3])),
            (6_100, g("b", &[4]))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_of_several_keys_fire_in_deadline_order() {
    let input = vec![
        (0, ev("a", 0)),
        (100, ev("b", 1)),
        (100, ev("c", 2)),
        (10_000, ev("d", 3)),
    ];
    let out = timed_output(timed(input).stateful_group_by_advanced_rs2(
        roomy(),
        by_user,
        Some(10),
        Some(Duration::from_millis(500)),
        false,
        as_group,
    ))
    .await;
    assert_eq!(
        out,
        [
            (500, g("a", &[0])),
            (600, g("b", &[1])),
            (700, g("c", &[2])),
            (10_200, g("d", &[3]))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_arriving_at_its_groups_deadline_opens_a_new_group() {
    let input = vec![(0, ev("a", 0)), (1_000, ev("a", 1))];
    let out = timed_output(timed(input).stateful_group_by_advanced_rs2(
        roomy(),
        by_user,
        None,
        Some(Duration::from_secs(1)),
        false,
        as_group,
    ))
    .await;
    assert_eq!(out, [(1_000, g("a", &[0])), (1_000, g("a", &[1]))]);
}

// --- storage limits: emitted early, never lost ---------------------------------------------------

#[tokio::test]
async fn over_max_size_the_oldest_open_group_is_emitted_early() {
    let config = StateConfig::new().max_size(3);
    let out = group_by(
        evs(&[
            ("a", 0),
            ("b", 1),
            ("c", 2),
            ("d", 3),
            ("a", 4),
            ("e", 5),
            ("d", 6),
        ]),
        config,
    )
    .await;
    assert_eq!(
        out,
        [
            g("a", &[0]),
            g("b", &[1]),
            g("c", &[2]),
            g("d", &[3, 6]),
            g("a", &[4]),
            g("e", &[5])
        ]
    );
}

#[tokio::test]
async fn a_group_larger_than_max_size_entries_is_split_not_lost() {
    // max_size 2 entries of 64 events: the 129th event needs a third entry.
    let events: Vec<Ev> = (0..200).map(|n| ev("a", n)).collect();
    let out = group_by(events, StateConfig::new().max_size(2)).await;
    assert_eq!(
        out,
        [
            ("a".to_string(), (0..128).collect::<Vec<_>>()),
            ("a".to_string(), (128..200).collect::<Vec<_>>())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_group_is_emitted_before_it_could_expire_from_storage() {
    // ttl 10 s: the basic group_by emits a's group at 9 s (ttl less a 1 s margin) instead of
    // letting its buffer expire while the input is idle for an hour.
    let config = StateConfig::new()
        .ttl(Duration::from_secs(10))
        .cleanup_interval(Duration::from_secs(1));
    let input = vec![
        (0, ev("a", 0)),
        (5_000, ev("a", 1)),
        (3_600_000, ev("a", 2)),
    ];
    let out = timed_output(timed(input).stateful_group_by_rs2(config, by_user, as_group)).await;
    assert_eq!(out, [(9_000, g("a", &[0, 1])), (3_605_000, g("a", &[2]))]);
}

// --- errors ------------------------------------------------------------------------------------

#[tokio::test]
async fn zero_size_or_zero_timeout_is_one_validation_error_then_the_end() {
    for (max, timeout) in [(Some(0), None), (None, Some(Duration::ZERO))] {
        let items: Vec<Result<Group, StateError>> = no_hang(
            futures::stream::iter(evs(&[("a", 0), ("b", 1)]))
                .stateful_group_by_advanced_rs2(roomy(), by_user, max, timeout, false, as_group)
                .collect(),
        )
        .await;
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(
            matches!(&items[0], Err(StateError::Validation(_))),
            "{items:?}"
        );
    }
}

#[tokio::test]
async fn an_invalid_config_is_an_error_per_event() {
    let items: Vec<Result<Group, StateError>> = no_hang(
        futures::stream::iter(evs(&[("a", 0), ("b", 1)]))
            .stateful_group_by_rs2(StateConfig::new().ttl(Duration::ZERO), by_user, as_group)
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|r| matches!(r, Err(e) if e.is_validation())));
}

#[tokio::test]
async fn a_failing_backend_gives_err_items_naming_the_key_and_the_stream_goes_on() {
    let store = Arc::new(MapStore {
        fail_all: true,
        ..MapStore::default()
    });
    let items: Vec<Result<Group, StateError>> = no_hang(
        futures::stream::iter(evs(&[("alice", 0), ("bob", 1), ("alice", 2)]))
            .stateful_group_by_advanced_rs2(
                StateConfig::new().with_custom_storage(store),
                by_user,
                Some(5),
                Some(Duration::from_secs(1)),
                true,
                as_group,
            )
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 3, "{items:?}");
    for (item, user) in items.iter().zip(["alice", "bob", "alice"]) {
        assert!(
            matches!(item, Err(StateError::Storage(m)) if m.contains(user)),
            "{item:?}"
        );
    }
}

#[tokio::test]
async fn a_group_that_cannot_be_read_back_is_reported_with_its_key_and_size() {
    // Writes work, reads fail: "a"'s second event cannot be appended (an Err for it), and at
    // the end neither group can be read back (an Err for each, naming key and size).
    let store = Arc::new(MapStore {
        fail_gets: true,
        ..MapStore::default()
    });
    let items: Vec<Result<Group, StateError>> = no_hang(
        futures::stream::iter(evs(&[("a", 0), ("a", 1), ("b", 2)]))
            .stateful_group_by_rs2(
                StateConfig::new().with_custom_storage(store),
                by_user,
                as_group,
            )
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 3, "{items:?}");
    let msgs: Vec<String> = items
        .iter()
        .map(|r| r.as_ref().unwrap_err().to_string())
        .collect();
    assert!(
        msgs[0].contains("key 'a': event not added") && msgs[0].contains("connection reset"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].contains("key 'a'") && msgs[1].contains("1 event(s)"),
        "{msgs:?}"
    );
    assert!(
        msgs[2].contains("key 'b'") && msgs[2].contains("1 event(s)"),
        "{msgs:?}"
    );
}

#[tokio::test]
async fn a_group_whose_buffer_vanished_is_reported_not_silently_lost() {
    let store = Arc::new(MapStore::default());
    let (tx, rx) = futures::channel::mpsc::unbounded::<Ev>();
    let mut stream = Box::pin(rx.stateful_group_by_rs2(
        StateConfig::new().with_custom_storage(store.clone()),
        by_user,
        as_group,
    ));
    for e in evs(&[("a", 0), ("a", 1), ("b", 2)]) {
        tx.unbounded_send(e).unwrap();
    }
    // Let the operator take the three events in.
    assert!(futures::poll!(stream.next()).is_pending());
    assert_eq!(store.map.lock().unwrap().len(), 2);
    {
        // The operator's first entry of "a" (`group_by:a#{instance}.0` in a shared store).
        let mut map = store.map.lock().unwrap();
        let entry = map
            .keys()
            .find(|k| k.starts_with("group_by:a#") && k.ends_with(".0"))
            .cloned()
            .expect("a's first group entry is stored");
        map.remove(&entry);
    }
    tx.unbounded_send(ev("a", 3)).unwrap();
    drop(tx);
    let items: Vec<Result<Group, StateError>> = no_hang(stream.collect()).await;
    // a#3 finds its group gone: the loss of 2 events is reported, and a#3 opens a new group.
    assert_eq!(items.len(), 3, "{items:?}");
    let lost = items[0].as_ref().unwrap_err().to_string();
    assert!(
        lost.contains("key 'a'") && lost.contains("2 event(s)"),
        "{lost}"
    );
    assert_eq!(items[1], Ok(g("b", &[2])));
    assert_eq!(items[2], Ok(g("a", &[3])));
    assert!(
        store.map.lock().unwrap().is_empty(),
        "emitted groups are removed"
    );
}

// --- property: against a reference model -------------------------------------------------------

#[derive(Debug, Clone)]
struct Params {
    max: Option<usize>,
    timeout_ms: Option<u64>,
    on_key_change: bool,
    max_size: Option<usize>,
}

/// What the operator should emit for `events` (`(delay ms, key)`), groups as event indices.
fn model(events: &[(u64, usize)], p: &Params) -> Vec<(usize, Vec<usize>)> {
    const CHUNK: usize = 64;
    let entries = |open: &VecDeque<(usize, u64, Vec<usize>)>| {
        open.iter()
            .map(|(_, _, ev)| ev.len().div_ceil(CHUNK))
            .sum::<usize>()
    };
    let mut open: VecDeque<(usize, u64, Vec<usize>)> = VecDeque::new(); // (key, opened, events)
    let mut out = Vec::new();
    let mut prev: Option<usize> = None;
    let mut now = 0;
    let close = |open: &mut VecDeque<(usize, u64, Vec<usize>)>, key: usize| {
        let at = open.iter().position(|g| g.0 == key).unwrap();
        let (k, _, ev) = open.remove(at).unwrap();
        (k, ev)
    };
    for (i, &(delay, key)) in events.iter().enumerate() {
        now += delay;
        if let Some(t) = p.timeout_ms {
            while open.front().is_some_and(|g| now >= g.1 + t) {
                let (k, _, ev) = open.pop_front().unwrap();
                out.push((k, ev));
            }
        }
        if p.on_key_change {
            if let Some(pk) = prev.filter(|&pk| pk != key) {
                if open.iter().any(|g| g.0 == pk) {
                    out.push(close(&mut open, pk));
                }
            }
            prev = Some(key);
        }
        loop {
            let len = open.iter().find(|g| g.0 == key).map(|g| g.2.len());
            let completes = |n: usize| p.max.is_some_and(|m| n >= m);
            let needs_entry = len.is_none_or(|l| l % CHUNK == 0);
            if !completes(len.unwrap_or(0) + 1)
                && needs_entry
                && p.max_size.is_some_and(|m| entries(&open) + 1 > m)
            {
                let (k, _, ev) = open.pop_front().unwrap();
                out.push((k, ev));
                continue;
            }
            match len {
                Some(l) => {
                    open.iter_mut().find(|g| g.0 == key).unwrap().2.push(i);
                    if completes(l + 1) {
                        out.push(close(&mut open, key));
                    }
                }
                None if completes(1) => out.push((key, vec![i])),
                None => open.push_back((key, now, vec![i])),
            }
            break;
        }
    }
    out.extend(open.into_iter().map(|(k, _, ev)| (k, ev)));
    out
}

fn params() -> impl Strategy<Value = Params> {
    (
        prop_oneof![
            Just(None),
            (1usize..5).prop_map(Some),
            (60usize..140).prop_map(Some)
        ],
        prop_oneof![Just(None), (1u64..2_000).prop_map(Some)],
        any::<bool>(),
        prop_oneof![Just(None), (1usize..6).prop_map(Some)],
    )
        .prop_map(|(max, timeout_ms, on_key_change, max_size)| Params {
            max,
            timeout_ms,
            on_key_change,
            max_size,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn matches_the_reference_model(
        events in prop::collection::vec(
            (prop_oneof![4 => Just(0u64), 2 => 0u64..300, 1 => 0u64..3_000], prop_oneof![0usize..2, 0usize..8]),
            0..400),
        p in params(),
    ) {
        rs2::state::StateClock::new(); // anchor the clock before the paused runtime
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let input: Vec<(u64, (usize, usize))> =
            events.iter().enumerate().map(|(i, &(d, k))| (d, (i, k))).collect();
        let config = match p.max_size {
            Some(m) => StateConfig::new().max_size(m),
            None => roomy(),
        };
        let got: Vec<(usize, Vec<usize>)> = runtime.block_on(async {
            timed(input)
                .stateful_group_by_advanced_rs2(
                    config,
                    |e: &(usize, usize)| e.1.to_string(),
                    p.max,
                    p.timeout_ms.map(Duration::from_millis),
                    p.on_key_change,
                    |key, group: Vec<(usize, usize)>, _state| async move {
                        (key.parse::<usize>().unwrap(), group.into_iter().map(|e| e.0).collect::<Vec<_>>())
                    },
                )
                .map(|r| r.unwrap())
                .collect()
                .await
        });
        prop_assert_eq!(got, model(&events, &p));
    }
}

/// A store whose reads of chunk 0 entries (`…#….0`) fail while `failing` is above zero (each
/// failure counts it down; `u32::MAX` fails for good).
#[derive(Default)]
struct FlakyFirstChunk {
    inner: rs2_suite::MapStore,
    failing: std::sync::atomic::AtomicU32,
}

impl FlakyFirstChunk {
    fn fail(&self, key: &str) -> rs2::state::StateResult<()> {
        use std::sync::atomic::Ordering;
        if key.ends_with(".0")
            && self
                .failing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n {
                    0 => None,
                    u32::MAX => Some(u32::MAX),
                    n => Some(n - 1),
                })
                .is_ok()
        {
            return Err(StateError::storage_for(key, "timed out (injected)"));
        }
        Ok(())
    }
}

#[async_trait]
impl StateStorage for FlakyFirstChunk {
    async fn get(&self, key: &str) -> rs2::state::StateResult<Option<Vec<u8>>> {
        self.fail(key)?;
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> rs2::state::StateResult<()> {
        self.inner.set(key, value).await
    }
    async fn delete(&self, key: &str) -> rs2::state::StateResult<()> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> rs2::state::StateResult<bool> {
        self.inner.exists(key).await
    }
    async fn clear(&self) -> rs2::state::StateResult<()> {
        self.inner.clear().await
    }
}

/// 130 events of one key (three stored entries); `arm` runs as the last event is taken in.
fn one_key_events(n: u32, arm: impl Fn() + 'static) -> impl Stream<Item = Ev> {
    futures::stream::iter(0..n).map(move |i| {
        if i == n - 1 {
            arm();
        }
        ev("a", i)
    })
}

#[tokio::test]
async fn a_failed_read_of_one_entry_keeps_the_group_and_retries_it() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(FlakyFirstChunk::default());
    // Retries off: the one failed read must reach the operator (the default policy would
    // retry it and the group would be emitted whole, first time).
    let config = roomy()
        .with_custom_storage(store.clone())
        .retry(rs2::state::RetryPolicy::none());
    let armed = store.clone();
    let out: Vec<_> = no_hang(
        one_key_events(130, move || armed.failing.store(1, Ordering::Release))
            .stateful_group_by_advanced_rs2(config, by_user, Some(130), None, false, as_group)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(out.len(), 2, "{out:?}");
    let err = out[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("'a'") && err.contains("nothing was removed"),
        "{err}"
    );
    assert!(err.contains("kept"), "{err}");
    let (key, group) = out[1].as_ref().unwrap();
    assert_eq!(key, "a");
    assert_eq!(
        *group,
        (0..130).collect::<Vec<u32>>(),
        "every event, once, in order"
    );
}

#[tokio::test]
async fn a_group_that_cannot_be_read_at_the_end_is_left_in_storage() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(FlakyFirstChunk::default());
    let config = roomy().with_custom_storage(store.clone());
    let armed = store.clone();
    let out: Vec<_> = no_hang(
        one_key_events(70, move || armed.failing.store(u32::MAX, Ordering::Release))
            .stateful_group_by_rs2(config, by_user, as_group)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(out.len(), 1, "{out:?}");
    let err = out[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("no longer tracked") && err.contains("70 event"),
        "{err}"
    );
    let stored = store.inner.0.lock().unwrap();
    let entries = stored.keys().filter(|k| k.contains("a#")).count();
    assert_eq!(
        entries, 2,
        "both entries of the group are still stored: {stored:?}"
    );
}
