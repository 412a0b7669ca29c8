//! State configuration: the four presets, the validating builder, direct setters, modifying a
//! preset, and one pipeline run with a custom config (small `max_size`, short TTL).
//!
//! Run: `cargo run --example custom_state_config_example` (about one second). Expected output:
//!
//! ```text
//! == 1. Presets ==
//! high_performance  ttl 1 h (3600 s)        cleanup 1 min (60 s)    max_size 10000    ok
//! session           ttl 30 min (1800 s)     cleanup 5 min (300 s)   max_size 1000     ok
//! short_lived       ttl 5 min (300 s)       cleanup 30 s (30 s)     max_size 100      ok
//! long_lived        ttl 7 days (604800 s)   cleanup 1 h (3600 s)    max_size 100000   ok
//!
//! == 2. StateConfigBuilder ==
//! valid:            ttl 1 h, cleanup 5 min, max_size 50000, InMemory
//! zero TTL:         Err(TTL cannot be zero)  ok
//! cleanup > TTL:    Err(Cleanup interval should be less than or equal to TTL)  ok
//! zero cleanup:     Err(Cleanup interval cannot be zero; ...)  ok
//! max_size 0:       Err(max_size cannot be zero; ...)  ok
//! (Display of the zero-TTL error: "invalid state configuration: TTL cannot be zero")
//!
//! == 3. Direct setters on StateConfig ==
//! ttl 10 min, cleanup 1 min, max_size 5000, InMemory, validate: Ok
//!
//! == 4. Modifying a preset ==
//! session():               ttl 30 min, cleanup 5 min, max_size 1000
//! session() modified:      ttl 2 h, cleanup 10 min, max_size 20000
//! session() with max_size = None (unbounded): Some(1000) -> None
//!
//! == 5. A pipeline with a custom config (max_size 2, ttl 500 ms, cleanup 100 ms) ==
//! alice -> visit 1 (expected 1: new key)
//! bob   -> visit 1 (expected 1: new key)
//! carol -> visit 1 (expected 1: new key; store full, evicts least recently used alice)
//! alice -> visit 1 (expected 1: was evicted; evicts bob)
//! carol -> visit 2 (expected 2: still held)
//!   ... 800 ms pause (longer than the 500 ms TTL) ...
//! carol -> visit 1 (expected 1: expired 500 ms after its last write)
//! pipeline: all 6 counts as expected
//! ```
//!
//! Every section checks itself; the example exits with status 1 if anything differs.
use std::time::Duration;

use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{
        CustomKeyExtractor, StateConfig, StateConfigBuilder, StateConfigs, StateError,
        StateStorageType, StatefulStreamExt,
    },
};

/// "1 h", "30 min", "7 days", "30 s", "500 ms".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn presets() -> bool {
    println!("== 1. Presets ==");
    // (name, config, the documented TTL / cleanup / max_size in seconds and entries)
    let presets = [
        (
            "high_performance",
            StateConfigs::high_performance(),
            3600,
            60,
            10_000,
        ),
        ("session", StateConfigs::session(), 1800, 300, 1_000),
        ("short_lived", StateConfigs::short_lived(), 300, 30, 100),
        (
            "long_lived",
            StateConfigs::long_lived(),
            604_800,
            3600,
            100_000,
        ),
    ];
    let mut ok = true;
    for (name, c, ttl, cleanup, max) in presets {
        let matches = c.ttl == Duration::from_secs(ttl)
            && c.cleanup_interval == Duration::from_secs(cleanup)
            && c.max_size == Some(max)
            && c.storage_type == StateStorageType::InMemory;
        ok &= matches;
        println!(
            "{name:<17} ttl {:<19} cleanup {:<15} max_size {:<7}  {}",
            format!("{} ({} s)", human(c.ttl), c.ttl.as_secs()),
            format!(
                "{} ({} s)",
                human(c.cleanup_interval),
                c.cleanup_interval.as_secs()
            ),
            c.max_size.map_or("none".to_string(), |n| n.to_string()),
            if matches { "ok" } else { "MISMATCH" }
        );
    }
    ok
}

/// Prints `label: Err(message)` and whether the message starts with `expected`.
fn expect_invalid(label: &str, result: Result<StateConfig, StateError>, expected: &str) -> bool {
    match result {
        Err(StateError::Validation(message)) => {
            let ok = message.starts_with(expected);
            let shown = if message == expected {
                message.clone()
            } else {
                format!("{expected}; ...")
            };
            println!(
                "{label:<17} Err({shown})  {}",
                if ok { "ok" } else { "MISMATCH" }
            );
            if !ok {
                println!("  actual message: {message}");
            }
            ok
        }
        Err(other) => {
            println!("{label:<17} unexpected error kind: {other}  MISMATCH");
            false
        }
        Ok(config) => {
            println!("{label:<17} accepted {config:?}  MISMATCH (expected an error)");
            false
        }
    }
}

fn builder() -> bool {
    println!("\n== 2. StateConfigBuilder ==");
    let mut ok = true;
    match StateConfigBuilder::new()
        .storage_type(StateStorageType::InMemory)
        .ttl(Duration::from_secs(3600))
        .cleanup_interval(Duration::from_secs(300))
        .max_size(50_000)
        .build()
    {
        Ok(c) => println!(
            "{:<17} ttl {}, cleanup {}, max_size {}, {:?}",
            "valid:",
            human(c.ttl),
            human(c.cleanup_interval),
            c.max_size.unwrap_or(usize::MAX),
            c.storage_type
        ),
        Err(e) => {
            println!("valid config rejected: {e}  MISMATCH");
            ok = false;
        }
    }

    ok &= expect_invalid(
        "zero TTL:",
        StateConfigBuilder::new().ttl(Duration::ZERO).build(),
        "TTL cannot be zero",
    );
    ok &= expect_invalid(
        "cleanup > TTL:",
        StateConfigBuilder::new()
            .ttl(Duration::from_secs(3600))
            .cleanup_interval(Duration::from_secs(7200))
            .build(),
        "Cleanup interval should be less than or equal to TTL",
    );
    ok &= expect_invalid(
        "zero cleanup:",
        StateConfigBuilder::new()
            .cleanup_interval(Duration::ZERO)
            .build(),
        "Cleanup interval cannot be zero",
    );
    ok &= expect_invalid(
        "max_size 0:",
        StateConfigBuilder::new().max_size(0).build(),
        "max_size cannot be zero",
    );
    if let Err(e) = StateConfigBuilder::new().ttl(Duration::ZERO).build() {
        println!("(Display of the zero-TTL error: \"{e}\")");
    }
    ok
}

fn direct_setters() -> bool {
    println!("\n== 3. Direct setters on StateConfig ==");
    let mut config = StateConfig::new();
    config = config.storage_type(StateStorageType::InMemory);
    config = config.ttl(Duration::from_secs(600));
    config = config.cleanup_interval(Duration::from_secs(60));
    config = config.max_size(5_000);
    // Setters do not validate; operators do, and so can you:
    let validation = config.validate();
    println!(
        "ttl {}, cleanup {}, max_size {}, {:?}, validate: {}",
        human(config.ttl),
        human(config.cleanup_interval),
        config.max_size.unwrap_or(usize::MAX),
        config.storage_type,
        match &validation {
            Ok(()) => "Ok".to_string(),
            Err(e) => format!("Err({e})"),
        }
    );
    validation.is_ok()
}

fn modify_preset() -> bool {
    println!("\n== 4. Modifying a preset ==");
    let base = StateConfigs::session();
    println!(
        "{:<24} ttl {}, cleanup {}, max_size {}",
        "session():",
        human(base.ttl),
        human(base.cleanup_interval),
        base.max_size.unwrap_or(usize::MAX)
    );
    // Start from a preset and change what differs (the setters consume and return the config).
    let modified = StateConfigs::session()
        .ttl(Duration::from_secs(2 * 3600))
        .cleanup_interval(Duration::from_secs(600))
        .max_size(20_000);
    println!(
        "{:<24} ttl {}, cleanup {}, max_size {}",
        "session() modified:",
        human(modified.ttl),
        human(modified.cleanup_interval),
        modified.max_size.unwrap_or(usize::MAX)
    );
    // The fields are public too.
    let mut unbounded = StateConfigs::session();
    let before = unbounded.max_size;
    unbounded.max_size = None;
    println!(
        "session() with max_size = None (unbounded): {before:?} -> {:?}",
        unbounded.max_size
    );
    modified.validate().is_ok()
        && unbounded.validate().is_ok()
        && modified.ttl == Duration::from_secs(7200)
        && modified.max_size == Some(20_000)
}

#[derive(Debug, Clone)]
struct Visit {
    user: &'static str,
    /// Pause before this visit is emitted.
    pause: Duration,
    expected: u64,
    why: &'static str,
}

async fn pipeline() -> bool {
    println!("\n== 5. A pipeline with a custom config (max_size 2, ttl 500 ms, cleanup 100 ms) ==");
    let config = StateConfigBuilder::new()
        .ttl(Duration::from_millis(500))
        .cleanup_interval(Duration::from_millis(100))
        .max_size(2)
        .build()
        .expect("a valid demo config");

    let visit = |user, pause_ms, expected, why| Visit {
        user,
        pause: Duration::from_millis(pause_ms),
        expected,
        why,
    };
    let visits = vec![
        visit("alice", 0, 1, "new key"),
        visit("bob", 0, 1, "new key"),
        visit(
            "carol",
            0,
            1,
            "new key; store full, evicts least recently used alice",
        ),
        visit("alice", 0, 1, "was evicted; evicts bob"),
        visit("carol", 0, 2, "still held"),
        visit("carol", 800, 1, "expired 500 ms after its last write"),
    ];
    let total = visits.len();

    let results: Vec<(Visit, Result<u64, StateError>)> = futures::stream::iter(visits)
        .then(|v| async move {
            if !v.pause.is_zero() {
                println!(
                    "  ... {} ms pause (longer than the 500 ms TTL) ...",
                    v.pause.as_millis()
                );
                tokio::time::sleep(v.pause).await;
            }
            v
        })
        .stateful_map_rs2(
            config,
            CustomKeyExtractor::new(|v: &Visit| v.user.to_string()),
            |v, state| async move {
                let count = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
                (v, count)
            },
        )
        .inspect(|(v, count)| match count {
            Ok(n) => println!(
                "{:<5} -> visit {n} (expected {}: {})",
                v.user, v.expected, v.why
            ),
            Err(e) => println!("{:<5} -> state error: {e}", v.user),
        })
        .collect()
        .await;

    let ok = results
        .iter()
        .all(|(v, count)| count.as_ref().ok() == Some(&v.expected));
    if ok {
        println!("pipeline: all {total} counts as expected");
    } else {
        println!("pipeline: MISMATCH");
    }
    ok
}

#[tokio::main]
async fn main() {
    let mut ok = presets();
    ok &= builder();
    ok &= direct_setters();
    ok &= modify_preset();
    ok &= pipeline().await;
    if !ok {
        eprintln!("custom_state_config_example: output differs from the expected output");
        std::process::exit(1);
    }
}
