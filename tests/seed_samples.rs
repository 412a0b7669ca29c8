//! The code samples of the user documentation (`state-management.md`), run and checked.
//!
//! Every sample about configuration, presets, the builder, storage creation, key extractors,
//! the state access interface, the Quick Start and the "Handle State Errors Gracefully" pattern
//! is written here as the user wrote it (plus the forms Rust requires: closure argument types
//! inside `CustomKeyExtractor::new`, `async move` in `for_each`), and its documented behaviour
//! is asserted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::async_trait;
use rs2_suite::UserEvent;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The user's own backend from the "Custom State Backends" section: a plain map.
#[derive(Default)]
struct MyCustomStorage(Mutex<HashMap<String, Vec<u8>>>);

impl MyCustomStorage {
    fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStorage for MyCustomStorage {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StateResult<()> {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Ok(self.0.lock().unwrap().contains_key(key))
    }
    async fn clear(&self) -> StateResult<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

/// A backend whose every call fails, naming the key as the `StateStorage` docs ask.
struct DownStorage;

#[async_trait]
impl StateStorage for DownStorage {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn set(&self, key: &str, _value: &[u8]) -> StateResult<()> {
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Err(StateError::storage_for(key, "connection refused"))
    }
    async fn clear(&self) -> StateResult<()> {
        Err(StateError::Storage("connection refused".into()))
    }
}

fn ev(user: &str, amount: f64, timestamp: u64) -> UserEvent {
    UserEvent {
        user_id: user.to_string(),
        amount,
        timestamp,
    }
}

/// The Quick Start's five purchases: alice 10, bob 5, alice 20, bob 7.5, alice 30.
fn create_user_events() -> impl Stream<Item = UserEvent> {
    futures::stream::iter(vec![
        ev("alice", 10.0, 1),
        ev("bob", 5.0, 2),
        ev("alice", 20.0, 3),
        ev("bob", 7.5, 4),
        ev("alice", 30.0, 5),
    ])
}

// ---------------------------------------------------------------------------------------------
// Quick Start
// ---------------------------------------------------------------------------------------------

/// The Quick Start with exactly the documented imports (no prelude).
mod quick_start {
    use std::sync::{Arc, Mutex};

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

    #[tokio::test]
    async fn quick_start_runs_and_totals_are_per_user() {
        let printed: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<(String, f64, u64)>>> = Arc::default();

        let events = create_user_events();

        let config = StateConfigs::session();

        let (printed2, seen2) = (printed.clone(), seen.clone());
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
            .for_each(|(user_id, total, count)| {
                let (printed, seen) = (printed2.clone(), seen2.clone());
                async move {
                    let line = format!("User {}: ${:.2} total, {} events", user_id, total, count);
                    println!("{line}");
                    printed.lock().unwrap().push(line);
                    seen.lock().unwrap().push((user_id, total, count));
                }
            })
            .await;

        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("alice".to_string(), 10.0, 1),
                ("bob".to_string(), 5.0, 1),
                ("alice".to_string(), 30.0, 2),
                ("bob".to_string(), 12.5, 2),
                ("alice".to_string(), 60.0, 3),
            ]
        );
        let printed = printed.lock().unwrap();
        assert_eq!(
            printed.last().unwrap(),
            "User alice: $60.00 total, 3 events"
        );
        assert_eq!(printed[3], "User bob: $12.50 total, 2 events");
    }
}

// ---------------------------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------------------------

fn assert_preset(config: &StateConfig, ttl: Duration, cleanup: Duration, max: usize) {
    assert_eq!(config.ttl, ttl, "ttl of {config:?}");
    assert_eq!(config.cleanup_interval, cleanup, "cleanup of {config:?}");
    assert_eq!(config.max_size, Some(max), "max_size of {config:?}");
    assert_eq!(config.storage_type, StateStorageType::InMemory);
    assert!(config.custom_storage.is_none());
    assert!(
        config.validate().is_ok(),
        "preset must be valid: {config:?}"
    );
}

#[test]
fn presets_have_the_documented_numbers() {
    assert_preset(
        &StateConfigs::high_performance(),
        Duration::from_secs(3600),
        Duration::from_secs(60),
        10_000,
    );
    assert_preset(
        &StateConfigs::session(),
        Duration::from_secs(30 * 60),
        Duration::from_secs(5 * 60),
        1_000,
    );
    assert_preset(
        &StateConfigs::short_lived(),
        Duration::from_secs(5 * 60),
        Duration::from_secs(30),
        100,
    );
    assert_preset(
        &StateConfigs::long_lived(),
        Duration::from_secs(7 * 24 * 3600),
        Duration::from_secs(3600),
        100_000,
    );
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct UserProfile {
    total_purchases: u64,
    total_spent: f64,
    last_seen: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct EnrichedEvent {
    event: UserEvent,
    profile: UserProfile,
}

/// "Example: User profile enrichment" of the long-lived preset.
#[tokio::test]
async fn long_lived_profile_enrichment_sample() {
    let enriched: Vec<EnrichedEvent> = create_user_events()
        .stateful_map_rs2(
            StateConfigs::long_lived(),
            CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
            |event, state_access| async move {
                let mut profile: UserProfile =
                    state_access.get().await.unwrap_or(UserProfile::default());

                // Update profile with new event data
                profile.total_purchases += 1;
                profile.total_spent += event.amount;
                profile.last_seen = event.timestamp;

                state_access.set(&profile).await.unwrap();

                // Return enriched event
                EnrichedEvent {
                    event,
                    profile: profile.clone(),
                }
            },
        )
        .collect()
        .await;

    assert_eq!(enriched.len(), 5);
    assert_eq!(
        enriched[4].profile,
        UserProfile {
            total_purchases: 3,
            total_spent: 60.0,
            last_seen: 5
        }
    );
    assert_eq!(
        enriched[3].profile,
        UserProfile {
            total_purchases: 2,
            total_spent: 12.5,
            last_seen: 4
        }
    );
    assert_eq!(enriched[3].event, ev("bob", 7.5, 4));
}

// ---------------------------------------------------------------------------------------------
// StateConfigBuilder
// ---------------------------------------------------------------------------------------------

#[test]
fn builder_sample_with_custom_storage() {
    let my_custom_storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(MyCustomStorage::new());
    let config = StateConfigBuilder::new()
        .storage_type(StateStorageType::InMemory)
        .ttl(Duration::from_secs(3600)) // 1 hour TTL
        .cleanup_interval(Duration::from_secs(300)) // 5 minute cleanup
        .max_size(50000) // 50k entry limit
        .custom_storage(my_custom_storage.clone()) // Custom storage backend
        .build()
        .unwrap();

    assert_eq!(config.ttl, Duration::from_secs(3600));
    assert_eq!(config.cleanup_interval, Duration::from_secs(300));
    assert_eq!(config.max_size, Some(50_000));
    // "When using custom_storage, the storage_type is automatically set to Custom."
    assert_eq!(config.storage_type, StateStorageType::Custom);
    assert!(Arc::ptr_eq(
        config.custom_storage.as_ref().unwrap(),
        &my_custom_storage
    ));
}

#[test]
fn builder_samples_from_best_practices_build() {
    let profile_config = StateConfigBuilder::new()
        .ttl(Duration::from_secs(86400))
        .cleanup_interval(Duration::from_secs(3600))
        .max_size(10000)
        .build()
        .unwrap();
    assert_eq!(profile_config.ttl, Duration::from_secs(86400));
    assert_eq!(profile_config.cleanup_interval, Duration::from_secs(3600));
    assert_eq!(profile_config.max_size, Some(10_000));
    assert_eq!(profile_config.storage_type, StateStorageType::InMemory);

    let conservative = StateConfigBuilder::new()
        .ttl(Duration::from_secs(1800)) // 30 minutes
        .cleanup_interval(Duration::from_secs(300)) // 5 minutes
        .max_size(1000) // 1k entries
        .build()
        .unwrap();
    assert_eq!(conservative.ttl, Duration::from_secs(1800));
    assert_eq!(conservative.max_size, Some(1000));

    // "User profile: 24 hours" with only a storage type and a TTL.
    let day = StateConfigBuilder::new()
        .storage_type(StateStorageType::InMemory)
        .ttl(Duration::from_secs(86400)) // 24 hours
        .build();
    assert_eq!(day.unwrap().ttl, Duration::from_secs(86400));

    // "Monitor State Size"
    let bounded = StateConfigBuilder::new()
        .storage_type(StateStorageType::InMemory)
        .max_size(100_000) // Limit to 100k entries
        .build()
        .unwrap();
    assert_eq!(bounded.max_size, Some(100_000));

    // "Unlimited (use with caution)"
    let unlimited = StateConfigBuilder::new().max_size(usize::MAX).build();
    assert!(unlimited.is_ok());

    // Cleanup interval equal to the TTL is allowed ("less than or equal to").
    let equal = StateConfigBuilder::new()
        .ttl(Duration::from_secs(60))
        .cleanup_interval(Duration::from_secs(60))
        .build();
    assert!(equal.is_ok(), "{equal:?}");
}

#[test]
fn builder_rejects_zero_ttl_with_the_documented_message() {
    let config = StateConfigBuilder::new()
        .ttl(Duration::from_secs(0)) // Invalid: zero TTL
        .build(); // Returns Err("TTL cannot be zero")
    assert_eq!(
        config.unwrap_err(),
        StateError::Validation("TTL cannot be zero".into())
    );
}

#[test]
fn builder_rejects_cleanup_above_ttl_with_the_documented_message() {
    let config = StateConfigBuilder::new()
        .ttl(Duration::from_secs(3600))
        .cleanup_interval(Duration::from_secs(7200)) // Invalid: cleanup > TTL
        .build(); // Returns Err("Cleanup interval should be less than or equal to TTL")
    assert_eq!(
        config.unwrap_err(),
        StateError::Validation("Cleanup interval should be less than or equal to TTL".into())
    );
}

#[test]
fn builder_rejects_zero_cleanup_interval_and_zero_max_size() {
    let zero_cleanup = StateConfigBuilder::new()
        .cleanup_interval(Duration::ZERO)
        .build();
    assert!(
        matches!(zero_cleanup, Err(StateError::Validation(_))),
        "{zero_cleanup:?}"
    );

    let zero_max = StateConfigBuilder::new().max_size(0).build();
    assert!(
        matches!(zero_max, Err(StateError::Validation(_))),
        "{zero_max:?}"
    );

    // The same rules through StateConfig::validate for directly built configs.
    assert!(StateConfig::new().ttl(Duration::ZERO).validate().is_err());
    assert!(StateConfig::new().max_size(0).validate().is_err());
    assert!(StateConfig::new()
        .cleanup_interval(Duration::ZERO)
        .validate()
        .is_err());
    assert!(StateConfig::new().validate().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Direct StateConfig setters and storage creation
// ---------------------------------------------------------------------------------------------

#[test]
fn direct_state_config_setters_sample() {
    let mut config = StateConfig::new();
    assert_eq!(config.storage_type, StateStorageType::InMemory);

    // Set storage type
    config = config.storage_type(StateStorageType::InMemory);
    // Set TTL
    config = config.ttl(Duration::from_secs(3600));
    // Set cleanup interval
    config = config.cleanup_interval(Duration::from_secs(300));
    // Set maximum size
    config = config.max_size(50000);

    assert_eq!(config.storage_type, StateStorageType::InMemory);
    assert_eq!(config.ttl, Duration::from_secs(3600));
    assert_eq!(config.cleanup_interval, Duration::from_secs(300));
    assert_eq!(config.max_size, Some(50_000));
    assert!(config.custom_storage.is_none());
    assert!(config.validate().is_ok());

    // Set custom storage backend
    config = config.with_custom_storage(Arc::new(MyCustomStorage::new()));
    assert_eq!(config.storage_type, StateStorageType::Custom);
    assert!(config.custom_storage.is_some());
    assert!(config.validate().is_ok());
    // The other settings are kept.
    assert_eq!(config.ttl, Duration::from_secs(3600));
    assert_eq!(config.max_size, Some(50_000));
}

#[tokio::test]
async fn create_storage_in_memory_gives_independent_stores() {
    let config = StateConfigs::session();

    // Create a Box<dyn StateStorage> instance
    let storage: Box<dyn StateStorage + Send + Sync> = config.create_storage();
    // Create an Arc<dyn StateStorage> instance (for sharing across threads)
    let storage_arc: Arc<dyn StateStorage + Send + Sync> = config.create_storage_arc();

    storage.set("k", b"boxed").await.unwrap();
    storage_arc.set("k", b"shared").await.unwrap();
    assert_eq!(storage.get("k").await.unwrap(), Some(b"boxed".to_vec()));
    assert_eq!(
        storage_arc.get("k").await.unwrap(),
        Some(b"shared".to_vec())
    );

    let second_arc = config.create_storage_arc();
    assert!(!Arc::ptr_eq(&storage_arc, &second_arc));
    assert_eq!(second_arc.get("k").await.unwrap(), None);
    assert!(!second_arc.exists("k").await.unwrap());

    let second_box = config.create_storage();
    assert_eq!(second_box.get("k").await.unwrap(), None);

    // A shared Arc really is shared between clones.
    let clone = storage_arc.clone();
    clone.set("other", b"x").await.unwrap();
    assert_eq!(storage_arc.get("other").await.unwrap(), Some(b"x".to_vec()));
}

#[tokio::test]
async fn create_storage_with_custom_storage_hands_back_that_store() {
    let custom: Arc<dyn StateStorage + Send + Sync> = Arc::new(MyCustomStorage::new());
    let config = StateConfig::new().with_custom_storage(custom.clone());

    let arc = config.create_storage_arc();
    assert!(Arc::ptr_eq(&arc, &custom));
    assert!(Arc::ptr_eq(&config.create_storage_arc(), &custom));

    let boxed: Box<dyn StateStorage + Send + Sync> = config.create_storage();
    boxed.set("written-through-box", b"1").await.unwrap();
    assert_eq!(
        custom.get("written-through-box").await.unwrap(),
        Some(b"1".to_vec())
    );
    custom.set("written-through-custom", b"2").await.unwrap();
    assert_eq!(
        boxed.get("written-through-custom").await.unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(
        arc.get("written-through-box").await.unwrap(),
        Some(b"1".to_vec())
    );
}

/// "Pass your custom config to any stateful stream operation": state lands in the user's store.
#[tokio::test]
async fn operators_keep_state_in_the_custom_storage() {
    let custom: Arc<dyn StateStorage + Send + Sync> = Arc::new(MyCustomStorage::new());
    let config = StateConfig::new().with_custom_storage(custom.clone());

    let counts: Vec<u64> = create_user_events()
        .stateful_map_rs2(
            config,
            CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
            |_event, state_access| async move {
                state_access
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap()
            },
        )
        .collect()
        .await;
    assert_eq!(counts, vec![1, 1, 2, 2, 3]);

    // The map operator keeps its keys under its own namespace in the shared store.
    let alice: StateAccess = StateAccess::new(custom.clone(), "map:alice".to_string());
    assert_eq!(alice.get::<u64>().await, Some(3));
    let bob: StateAccess = StateAccess::new(custom, "map:bob".to_string());
    assert_eq!(bob.get::<u64>().await, Some(2));
}

/// Pipelines sharing one custom store under different namespaces do not see each other's
/// state; the same namespace shares it.
#[tokio::test]
async fn namespaces_separate_pipelines_sharing_a_custom_store() {
    let custom: Arc<dyn StateStorage + Send + Sync> = Arc::new(MyCustomStorage::new());
    let run = |namespace: &'static str| {
        let config = StateConfig::new()
            .with_custom_storage(custom.clone())
            .namespace(namespace);
        create_user_events()
            .stateful_map_rs2(config, user_key_extractor, |_e, state_access| async move {
                state_access
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap()
            })
            .collect::<Vec<u64>>()
    };
    assert_eq!(run("tenant-a").await, vec![1, 1, 2, 2, 3]);
    assert_eq!(run("tenant-b").await, vec![1, 1, 2, 2, 3]);
    assert_eq!(run("tenant-a").await, vec![4, 3, 5, 4, 6]);
    let a: StateAccess = StateAccess::new(custom.clone(), "tenant-a/map:alice".into());
    assert_eq!(a.get::<u64>().await, Some(6));
    let b: StateAccess = StateAccess::new(custom, "tenant-b/map:alice".into());
    assert_eq!(b.get::<u64>().await, Some(3));
}

// ---------------------------------------------------------------------------------------------
// Key extractors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RichEvent {
    user_id: String,
    category: String,
    timestamp: u64,
    event_type: String,
    page_id: String,
    is_premium: bool,
}

fn rich(user: &str, event_type: &str, is_premium: bool) -> RichEvent {
    RichEvent {
        user_id: user.to_string(),
        category: "books".to_string(),
        timestamp: 7300,
        event_type: event_type.to_string(),
        page_id: "p9".to_string(),
        is_premium,
    }
}

// Function-based extractor
fn extract_user_key(event: &RichEvent) -> String {
    event.user_id.clone()
}

#[test]
fn custom_key_extractor_samples() {
    let e = rich("u1", "purchase", true);

    // Simple key extraction
    let key_extractor = CustomKeyExtractor::new(|event: &RichEvent| event.user_id.clone());
    assert_eq!(key_extractor.extract_key(&e), "u1");
    assert_eq!(key_extractor.try_extract_key(&e).unwrap(), "u1");

    // Composite key extraction
    let key_extractor = CustomKeyExtractor::new(|event: &RichEvent| {
        format!("{}:{}", event.user_id, event.category)
    });
    assert_eq!(key_extractor.extract_key(&e), "u1:books");

    // Time-based key extraction
    let key_extractor = CustomKeyExtractor::new(|event: &RichEvent| {
        let hour = event.timestamp / 3600;
        format!("{}:{}", event.user_id, hour)
    });
    assert_eq!(key_extractor.extract_key(&e), "u1:2");

    // Complex key extraction
    let key_extractor =
        CustomKeyExtractor::new(|event: &RichEvent| match event.event_type.as_str() {
            "login" => format!("session:{}", event.user_id),
            "purchase" => format!("purchase:{}:{}", event.user_id, event.category),
            "view" => format!("view:{}:{}", event.user_id, event.page_id),
            _ => format!("other:{}", event.user_id),
        });
    assert_eq!(key_extractor.extract_key(&e), "purchase:u1:books");
    assert_eq!(
        key_extractor.extract_key(&rich("u2", "login", false)),
        "session:u2"
    );
    assert_eq!(
        key_extractor.extract_key(&rich("u2", "view", false)),
        "view:u2:p9"
    );
    assert_eq!(
        key_extractor.extract_key(&rich("u2", "logout", false)),
        "other:u2"
    );

    // Function-based extractor
    let key_extractor = CustomKeyExtractor::new(extract_user_key);
    assert_eq!(key_extractor.extract_key(&e), "u1");

    // Complex logic extractor
    let key_extractor = CustomKeyExtractor::new(|event: &RichEvent| {
        if event.is_premium {
            format!("premium:{}", event.user_id)
        } else {
            format!("standard:{}", event.user_id)
        }
    });
    assert_eq!(key_extractor.extract_key(&e), "premium:u1");
    assert_eq!(
        key_extractor.extract_key(&rich("u3", "view", false)),
        "standard:u3"
    );
}

/// The key a CustomKeyExtractor returns really partitions state in an operator.
#[tokio::test]
async fn custom_key_extractor_partitions_operator_state() {
    let events = vec![
        rich("u1", "purchase", true),
        rich("u1", "view", true),
        rich("u1", "purchase", true),
        rich("u2", "purchase", false),
    ];
    // Per (user, event type) counts.
    let counts: Vec<(String, u64)> = futures::stream::iter(events)
        .stateful_map_rs2(
            StateConfig::new(),
            CustomKeyExtractor::new(|event: &RichEvent| {
                format!("{}:{}", event.user_id, event.event_type)
            }),
            |event, state_access| async move {
                let n = state_access
                    .update(|n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                (format!("{}:{}", event.user_id, event.event_type), n)
            },
        )
        .collect()
        .await;
    assert_eq!(
        counts,
        vec![
            ("u1:purchase".to_string(), 1),
            ("u1:view".to_string(), 1),
            ("u1:purchase".to_string(), 2),
            ("u2:purchase".to_string(), 1),
        ]
    );
}

// Define a function that implements KeyExtractor
fn user_key_extractor(event: &UserEvent) -> String {
    event.user_id.clone()
}

#[tokio::test]
async fn plain_function_used_directly_as_key_extractor() {
    let config = StateConfigs::session();
    let counts: Vec<(String, u64)> = create_user_events()
        .stateful_map_rs2(
            config,
            user_key_extractor,
            |event, state_access| async move {
                // Stateful processing
                let n: u64 = state_access.get().await.unwrap_or(0) + 1;
                state_access.set(&n).await.unwrap();
                (event.user_id, n)
            },
        )
        .collect()
        .await;
    assert_eq!(
        counts,
        vec![
            ("alice".to_string(), 1),
            ("bob".to_string(), 1),
            ("alice".to_string(), 2),
            ("bob".to_string(), 2),
            ("alice".to_string(), 3),
        ]
    );
}

#[tokio::test]
async fn field_key_extractor_reads_the_real_field() {
    let key_extractor = FieldKeyExtractor::new("user_id");
    assert_eq!(key_extractor.extract_key(&ev("carol", 1.0, 1)), "carol");
    assert_eq!(
        key_extractor.try_extract_key(&ev("dave", 1.0, 1)).unwrap(),
        "dave"
    );
    // Different events give different keys (not one shared fake key).
    assert_ne!(
        key_extractor.extract_key(&ev("a", 1.0, 1)),
        key_extractor.extract_key(&ev("b", 1.0, 1))
    );
    assert_eq!(
        FieldKeyExtractor::new("timestamp").extract_key(&ev("a", 1.0, 42)),
        "42"
    );

    // Through an operator: per-user totals, exactly as with a CustomKeyExtractor.
    let totals: Vec<(String, f64)> = create_user_events()
        .stateful_map_rs2(
            StateConfigs::session(),
            FieldKeyExtractor::new("user_id"),
            |event, state_access| async move {
                let total = state_access
                    .update(|t: Option<f64>| t.unwrap_or(0.0) + event.amount)
                    .await
                    .unwrap();
                (event.user_id, total)
            },
        )
        .collect()
        .await;
    assert_eq!(
        totals,
        vec![
            ("alice".to_string(), 10.0),
            ("bob".to_string(), 5.0),
            ("alice".to_string(), 30.0),
            ("bob".to_string(), 12.5),
            ("alice".to_string(), 60.0),
        ]
    );
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Customer {
    id: String,
    tier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: u64,
    customer: Customer,
    amount: u64,
}

fn order(order_id: u64, customer: &str, amount: u64) -> Order {
    Order {
        order_id,
        customer: Customer {
            id: customer.to_string(),
            tier: "gold".to_string(),
        },
        amount,
    }
}

#[tokio::test]
async fn field_key_extractor_nested_dotted_path_through_fold() {
    let orders = vec![
        order(1, "c1", 10),
        order(2, "c2", 1),
        order(3, "c1", 5),
        order(4, "c1", 2),
        order(5, "c2", 4),
    ];
    assert_eq!(
        FieldKeyExtractor::new("customer.id").extract_key(&orders[0]),
        "c1"
    );
    assert_eq!(
        FieldKeyExtractor::new("customer.tier").extract_key(&orders[0]),
        "gold"
    );

    let totals: Vec<u64> = futures::stream::iter(orders.clone())
        .stateful_fold_rs2(
            StateConfig::new(),
            FieldKeyExtractor::new("customer.id"),
            0u64,
            |sum, order: Order, _state| async move { sum + order.amount },
        )
        .map(|r| r.expect("every order has customer.id"))
        .collect()
        .await;
    assert_eq!(totals, vec![10, 1, 15, 17, 5]);

    // And through map, the key the closure sees is the nested field's value.
    let keys: Vec<(u64, String)> = futures::stream::iter(orders)
        .stateful_map_rs2(
            StateConfig::new(),
            FieldKeyExtractor::new("customer.id"),
            |order, state_access| async move { (order.order_id, state_access.key().to_string()) },
        )
        .collect()
        .await;
    assert_eq!(keys[2], (3, "c1".to_string()));
    assert_eq!(keys[4], (5, "c2".to_string()));
}

#[tokio::test]
async fn field_key_extractor_missing_field_is_an_error_through_map() {
    let key_extractor = FieldKeyExtractor::new("user_email");
    let direct = key_extractor.try_extract_key(&ev("a", 1.0, 1));
    assert!(
        matches!(&direct, Err(StateError::KeyExtraction(m)) if m.contains("user_email")),
        "{direct:?}"
    );

    let seen: Vec<(String, bool, bool, bool)> = create_user_events()
        .stateful_map_rs2(
            StateConfig::new(),
            FieldKeyExtractor::new("user_email"),
            |event, state_access| async move {
                let try_get = state_access.try_get::<u64>().await;
                let try_get_is_key_error = matches!(
                    &try_get,
                    Err(StateError::KeyExtraction(m)) if m.contains("user_email")
                );
                let get_is_none = state_access.get::<u64>().await.is_none();
                let set_failed = state_access.set(&1u64).await.is_err();
                (event.user_id, try_get_is_key_error, get_is_none, set_failed)
            },
        )
        .collect()
        .await;
    assert_eq!(seen.len(), 5, "every event still reaches the closure");
    for (user, key_err, none, set_failed) in seen {
        assert!(key_err, "{user}: try_get must report the missing field");
        assert!(none, "{user}: get must return None");
        assert!(set_failed, "{user}: set must fail");
    }
}

#[tokio::test]
async fn field_key_extractor_missing_field_is_an_err_item_through_fold() {
    let items: Vec<Result<f64, StateError>> = create_user_events()
        .stateful_fold_rs2(
            StateConfig::new(),
            FieldKeyExtractor::new("account.id"),
            0.0f64,
            |sum, event: UserEvent, _state| async move { sum + event.amount },
        )
        .collect()
        .await;
    assert_eq!(items.len(), 5, "one item per event, and the stream ends");
    for item in items {
        assert!(
            matches!(&item, Err(StateError::KeyExtraction(m)) if m.contains("account.id")),
            "{item:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// State Access Interface
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CountState {
    count: u64,
    label: String,
}

async fn state_access_interface_sample(state_access: StateAccess) {
    let default_state = CountState {
        count: 0,
        label: "new".into(),
    };

    // Get current state
    let state: CountState = state_access.get().await.unwrap_or(default_state.clone());
    assert_eq!(state, default_state);
    assert!(!state_access.exists().await);

    // Set new state
    let new_state = CountState {
        count: 10,
        label: "set".into(),
    };
    state_access.set(&new_state).await.unwrap();
    assert_eq!(state_access.get::<CountState>().await, Some(new_state));

    // Check if key exists
    let mut existed = false;
    if state_access.exists().await {
        // Key exists
        existed = true;
    }
    assert!(existed);

    // Delete state
    state_access.delete().await.unwrap();
    assert!(!state_access.exists().await);
    assert_eq!(state_access.get::<CountState>().await, None);
    assert_eq!(state_access.try_get::<CountState>().await, Ok(None));

    // Atomic update
    let updated = state_access
        .update(|current: Option<CountState>| {
            let mut state = current.unwrap_or(default_state);
            state.count += 1;
            state
        })
        .await
        .unwrap();
    assert_eq!(updated.count, 1);
    assert_eq!(updated.label, "new");
    let again = state_access
        .update(|current: Option<CountState>| {
            let mut state = current.expect("the first update stored a value");
            state.count += 1;
            state
        })
        .await
        .unwrap();
    assert_eq!(again.count, 2);
    assert_eq!(
        state_access.get::<CountState>().await.map(|s| s.count),
        Some(2)
    );
    assert!(state_access.exists().await);
}

#[tokio::test]
async fn state_access_interface_sample_on_in_memory_store() {
    let storage = StateConfigs::session().create_storage_arc();
    state_access_interface_sample(StateAccess::new(storage.clone(), "user-1".into())).await;
    // Another key of the same store is untouched.
    let other: StateAccess = StateAccess::new(storage, "user-2".into());
    assert!(!other.exists().await);
}

#[tokio::test]
async fn state_access_interface_sample_on_custom_store() {
    let storage: Arc<dyn StateStorage + Send + Sync> = Arc::new(MyCustomStorage::new());
    state_access_interface_sample(StateAccess::new(storage.clone(), "user-1".into())).await;
    assert!(storage.exists("user-1").await.unwrap());
}

#[tokio::test]
async fn state_access_interface_sample_inside_an_operator() {
    let done: Vec<String> = futures::stream::iter(vec!["x".to_string(), "y".to_string()])
        .stateful_map_rs2(
            StateConfigs::short_lived(),
            |s: &String| s.clone(),
            |s, state_access| async move {
                assert_eq!(state_access.key(), s);
                state_access_interface_sample(state_access).await;
                s
            },
        )
        .collect()
        .await;
    assert_eq!(done, vec!["x", "y"]);
}

// ---------------------------------------------------------------------------------------------
// Best practice 3: Handle State Errors Gracefully
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SpendState {
    first_amount: f64,
    seen: u64,
}

fn create_initial_state(event: &UserEvent) -> SpendState {
    SpendState {
        first_amount: event.amount,
        seen: 0,
    }
}

fn process_with_state(event: UserEvent, state: SpendState) -> (String, f64, u64) {
    (event.user_id, state.first_amount, state.seen)
}

/// The pattern from the docs (with `eprintln!` standing in for `log::warn!`), counting the
/// warnings it logged.
fn graceful_pipeline(
    config: StateConfig,
    warnings: Arc<Mutex<Vec<String>>>,
) -> impl Stream<Item = (String, f64, u64)> {
    create_user_events().stateful_map_rs2(
        config,
        CustomKeyExtractor::new(|event: &UserEvent| event.user_id.clone()),
        move |event, state_access| {
            let warnings = warnings.clone();
            async move {
                match state_access.get().await {
                    Some(state) => {
                        // Use existing state
                        process_with_state(event, state)
                    }
                    None => {
                        // Create new state
                        let new_state = create_initial_state(&event);
                        state_access.set(&new_state).await.unwrap_or_else(|e| {
                            eprintln!("Failed to save state: {}", e);
                            warnings.lock().unwrap().push(e.to_string());
                        });
                        process_with_state(event, new_state)
                    }
                }
            }
        },
    )
}

#[tokio::test]
async fn handle_state_errors_gracefully_with_a_working_store() {
    let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
    let out: Vec<_> = graceful_pipeline(StateConfigs::session(), warnings.clone())
        .collect()
        .await;
    // Each user's first amount is remembered: alice 10, bob 5.
    assert_eq!(
        out,
        vec![
            ("alice".to_string(), 10.0, 0),
            ("bob".to_string(), 5.0, 0),
            ("alice".to_string(), 10.0, 0),
            ("bob".to_string(), 5.0, 0),
            ("alice".to_string(), 10.0, 0),
        ]
    );
    assert!(warnings.lock().unwrap().is_empty());
}

#[tokio::test]
async fn handle_state_errors_gracefully_with_a_failing_store() {
    let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
    let config = StateConfig::new().with_custom_storage(Arc::new(DownStorage));
    let out: Vec<_> = graceful_pipeline(config, warnings.clone()).collect().await;
    // Every event is still processed (with fresh state), nothing panics.
    assert_eq!(out.len(), 5);
    assert_eq!(out[2], ("alice".to_string(), 20.0, 0));
    let warnings = warnings.lock().unwrap();
    assert_eq!(warnings.len(), 5, "every failed save was reported");
    assert!(warnings[0].contains("alice"), "{}", warnings[0]);
    assert!(warnings[1].contains("bob"), "{}", warnings[1]);
}
