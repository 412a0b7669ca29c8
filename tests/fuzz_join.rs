//! Fuzzing join's stored buffers on the stable toolchain (see `tests/fuzz_layouts.rs` for the
//! other operators): a join runs, every buffer it stored is spoiled (cut short, bytes flipped
//! in place, or replaced by arbitrary bytes), and a join runs again over the same keys, on a
//! remote store (`MapStore`, whole values read and written) and a shared in-process one
//! (`InMemoryState`, values edited in place). Whatever the bytes: no panic, no hang, no more
//! items than the events allow; and a buffer the join rejects (cut short or arbitrary bytes:
//! rejected by every arrival alike) gives an error for each arrival of its key and is left
//! byte for byte.
//!
//! The default case count keeps CI fast; a long run:
//! `RS2_FUZZ_CASES=20000 cargo test --release --test fuzz_join`.

use std::collections::HashMap;
use std::time::Duration;

use futures::{stream, StreamExt};
use proptest::prelude::*;
use rs2::prelude::*;
use rs2::state::SharedStorage;
use rs2_suite::Backend;

fn cases() -> u32 {
    std::env::var("RS2_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

/// (side is left, key number, payload)
type Arrival = (bool, u8, u16);
type Ev = (String, u16);

/// How a stored buffer is spoiled.
#[derive(Debug, Clone)]
enum Spoil {
    /// Keep the first `n % len` bytes.
    Cut(usize),
    /// XOR the byte at `at % len` with `mask` (non-zero), for each pair.
    Flip(Vec<(usize, u8)>),
    /// Replace the value.
    Arbitrary(Vec<u8>),
}

impl Spoil {
    /// Whether every arrival rejects the spoiled bytes alike (a length that no longer matches
    /// the header, or bytes not written by this process's joins), so none may rewrite them.
    fn always_rejected(&self, spoiled: &[u8]) -> bool {
        match self {
            Spoil::Cut(_) => true,
            Spoil::Arbitrary(_) => spoiled.first() != Some(&0x6A),
            Spoil::Flip(_) => false,
        }
    }

    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Spoil::Cut(n) => bytes[..n % bytes.len()].to_vec(),
            Spoil::Flip(flips) => {
                let mut out = bytes.to_vec();
                for (at, mask) in flips {
                    let i = at % out.len();
                    out[i] ^= mask;
                }
                out
            }
            Spoil::Arbitrary(new) => new.clone(),
        }
    }
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        any::<usize>().prop_map(Spoil::Cut),
        proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4).prop_map(Spoil::Flip),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Spoil::Arbitrary),
    ]
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    proptest::collection::vec((any::<bool>(), 0u8..3, any::<u16>()), 1..24)
}

/// Runs a join over `arrivals` on `config`; its items as (key, `Ok`) pairs.
async fn run(config: StateConfig, arrivals: &[Arrival]) -> Vec<(String, bool)> {
    let side = |left: bool| -> Vec<Ev> {
        arrivals
            .iter()
            .filter(|a| a.0 == left)
            .map(|&(_, k, n)| (format!("k{k}"), n))
            .collect()
    };
    let join = stream::iter(side(true)).stateful_join_rs2(
        stream::iter(side(false)),
        config,
        |e: &Ev| e.0.clone(),
        |e: &Ev| e.0.clone(),
        Duration::from_secs(3600),
        |l: Ev, _r: Ev, _s: StateAccess| async move { l.0 },
    );
    let items = tokio::time::timeout(Duration::from_secs(30), join.collect::<Vec<_>>())
        .await
        .expect("no hang");
    items
        .into_iter()
        .map(|item| match item {
            Ok(key) => (key, true),
            // Errors name their key as 'k0' (or 'join.buffers:k0').
            Err(err) => {
                let msg = err.to_string();
                let key = (0..3)
                    .map(|k| format!("k{k}"))
                    .find(|k| msg.contains(&format!("{k}'")))
                    .unwrap_or_else(|| panic!("an error names its key: {msg}"));
                (key, false)
            }
        })
        .collect()
}

async fn stored(store: &SharedStorage, key: &str) -> Option<Vec<u8>> {
    store.get(&format!("join.buffers:{key}")).await.unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn join_survives_spoiled_buffers(first in arrivals(), second in arrivals(), how in spoil()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            for backend in [Backend::Remote, Backend::SharedMemory] {
                let (config, store) = backend.config();
                let store = store.expect("a shared store");
                run(config.clone(), &first).await;
                let mut spoiled = HashMap::new();
                for k in 0..3 {
                    let key = format!("k{k}");
                    if let Some(bytes) = stored(&store, &key).await {
                        let bad = how.apply(&bytes);
                        store.set(&format!("join.buffers:{key}"), &bad).await.unwrap();
                        spoiled.insert(key, bad);
                    }
                }
                let items = run(config, &second).await;
                let n1 = first.len();
                let n2 = second.len();
                prop_assert!(
                    items.len() <= n2 * (1 + n1 + n2 + 16),
                    "{} items from {} arrivals", items.len(), n2
                );
                for (key, bad) in &spoiled {
                    let rejected = items.iter().any(|(k, ok)| k == key && !ok);
                    if !rejected || !how.always_rejected(bad) {
                        continue;
                    }
                    let arrivals = second.iter().filter(|a| format!("k{}", a.1) == *key).count();
                    let errors = items.iter().filter(|(k, ok)| k == key && !ok).count();
                    prop_assert_eq!(errors, arrivals, "{:?} {}: one error per arrival", backend, key);
                    prop_assert!(!items.iter().any(|(k, ok)| k == key && *ok));
                    let kept = stored(&store, key).await;
                    prop_assert_eq!(kept.as_ref(), Some(bad), "left as it was");
                }
            }
            Ok(())
        })?;
    }
}

/// The property above would pass if spoiled buffers were taken for empty ones: bytes cut
/// short are reported on every arrival of their key, and left.
#[tokio::test]
async fn a_cut_buffer_is_reported_by_every_arrival() {
    let (config, store) = Backend::Remote.config();
    let store = store.unwrap();
    let arrivals: Vec<Arrival> = (0..6).map(|n| (n % 2 == 0, 0, n)).collect();
    let items = run(config.clone(), &arrivals).await;
    assert!(items.iter().all(|(_, ok)| *ok) && !items.is_empty());
    let bytes = stored(&store, "k0").await.unwrap();
    let bad = Spoil::Cut(bytes.len() - 1).apply(&bytes);
    store.set("join.buffers:k0", &bad).await.unwrap();
    let items = run(config, &arrivals).await;
    assert_eq!(items, vec![("k0".to_string(), false); 6]);
    assert_eq!(stored(&store, "k0").await, Some(bad));
}
