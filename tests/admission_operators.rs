//! Every stateful operator on `StateStorageType::InMemoryAdmission` (each operator's own
//! `AdmissionState`, its state kept in the store as bytes under the store's key lock) gives
//! the same output as on the default `InMemory` store, when the store has room for every key
//! (so admission never refuses one). Time-based operators run on tokio's paused clock; the
//! stores' TTL (1 hour) is never reached.

use std::fmt::Debug;
use std::time::Duration;

use futures::Stream;
use rs2::prelude::*;
use rs2_suite::{by_user, ev, roomy, timed, Ev};

/// 400 events over 12 keys, with a few milliseconds between some of them.
fn input() -> Vec<(u64, Ev)> {
    (0..400u32)
        .map(|i| {
            let key = format!("u{}", (i * 7 + i / 13) % 12);
            let delay = u64::from((i * 31) % 5) * 3;
            (delay, ev(&key, i))
        })
        .collect()
}

fn events() -> impl Stream<Item = Ev> + Send {
    timed(input())
}

fn config(kind: StateStorageType) -> StateConfig {
    roomy().storage_type(kind)
}

async fn lines<S: Stream>(s: S) -> Vec<String>
where
    S::Item: Debug,
{
    s.map(|item| format!("{item:?}")).collect().await
}

async fn count(state: &StateAccess) -> u64 {
    let n = state.get::<u64>().await.unwrap_or(0) + 1;
    state.set(&n).await.expect("set");
    n
}

/// Each operator's output on `kind`, by name.
async fn outputs(kind: StateStorageType) -> Vec<(&'static str, Vec<String>)> {
    let c = || config(kind);
    let mut out = Vec::new();
    out.push((
        "map",
        lines(events().stateful_map_rs2(
            c(),
            by_user,
            |e, s| async move { (e.n, count(&s).await) },
        ))
        .await,
    ));
    out.push((
        "filter",
        lines(
            events().stateful_filter_rs2(
                c(),
                by_user,
                |_e, s| async move { count(&s).await % 3 == 0 },
            ),
        )
        .await,
    ));
    out.push((
        "fold",
        lines(
            events().stateful_fold_rs2(c(), by_user, 0u64, |acc, e, _s| async move {
                acc + u64::from(e.n)
            }),
        )
        .await,
    ));
    out.push((
        "reduce",
        lines(
            events().stateful_reduce_rs2(c(), by_user, |a, b, _s| async move {
                ev(&a.user, a.n.wrapping_add(b.n))
            }),
        )
        .await,
    ));
    out.push((
        "dedup",
        lines(events().stateful_deduplicate_rs2(
            c(),
            |e: &Ev| format!("{}:{}", e.user, e.n % 5),
            Duration::from_millis(40),
        ))
        .await,
    ));
    out.push((
        "throttle",
        lines(events().stateful_throttle_rs2(c(), by_user, 3, Duration::from_millis(50))).await,
    ));
    out.push((
        "session",
        lines(events().stateful_session_rs2(
            c(),
            by_user,
            Duration::from_millis(30),
            |e, new, s| async move { (e.n, new, count(&s).await) },
        ))
        .await,
    ));
    out.push((
        "window",
        lines(
            events().stateful_window_rs2(c(), by_user, 4, |w, _s| async move {
                w.iter().map(|e| e.n).collect::<Vec<_>>()
            }),
        )
        .await,
    ));
    out.push((
        "window_sliding",
        lines(events().stateful_window_rs2_advanced(
            c(),
            by_user,
            5,
            Some(2),
            true,
            |w, _s| async move { w.iter().map(|e| e.n).collect::<Vec<_>>() },
        ))
        .await,
    ));
    out.push((
        "pattern",
        lines(
            events().stateful_pattern_rs2(c(), by_user, 3, |w, _s| async move {
                (w.iter().map(|e| e.n).sum::<u32>() % 2 == 0).then_some(w.len())
            }),
        )
        .await,
    ));
    out.push((
        "group_by",
        lines(events().stateful_group_by_advanced_rs2(
            c(),
            by_user,
            Some(6),
            Some(Duration::from_millis(100)),
            false,
            |k, g, _s| async move { (k, g.iter().map(|e| e.n).collect::<Vec<_>>()) },
        ))
        .await,
    ));
    out.push((
        "join",
        lines(events().stateful_join_rs2(
            timed(input().into_iter().rev().collect()),
            c(),
            by_user,
            by_user,
            Duration::from_millis(20),
            |a, b, _s| async move { (a.n, b.n) },
        ))
        .await,
    ));
    out.push((
        "map_par",
        lines(
            events().stateful_map_rs2_par(
                c(),
                by_user,
                4,
                |e, s| async move { (e.n, count(&s).await) },
            ),
        )
        .await,
    ));
    out.push((
        "filter_par",
        lines(
            events().stateful_filter_rs2_par(c(), by_user, 4, |_e, s| async move {
                count(&s).await % 2 == 0
            }),
        )
        .await,
    ));
    out.push((
        "fold_par",
        lines(
            events().stateful_fold_rs2_par(c(), by_user, 4, 0u64, |acc, e, _s| async move {
                acc + u64::from(e.n)
            }),
        )
        .await,
    ));
    out.push((
        "reduce_par",
        lines(
            events().stateful_reduce_rs2_par(c(), by_user, 4, |a, b, _s| async move {
                ev(&a.user, a.n.wrapping_add(b.n))
            }),
        )
        .await,
    ));
    out
}

#[tokio::test(start_paused = true)]
async fn every_operator_gives_the_same_output_on_the_admission_store() {
    let want = outputs(StateStorageType::InMemory).await;
    let got = outputs(StateStorageType::InMemoryAdmission).await;
    for ((name, want), (_, got)) in want.iter().zip(&got) {
        assert!(!want.is_empty(), "{name}: no output");
        assert!(
            want.iter().all(|l| !l.starts_with("Err")),
            "{name}: InMemory errors: {want:?}"
        );
        assert_eq!(got, want, "{name}: InMemoryAdmission differs from InMemory");
    }
}

#[test]
fn the_admission_variant_validates_as_in_memory() {
    assert!(config(StateStorageType::InMemoryAdmission)
        .validate()
        .is_ok());
    assert!(config(StateStorageType::InMemoryAdmission)
        .ttl(Duration::ZERO)
        .validate()
        .is_err());
    let mut with_custom =
        roomy().with_custom_storage(std::sync::Arc::new(InMemoryState::new(&roomy())));
    with_custom.storage_type = StateStorageType::InMemoryAdmission;
    assert!(with_custom.validate().is_err());
    let storage = config(StateStorageType::InMemoryAdmission).create_storage_arc();
    assert!(
        storage.as_local().is_none(),
        "an AdmissionState, not an InMemoryState"
    );
}
