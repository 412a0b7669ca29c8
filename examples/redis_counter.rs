//! Per-user totals shared by every replica: run this in two terminals at once against one
//! Redis server and watch each user's total grow with the events of both.
//!
//! ```text
//! sudo apt-get install -y redis-server      # or any Redis >= 6; then, if it is not running:
//! redis-server --port 6379 --daemonize yes
//! cargo run --example redis_counter -- --replica A --events 200   # terminal 1
//! cargo run --example redis_counter -- --replica B --events 200   # terminal 2
//! ```
//!
//! Each replica sends `--events` purchases (one every `--every-ms`) for five users and folds
//! them per user with `stateful_fold_rs2` on a `RedisState`: the totals are the sum of both
//! replicas' purchases, and the last total each user reaches is the same whichever replica
//! reports it. Options: `--url` (default `$RS2_REDIS_URL`, else `redis://127.0.0.1:6379`),
//! `--replica NAME`, `--events N` (default 20), `--every-ms MS` (default 50), `--reset`
//! (clear the example's state first).

use std::sync::Arc;
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::RedisState;

const USERS: [&str; 5] = ["ann", "bob", "cyd", "dee", "eve"];

struct Args {
    url: String,
    replica: String,
    events: u64,
    every: Duration,
    reset: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: std::env::var("RS2_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        replica: format!("pid-{}", std::process::id()),
        events: 20,
        every: Duration::from_millis(50),
        reset: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value("--url")?,
            "--replica" => args.replica = value("--replica")?,
            "--events" => {
                args.events = value("--events")?
                    .parse()
                    .map_err(|e| format!("--events: {e}"))?
            }
            "--every-ms" => {
                let ms: u64 = value("--every-ms")?
                    .parse()
                    .map_err(|e| format!("--every-ms: {e}"))?;
                args.every = Duration::from_millis(ms);
            }
            "--reset" => args.reset = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        format!("{e}\nusage: redis_counter [--url URL] [--replica NAME] [--events N] [--every-ms MS] [--reset]")
    })?;
    let redis = RedisState::connect(&args.url)
        .await?
        .with_prefix("rs2-example:redis_counter:");
    if args.reset {
        redis.clear().await?;
    }
    let config = StateConfig::new()
        .ttl(Duration::from_secs(3600))
        .with_custom_storage(Arc::new(redis));
    println!(
        "replica {}: {} purchases to {} (run another replica at the same time)",
        args.replica, args.events, args.url
    );

    let every = args.every;
    let purchases = futures::stream::iter(0..args.events).then(move |i| async move {
        tokio::time::sleep(every).await;
        (USERS[(i % USERS.len() as u64) as usize], 1 + i % 3)
    });
    let mut totals = std::pin::pin!(purchases.stateful_fold_rs2(
        config,
        |p: &(&str, u64)| p.0.to_string(),
        (String::new(), 0u64),
        |(_, total): (String, u64), p: (&str, u64), _state: StateAccess| async move {
            (p.0.to_string(), total + p.1)
        },
    ));
    // Check: each user's total grows by at least this replica's purchase each time (by more
    // when another replica's purchases landed in between), never less.
    let mut last = std::collections::HashMap::new();
    let mut i = 0u64;
    while let Some(total) = totals.next().await {
        let (user, total) = total?;
        let amount = 1 + i % 3;
        i += 1;
        println!("replica {}: {user} total {total}", args.replica);
        let before = last.insert(user.clone(), total).unwrap_or(0);
        if total < before + amount {
            eprintln!(
                "expected {user}'s total to be at least {} (was {before}, + {amount}); got {total}",
                before + amount
            );
            std::process::exit(1);
        }
    }
    Ok(())
}
