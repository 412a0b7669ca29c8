//! Per-write TTL: a value written with a TTL is gone soon after it (real time).

use std::time::{Duration, Instant};

use rs2_state_core::{LockedWrite, StateStorage};

use super::{ensure, ensure_eq, op, Checked, Stores};

/// The TTL the checks write with.
const TTL: Duration = Duration::from_millis(100);
/// How long after the write a value written with [`TTL`] may still be there.
const GONE_WITHIN: Duration = Duration::from_secs(2);
/// How often the checks look whether it is gone.
const POLL: Duration = Duration::from_millis(50);
/// Lock lease the checks ask for.
const LEASE: Duration = Duration::from_secs(30);

/// After a write of `key` with [`TTL`] that started at `written`: the value read right away
/// must be `expected` if the TTL had not passed by then, and the key must be gone (get `None`,
/// exists `false`) within [`GONE_WITHIN`] of the write.
async fn present_then_gone<S: StateStorage>(
    s: &S,
    key: &str,
    expected: &[u8],
    written: Instant,
    how: &str,
) -> Checked {
    let got = op(format!("get of {key} right after {how}"), s.get(key)).await?;
    // Only a read that finished before the TTL passed must see the value.
    if written.elapsed() < TTL {
        ensure_eq!(
            got,
            Some(expected.to_vec()),
            "get of {key} right after {how} with a {TTL:?} TTL"
        );
    }
    loop {
        let value = op(format!("get of {key}"), s.get(key)).await?;
        let exists = op(format!("exists of {key}"), s.exists(key)).await?;
        if value.is_none() && !exists {
            return Ok(());
        }
        if written.elapsed() > GONE_WITHIN {
            return Err(format!(
                "{key} written by {how} with a {TTL:?} TTL is still there {:?} after the write \
                 (get: {}, exists: {exists}); a store that does not expire per write says \
                 per_write_ttl(false)",
                written.elapsed(),
                super::show(&value)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `set_with_ttl` with 100 ms: there at once, gone within 2 s.
pub(crate) async fn set_with_ttl_expires<S: StateStorage + 'static>(stores: Stores<S>) -> Checked {
    let s = &stores.a;
    let written = Instant::now();
    op("set_with_ttl", s.set_with_ttl("kit:ttl", b"v", Some(TTL))).await?;
    present_then_gone(&**s, "kit:ttl", b"v", written, "set_with_ttl").await
}

/// A write without a TTL (`set_with_ttl(None)`, `set`, `set_many(None)`) is still there after
/// 500 ms, while a neighbour written with a TTL expires.
pub(crate) async fn write_without_ttl_does_not_expire<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    op(
        "set_with_ttl(None)",
        s.set_with_ttl("kit:no-ttl", b"none", None),
    )
    .await?;
    op("set", s.set("kit:plain", b"plain")).await?;
    op(
        "set_many(None)",
        s.set_many(&[("kit:many-no-ttl", b"many")], None),
    )
    .await?;
    let written = Instant::now();
    op(
        "set_with_ttl",
        s.set_with_ttl("kit:with-ttl", b"v", Some(TTL)),
    )
    .await?;
    present_then_gone(&**s, "kit:with-ttl", b"v", written, "set_with_ttl").await?;
    let since = written.elapsed();
    if since < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(500) - since).await;
    }
    for (key, value, how) in [
        ("kit:no-ttl", &b"none"[..], "set_with_ttl(None)"),
        ("kit:plain", &b"plain"[..], "set"),
        ("kit:many-no-ttl", &b"many"[..], "set_many(.., None)"),
    ] {
        ensure_eq!(
            op(format!("get of {key}"), s.get(key)).await?,
            Some(value.to_vec()),
            "{key} written by {how} (no TTL), {:?} later",
            written.elapsed()
        );
    }
    Ok(())
}

/// `update_with_ttl` with 100 ms: returns the new value, which is there at once and gone
/// within 2 s.
pub(crate) async fn update_with_ttl_expires<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let written = Instant::now();
    let next = op(
        "update_with_ttl",
        s.update_with_ttl(
            "kit:update-ttl",
            Some(TTL),
            Box::new(|_| Ok(b"updated".to_vec())),
        ),
    )
    .await?;
    ensure_eq!(next, b"updated".to_vec(), "update_with_ttl's return value");
    present_then_gone(
        &**s,
        "kit:update-ttl",
        b"updated",
        written,
        "update_with_ttl",
    )
    .await
}

/// `set_many` with a 100 ms TTL: every entry is there at once and gone within 2 s.
pub(crate) async fn set_many_with_ttl_expires<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let written = Instant::now();
    op(
        "set_many",
        s.set_many(&[("kit:many-a", b"a"), ("kit:many-b", b"b")], Some(TTL)),
    )
    .await?;
    let got = op("get_many", s.get_many(&["kit:many-a", "kit:many-b"])).await?;
    if written.elapsed() < TTL {
        ensure_eq!(
            got,
            vec![Some(b"a".to_vec()), Some(b"b".to_vec())],
            "get_many right after set_many with a {TTL:?} TTL"
        );
    }
    present_then_gone(&**s, "kit:many-a", b"a", written, "set_many").await?;
    present_then_gone(&**s, "kit:many-b", b"b", written, "set_many").await
}

/// `write_and_release(Set)` with a 100 ms TTL: there at once, gone within 2 s.
pub(crate) async fn write_and_release_with_ttl_expires<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let (lock, current) = op("lock_and_get", s.lock_and_get("kit:locked-ttl", LEASE)).await?;
    ensure!(
        current.is_none(),
        "lock_and_get of a missing key returned {}",
        super::show(&current)
    );
    let written = Instant::now();
    op(
        "write_and_release(Set)",
        s.write_and_release("kit:locked-ttl", lock, LockedWrite::Set(b"v"), Some(TTL)),
    )
    .await?;
    present_then_gone(
        &**s,
        "kit:locked-ttl",
        b"v",
        written,
        "write_and_release(Set)",
    )
    .await
}
