//! Every operator that can take events in without yielding an item (rejected, dropped or
//! buffered events) gives the executor its thread back part way through a long ready input,
//! instead of running the whole input in one poll.

use std::time::Duration;

use futures::stream::BoxStream;
use rs2::prelude::*;
use rs2_suite::{by_user, ev, no_hang, roomy, Ev};

const EVENTS: u32 = 20_000;

/// A long ready input whose events all go to one key.
fn input() -> futures::stream::Iter<std::vec::IntoIter<Ev>> {
    futures::stream::iter((0..EVENTS).map(|n| ev("a", n)).collect::<Vec<_>>())
}

/// The stream returns `Pending` at least once before its end, and still yields `expected`
/// items in all.
async fn yields_part_way<T>(mut stream: BoxStream<'static, T>, expected: usize) {
    let mut items = 0;
    let mut pendings = 0;
    loop {
        match futures::poll!(stream.next()) {
            std::task::Poll::Ready(Some(_)) => items += 1,
            std::task::Poll::Ready(None) => break,
            std::task::Poll::Pending => {
                pendings += 1;
                tokio::task::yield_now().await;
            }
        }
        assert!(pendings < 10 * EVENTS as usize, "no progress");
    }
    assert_eq!(items, expected);
    assert!(
        pendings > 0,
        "the operator ran {EVENTS} ready events without yielding once"
    );
}

#[tokio::test]
async fn filter_rejecting_everything_yields() {
    let s = input().stateful_filter_rs2(roomy(), by_user, |_e: &Ev, _s| async { false });
    yields_part_way(s.boxed(), 0).await;
}

#[tokio::test]
async fn filter_par_rejecting_everything_yields() {
    let s = input().stateful_filter_rs2_par(roomy(), by_user, 4, |_e: &Ev, _s| async { false });
    yields_part_way(s.boxed(), 0).await;
}

#[tokio::test]
async fn pattern_returning_none_yields() {
    let s =
        input().stateful_pattern_rs2(roomy(), by_user, 3, |_w: Vec<Ev>, _s| async { None::<u32> });
    yields_part_way(s.boxed(), 0).await;
}

#[tokio::test]
async fn window_buffering_yields() {
    // Windows larger than the input: every event is buffered, none emitted.
    let s = input().stateful_window_rs2(
        roomy().max_size(10),
        by_user,
        EVENTS as usize + 1,
        |w: Vec<Ev>, _s| async move { w.len() },
    );
    yields_part_way(s.boxed(), 0).await;
}

#[tokio::test]
async fn join_meeting_nothing_yields() {
    let right = futures::stream::iter(Vec::<Ev>::new());
    let s = input().stateful_join_rs2(
        right,
        roomy(),
        by_user,
        by_user,
        Duration::from_secs(60),
        |l: Ev, r: Ev, _s| async move { (l.n, r.n) },
    );
    yields_part_way(s.boxed(), 0).await;
}

#[tokio::test]
async fn throttle_dropping_yields() {
    let s = input().stateful_throttle_rs2(roomy(), by_user, 1, Duration::from_secs(3600));
    yields_part_way(s.boxed(), 1).await;
}

#[tokio::test]
async fn yielding_never_loses_an_event() {
    // The budget returns Pending between events: a filter keeping every other event still
    // yields exactly those.
    let kept: Vec<u32> = no_hang(
        input()
            .stateful_filter_rs2(roomy(), by_user, |e: &Ev, _s| {
                let keep = e.n % 1000 == 0;
                async move { keep }
            })
            .map(|e| e.n)
            .collect(),
    )
    .await;
    assert_eq!(kept, (0..EVENTS).step_by(1000).collect::<Vec<_>>());
}
