//! How one value lies on disk, and the compaction filter that drops expired ones.
//!
//! A record is `[FORMAT][expires_at: u64 LE][value bytes]`: `expires_at` is the wall-clock
//! millisecond (since the Unix epoch) from which the value is no longer returned, `u64::MAX`
//! for a value without expiry. The format byte lets a later version change the layout and
//! lets a read tell a record of ours from foreign bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use lsm_tree::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};

/// The layout byte of records written by this version.
const FORMAT: u8 = 1;
/// Bytes before the value.
pub(crate) const HEADER: usize = 9;
/// `expires_at` of a value that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// Appends the record of `value` to `out`.
pub(crate) fn encode(value: &[u8], expires_at: u64, out: &mut Vec<u8>) {
    out.reserve(HEADER + value.len());
    out.push(FORMAT);
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(value);
}

/// A record's expiry and value, or why it is not one of ours.
pub(crate) fn decode(record: &[u8]) -> Result<(u64, &[u8]), String> {
    match record {
        [FORMAT, rest @ ..] if rest.len() >= HEADER - 1 => {
            let (stamp, value) = rest.split_at(HEADER - 1);
            let mut expires_at = [0u8; 8];
            expires_at.copy_from_slice(stamp);
            Ok((u64::from_le_bytes(expires_at), value))
        }
        [FORMAT, ..] => Err(format!(
            "the stored record is {} bytes, shorter than its {HEADER}-byte header",
            record.len()
        )),
        [other, ..] => Err(format!(
            "the stored record has layout {other}, which this version (layout {FORMAT}) cannot read"
        )),
        [] => Err("the stored record is empty".to_string()),
    }
}

/// The expiry of `ttl` from `now_ms` (`NEVER` without one).
pub(crate) fn expiry(now_ms: u64, ttl: Option<std::time::Duration>) -> u64 {
    match ttl {
        Some(ttl) => now_ms
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .min(NEVER - 1),
        None => NEVER,
    }
}

/// Builds one [`ExpiryFilter`] per compaction.
pub(crate) struct ExpiryFilterFactory;

impl Factory for ExpiryFilterFactory {
    fn name(&self) -> &str {
        "rs2-expiry"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        // Wall-clock time, read once per compaction: expiry stamps are wall-clock times that
        // outlive the process (the store's clock only follows tokio's paused time in tests).
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Box::new(ExpiryFilter { now_ms })
    }
}

/// Removes records whose expiry has passed when compaction rewrites them, so expired state
/// gives its disk space back without a sweep. Records it cannot read are kept.
struct ExpiryFilter {
    now_ms: u64,
}

impl CompactionFilter for ExpiryFilter {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> lsm_tree::Result<Verdict> {
        let value = item.value()?;
        Ok(match decode(&value) {
            Ok((expires_at, _)) if expires_at <= self.now_ms => Verdict::Remove,
            _ => Verdict::Keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_bytes_are_refused() {
        let mut out = Vec::new();
        encode(b"abc", 42, &mut out);
        assert_eq!(decode(&out), Ok((42, &b"abc"[..])));
        out.clear();
        encode(b"", NEVER, &mut out);
        assert_eq!(decode(&out), Ok((NEVER, &b""[..])));
        assert!(decode(&out[..5]).unwrap_err().contains("shorter"));
        assert!(decode(&[7, 0, 0]).unwrap_err().contains("layout 7"));
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expiry(10, None), NEVER);
        assert_eq!(expiry(10, Some(std::time::Duration::from_millis(5))), 15);
        assert_eq!(expiry(10, Some(std::time::Duration::MAX)), NEVER - 1);
    }
}
