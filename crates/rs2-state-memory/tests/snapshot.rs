//! `InMemoryState::snapshot_to` / `restore_from`: round trips, remaining TTLs, recency order,
//! all-or-nothing restores of damaged files, and atomic replacement.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rs2_state_core::{StateConfig, StateError, StateStorage};
use rs2_state_memory::InMemoryState;
use tokio::time::advance;

fn config(max_size: usize, ttl: Duration) -> StateConfig {
    StateConfig::new()
        .max_size(max_size)
        .ttl(ttl)
        .cleanup_interval(Duration::from_secs(1))
}

fn store(max_size: usize) -> InMemoryState {
    InMemoryState::new(&config(max_size, Duration::from_secs(3600)))
}

async fn get(store: &InMemoryState, key: &str) -> Option<Vec<u8>> {
    store.get(key).await.expect("in-memory get")
}

async fn set(store: &InMemoryState, key: &str, value: &[u8]) {
    store.set(key, value).await.expect("in-memory set");
}

/// The store's entries, order and remaining TTLs as snapshot bytes (a store's whole observable
/// state at this instant; taking it changes nothing).
fn dump(store: &InMemoryState) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dump.snap");
    store.snapshot_to(&path).expect("dump");
    std::fs::read(&path).expect("read dump")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A store holding keys other than the snapshot's, to show a failed restore leaves it alone.
async fn bystander() -> InMemoryState {
    let store = store(1_000);
    set(&store, "x", b"1").await;
    set(&store, "y", &[7; 40]).await;
    set(&store, "a", b"old").await; // also in the snapshots below
    store
}

/// `restore_from(path)` into the bystander fails, naming `path`, and changes nothing.
async fn assert_rejected(path: &Path) -> StateError {
    let store = bystander().await;
    let before = dump(&store);
    let err = store
        .restore_from(path)
        .expect_err("a damaged snapshot must not load");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message must name the file: {msg}"
    );
    assert!(msg.contains("store is unchanged"), "{msg}");
    assert_eq!(dump(&store), before, "the store changed: {msg}");
    assert_eq!(store.len(), 3);
    assert_eq!(get(&store, "x").await, Some(b"1".to_vec()));
    assert_eq!(get(&store, "y").await, Some(vec![7; 40]));
    assert_eq!(get(&store, "a").await, Some(b"old".to_vec()));
    assert_eq!(get(&store, "b").await, None);
    err
}

/// A small snapshot (keys a, b, c) in a temp dir.
async fn small_snapshot() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let source = store(1_000);
    set(&source, "a", b"new").await;
    set(&source, "b", &[9; 30]).await;
    set(&source, "ключ-c", b"").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("small.snap");
    assert_eq!(source.snapshot_to(&path).expect("snapshot"), 3);
    let bytes = std::fs::read(&path).expect("read");
    (dir, path, bytes)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `bytes` with its trailing checksum recomputed (so only the edit under test is wrong).
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 8;
    let sum = fnv1a64(&bytes[..end]);
    bytes[end..].copy_from_slice(&sum.to_le_bytes());
    bytes
}

#[tokio::test(start_paused = true)]
async fn a_round_trip_of_100_000_entries_keeps_every_value_and_the_remaining_ttls() {
    const N: usize = 100_000;
    let ttl = Duration::from_secs(60);
    let key = |i: usize| {
        if i % 7 == 0 {
            format!("a-key-long-enough-to-live-on-the-heap-{i}")
        } else {
            format!("k{i}")
        }
    };
    let value = |i: usize| {
        if i % 10 == 0 {
            vec![(i % 251) as u8; 40 + i % 13]
        } else {
            (i as u64).to_le_bytes().to_vec()
        }
    };
    let original = InMemoryState::new(&config(2 * N, ttl));
    for i in 0..N / 2 {
        set(&original, &key(i), &value(i)).await;
    }
    advance(Duration::from_secs(40)).await;
    for i in N / 2..N {
        set(&original, &key(i), &value(i)).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.snap");
    assert_eq!(original.snapshot_to(&path).expect("snapshot"), N);
    drop(original);

    // Down for ten minutes: that time does not count against the remaining TTLs.
    advance(Duration::from_secs(600)).await;
    let restored = InMemoryState::new(&config(2 * N, ttl));
    assert_eq!(restored.restore_from(&path).expect("restore"), N);
    assert_eq!(restored.len(), N);
    for i in 0..N {
        assert_eq!(get(&restored, &key(i)).await, Some(value(i)), "key {i}");
    }

    // The first half had 20 s left at the snapshot, the second 60 s.
    advance(Duration::from_secs(19)).await;
    assert_eq!(get(&restored, &key(1)).await, Some(value(1)));
    advance(Duration::from_secs(11)).await; // 30 s after the restore
    for i in 0..N {
        let got = get(&restored, &key(i)).await;
        if i < N / 2 {
            assert_eq!(got, None, "key {i} (20 s left) should have expired");
        } else {
            assert_eq!(got, Some(value(i)), "key {i} (60 s left) should be live");
        }
    }
    restored.cleanup();
    assert_eq!(restored.len(), N / 2);
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_not_written_and_never_expiring_ones_stay_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.snap");

    let short = InMemoryState::new(&config(100, Duration::from_secs(10)));
    set(&short, "old", b"1").await;
    advance(Duration::from_secs(6)).await;
    set(&short, "new", b"2").await;
    advance(Duration::from_secs(5)).await; // "old" expired, not yet cleaned up
    assert_eq!(short.len(), 2);
    assert_eq!(short.snapshot_to(&path).expect("snapshot"), 1);

    let forever = InMemoryState::new(&config(100, Duration::MAX));
    set(&forever, "k", b"v").await;
    assert_eq!(forever.snapshot_to(&path).expect("snapshot"), 1);
    let restored = InMemoryState::new(&config(100, Duration::from_secs(10)));
    assert_eq!(restored.restore_from(&path).expect("restore"), 1);
    advance(Duration::from_secs(10 * 365 * 86_400)).await;
    assert_eq!(get(&restored, "k").await, Some(b"v".to_vec()));
}

#[tokio::test(start_paused = true)]
async fn a_restore_rebuilds_the_eviction_order() {
    let original = store(5);
    for k in ["a", "b", "c", "d", "e"] {
        set(&original, k, k.as_bytes()).await;
    }
    // max_size 5: a use moves a key at least 2 operations old.
    assert!(get(&original, "a").await.is_some()); // b c d e a
    assert!(get(&original, "c").await.is_some()); // b d e a c
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.snap");
    assert_eq!(original.snapshot_to(&path).expect("snapshot"), 5);

    let restored = store(5);
    assert_eq!(restored.restore_from(&path).expect("restore"), 5);
    for s in [&original, &restored] {
        set(s, "f", b"f").await; // evicts b
        assert_eq!(get(s, "b").await, None);
        set(s, "g", b"g").await; // evicts d
        assert_eq!(get(s, "d").await, None);
        for k in ["e", "a", "c", "f", "g"] {
            assert_eq!(get(s, k).await, Some(k.as_bytes().to_vec()), "{k}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_restore_into_a_non_empty_store_replaces_its_keys_and_keeps_the_others() {
    let (_dir, path, _) = small_snapshot().await;
    let store = bystander().await;
    assert_eq!(store.restore_from(&path).expect("restore"), 3);
    assert_eq!(store.len(), 5);
    assert_eq!(get(&store, "a").await, Some(b"new".to_vec()));
    assert_eq!(get(&store, "b").await, Some(vec![9; 30]));
    assert_eq!(get(&store, "ключ-c").await, Some(Vec::new()));
    assert_eq!(get(&store, "x").await, Some(b"1".to_vec()));
    assert_eq!(get(&store, "y").await, Some(vec![7; 40]));

    // Full: the store's own least recently used keys make room; restored keys all stay.
    let full = InMemoryState::new(&config(4, Duration::from_secs(3600)));
    for k in ["x1", "x2", "x3", "x4"] {
        set(&full, k, b"x").await;
    }
    assert_eq!(full.restore_from(&path).expect("restore"), 3);
    assert_eq!(full.len(), 4);
    for (k, present) in [("x1", false), ("x2", false), ("x3", false), ("x4", true)] {
        assert_eq!(get(&full, k).await.is_some(), present, "{k}");
    }
    for k in ["a", "b", "ключ-c"] {
        assert!(get(&full, k).await.is_some(), "{k}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_flipped_byte_anywhere_is_rejected_and_the_store_is_unchanged() {
    // One byte in the middle of a 100-entry snapshot.
    let source = store(1_000);
    for i in 0..100 {
        set(
            &source,
            &format!("key-{i}"),
            format!("value-{i}").as_bytes(),
        )
        .await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.snap");
    source.snapshot_to(&path).expect("snapshot");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");
    let err = assert_rejected(&path).await;
    assert!(matches!(err, StateError::Storage(_)), "{err}");

    // Every byte of a small one.
    let (_dir, path, bytes) = small_snapshot().await;
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= flip;
            std::fs::write(&path, &corrupt).expect("write");
            assert_rejected(&path).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_truncated_snapshot_is_rejected_and_the_store_is_unchanged() {
    let (_dir, path, bytes) = small_snapshot().await;
    let len = bytes.len();
    // Empty, inside the magic, inside the header, inside the first entry's key, inside the
    // last entry's TTL, just before the checksum, inside the checksum.
    for cut in [0, 5, 13, 20 + 5, len - 8 - 3, len - 8, len - 3] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let msg = assert_rejected(&path).await.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("empty"),
            "cut at {cut}: {msg}"
        );
    }
    // Trailing bytes after the checksum.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&path, &longer).expect("write");
    assert_rejected(&path).await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_magic_or_version_is_rejected() {
    let (_dir, path, bytes) = small_snapshot().await;
    let mut magic = bytes.clone();
    magic[..8].copy_from_slice(b"NOTSNAP\n");
    std::fs::write(&path, resealed(magic)).expect("write");
    let msg = assert_rejected(&path).await.to_string();
    assert!(msg.contains("not an rs2"), "{msg}");

    let mut version = bytes.clone();
    version[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, resealed(version)).expect("write");
    let msg = assert_rejected(&path).await.to_string();
    assert!(msg.contains("format version 2"), "{msg}");

    // A count that disagrees with the entries, checksum intact.
    for count in [2u64, 4, u64::MAX] {
        let mut wrong = bytes.clone();
        wrong[12..20].copy_from_slice(&count.to_le_bytes());
        std::fs::write(&path, resealed(wrong)).expect("write");
        assert_rejected(&path).await;
    }

    // A key that is not UTF-8, checksum intact: [len u32][key]... at offset 20.
    let mut utf8 = bytes.clone();
    utf8[24] = 0xff;
    std::fs::write(&path, resealed(utf8)).expect("write");
    let msg = assert_rejected(&path).await.to_string();
    assert!(msg.contains("not UTF-8"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_larger_than_max_size_is_rejected_and_the_store_is_unchanged() {
    let source = store(100);
    for i in 0..10 {
        set(&source, &format!("k{i}"), b"v").await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ten.snap");
    assert_eq!(source.snapshot_to(&path).expect("snapshot"), 10);

    let small = InMemoryState::new(&config(5, Duration::from_secs(3600)));
    set(&small, "mine", b"1").await;
    let before = dump(&small);
    let err = small.restore_from(&path).expect_err("too many entries");
    assert!(err.is_validation(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("max_size of 5"), "{msg}");
    assert_eq!(dump(&small), before);
    assert_eq!(small.len(), 1);
    assert_eq!(get(&small, "mine").await, Some(b"1".to_vec()));

    // Exactly max_size entries fit.
    let ten = store(10);
    assert_eq!(ten.restore_from(&path).expect("restore"), 10);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_replaces_the_previous_file_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.snap");
    let source = store(100);
    set(&source, "a", b"1").await;
    assert_eq!(source.snapshot_to(&path).expect("first"), 1);
    set(&source, "a", b"2").await;
    set(&source, "b", b"3").await;
    assert_eq!(source.snapshot_to(&path).expect("second"), 2);
    assert_eq!(files_in(dir.path()), ["state.snap"]);

    let restored = store(100);
    assert_eq!(restored.restore_from(&path).expect("restore"), 2);
    assert_eq!(get(&restored, "a").await, Some(b"2".to_vec()));
    assert_eq!(get(&restored, "b").await, Some(b"3".to_vec()));

    // A relative path (its directory is ".") works the same.
    let cwd = std::env::current_dir().expect("cwd");
    std::env::set_current_dir(dir.path()).expect("cd");
    let relative = source.snapshot_to("relative.snap");
    std::env::set_current_dir(cwd).expect("cd back");
    assert_eq!(relative.expect("relative snapshot"), 2);
    assert_eq!(files_in(dir.path()), ["relative.snap", "state.snap"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_snapshot_names_the_path_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = store(100);
    set(&source, "a", b"1").await;

    // The rename fails: a non-empty directory stands at the path.
    let blocked = dir.path().join("blocked.snap");
    std::fs::create_dir(&blocked).expect("mkdir");
    std::fs::write(blocked.join("inside"), b"x").expect("write");
    let msg = source
        .snapshot_to(&blocked)
        .expect_err("cannot rename over a directory")
        .to_string();
    assert!(msg.contains(&blocked.display().to_string()), "{msg}");
    assert_eq!(files_in(dir.path()), ["blocked.snap"]);

    // The directory does not exist.
    let nowhere = dir.path().join("missing-dir").join("s.snap");
    let msg = source
        .snapshot_to(&nowhere)
        .expect_err("no such directory")
        .to_string();
    assert!(msg.contains(&nowhere.display().to_string()), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("never-written.snap");
    let err = assert_rejected(&path).await;
    assert!(matches!(err, StateError::Storage(_)), "{err}");
    assert!(err.to_string().contains("could not be read"), "{err}");
}

/// A writer sets 16 keys to the same counter, one after another; at any instant the values,
/// in key order, step down by at most one. A snapshot copied shard by shard would not.
#[test]
fn a_snapshot_is_one_instant_of_the_store_under_concurrent_writers() {
    const KEYS: usize = 16;
    let source = store(1_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (source, stop) = (source.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                for k in 0..KEYS {
                    futures::executor::block_on(source.set(&format!("k{k}"), &n.to_le_bytes()))
                        .expect("set");
                }
            }
        })
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.snap");
    let mut seen = 0;
    for _ in 0..200 {
        let count = source.snapshot_to(&path).expect("snapshot");
        if count < KEYS {
            continue; // the first round of writes is not complete yet
        }
        seen += 1;
        let restored = store(1_000);
        restored.restore_from(&path).expect("restore");
        let values: Vec<u64> = (0..KEYS)
            .map(|k| {
                let v = futures::executor::block_on(restored.get(&format!("k{k}")))
                    .expect("get")
                    .expect("present");
                u64::from_le_bytes(v.try_into().expect("8 bytes"))
            })
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] >= w[1]) && values[0] - values[KEYS - 1] <= 1,
            "not one instant: {values:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(seen > 0);
}
