//! `lock_key`, `lock_and_get`, `write_and_release`.

use std::sync::Arc;
use std::time::Duration;

use rs2_state_core::{KeyLock, LockedWrite, StateStorage};

use super::update::instances_share_keys;
use super::{decode_counter, ensure, ensure_eq, op, within, Checked, Stores, PROMPT};

/// The lease the checks ask for (long: no check should outlive it).
const LEASE: Duration = Duration::from_secs(30);
/// How long a lock of a held key is watched to see that it waits.
const BLOCKED_FOR: Duration = Duration::from_millis(200);

/// A lock of `key` that has just been freed is taken again, promptly, and released.
async fn lock_is_free<S: StateStorage>(s: &S, key: &str, after: &str) -> Checked {
    let lock = within(
        PROMPT,
        format!("lock_key({key}) after {after}"),
        s.lock_key(key, LEASE),
    )
    .await?
    .map_err(|e| format!("lock_key({key}) after {after}: returned an error: {e}"))?;
    op(format!("release of {key}'s lock"), lock.release()).await
}

/// While task A holds `lock_key(k)`, task B's `lock_key(k)` does not complete; it does once
/// A releases.
pub(crate) async fn lock_key_excludes_the_same_key<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = stores.a;
    let key = "kit:locked";
    let held = op("lock_key", s.lock_key(key, LEASE)).await?;
    let waiter = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let lock = s.lock_key(key, LEASE).await?;
            lock.release().await
        })
    };
    tokio::time::sleep(BLOCKED_FOR).await;
    if waiter.is_finished() {
        let _ = held.release().await;
        return Err(match waiter.await {
            Ok(Err(e)) => format!("a second lock_key({key}) of a held key returned an error: {e}"),
            _ => format!(
                "a second lock_key({key}) completed while the first holder still held it \
                 (checked after {BLOCKED_FOR:?})"
            ),
        });
    }
    op("release", held.release()).await?;
    match within(PROMPT, "the waiting lock_key after the release", waiter).await? {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the waiting lock_key returned an error: {e}")),
        Err(e) => return Err(format!("the waiting task panicked: {e}")),
    }
    lock_is_free(&*s, key, "both holders released it").await
}

/// While a key is locked, locks of other keys are taken at once. One of eight may wait: the
/// provided in-process lock picks one of 4096 locks by hashing, so two keys may share one.
pub(crate) async fn lock_key_leaves_other_keys_free<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let held = op("lock_key", s.lock_key("kit:held", LEASE)).await?;
    let mut waited = Vec::new();
    for i in 0..8 {
        let key = format!("kit:other:{i}");
        match tokio::time::timeout(BLOCKED_FOR, s.lock_key(&key, LEASE)).await {
            Ok(Ok(lock)) => op(format!("release of {key}"), lock.release()).await?,
            Ok(Err(e)) => {
                let _ = held.release().await;
                return Err(format!("lock_key({key}): returned an error: {e}"));
            }
            Err(_) => waited.push(key),
        }
    }
    op("release", held.release()).await?;
    ensure!(
        waited.len() <= 1,
        "while kit:held was locked, lock_key of other keys waited over {BLOCKED_FOR:?}: \
         {waited:?} (locks must be per key)"
    );
    Ok(())
}

/// `lock_and_get` returns the key's current value (`None` for a missing key) and holds the
/// lock: another `lock_key` of the key waits until it is released.
pub(crate) async fn lock_and_get_reads_the_current_value<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = stores.a;
    let (lock, value) = op(
        "lock_and_get of a missing key",
        s.lock_and_get("kit:lg-missing", LEASE),
    )
    .await?;
    ensure_eq!(value, None::<Vec<u8>>, "lock_and_get of a missing key");
    op("release", lock.release()).await?;

    op("set", s.set("kit:lg", b"current")).await?;
    let (lock, value) = op("lock_and_get", s.lock_and_get("kit:lg", LEASE)).await?;
    ensure_eq!(value, Some(b"current".to_vec()), "lock_and_get's value");
    let blocked = tokio::time::timeout(BLOCKED_FOR, s.lock_key("kit:lg", LEASE)).await;
    if let Ok(other) = blocked {
        let _ = lock.release().await;
        if let Ok(other) = other {
            let _ = other.release().await;
        }
        return Err(
            "lock_key of a key held by lock_and_get completed while it was held".to_string(),
        );
    }
    op("release", lock.release()).await?;
    lock_is_free(&*s, "kit:lg", "lock_and_get's lock was released").await
}

/// `lock_and_get`, then `write_and_release(write)`; returns what the key holds afterwards
/// (and checks the key is free again).
async fn locked_write<S: StateStorage>(
    s: &S,
    key: &str,
    write: LockedWrite<'_>,
) -> Result<Option<Vec<u8>>, String> {
    op("set", s.set(key, b"before")).await?;
    let (lock, value) = op("lock_and_get", s.lock_and_get(key, LEASE)).await?;
    ensure_eq!(value, Some(b"before".to_vec()), "lock_and_get's value");
    op(
        format!("write_and_release({write:?})"),
        s.write_and_release(key, lock, write, None),
    )
    .await?;
    lock_is_free(s, key, &format!("write_and_release({write:?})")).await?;
    op("get", s.get(key)).await
}

/// `write_and_release(Set)` writes the value and frees the key.
pub(crate) async fn write_and_release_set_writes_and_frees_the_key<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let after = locked_write(&*stores.a, "kit:wr-set", LockedWrite::Set(b"after")).await?;
    ensure_eq!(
        after,
        Some(b"after".to_vec()),
        "the key after write_and_release(Set)"
    );
    Ok(())
}

/// `write_and_release(Delete)` removes the key and frees it.
pub(crate) async fn write_and_release_delete_removes_and_frees_the_key<
    S: StateStorage + 'static,
>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let after = locked_write(&**s, "kit:wr-delete", LockedWrite::Delete).await?;
    ensure_eq!(
        after,
        None::<Vec<u8>>,
        "the key after write_and_release(Delete)"
    );
    ensure!(
        !op("exists", s.exists("kit:wr-delete")).await?,
        "the key exists after write_and_release(Delete)"
    );
    Ok(())
}

/// `write_and_release(Keep)` leaves the value as it was and frees the key.
pub(crate) async fn write_and_release_keep_keeps_and_frees_the_key<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let after = locked_write(&*stores.a, "kit:wr-keep", LockedWrite::Keep).await?;
    ensure_eq!(
        after,
        Some(b"before".to_vec()),
        "the key after write_and_release(Keep)"
    );
    Ok(())
}

const TASKS: usize = 8;
const PER_TASK: usize = 25;

/// `TASKS` tasks, task `i` on `stores[i % len]`, each incrementing `key` `PER_TASK` times
/// with `lock_and_get` + `write_and_release`: the counter ends at `TASKS * PER_TASK`.
async fn increment_under_lock<S: StateStorage + 'static>(
    stores: &[Arc<S>],
    key: &'static str,
) -> Checked {
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            tokio::spawn(async move {
                for n in 0..PER_TASK {
                    let (lock, current): (KeyLock, _) = op(
                        format!("task {i}'s lock_and_get {n}"),
                        store.lock_and_get(key, LEASE),
                    )
                    .await?;
                    let next = match decode_counter(current.as_deref()) {
                        Ok(value) => (value + 1).to_le_bytes(),
                        Err(e) => {
                            let _ = lock.release().await;
                            return Err(e);
                        }
                    };
                    op(
                        format!("task {i}'s write_and_release {n}"),
                        store.write_and_release(key, lock, LockedWrite::Set(&next), None),
                    )
                    .await?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for handle in handles {
        let task = within(PROMPT * 6, "an incrementing task", handle).await?;
        task.map_err(|e| format!("an incrementing task panicked: {e}"))??;
    }
    let total = (TASKS * PER_TASK) as u64;
    let stored = decode_counter(
        op("get of the counter", stores[0].get(key))
            .await?
            .as_deref(),
    )?;
    ensure!(
        stored == total,
        "{TASKS} tasks x {PER_TASK} increments under lock_and_get + write_and_release ({} \
         instance(s)) left the counter at {stored}, not {total}: {} increments lost",
        stores.len(),
        total as i64 - stored as i64
    );
    Ok(())
}

/// 8 tasks × 25 locked increments of one key on one shared store: exactly 200.
pub(crate) async fn locked_counter_is_exact_under_contention<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    increment_under_lock(&[stores.a], "kit:locked-counter").await
}

/// The same, split between two instances over the same keys: exactly 200.
pub(crate) async fn locked_counter_is_exact_across_instances<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let b = stores.b()?;
    instances_share_keys(&stores.a, &b).await?;
    increment_under_lock(&[stores.a, b], "kit:locked-counter").await
}
