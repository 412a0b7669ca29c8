//! The user documentation's operator samples ("Detailed Preset Usage Examples"), as written
//! apart from the forms Rust requires: closure argument types inside `CustomKeyExtractor::new`,
//! and (session) reading `event.session_id` before `event` moves into the result.

use std::time::Duration;

use rs2::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserEvent {
    user_id: String,
    session_id: String,
    request_id: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct SessionResult {
    event: UserEvent,
    session_id: String,
    is_new_session: bool,
}

fn ev(user: &str, session: &str, request: u64) -> UserEvent {
    UserEvent {
        user_id: user.into(),
        session_id: session.into(),
        request_id: request,
    }
}

/// "Example: Rate limiting with high performance": 100 events per user per minute.
#[tokio::test(start_paused = true)]
async fn rate_limiting_with_high_performance() {
    let events =
        futures::stream::iter((0..150).map(|i| ev(if i % 3 == 0 { "b" } else { "a" }, "s", i)));
    let passed: Vec<UserEvent> = events
        .stateful_throttle_rs2(
            StateConfigs::high_performance(),
            CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
            100,                     // 100 events per window
            Duration::from_secs(60), // 1 minute window
        )
        .map(|r| r.expect("in-memory throttle"))
        .collect()
        .await;
    // "a" sent 100 events (all within the limit), "b" sent 50.
    assert_eq!(passed.iter().filter(|e| e.user_id == "a").count(), 100);
    assert_eq!(passed.iter().filter(|e| e.user_id == "b").count(), 50);
}

#[tokio::test(start_paused = true)]
async fn rate_limiting_drops_the_excess_within_one_window() {
    let events = futures::stream::iter((0..250).map(|i| ev("a", "s", i)));
    let passed = events
        .stateful_throttle_rs2(
            StateConfigs::high_performance(),
            CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
            100,
            Duration::from_secs(60),
        )
        .collect::<Vec<_>>()
        .await;
    assert_eq!(passed.len(), 100, "at most 100 per sliding minute");
}

/// "Example: User session tracking" (30 minute timeout): a user's first event starts a session,
/// and so does an event after more than 30 minutes of silence.
#[tokio::test(start_paused = true)]
async fn user_session_tracking() {
    let events = futures::stream::iter(vec![
        (0u64, ev("alice", "s1", 1)),
        (60, ev("alice", "s1", 2)),
        (31 * 60, ev("alice", "s2", 3)),
        (0, ev("bob", "s9", 4)),
    ])
    .then(|(wait_s, e)| async move {
        tokio::time::sleep(Duration::from_secs(wait_s)).await;
        e
    });
    let results: Vec<SessionResult> = events
        .stateful_session_rs2(
            StateConfigs::session(),
            CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
            Duration::from_secs(1800), // 30 minute session timeout
            |event, is_new_session, _state_access| async move {
                if is_new_session {
                    println!("New session started for user: {}", event.user_id);
                }
                // Process event with session context
                let session_id = event.session_id.clone();
                SessionResult {
                    event,
                    session_id,
                    is_new_session,
                }
            },
        )
        .map(|r| r.expect("in-memory session"))
        .collect()
        .await;
    let flags: Vec<(u64, bool)> = results
        .iter()
        .map(|r| (r.event.request_id, r.is_new_session))
        .collect();
    assert_eq!(flags, [(1, true), (2, false), (3, true), (4, true)]);
    assert_eq!(results[2].session_id, "s2");
}

/// "Example: Request-level deduplication" (5 minute TTL, key `user_id:request_id`).
#[tokio::test(start_paused = true)]
async fn request_level_deduplication() {
    let events = futures::stream::iter(vec![
        (0u64, ev("alice", "s", 1)),
        (10, ev("alice", "s", 1)), // a retry of the same request: dropped
        (0, ev("alice", "s", 2)),
        (0, ev("bob", "s", 1)),
        (301, ev("alice", "s", 1)), // after the 5 minute TTL: passes again
    ])
    .then(|(wait_s, e)| async move {
        tokio::time::sleep(Duration::from_secs(wait_s)).await;
        e
    });
    let passed: Vec<(String, u64)> = events
        .stateful_deduplicate_rs2(
            StateConfigs::short_lived(),
            CustomKeyExtractor::new(|event: &UserEvent| {
                format!("{}:{}", event.user_id, event.request_id)
            }),
            Duration::from_secs(300), // 5 minute TTL
        )
        .map(|r| r.expect("in-memory dedup"))
        .map(|e| (e.user_id, e.request_id))
        .collect()
        .await;
    assert_eq!(
        passed,
        [
            ("alice".into(), 1),
            ("alice".into(), 2),
            ("bob".into(), 1),
            ("alice".into(), 1)
        ]
    );
}
