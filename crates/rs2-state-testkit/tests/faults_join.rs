//! `stateful_join_rs2` under `FaultyStorage` (failed calls, timeouts, garbage reads): every
//! arrival yields either one error item naming its key, or exactly the pairs a fault-free join
//! of the arrivals that succeeded makes with it. So no event disappears, a failed arrival is
//! neither buffered nor matched, no buffer is overwritten after a failed read (later arrivals
//! would miss their pairs), and the stream goes on.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::unbounded;
use futures::StreamExt;
use rs2::state::{RetryPolicy, StateAccess, StateConfig, StatefulStreamExt};
use rs2_state_testkit::FaultyStorage;
use rs2_suite::MapStore;

const KEYS: u64 = 4;
const ARRIVALS: usize = 300;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// (key, arrival number)
type Ev = (u64, usize);

fn key(e: &Ev) -> String {
    format!("k{}", e.0)
}

#[tokio::test(start_paused = true)]
async fn join_arrivals_yield_their_pairs_or_one_error_under_faults() {
    for seed in [2u64, 9, 31] {
        let store = Arc::new(
            FaultyStorage::new(MapStore::default())
                .fail_fraction(0.15, seed)
                .garbage_fraction(0.1)
                .time_out_fraction(0.05, Duration::from_millis(50)),
        );
        let config = StateConfig::new()
            .ttl(DAY)
            .retry(RetryPolicy::none()) // every injected fault reaches the join
            .with_custom_storage(store.clone());
        let (ltx, lrx) = unbounded::<Ev>();
        let (rtx, rrx) = unbounded::<Ev>();
        let mut join = pin!(lrx
            .stateful_join_rs2(
                rrx,
                config,
                key,
                key,
                DAY,
                |l: Ev, r: Ev, _s: StateAccess| async move { (l.1, r.1) },
            )
            .max_buffered(1_000));
        // The arrivals that succeeded, per (key, is left).
        let mut buffered: HashMap<(u64, bool), Vec<usize>> = HashMap::new();
        let (mut errors, mut pairs) = (0, 0);
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..ARRIVALS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (k, left) = (x % KEYS, (x >> 8) % 2 == 0);
            if left {
                ltx.unbounded_send((k, i)).unwrap();
            } else {
                rtx.unbounded_send((k, i)).unwrap();
            }
            // Everything this arrival yields: items until the join waits for input (paused
            // time jumps to the timeout once every injected delay has passed).
            let mut items = Vec::new();
            while let Ok(item) = tokio::time::timeout(Duration::from_secs(1), join.next()).await {
                items.push(item.expect("the join ends only with its inputs"));
            }
            let partners = buffered.get(&(k, !left)).cloned().unwrap_or_default();
            match items.as_slice() {
                [Err(err)] => {
                    assert!(
                        err.to_string().contains(&format!("k{k}'")),
                        "names the key: {err}"
                    );
                    errors += 1;
                }
                ok => {
                    let got: Vec<(usize, usize)> = ok
                        .iter()
                        .map(|r| r.as_ref().cloned().expect("one error item, or all pairs"))
                        .collect();
                    let expected: Vec<(usize, usize)> = partners
                        .iter()
                        .map(|&p| if left { (i, p) } else { (p, i) })
                        .collect();
                    assert_eq!(got, expected, "seed {seed}, arrival {i}");
                    pairs += got.len();
                    buffered.entry((k, left)).or_default().push(i);
                }
            }
        }
        drop((ltx, rtx));
        assert!(join.next().await.is_none(), "ends with its inputs");
        assert!(
            errors > 10 && pairs > 100 && store.injected() > 0,
            "seed {seed}: {errors} errors, {pairs} pairs"
        );
    }
}
