//! `update`: the atomic read-modify-write.

use std::sync::Arc;

use rs2_state_core::{StateError, StateStorage};

use super::{decode_counter, ensure, ensure_eq, op, within, Checked, Stores, PROMPT};

/// `update` returns what it stored; its closure sees `None` for a missing key, then the value
/// before.
pub(crate) async fn update_returns_the_new_value_and_sees_the_previous<
    S: StateStorage + 'static,
>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let key = "kit:update";
    let mut seen = Vec::new();
    let first = op(
        "update of a missing key",
        s.update(
            key,
            Box::new(|current| {
                seen.push(current);
                Ok(b"one".to_vec())
            }),
        ),
    )
    .await?;
    ensure_eq!(first, b"one".to_vec(), "update's return value");
    ensure_eq!(
        seen,
        vec![None],
        "what update's closure saw for a missing key"
    );
    ensure_eq!(
        op("get", s.get(key)).await?,
        Some(b"one".to_vec()),
        "get after update"
    );
    let mut seen = Vec::new();
    let second = op(
        "update of an existing key",
        s.update(
            key,
            Box::new(|current| {
                seen.push(current);
                Ok(b"two".to_vec())
            }),
        ),
    )
    .await?;
    ensure_eq!(second, b"two".to_vec(), "update's return value");
    ensure_eq!(
        seen,
        vec![Some(b"one".to_vec())],
        "what update's closure saw for an existing key"
    );
    ensure_eq!(
        op("get", s.get(key)).await?,
        Some(b"two".to_vec()),
        "get after the second update"
    );
    // A plain `set` is seen by the next update.
    op("set", s.set(key, b"three")).await?;
    let mut seen = Vec::new();
    op(
        "update after set",
        s.update(
            key,
            Box::new(|current| {
                seen.push(current);
                Ok(b"four".to_vec())
            }),
        ),
    )
    .await?;
    ensure_eq!(
        seen,
        vec![Some(b"three".to_vec())],
        "what update's closure saw after a set"
    );
    Ok(())
}

/// A closure error writes nothing (existing value kept, missing key still missing) and is the
/// error `update` returns.
pub(crate) async fn update_closure_error_writes_nothing<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    const MARKER: &str = "kit: closure refused";
    let failing = || -> rs2_state_core::UpdateFn<'static> {
        Box::new(|_| Err(StateError::Validation(MARKER.to_string())))
    };
    op("set", s.set("kit:kept", b"original")).await?;
    for (key, before) in [
        ("kit:kept", Some(b"original".to_vec())),
        ("kit:never", None),
    ] {
        match tokio::time::timeout(super::CALL_TIMEOUT, s.update(key, failing())).await {
            Err(_) => return Err(format!("update of {key}: did not return")),
            Ok(Ok(stored)) => {
                return Err(format!(
                    "update of {key} whose closure failed returned Ok({})",
                    super::show(&stored)
                ))
            }
            Ok(Err(err)) => ensure!(
                err.to_string().contains(MARKER),
                "update of {key} whose closure failed returned another error than the \
                 closure's: {err}"
            ),
        }
        ensure_eq!(
            op(format!("get {key}"), s.get(key)).await?,
            before,
            "{key} after an update whose closure failed"
        );
    }
    ensure!(
        !op("exists", s.exists("kit:never")).await?,
        "a missing key exists after an update whose closure failed"
    );
    // The key is not left locked: a later update goes through.
    let next = op(
        "update after a failed update",
        s.update("kit:kept", Box::new(|_| Ok(b"after".to_vec()))),
    )
    .await?;
    ensure_eq!(next, b"after".to_vec(), "update after a failed update");
    Ok(())
}

/// Tasks per contention check and increments per task.
const TASKS: usize = 8;
const PER_TASK: usize = 50;

/// `TASKS` tasks, task `i` on `stores[i % len]`, each incrementing `key` `PER_TASK` times with
/// `update`: the counter ends at `TASKS * PER_TASK` and every increment returned a different
/// count.
pub(crate) async fn increment_with_update<S: StateStorage + 'static>(
    stores: &[Arc<S>],
    key: &'static str,
) -> Checked {
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            tokio::spawn(async move {
                let mut counts = Vec::with_capacity(PER_TASK);
                for n in 0..PER_TASK {
                    let next = op(
                        format!("task {i}'s update {n}"),
                        store.update(
                            key,
                            Box::new(|current| {
                                let value = decode_counter(current.as_deref())
                                    .map_err(StateError::Validation)?;
                                Ok((value + 1).to_le_bytes().to_vec())
                            }),
                        ),
                    )
                    .await?;
                    counts.push(decode_counter(Some(&next))?);
                }
                Ok::<_, String>(counts)
            })
        })
        .collect();
    let mut counts = Vec::new();
    for handle in handles {
        let task = within(PROMPT * 6, "an incrementing task", handle).await?;
        counts.extend(task.map_err(|e| format!("an incrementing task panicked: {e}"))??);
    }
    let total = TASKS * PER_TASK;
    let stored = decode_counter(
        op("get of the counter", stores[0].get(key))
            .await?
            .as_deref(),
    )?;
    ensure!(
        stored == total as u64,
        "{TASKS} tasks x {PER_TASK} updates of one key ({} instance(s)) left the counter at \
         {stored}, not {total}: {} increments lost",
        stores.len(),
        total as i64 - stored as i64
    );
    counts.sort_unstable();
    counts.dedup();
    ensure!(
        counts.len() == total,
        "{total} updates returned only {} different counts: two updates read the same value",
        counts.len()
    );
    Ok(())
}

/// 8 tasks × 50 `update` increments of one key on one shared store: exactly 400.
pub(crate) async fn update_is_atomic_under_contention<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    increment_with_update(&[stores.a], "kit:counter").await
}

/// The same, split between two instances over the same keys: exactly 400.
pub(crate) async fn update_is_atomic_across_instances<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let b = stores.b()?;
    instances_share_keys(&stores.a, &b).await?;
    increment_with_update(&[stores.a, b], "kit:counter").await
}

/// Fails unless a write through `a` is read through `b` (the cross-instance checks need two
/// clients over the same keys).
pub(crate) async fn instances_share_keys<S: StateStorage>(a: &S, b: &S) -> Checked {
    op(
        "set through instance A",
        a.set("kit:shared-probe", b"from A"),
    )
    .await?;
    let got = op("get through instance B", b.get("kit:shared-probe")).await?;
    ensure!(
        got.as_deref() == Some(&b"from A"[..]),
        "instance B does not see instance A's write (got {}): the cross-instance checks need \
         two instances over the same keys; pass second_instance(..) a function that makes \
         another client with the first one's prefix",
        super::show(&got)
    );
    op("delete through instance B", b.delete("kit:shared-probe")).await?;
    Ok(())
}
