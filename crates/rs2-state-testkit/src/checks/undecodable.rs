//! Bytes that cannot be decoded are never overwritten (by an operator or a `StateAccess`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rs2_operators::StatefulStreamExt;
use rs2_state_core::{async_trait, StateAccess, StateConfig, StateResult, StateStorage};

use super::operators::{key_of, Ev};
use super::{ensure, ensure_eq, op, within, Checked, Stores, PROMPT};

/// Bytes no `u64` decodes from (an unfinished varint).
const GARBAGE: [u8; 9] = [0xff; 9];
/// The user key the checks plant garbage under.
const KEY: &str = "undecodable-key";
/// The user key the discovery runs use.
const PROBE: &str = "kit-probe";
/// A namespace, so the discovery is shown to follow it.
const NAMESPACE: &str = "kit";

/// A map store recording every key written: what an operator's key format is found with.
#[derive(Default)]
struct Recorder {
    map: Mutex<HashMap<String, Vec<u8>>>,
    written: Mutex<Vec<String>>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl StateStorage for Recorder {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(guard(&self.map).get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        guard(&self.written).push(key.to_string());
        guard(&self.map).insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        guard(&self.map).remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(guard(&self.map).contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        guard(&self.map).clear();
        Ok(())
    }
}

/// The config the checks run operators with, on `store`.
fn config(store: Arc<dyn StateStorage + Send + Sync>) -> StateConfig {
    StateConfig::new()
        .with_custom_storage(store)
        .namespace(NAMESPACE)
}

/// The storage key an operator uses for user key [`KEY`]: `run` runs the operator on a
/// [`Recorder`] with one event of key [`PROBE`] and must make it write its state; the one key
/// written is the probe's, and the key format is what surrounds the probe.
async fn discover<Fut>(
    operator: &str,
    run: impl FnOnce(StateConfig) -> Fut,
) -> Result<String, String>
where
    Fut: std::future::Future<Output = ()>,
{
    let recorder = Arc::new(Recorder::default());
    within(
        PROMPT,
        format!("the {operator} discovery run"),
        run(config(recorder.clone())),
    )
    .await?;
    let mut written = guard(&recorder.written).clone();
    written.sort();
    written.dedup();
    match written.as_slice() {
        [key] if key.contains(PROBE) => Ok(key.replacen(PROBE, KEY, 1)),
        _ => Err(format!(
            "internal: a {operator} of one event of key {PROBE:?} wrote the keys {written:?}, \
             not one key naming it; the kit cannot tell where {operator} keeps its state"
        )),
    }
}

/// A fold meeting garbage at its key's storage key yields an `Err` naming the key for that
/// event, leaves the bytes as they were, frees the key's lock, and goes on with other keys.
pub(crate) async fn fold_never_overwrites_undecodable_state<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let count = |config: StateConfig, input: Vec<Ev>| {
        futures::stream::iter(input)
            .stateful_fold_rs2(
                config,
                key_of,
                0u64,
                |n, _e: Ev, _state| async move { n + 1 },
            )
            .collect::<Vec<_>>()
    };
    let storage_key = discover("fold", |config| async move {
        count(config, vec![(PROBE.to_string(), 0)]).await;
    })
    .await?;

    op(
        format!("set of garbage at {storage_key:?}"),
        s.set(&storage_key, &GARBAGE),
    )
    .await?;
    let input = vec![(KEY.to_string(), 1), ("fine".to_string(), 2)];
    let shared: Arc<dyn StateStorage + Send + Sync> = s.clone();
    let items = within(PROMPT, "a fold pipeline", count(config(shared), input)).await?;
    ensure!(
        items.len() == 2,
        "the fold yielded {} items for 2 events",
        items.len()
    );
    match &items[0] {
        Ok(value) => {
            return Err(format!(
                "the fold yielded Ok({value}) for an event whose state at {storage_key:?} is \
                 undecodable"
            ))
        }
        Err(e) => ensure!(
            e.to_string().contains(KEY),
            "the fold's error for undecodable state does not name the key {KEY:?}: {e}"
        ),
    }
    ensure!(
        matches!(items[1], Ok(1)),
        "the fold did not go on with the next key after the undecodable one: {:?}",
        items[1]
    );
    ensure_eq!(
        op("get", s.get(&storage_key)).await?,
        Some(GARBAGE.to_vec()),
        "the undecodable bytes at {storage_key:?} after the fold"
    );
    // The lock the fold took to read the key was freed when the read failed.
    let lock = within(
        PROMPT,
        format!("lock_key({storage_key:?}) after the fold met undecodable state"),
        s.lock_key(&storage_key, Duration::from_secs(30)),
    )
    .await?
    .map_err(|e| format!("lock_key after the fold: {e}"))?;
    op("release", lock.release()).await
}

/// A map's `StateAccess::update` on garbage returns an error naming the key and writes
/// nothing; so does `set` after a `get` that could not decode.
pub(crate) async fn state_access_never_overwrites_undecodable_state<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let storage_key = discover("map", |config| async move {
        futures::stream::iter(vec![(PROBE.to_string(), 0)])
            .stateful_map_rs2(config, key_of, |_e: Ev, state: StateAccess| async move {
                let _ = state.set(&1u64).await;
            })
            .collect::<Vec<()>>()
            .await;
    })
    .await?;

    op(
        format!("set of garbage at {storage_key:?}"),
        s.set(&storage_key, &GARBAGE),
    )
    .await?;
    let shared: Arc<dyn StateStorage + Send + Sync> = s.clone();
    let mapped = futures::stream::iter(vec![(KEY.to_string(), 1)])
        .stateful_map_rs2(
            config(shared),
            key_of,
            |_e: Ev, state: StateAccess| async move {
                let updated = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
                let read = state.get::<u64>().await;
                let set = state.set(&5u64).await;
                (
                    updated.map_err(|e| e.to_string()),
                    read,
                    set.map_err(|e| e.to_string()),
                )
            },
        )
        .collect::<Vec<_>>();
    let items = within(PROMPT, "a map pipeline", mapped).await?;
    let [(updated, read, set)] = items.as_slice() else {
        return Err(format!("the map yielded {} items for 1 event", items.len()));
    };
    match updated {
        Ok(n) => {
            return Err(format!(
                "StateAccess::update on undecodable state at {storage_key:?} returned Ok({n})"
            ))
        }
        Err(e) => ensure!(
            e.contains(KEY),
            "StateAccess::update's error for undecodable state does not name the key {KEY:?}: {e}"
        ),
    }
    ensure!(
        read.is_none(),
        "StateAccess::get on undecodable state returned {read:?}"
    );
    ensure!(
        set.is_err(),
        "StateAccess::set after a get that could not decode the state returned Ok"
    );
    ensure_eq!(
        op("get", s.get(&storage_key)).await?,
        Some(GARBAGE.to_vec()),
        "the undecodable bytes at {storage_key:?} after update and set through StateAccess"
    );
    Ok(())
}
