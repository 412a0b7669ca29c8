//! The Quick Start of the user documentation, as printed (with the `async move` Rust requires in
//! the `for_each` closure). Run: `cargo run --example quick_start`.
use rs2::{
    rs2_stream_ext::Rs2StreamExt,
    state::{CustomKeyExtractor, StateConfigs, StatefulStreamExt},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserEvent {
    user_id: String,
    amount: f64,
    timestamp: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserState {
    total_amount: f64,
    event_count: u64,
}

/// Five purchases by two users; expected totals: alice $60.00 over 3 events, bob $12.50 over 2.
fn create_user_events() -> impl futures::Stream<Item = UserEvent> {
    let event = |user: &str, amount: f64, timestamp: u64| UserEvent {
        user_id: user.to_string(),
        amount,
        timestamp,
    };
    futures::stream::iter(vec![
        event("alice", 10.0, 1),
        event("bob", 5.0, 2),
        event("alice", 20.0, 3),
        event("bob", 7.5, 4),
        event("alice", 30.0, 5),
    ])
}

#[tokio::main]
async fn main() {
    let events = create_user_events();

    let config = StateConfigs::session();

    events
        .stateful_map_rs2(
            config,
            CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
            |event, state_access| async move {
                let mut state: UserState = state_access.get().await.unwrap_or(UserState {
                    total_amount: 0.0,
                    event_count: 0,
                });

                state.total_amount += event.amount;
                state.event_count += 1;

                state_access.set(&state).await.unwrap();

                (event.user_id, state.total_amount, state.event_count)
            },
        )
        .for_each(|(user_id, total, count)| async move {
            println!("User {}: ${:.2} total, {} events", user_id, total, count);
        })
        .await;
}
