//! Bytes per live entry of `InMemoryState`, beside a `HashMap<String, Vec<u8>>` holding the same
//! keys and values, measured as the growth of the process's resident set.
//! Run: `cargo bench -p rs2-benches --bench memory_per_entry`.

use std::collections::HashMap;

use rs2::state::{InMemoryState, LocalStorage, StateConfig};

const KEYS: usize = 1_000_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn key(i: usize) -> String {
    format!("user-{i}")
}

fn main() {
    // `cargo bench` passes `--bench`; this measurement takes no options.
    let value = postcard_u64(12_345);

    let before = rss_bytes();
    let store = InMemoryState::new(&StateConfig::new().max_size(usize::MAX));
    let now = store.now_ms();
    for i in 0..KEYS {
        let k = key(i);
        store
            .write(store.hash_key(&k), &k, now, &value)
            .expect("in-memory write");
    }
    let store_bytes = rss_bytes().saturating_sub(before);
    assert_eq!(store.len(), KEYS);

    let before = rss_bytes();
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..KEYS {
        map.insert(key(i), value.clone());
    }
    let map_bytes = rss_bytes().saturating_sub(before);

    println!(
        "InMemoryState: {:.0} bytes per entry ({KEYS} keys like \"user-123456\", u64 values)",
        store_bytes as f64 / KEYS as f64
    );
    println!(
        "HashMap<String, Vec<u8>>: {:.0} bytes per entry (same keys and values)",
        map_bytes as f64 / KEYS as f64
    );
    drop(map);
    drop(store);
}

/// A u64 counter as the default codec stores it.
fn postcard_u64(n: u64) -> Vec<u8> {
    use rs2::state::Codec;
    let mut buf = Vec::new();
    rs2::state::Postcard::encode(&n, &mut buf).expect("encode");
    buf
}
