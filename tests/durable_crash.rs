//! The `durable_counter` example in a child process: killed with SIGKILL mid-stream, then
//! restarted on the same directory. In strict mode every acknowledged event is counted exactly
//! once; in batched mode the state on disk is the state as of some flush (never a torn one).
//!
//! The example counts keys `key-0` … `key-{K-1}` round robin, so the totals after any prefix
//! of S events are fixed by S: key i has `S / K + (i < S % K)`. A lost event, a doubled one or
//! a torn flush breaks that shape.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const KEYS: u64 = 7;

/// The example's binary, (re)built once per run of this test binary: `cargo test --test
/// durable_crash` alone does not build examples, and a stale binary would test old code.
fn example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "--quiet", "--example", "durable_counter"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.ends_with("release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build");
            assert!(status.success(), "cargo build --example durable_counter");
            profile_dir
                .join("examples")
                .join(format!("durable_counter{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}

/// Runs the example to the end; returns each key's total from its stdout.
fn run_to_end(dir: &Path, events: u64) -> Vec<u64> {
    let out = Command::new(example())
        .arg("--data-dir")
        .arg(dir)
        .args(["--events", &events.to_string(), "--keys", &KEYS.to_string()])
        .output()
        .expect("run durable_counter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "durable_counter failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let totals: Vec<u64> = stdout
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let (key, total) = line.split_once(' ').expect("`key-i <total>`");
            assert_eq!(key, format!("key-{i}"), "line {i}: {line}");
            total.parse().expect("a total")
        })
        .collect();
    assert_eq!(totals.len(), KEYS as usize, "one line per key: {stdout}");
    totals
}

/// The totals after the first `s` events.
fn prefix_totals(s: u64) -> Vec<u64> {
    (0..KEYS)
        .map(|i| s / KEYS + u64::from(i < s % KEYS))
        .collect()
}

/// Starts the example on a long run, kills it with SIGKILL once it has acknowledged at least
/// `kill_after` events, and returns the last acknowledged count it printed.
///
/// Progress goes to a file, not a pipe: a pipe the test reads slower than the child writes
/// would stall the child, and a stalled child gives its flusher time to catch up, which would
/// hide lost writes.
fn kill_mid_stream(dir: &Path, strict: bool, kill_after: u64) -> u64 {
    let log_path = dir.with_extension("progress.log");
    let log = std::fs::File::create(&log_path).expect("progress log");
    let mut cmd = Command::new(example());
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["--events", "100000000", "--keys", &KEYS.to_string()])
        .args(["--progress-every", "1"])
        .stdout(Stdio::null())
        .stderr(log);
    if strict {
        cmd.arg("--strict");
    }
    let mut child = cmd.spawn().expect("spawn durable_counter");
    let target = format!("acknowledged {kill_after}/");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains(&target) {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll the example") {
            panic!("the example ended ({status}) before it was killed: {log}");
        }
        assert!(
            Instant::now() < deadline,
            "{kill_after} events not acknowledged in 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL the example");
    let status = child.wait().expect("wait for the example");
    assert!(!status.success(), "the example was killed, not finished");
    let log = std::fs::read_to_string(&log_path).expect("progress log");
    // Only whole lines: the line being written when the kill came may be cut.
    let whole = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    let mut last = 0;
    for line in whole.lines() {
        if let Some(progress) = line.strip_prefix("acknowledged ") {
            let n: u64 = progress
                .split('/')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("acknowledged <n>/<N> events");
            assert_eq!(n, last + 1, "one progress line per event");
            last = n;
        }
    }
    assert!(last >= kill_after);
    last
}

#[test]
fn strict_mode_keeps_every_acknowledged_event_once_across_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("counts");
    let acknowledged = kill_mid_stream(&data, true, 3_000);

    // Restart, counting nothing: the totals on disk.
    let totals = run_to_end(&data, 0);
    let stored: u64 = totals.iter().sum();
    // Events are counted one at a time, each acknowledged after its write: the killed run can
    // have written at most one event past the last line it printed.
    assert!(
        stored == acknowledged || stored == acknowledged + 1,
        "acknowledged {acknowledged} events, {stored} on disk"
    );
    assert_eq!(
        totals,
        prefix_totals(stored),
        "each event counted exactly once"
    );

    // A third run continues the counts.
    let more = run_to_end(&data, 7 * KEYS);
    let expected: Vec<u64> = totals.iter().map(|t| t + 7).collect();
    assert_eq!(more, expected);
}

#[test]
fn batched_mode_restarts_from_a_whole_flush_after_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("counts");
    let acknowledged = kill_mid_stream(&data, false, 20_000);
    let totals = run_to_end(&data, 0);
    let stored: u64 = totals.iter().sum();
    assert!(
        stored <= acknowledged + 1,
        "{stored} on disk, only {acknowledged} acknowledged"
    );
    assert_eq!(totals, prefix_totals(stored), "a flush is written whole");
}

#[test]
fn a_second_run_continues_the_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("counts");
    // Each run starts the round robin at key-0: runs of a multiple of KEYS events add evenly.
    assert_eq!(run_to_end(&data, 100 * KEYS), prefix_totals(100 * KEYS));
    assert_eq!(run_to_end(&data, 100 * KEYS), prefix_totals(200 * KEYS));
    let uneven = run_to_end(&data, 3);
    let mut expected = prefix_totals(200 * KEYS);
    for total in &mut expected[..3] {
        *total += 1;
    }
    assert_eq!(uneven, expected);
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("counts");
    let mut first = Command::new(example())
        .arg("--data-dir")
        .arg(&data)
        .args(["--events", "100000000", "--keys", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn durable_counter");
    // Wait until the first process has the directory open (its first line is printed after).
    let mut lines = BufReader::new(first.stderr.take().expect("stderr")).lines();
    let opened = lines.next().expect("a first line").expect("stderr line");
    assert!(opened.contains("counted before this run"), "{opened}");
    let second = Command::new(example())
        .arg("--data-dir")
        .arg(&data)
        .args(["--events", "10", "--keys", "3"])
        .output()
        .expect("run a second durable_counter");
    first.kill().expect("stop the first process");
    let _ = first.wait();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("in use by another process") && err.contains("counts"),
        "the error names the directory and the cause: {err}"
    );
}
