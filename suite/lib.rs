//! Shared fixtures for the workspace's tests, benches and examples (not published).
//!
//! The root package exists to host `examples/`, `tests/` and `benches/`; this library holds the
//! event generators they share so every bench measures the same input.

use serde::{Deserialize, Serialize};

/// A keyed event with an amount, as in the user documentation's Quick Start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEvent {
    /// The key.
    pub user_id: String,
    /// Amount of the event.
    pub amount: f64,
    /// Seconds since the epoch.
    pub timestamp: u64,
}

/// `n` events spread over `keys` users (`user-0` ...), in a fixed pseudo-random order.
pub fn keyed_events(n: usize, keys: usize) -> Vec<UserEvent> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            // xorshift: reproducible without a rand dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            UserEvent {
                user_id: format!("user-{}", x % keys.max(1) as u64),
                amount: (i % 100) as f64,
                timestamp: i as u64,
            }
        })
        .collect()
}
