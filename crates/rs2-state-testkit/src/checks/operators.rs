//! rs2's operators keeping their state in the store (each under its operator's namespace).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{StateAccess, StateConfig, StateError, StateStorage};

use super::{ensure, ensure_eq, within, Checked, Stores, PROMPT};

/// An event: its key and a number.
pub(crate) type Ev = (String, u32);

/// The key extractor of [`Ev`]s.
pub(crate) fn key_of(event: &Ev) -> String {
    event.0.clone()
}

/// A window no check comes near (dedup, throttle): every event is in it.
const HOUR: Duration = Duration::from_secs(3600);

/// A config keeping every operator's state in `store`.
pub(crate) fn config_on<S: StateStorage + 'static>(store: &Arc<S>) -> StateConfig {
    StateConfig::new().with_custom_storage(Arc::clone(store) as Arc<dyn StateStorage + Send + Sync>)
}

/// `keys` in turn, `rounds` times, numbered from `first`.
fn events(keys: &[&str], rounds: usize, first: u32) -> Vec<Ev> {
    (0..rounds)
        .flat_map(|_| keys.iter())
        .zip(first..)
        .map(|(key, n)| (key.to_string(), n))
        .collect()
}

/// Each event's count of its key so far, as a `HashMap` fold gives it, continuing `counts`.
fn model_counts(events: &[Ev], counts: &mut HashMap<String, u64>) -> Vec<u64> {
    events
        .iter()
        .map(|(key, _)| {
            let n = counts.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        })
        .collect()
}

/// Runs a fold counting each key's events over `input` on `config`; its items, with errors as
/// text.
async fn fold_counts(
    config: StateConfig,
    input: Vec<Ev>,
) -> Result<Vec<Result<u64, String>>, String> {
    let folded = futures::stream::iter(input)
        .stateful_fold_rs2(config, key_of, 0u64, |n, _event: Ev, _state| async move {
            n + 1
        })
        .map(|item| item.map_err(|e| e.to_string()))
        .collect::<Vec<_>>();
    within(PROMPT, "a fold pipeline", folded).await
}

/// Compares a pipeline's items with the model's, naming the first difference.
fn compare<T: PartialEq + std::fmt::Debug>(
    what: &str,
    input: &[Ev],
    got: &[Result<T, String>],
    expected: &[T],
) -> Checked {
    ensure!(
        got.len() == expected.len(),
        "{what}: {} items for {} events (expected {})",
        got.len(),
        input.len(),
        expected.len()
    );
    for (i, (item, want)) in got.iter().zip(expected).enumerate() {
        match item {
            Ok(value) if value == want => {}
            Ok(value) => {
                return Err(format!(
                    "{what}: item {i} (event {:?}) is {value:?}, the model gives {want:?}",
                    input.get(i)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{what}: item {i} (event {:?}) is an error: {e}",
                    input.get(i)
                ))
            }
        }
    }
    Ok(())
}

/// A fold counting each key's events yields what a `HashMap` fold yields.
pub(crate) async fn fold_matches_a_hashmap_model<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let input = events(&["alice", "bob", "alice", "carol", "bob", "alice"], 3, 0);
    let expected = model_counts(&input, &mut HashMap::new());
    let got = fold_counts(config_on(&stores.a), input.clone()).await?;
    compare("fold", &input, &got, &expected)
}

/// A second fold pipeline on the same store continues the first one's counts: the state is
/// in the store, not in the pipeline.
pub(crate) async fn fold_state_persists_between_pipelines<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let mut counts = HashMap::new();
    let first = events(&["alice", "bob", "alice"], 2, 0);
    let expected = model_counts(&first, &mut counts);
    let got = fold_counts(config_on(&stores.a), first.clone()).await?;
    compare("the first fold pipeline", &first, &got, &expected)?;
    let second = events(&["bob", "alice", "dave"], 2, 100);
    let expected = model_counts(&second, &mut counts);
    let got = fold_counts(config_on(&stores.a), second.clone()).await?;
    compare(
        "a second fold pipeline on the same store (it should continue the first's counts)",
        &second,
        &got,
        &expected,
    )
}

/// A map counting each key's events through `StateAccess::update` (the store's
/// `update_with_ttl`) yields what a `HashMap` fold yields.
pub(crate) async fn map_state_access_update_counts_per_key<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let input = events(&["alice", "bob", "alice", "carol", "alice"], 3, 0);
    let expected = model_counts(&input, &mut HashMap::new());
    let mapped = futures::stream::iter(input.clone())
        .stateful_map_rs2(
            config_on(&stores.a),
            key_of,
            |_event: Ev, state: StateAccess| async move {
                state
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .collect::<Vec<_>>();
    let got = within(PROMPT, "a map pipeline", mapped).await?;
    compare("map with StateAccess::update", &input, &got, &expected)
}

/// Dedup lets each id through once (within its window), in input order.
pub(crate) async fn deduplicate_passes_each_id_once<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let ids = ["1", "2", "1", "3", "2", "1", "4", "3", "4", "5"];
    let input: Vec<Ev> = ids
        .iter()
        .zip(0..)
        .map(|(id, n)| (id.to_string(), n))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let expected: Vec<Ev> = input
        .iter()
        .filter(|e| seen.insert(e.0.clone()))
        .cloned()
        .collect();
    let deduped = futures::stream::iter(input.clone())
        .stateful_deduplicate_rs2(config_on(&stores.a), key_of, HOUR)
        .map(|item| item.map_err(|e| e.to_string()))
        .collect::<Vec<_>>();
    let got = within(PROMPT, "a dedup pipeline", deduped).await?;
    compare("dedup", &input, &got, &expected)
}

/// Throttle lets at most 2 of each key's events through in a window, in input order.
pub(crate) async fn throttle_limits_each_key<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let input = events(
        &["alice", "bob", "alice", "alice", "carol", "bob", "alice"],
        2,
        0,
    );
    let mut counts = HashMap::new();
    let expected: Vec<Ev> = input
        .iter()
        .filter(|e| {
            let n = counts.entry(e.0.clone()).or_insert(0);
            *n += 1;
            *n <= 2
        })
        .cloned()
        .collect();
    let throttled = futures::stream::iter(input.clone())
        .stateful_throttle_rs2(config_on(&stores.a), key_of, 2, HOUR)
        .map(|item| item.map_err(|e| e.to_string()))
        .collect::<Vec<_>>();
    let got = within(PROMPT, "a throttle pipeline", throttled).await?;
    compare("throttle (2 per key per hour)", &input, &got, &expected)
}

/// Two fold pipelines, spawned, on one store over the same keys at the same time (the fold's
/// closure yields once, as an async closure does): across both, each key's counts are
/// exactly 1, 2, ..., its number of events (no event lost or counted twice).
pub(crate) async fn concurrent_folds_emit_every_count_once<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
    const ROUNDS: usize = 20;
    let reversed: Vec<&str> = KEYS.iter().rev().copied().collect();
    let inputs = [events(&KEYS, ROUNDS, 0), events(&reversed, ROUNDS, 10_000)];
    let handles: Vec<_> = inputs
        .iter()
        .cloned()
        .map(|input| {
            let config = config_on(&stores.a);
            tokio::spawn(async move {
                futures::stream::iter(input)
                    .stateful_fold_rs2(config, key_of, 0u64, |n, _event: Ev, _state| async move {
                        tokio::task::yield_now().await;
                        n + 1
                    })
                    .collect::<Vec<Result<u64, StateError>>>()
                    .await
            })
        })
        .collect();
    let mut emitted: HashMap<String, Vec<u64>> = HashMap::new();
    for (p, (handle, input)) in handles.into_iter().zip(&inputs).enumerate() {
        let items = within(PROMPT * 3, format!("fold pipeline {p}"), handle)
            .await?
            .map_err(|e| format!("fold pipeline {p} panicked: {e}"))?;
        ensure!(
            items.len() == input.len(),
            "fold pipeline {p}: {} items for {} events",
            items.len(),
            input.len()
        );
        for (item, (key, _)) in items.into_iter().zip(input) {
            match item {
                Ok(count) => emitted.entry(key.clone()).or_default().push(count),
                Err(e) => return Err(format!("fold pipeline {p}: an item is an error: {e}")),
            }
        }
    }
    let mut problems = Vec::new();
    for key in KEYS {
        let mut counts = emitted.remove(key).unwrap_or_default();
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=(2 * ROUNDS) as u64).collect();
        if counts != expected {
            let mut repeated = counts.clone();
            repeated.dedup();
            problems.push(format!(
                "{key}: {} events, max count {}, {} counts emitted twice",
                2 * ROUNDS,
                counts.last().copied().unwrap_or(0),
                counts.len() - repeated.len()
            ));
        }
    }
    ensure!(
        problems.is_empty(),
        "two fold pipelines sharing the store lost or double-counted events (each key's counts \
         across both should be 1..={}): {}",
        2 * ROUNDS,
        problems.join("; ")
    );
    Ok(())
}

/// `clear` removes the operators' state: a fold starts counting again, dedup lets an id
/// through again, a map's `StateAccess` finds nothing.
pub(crate) async fn clear_removes_operator_state<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let input = events(&["alice", "bob", "alice"], 1, 0);
    let got = fold_counts(config_on(s), input.clone()).await?;
    compare("fold before clear", &input, &got, &[1, 1, 2])?;
    let dedup = |s: &Arc<S>| {
        futures::stream::iter(vec![("id".to_string(), 1)])
            .stateful_deduplicate_rs2(config_on(s), key_of, HOUR)
            .collect::<Vec<_>>()
    };
    ensure_eq!(
        within(PROMPT, "a dedup pipeline", dedup(s)).await?.len(),
        1,
        "dedup items for a first id"
    );
    let mapped = futures::stream::iter(vec![("alice".to_string(), 1)])
        .stateful_map_rs2(
            config_on(s),
            key_of,
            |_e: Ev, state: StateAccess| async move {
                state.set(&7u64).await.map_err(|e| e.to_string())
            },
        )
        .collect::<Vec<_>>();
    within(PROMPT, "a map pipeline", mapped)
        .await?
        .into_iter()
        .collect::<Result<Vec<()>, String>>()
        .map_err(|e| format!("map's StateAccess::set: {e}"))?;

    super::op("clear", s.clear()).await?;

    let got = fold_counts(config_on(s), input.clone()).await?;
    compare(
        "fold after clear (it should start from scratch)",
        &input,
        &got,
        &[1, 1, 2],
    )?;
    ensure_eq!(
        within(PROMPT, "a dedup pipeline", dedup(s)).await?.len(),
        1,
        "dedup items for an id seen before clear (it should pass again)"
    );
    let mapped = futures::stream::iter(vec![("alice".to_string(), 1)])
        .stateful_map_rs2(
            config_on(s),
            key_of,
            |_e: Ev, state: StateAccess| async move {
                state.try_get::<u64>().await.map_err(|e| e.to_string())
            },
        )
        .collect::<Vec<_>>();
    let got = within(PROMPT, "a map pipeline", mapped).await?;
    ensure_eq!(
        got,
        vec![Ok::<_, String>(None::<u64>)],
        "map's StateAccess::try_get after clear"
    );
    Ok(())
}
