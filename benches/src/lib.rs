//! Benches only; see `keyed_counter.rs`.
