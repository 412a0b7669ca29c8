//! get / set / delete / exists / clear.

use rs2_state_core::StateStorage;

use super::{ensure, ensure_eq, op, Checked, Stores};

/// A key never written reads as `None`, does not exist, and deleting it is `Ok`.
pub(crate) async fn missing_key_reads_as_absent<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let got = op("get of a missing key", s.get("kit:missing")).await?;
    ensure_eq!(got, None::<Vec<u8>>, "get of a missing key");
    let exists = op("exists of a missing key", s.exists("kit:missing")).await?;
    ensure!(!exists, "exists of a missing key returned true");
    op("delete of a missing key", s.delete("kit:missing")).await?;
    Ok(())
}

/// Set then get; overwrite; delete (the key is then absent); deleting twice is `Ok`.
pub(crate) async fn set_get_overwrite_delete<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let key = "kit:key";
    op("set", s.set(key, b"first")).await?;
    ensure_eq!(
        op("get", s.get(key)).await?,
        Some(b"first".to_vec()),
        "get after set"
    );
    ensure!(
        op("exists", s.exists(key)).await?,
        "exists after set returned false"
    );
    op("set (overwrite)", s.set(key, b"second value")).await?;
    ensure_eq!(
        op("get", s.get(key)).await?,
        Some(b"second value".to_vec()),
        "get after an overwrite"
    );
    op("delete", s.delete(key)).await?;
    ensure_eq!(
        op("get", s.get(key)).await?,
        None::<Vec<u8>>,
        "get after delete"
    );
    ensure!(
        !op("exists", s.exists(key)).await?,
        "exists after delete returned true"
    );
    op("a second delete", s.delete(key)).await?;
    // The key can be written again.
    op("set after delete", s.set(key, b"third")).await?;
    ensure_eq!(
        op("get", s.get(key)).await?,
        Some(b"third".to_vec()),
        "get after set following a delete"
    );
    Ok(())
}

/// An empty value is a value: it round-trips and the key exists.
pub(crate) async fn empty_value_round_trips<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    op("set of an empty value", s.set("kit:empty", b"")).await?;
    ensure_eq!(
        op("get", s.get("kit:empty")).await?,
        Some(Vec::<u8>::new()),
        "get of a key holding an empty value"
    );
    ensure!(
        op("exists", s.exists("kit:empty")).await?,
        "exists of a key holding an empty value returned false"
    );
    Ok(())
}

/// Values are bytes, not text: all 256 byte values, and a 64 KiB value, round-trip.
pub(crate) async fn every_byte_value_round_trips<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let all: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = all.iter().rev().copied().collect();
    let mut x: u32 = 0x9E37_79B9;
    let large: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    for (key, value) in [
        ("kit:bytes", &all),
        ("kit:bytes-reversed", &reversed),
        ("kit:bytes-64k", &large),
    ] {
        op(format!("set {key}"), s.set(key, value)).await?;
    }
    for (key, value) in [
        ("kit:bytes", &all),
        ("kit:bytes-reversed", &reversed),
        ("kit:bytes-64k", &large),
    ] {
        ensure_eq!(
            op(format!("get {key}"), s.get(key)).await?,
            Some(value.clone()),
            "get of {key} ({} bytes)",
            value.len()
        );
    }
    Ok(())
}

/// Keys the store must not interpret: spaces, separators, glob and hash-tag characters,
/// unicode, a 1 KiB key. Each is its own key.
pub(crate) fn unusual_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "kit:with space",
        "kit: leading space",
        "kit:colon:colon",
        "kit:{hash-tag}",
        "kit:{",
        "kit:}",
        "kit:*",
        "kit:star*",
        "kit:question?",
        "kit:[bracket]",
        "kit:[",
        "kit:back\\slash",
        "kit:quote\"'",
        "kit:percent%s",
        "kit:newline\n",
        "kit:tab\t",
        "kit:ключ",
        "kit:ü",
        "kit:u\u{308}",
        "kit:鍵",
        "kit:🚀",
        "kit:",
    ]
    .map(String::from)
    .to_vec();
    keys.push(format!("kit:{}", "k".repeat(1024)));
    keys.push(format!("kit:{}x", "k".repeat(1024)));
    keys
}

/// Unusual keys are distinct from each other and round-trip.
pub(crate) async fn unusual_keys_are_distinct_and_round_trip<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let keys = unusual_keys();
    for (i, key) in keys.iter().enumerate() {
        op(
            format!("set {key:?}"),
            s.set(key, format!("value {i}").as_bytes()),
        )
        .await?;
    }
    for (i, key) in keys.iter().enumerate() {
        ensure_eq!(
            op(format!("get {key:?}"), s.get(key)).await?,
            Some(format!("value {i}").into_bytes()),
            "get of key {key:?} (each key was written with its own value)"
        );
        ensure!(
            op(format!("exists {key:?}"), s.exists(key)).await?,
            "exists of key {key:?} returned false"
        );
    }
    // Deleting one removes only that one.
    let (gone, kept) = (&keys[6], &keys[7]);
    op(format!("delete {gone:?}"), s.delete(gone)).await?;
    ensure_eq!(
        op(format!("get {gone:?}"), s.get(gone)).await?,
        None::<Vec<u8>>,
        "get of {gone:?} after deleting it"
    );
    ensure_eq!(
        op(format!("get {kept:?}"), s.get(kept)).await?,
        Some(b"value 7".to_vec()),
        "get of {kept:?} after deleting {gone:?}"
    );
    Ok(())
}

/// `clear` removes every key this store wrote (and the store is usable afterwards).
pub(crate) async fn clear_removes_every_key<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    let mut keys = unusual_keys();
    keys.extend((0..20).map(|i| format!("kit:clear:{i}")));
    for key in &keys {
        op(format!("set {key:?}"), s.set(key, b"v")).await?;
    }
    op("clear", s.clear()).await?;
    for key in &keys {
        ensure_eq!(
            op(format!("get {key:?}"), s.get(key)).await?,
            None::<Vec<u8>>,
            "get of {key:?} after clear"
        );
        ensure!(
            !op(format!("exists {key:?}"), s.exists(key)).await?,
            "exists of {key:?} after clear returned true"
        );
    }
    op("set after clear", s.set("kit:after-clear", b"v")).await?;
    ensure_eq!(
        op("get", s.get("kit:after-clear")).await?,
        Some(b"v".to_vec()),
        "get of a key written after clear"
    );
    Ok(())
}

/// Two stores from `make` (two prefixes on one server): `clear` on one leaves the other's keys.
pub(crate) async fn clear_leaves_other_instances_alone<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let (a, b) = (&stores.a, &stores.b()?);
    op("set in store A", a.set("kit:same-key", b"a")).await?;
    op("set in store B", b.set("kit:same-key", b"b")).await?;
    op("set in store B", b.set("kit:only-b", b"b")).await?;
    ensure_eq!(
        op("get from store A", a.get("kit:same-key")).await?,
        Some(b"a".to_vec()),
        "two stores from make() share keys (store B's write of a key replaced store A's): \
         each make() must return a fresh store of its own"
    );
    op("clear store A", a.clear()).await?;
    ensure_eq!(
        op("get from store A", a.get("kit:same-key")).await?,
        None::<Vec<u8>>,
        "store A's key after clearing store A"
    );
    for key in ["kit:same-key", "kit:only-b"] {
        ensure_eq!(
            op(format!("get {key} from store B"), b.get(key)).await?,
            Some(b"b".to_vec()),
            "store B's {key} after clearing store A (clear must remove only its own keys)"
        );
    }
    Ok(())
}
