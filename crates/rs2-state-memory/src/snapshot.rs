//! Snapshot and restore: [`InMemoryState::snapshot_to`] and [`InMemoryState::restore_from`].
//!
//! The file format (all integers little-endian):
//!
//! ```text
//! header   magic b"RS2SNAP\n" (8 bytes) | format version u32 (1) | entry count u64
//! entries  key length u32 | key bytes (UTF-8) | value length u32 | value bytes | remaining TTL u64 ms
//!          (least recently used first; remaining TTL u64::MAX = never expires)
//! trailer  FNV-1a 64 of every byte before it, u64
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rs2_state_core::{StateError, StateResult};

use crate::InMemoryState;

const MAGIC: &[u8; 8] = b"RS2SNAP\n";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;
const CHECKSUM_LEN: usize = 8;
/// The remaining TTL written for an entry that never expires (and read back as such).
const NEVER: u64 = u64::MAX;

impl InMemoryState {
    /// Writes every live entry with its remaining time to live to `path` atomically; returns
    /// how many entries it wrote.
    ///
    /// * **Atomic write.** The snapshot goes to a temp file in the same directory
    ///   (`<name>.tmp-<pid>-<n>`), written through a `BufWriter`, `sync_all`ed, then renamed
    ///   over `path`; then the directory is fsynced (opened and `sync_all`ed; where a directory
    ///   cannot be opened, as on Windows, that step is skipped). A crash at any point leaves
    ///   either the old snapshot or the new one at `path`, never a mix. On any error the temp
    ///   file is removed and a [`StateError::Storage`] names `path` and the cause.
    /// * **Consistency.** The snapshot is the store at one instant: it takes every lock of the
    ///   store while it copies the live entries into one buffer (in the file's format), so
    ///   writers and readers wait for the copy (tens of milliseconds per 100,000 entries), not
    ///   for the disk. Memory: that buffer, about the size of the file, until the call returns.
    /// * **Live entries, in recency order.** Only entries unexpired at the snapshot's `now` are
    ///   written, least recently used first, so [`restore_from`](Self::restore_from) rebuilds
    ///   the same eviction order.
    /// * **Remaining TTL.** Each entry carries its remaining time to live in ms,
    ///   `expires_at - now`; an entry that never expires (a store whose `ttl` is
    ///   `Duration::MAX`) is written with `u64::MAX` and stays never-expiring on restore.
    ///
    /// The format, all integers little-endian: a header of the magic bytes `b"RS2SNAP\n"`, the
    /// format version `u32` (1) and the entry count `u64`; then per entry the key length `u32`,
    /// the key's UTF-8 bytes, the value length `u32`, the value bytes and the remaining TTL
    /// `u64` ms; then an 8-byte FNV-1a 64 checksum of every byte before it. A key or value
    /// longer than `u32::MAX` bytes cannot be written: [`StateError::Validation`], and nothing
    /// is written.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use rs2_state_core::{StateConfig, StateStorage};
    /// use rs2_state_memory::InMemoryState;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("state.snap");
    /// let config = StateConfig::new().max_size(1_000);
    ///
    /// let store = InMemoryState::new(&config);
    /// store.set("a", b"1").await.unwrap();
    /// store.set("b", b"2").await.unwrap();
    /// assert_eq!(store.snapshot_to(&path).unwrap(), 2);
    ///
    /// // After a restart:
    /// let store = InMemoryState::new(&config);
    /// assert_eq!(store.restore_from(&path).unwrap(), 2);
    /// assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
    /// assert_eq!(store.get("b").await.unwrap(), Some(b"2".to_vec()));
    /// # });
    /// ```
    pub fn snapshot_to(&self, path: impl AsRef<Path>) -> StateResult<usize> {
        let path = path.as_ref();
        let (count, body) = self.copy_live_entries(path)?;
        write_atomically(path, count, &body)?;
        Ok(count)
    }

    /// Loads the snapshot at `path` (written by [`snapshot_to`](Self::snapshot_to)) into this
    /// store; returns how many entries it loaded.
    ///
    /// * **All or nothing.** The whole file is read and validated (magic bytes, format
    ///   version, every length within the file, the entry count, no trailing bytes, the
    ///   checksum, UTF-8 keys) before the store is touched. A missing or unreadable file, a
    ///   corrupt byte anywhere, a truncated file or a wrong magic or version is a
    ///   [`StateError::Storage`]; a snapshot with more entries than this store's `max_size`
    ///   is a [`StateError::Validation`]. Each message names the file and what is wrong, and
    ///   nothing is loaded: the store is unchanged. The file is read into memory (lengths are
    ///   checked against the file's size, so a corrupt length allocates nothing).
    /// * **Remaining TTL.** An entry expires its remaining TTL (as of the snapshot) after the
    ///   restore's `now`: the time between the snapshot and the restore (the process being
    ///   down) does not count against it. An entry that never expired still never expires.
    /// * **Recency.** The entries are inserted in the snapshot's order, all under the store's
    ///   locks (readers and writers wait, then see all of them; the insertion costs about what
    ///   as many `set`s of new keys do), so they become the most recently used keys with their
    ///   relative order kept: the key least recently used when the snapshot was taken is the
    ///   first of them to be evicted.
    /// * **A non-empty store.** Entries in the snapshot replace the values (and expiries) of
    ///   the same keys; other keys stay, ahead of the restored ones in the eviction order. If
    ///   the total exceeds `max_size`, the least recently used of those other keys are evicted
    ///   (never a restored one, since the snapshot holds at most `max_size` entries).
    ///
    /// See [`snapshot_to`](Self::snapshot_to) for the format and a round trip.
    pub fn restore_from(&self, path: impl AsRef<Path>) -> StateResult<usize> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| {
            StateError::Storage(format!(
                "snapshot {} could not be read ({e}); nothing was loaded, the store is \
                 unchanged. Check the path, or start without a snapshot",
                path.display()
            ))
        })?;
        let count = validate(&bytes).map_err(|what| {
            StateError::Storage(format!(
                "snapshot {} {what}; it was not loaded, the store is unchanged. Restore an \
                 intact snapshot, or start without one",
                path.display()
            ))
        })?;
        let mut store = self.lock_all();
        if let Some(max) = store.max_size().filter(|&max| count > max) {
            return Err(StateError::Validation(format!(
                "snapshot {} holds {count} entries, more than this store's max_size of {max}; \
                 it was not loaded, the store is unchanged. Restore it into a store with \
                 max_size of at least {count}",
                path.display()
            )));
        }
        store.reserve(count);
        let now = store.now_ms();
        // Validated above: every record is whole and every key UTF-8.
        for (key, value, remaining) in Records::new(&bytes, count).map_while(Result::ok) {
            let Ok(key) = std::str::from_utf8(key) else {
                continue;
            };
            let expires_at_ms = match remaining {
                NEVER => NEVER,
                remaining => now.saturating_add(remaining),
            };
            store.insert(key, value, expires_at_ms);
        }
        Ok(count)
    }

    /// The live entries at one instant, least recently used first, as the file's entry records.
    fn copy_live_entries(&self, path: &Path) -> StateResult<(usize, Vec<u8>)> {
        let store = self.lock_all();
        let now = store.now_ms();
        let mut body = Vec::with_capacity(store.len().saturating_mul(48));
        let mut count = 0usize;
        let mut too_long = None;
        store.for_each_in_recency_order(|key, value, expires_at_ms| {
            if now >= expires_at_ms || too_long.is_some() {
                return;
            }
            let (Ok(key_len), Ok(value_len)) =
                (u32::try_from(key.len()), u32::try_from(value.len()))
            else {
                too_long = Some(String::from_utf8_lossy(key).into_owned());
                return;
            };
            let remaining = match expires_at_ms {
                NEVER => NEVER,
                expires_at_ms => expires_at_ms - now,
            };
            body.extend_from_slice(&key_len.to_le_bytes());
            body.extend_from_slice(key);
            body.extend_from_slice(&value_len.to_le_bytes());
            body.extend_from_slice(value);
            body.extend_from_slice(&remaining.to_le_bytes());
            count += 1;
        });
        drop(store);
        match too_long {
            Some(key) => Err(StateError::Validation(format!(
                "snapshot {}: key '{key}' or its value is longer than {} bytes, the most the \
                 snapshot format holds; nothing was written",
                path.display(),
                u32::MAX
            ))),
            None => Ok((count, body)),
        }
    }
}

/// Writes the header, `body` and checksum to a temp file beside `path` and renames it over
/// `path` (see [`InMemoryState::snapshot_to`]).
fn write_atomically(path: &Path, count: usize, body: &[u8]) -> StateResult<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let fail = |cause: String| {
        StateError::Storage(format!(
            "snapshot {} was not written ({cause}); the file at that path, if any, is unchanged",
            path.display()
        ))
    };
    let Some(name) = path.file_name() else {
        return Err(fail("the path names no file".into()));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..].copy_from_slice(&(count as u64).to_le_bytes());
    let mut checksum = Fnv1a64::new();
    checksum.update(&header);
    checksum.update(body);

    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| fail(format!("creating the temp file {}: {e}", tmp.display())))?;
    let written = write_and_rename(
        file,
        &tmp,
        path,
        &[&header, body, &checksum.finish().to_le_bytes()],
    );
    if let Err(cause) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(cause));
    }
    // The rename is durable once the directory is synced. A directory that cannot be opened
    // (Windows) is skipped; a failed sync of an opened one is reported.
    if let Ok(dir_file) = File::open(dir) {
        dir_file.sync_all().map_err(|e| {
            StateError::Storage(format!(
                "snapshot {} was written, but syncing its directory {} failed ({e}); a crash \
                 now may leave the previous snapshot in its place",
                path.display(),
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Writes `parts` to `file` (the temp file `tmp`), syncs it and renames it over `path`.
fn write_and_rename(file: File, tmp: &Path, path: &Path, parts: &[&[u8]]) -> Result<(), String> {
    let step = |what: &'static str| move |e: io::Error| format!("{what} {}: {e}", tmp.display());
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for part in parts {
        out.write_all(part).map_err(step("writing"))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| step("writing")(e.into_error()))?;
    file.sync_all().map_err(step("syncing"))?;
    drop(file);
    fs::rename(tmp, path).map_err(|e| format!("renaming {} over it: {e}", tmp.display()))
}

/// Checks a whole snapshot file; returns its entry count, or what is wrong with it.
fn validate(bytes: &[u8]) -> Result<usize, String> {
    let len = bytes.len();
    if len == 0 {
        return Err("is empty (0 bytes)".into());
    }
    let magic_len = len.min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(format!(
            "is not an rs2 InMemoryState snapshot: it does not start with the magic bytes {:?}",
            std::str::from_utf8(MAGIC).unwrap_or_default()
        ));
    }
    if len < HEADER_LEN {
        return Err(format!(
            "is truncated: it has {len} bytes, fewer than the {HEADER_LEN}-byte header"
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version != VERSION {
        return Err(format!(
            "has format version {version}; this build reads version {VERSION} only (or the \
             file is corrupt)"
        ));
    }
    let announced = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    // No allocation depends on the count: a corrupt one ends the walk below at the file's end.
    let count = usize::try_from(announced).map_err(|_| {
        format!("is corrupt: its header announces {announced} entries, more than this machine can address")
    })?;
    let mut records = Records::new(bytes, count);
    for (whole, record) in records.by_ref().enumerate() {
        record.map_err(|()| {
            format!(
                "is truncated or corrupt: its header announces {count} entries, but the file \
                 ends inside entry {} (after {whole} whole entries)",
                whole + 1
            )
        })?;
    }
    let rest = len - records.pos;
    if rest < CHECKSUM_LEN {
        return Err(format!(
            "is truncated: all {count} entries are there, but the file ends {rest} bytes into \
             the {CHECKSUM_LEN}-byte checksum"
        ));
    }
    if rest > CHECKSUM_LEN {
        return Err(format!(
            "is corrupt: {} bytes follow the {count} entries its header announces, where only \
             the {CHECKSUM_LEN}-byte checksum belongs",
            rest - CHECKSUM_LEN
        ));
    }
    let (content, stored) = bytes.split_at(len - CHECKSUM_LEN);
    let stored = u64::from_le_bytes(stored.try_into().unwrap_or_default());
    let mut checksum = Fnv1a64::new();
    checksum.update(content);
    let computed = checksum.finish();
    if stored != computed {
        return Err(format!(
            "is corrupt: its checksum does not match its contents (stored {stored:#018x}, \
             computed {computed:#018x})"
        ));
    }
    for (i, record) in Records::new(bytes, count).enumerate() {
        if let Ok((key, _, _)) = record {
            if std::str::from_utf8(key).is_err() {
                return Err(format!(
                    "is corrupt: the key of entry {} is not UTF-8",
                    i + 1
                ));
            }
        }
    }
    Ok(count)
}

/// The entry records of a snapshot file, `(key, value, remaining TTL)`; `Err(())` for a record
/// that runs past the end of the file (and nothing after it).
struct Records<'a> {
    bytes: &'a [u8],
    /// Where the next record starts.
    pos: usize,
    left: usize,
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8], count: usize) -> Self {
        Self {
            bytes,
            pos: HEADER_LEN,
            left: count,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ()> {
        let end = self.pos.checked_add(n).ok_or(())?;
        let slice = self.bytes.get(self.pos..end).ok_or(())?;
        self.pos = end;
        Ok(slice)
    }

    fn take_u32(&mut self) -> Result<usize, ()> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn record(&mut self) -> Result<(&'a [u8], &'a [u8], u64), ()> {
        let key_len = self.take_u32()?;
        let key = self.take(key_len)?;
        let value_len = self.take_u32()?;
        let value = self.take(value_len)?;
        let remaining = self.take(8)?;
        let remaining = u64::from_le_bytes(remaining.try_into().map_err(|_| ())?);
        Ok((key, value, remaining))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(&'a [u8], &'a [u8], u64), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let record = self.record();
        if record.is_err() {
            self.left = 0;
        }
        Some(record)
    }
}

/// FNV-1a, 64 bits: a one-byte change anywhere changes the sum (each step is a bijection).
struct Fnv1a64(u64);

impl Fnv1a64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        let mut hash = self.0;
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        let sum = |bytes: &[u8]| {
            let mut h = Fnv1a64::new();
            h.update(bytes);
            h.finish()
        };
        assert_eq!(sum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(sum(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(sum(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
