//! Counts that survive a restart: events per key, kept in a directory on local disk.
//!
//! ```text
//! cargo run --example durable_counter -- --data-dir /tmp/counts --events 1000000 --keys 10
//! cargo run --example durable_counter -- --data-dir /tmp/counts --events 1000000 --keys 10
//! ```
//!
//! Each run counts `--events` generated events over keys `key-0` … `key-{K-1}` (round robin)
//! with `stateful_fold_rs2` on a `DurableState` in `--data-dir`, printing progress to stderr,
//! then prints every key's total to stdout as `key-i <total>`, one per line. The second run
//! above continues the first's counts (each key ends at 200,000). The example checks that each
//! key gained exactly its share of the run and exits with status 1 if not.
//!
//! Options: `--data-dir DIR` (required), `--events N` (default 1,000,000), `--keys K`
//! (default 10), `--strict` (every counted event survives the process being killed; without
//! it a crash loses at most the last 100 ms), `--progress-every M` (a progress line every M
//! events; default a tenth of the run). Progress lines read `acknowledged <n>/<N> events`: in
//! strict mode those `n` events are on disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rs2::prelude::*;
use rs2::state::{Durability, DurableState, SharedStorage, StateAccess};

/// The config's namespace: the fold keeps key `k`'s count under `durable_counter/fold:k`.
const NAMESPACE: &str = "durable_counter";

struct Args {
    data_dir: std::path::PathBuf,
    events: u64,
    keys: u64,
    strict: bool,
    progress_every: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut data_dir = None;
    let mut args = Args {
        data_dir: Default::default(),
        events: 1_000_000,
        keys: 10,
        strict: false,
        progress_every: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let mut number = |name: &str| -> Result<u64, String> {
            value(name)?.parse().map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--data-dir" => data_dir = Some(value("--data-dir")?.into()),
            "--events" => args.events = number("--events")?,
            "--keys" => args.keys = number("--keys")?,
            "--progress-every" => args.progress_every = Some(number("--progress-every")?.max(1)),
            "--strict" => args.strict = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    args.data_dir = data_dir.ok_or("--data-dir is required")?;
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    Ok(args)
}

/// Every key's stored total (0 for a key never counted).
async fn totals(storage: &SharedStorage, keys: u64) -> Result<Vec<u64>, StateError> {
    let mut totals = Vec::with_capacity(keys as usize);
    for i in 0..keys {
        let count = StateAccess::new(Arc::clone(storage), format!("{NAMESPACE}/fold:key-{i}"));
        totals.push(count.try_get::<u64>().await?.unwrap_or(0));
    }
    Ok(totals)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        format!(
            "{e}\nusage: durable_counter --data-dir DIR [--events N] [--keys K] [--strict] \
             [--progress-every M]"
        )
    })?;
    let durability = if args.strict {
        Durability::Strict
    } else {
        Durability::default()
    };
    let store = DurableState::builder(&args.data_dir)
        .durability(durability)
        .open()?;
    let storage: SharedStorage = Arc::new(store.clone());
    let before_totals = totals(&storage, args.keys).await?;
    let before: u64 = before_totals.iter().sum();
    eprintln!(
        "{}: {before} events counted before this run; counting {} more over {} keys ({})",
        args.data_dir.display(),
        args.events,
        args.keys,
        if args.strict { "strict" } else { "batched" },
    );

    let config = StateConfig::new()
        .ttl(Duration::from_secs(365 * 24 * 3600))
        .namespace(NAMESPACE)
        .with_custom_storage(Arc::clone(&storage));
    let keys = args.keys;
    let every = args.progress_every.unwrap_or((args.events / 10).max(1));
    let started = Instant::now();
    let mut acknowledged = 0u64;
    let counts = futures::stream::iter(0..args.events)
        .map(move |i| format!("key-{}", i % keys))
        .stateful_fold_rs2(
            config,
            |key: &String| key.clone(),
            0u64,
            |count, _key, _state: StateAccess| async move { count + 1 },
        );
    let mut counts = std::pin::pin!(counts);
    while let Some(count) = counts.next().await {
        // A failed write is fatal here: the count could not be kept.
        count?;
        acknowledged += 1;
        if acknowledged % every == 0 || acknowledged == args.events {
            eprintln!("acknowledged {acknowledged}/{} events", args.events);
        }
    }
    store.flush()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "counted {acknowledged} events in {secs:.2} s ({:.0} events/s), flushed to disk",
        acknowledged as f64 / secs.max(1e-9)
    );
    let after = totals(&storage, args.keys).await?;
    for (i, total) in after.iter().enumerate() {
        println!("key-{i} {total}");
    }
    // Check: each key gained exactly its share of this run's round robin.
    for (i, (before, after)) in before_totals.iter().zip(&after).enumerate() {
        let share = args.events / args.keys + u64::from((i as u64) < args.events % args.keys);
        if *after != before + share {
            return Err(format!(
                "key-{i}: expected {before} + {share} = {}, found {after}",
                before + share
            )
            .into());
        }
    }
    Ok(())
}
