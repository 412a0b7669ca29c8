//! `get_many` / `set_many`.

use rs2_state_core::StateStorage;

use super::{ensure_eq, op, Checked, Stores};

/// `get_many` answers in the order asked, `None` for a missing key, a repeated key twice, and
/// nothing for no keys.
pub(crate) async fn get_many_answers_in_order_asked<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    op("set", s.set("kit:a", b"1")).await?;
    op("set", s.set("kit:b", b"22")).await?;
    op("set", s.set("kit:empty", b"")).await?;
    ensure_eq!(
        op(
            "get_many",
            s.get_many(&["kit:b", "kit:missing", "kit:a", "kit:empty"])
        )
        .await?,
        vec![
            Some(b"22".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(Vec::new())
        ],
        "get_many([kit:b, kit:missing, kit:a, kit:empty])"
    );
    ensure_eq!(
        op("get_many of no keys", s.get_many(&[])).await?,
        Vec::<Option<Vec<u8>>>::new(),
        "get_many(&[])"
    );
    ensure_eq!(
        op(
            "get_many of a repeated key",
            s.get_many(&["kit:a", "kit:a"])
        )
        .await?,
        vec![Some(b"1".to_vec()), Some(b"1".to_vec())],
        "get_many([kit:a, kit:a])"
    );
    ensure_eq!(
        op("get_many of missing keys", s.get_many(&["kit:x", "kit:y"])).await?,
        vec![None, None],
        "get_many of two missing keys"
    );
    Ok(())
}

/// `set_many` writes every entry (an empty value included); an empty batch is `Ok`.
pub(crate) async fn set_many_writes_every_entry<S: StateStorage + 'static>(
    stores: Stores<S>,
) -> Checked {
    let s = &stores.a;
    op("set", s.set("kit:y", b"old")).await?;
    let keys: Vec<String> = (0..50).map(|i| format!("kit:many:{i}")).collect();
    let values: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; usize::from(i)]).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("kit:x", b"1"), ("kit:y", b"22")];
    entries.extend(
        keys.iter()
            .map(String::as_str)
            .zip(values.iter().map(Vec::as_slice)),
    );
    op("set_many", s.set_many(&entries, None)).await?;
    for (key, value) in &entries {
        ensure_eq!(
            op(format!("get {key}"), s.get(key)).await?,
            Some(value.to_vec()),
            "{key} after set_many"
        );
    }
    op("set_many of no entries", s.set_many(&[], None)).await?;
    Ok(())
}
