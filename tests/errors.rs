//! Bad input reaches the user as a `StateError`, never as a hang, a panic or lost state:
//! invalid configs, undecodable stored bytes, a backend that fails on every call, an empty
//! stream.
//!
//! Every pipeline runs under a timeout so a hang fails the test instead of stalling it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rs2::prelude::*;
use rs2::state::async_trait;
use serde::{Deserialize, Serialize};

async fn no_hang<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("pipeline hung")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ev {
    user: String,
    amount: u64,
}

fn ev(user: &str, amount: u64) -> Ev {
    Ev {
        user: user.to_string(),
        amount,
    }
}

fn events() -> Vec<Ev> {
    vec![ev("alice", 1), ev("bob", 2), ev("alice", 3), ev("carol", 4)]
}

fn by_user(e: &Ev) -> String {
    e.user.clone()
}

/// A well-behaved map store, shared through the config.
use rs2_suite::MapStore;

/// A backend whose every call fails (naming the key, as the `StateStorage` docs ask), and which
/// counts the calls it got.
#[derive(Default)]
struct FailingStore {
    calls: AtomicUsize,
}

impl FailingStore {
    fn fail(&self, key: &str) -> StateError {
        self.calls.fetch_add(1, Ordering::Relaxed);
        StateError::storage_for(key, "connection refused")
    }
}

#[async_trait]
impl StateStorage for FailingStore {
    async fn get(&self, key: &str) -> StateResult<Option<Vec<u8>>> {
        Err(self.fail(key))
    }
    async fn set(&self, key: &str, _value: &[u8]) -> StateResult<()> {
        Err(self.fail(key))
    }
    async fn delete(&self, key: &str) -> StateResult<()> {
        Err(self.fail(key))
    }
    async fn exists(&self, key: &str) -> StateResult<bool> {
        Err(self.fail(key))
    }
    async fn clear(&self) -> StateResult<()> {
        Err(self.fail("*"))
    }
}

fn invalid_configs() -> Vec<(&'static str, StateConfig)> {
    vec![
        ("zero ttl", StateConfig::new().ttl(Duration::ZERO)),
        (
            "zero cleanup interval",
            StateConfig::new().cleanup_interval(Duration::ZERO),
        ),
        (
            "cleanup above ttl",
            StateConfig::new()
                .ttl(Duration::from_secs(60))
                .cleanup_interval(Duration::from_secs(120)),
        ),
        ("zero max_size", StateConfig::new().max_size(0)),
        (
            "custom without a store",
            StateConfig::new().storage_type(StateStorageType::Custom),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Invalid configs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fold_with_zero_ttl_yields_one_validation_error_per_event() {
    let items: Vec<Result<u64, StateError>> = no_hang(
        futures::stream::iter(events())
            .stateful_fold_rs2(
                StateConfig::new().ttl(Duration::ZERO),
                by_user,
                0u64,
                |sum, e: Ev, _state| async move { sum + e.amount },
            )
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 4, "one item per event and the stream ends");
    for item in &items {
        assert!(
            matches!(item, Err(StateError::Validation(m)) if m.contains("TTL cannot be zero")),
            "{item:?}"
        );
    }
}

#[tokio::test]
async fn reduce_with_zero_ttl_yields_one_validation_error_per_event() {
    let items: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(events())
            .stateful_reduce_rs2(
                StateConfig::new().ttl(Duration::ZERO),
                by_user,
                |a, b, _state| async move { ev(&a.user, a.amount + b.amount) },
            )
            .collect(),
    )
    .await;
    assert_eq!(items.len(), 4);
    for item in &items {
        assert!(
            matches!(item, Err(StateError::Validation(m)) if m.contains("TTL cannot be zero")),
            "{item:?}"
        );
    }
}

#[tokio::test]
async fn fold_and_reduce_reject_every_invalid_config() {
    for (what, config) in invalid_configs() {
        let folded: Vec<Result<u64, StateError>> = no_hang(
            futures::stream::iter(events())
                .stateful_fold_rs2(config.clone(), by_user, 0u64, |s, e: Ev, _| async move {
                    s + e.amount
                })
                .collect(),
        )
        .await;
        assert_eq!(folded.len(), 4, "{what}");
        assert!(
            folded
                .iter()
                .all(|r| matches!(r, Err(e) if e.is_validation())),
            "{what}: {folded:?}"
        );

        let reduced: Vec<Result<Ev, StateError>> = no_hang(
            futures::stream::iter(events())
                .stateful_reduce_rs2(config.clone(), by_user, |a, b, _| async move {
                    ev(&a.user, a.amount + b.amount)
                })
                .collect(),
        )
        .await;
        assert_eq!(reduced.len(), 4, "{what}");
        assert!(
            reduced
                .iter()
                .all(|r| matches!(r, Err(e) if e.is_validation())),
            "{what}: {reduced:?}"
        );
    }
}

#[derive(Debug, Default, PartialEq)]
struct Observed {
    try_get_validation: bool,
    get_none: bool,
    set_err: bool,
    update_err: bool,
    exists: bool,
}

#[tokio::test]
async fn map_with_invalid_config_reports_through_the_access() {
    for (what, config) in invalid_configs() {
        let seen: Vec<Observed> = no_hang(
            futures::stream::iter(events())
                .stateful_map_rs2(config, by_user, |_e, state| async move {
                    Observed {
                        try_get_validation: matches!(
                            state.try_get::<u64>().await,
                            Err(StateError::Validation(_))
                        ),
                        get_none: state.get::<u64>().await.is_none(),
                        set_err: matches!(state.set(&1u64).await, Err(StateError::Validation(_))),
                        update_err: matches!(
                            state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await,
                            Err(StateError::Validation(_))
                        ),
                        exists: state.exists().await,
                    }
                })
                .collect(),
        )
        .await;
        assert_eq!(seen.len(), 4, "{what}: every event reaches the closure");
        for o in seen {
            assert_eq!(
                o,
                Observed {
                    try_get_validation: true,
                    get_none: true,
                    set_err: true,
                    update_err: true,
                    exists: false,
                },
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn map_with_zero_ttl_names_the_problem() {
    let messages: Vec<String> = no_hang(
        futures::stream::iter(events())
            .stateful_map_rs2(
                StateConfig::new().ttl(Duration::ZERO),
                by_user,
                |_e, state| async move { state.set(&1u64).await.unwrap_err().to_string() },
            )
            .collect(),
    )
    .await;
    assert_eq!(messages.len(), 4);
    assert!(
        messages[0].contains("TTL cannot be zero"),
        "{}",
        messages[0]
    );
}

#[tokio::test]
async fn filter_with_invalid_config_reports_through_the_access() {
    let kept: Vec<Ev> = no_hang(
        futures::stream::iter(events())
            .stateful_filter_rs2(
                StateConfig::new().max_size(0),
                by_user,
                |_e, state| async move {
                    // Keep the events whose state could not be written.
                    matches!(state.set(&1u64).await, Err(StateError::Validation(_)))
                        && state.get::<u64>().await.is_none()
                },
            )
            .collect(),
    )
    .await;
    assert_eq!(kept, events());
}

#[tokio::test]
async fn empty_streams_end_with_no_items() {
    let mapped: Vec<u64> = no_hang(
        futures::stream::iter(Vec::<Ev>::new())
            .stateful_map_rs2(StateConfig::new(), by_user, |e, _s| async move { e.amount })
            .collect(),
    )
    .await;
    assert!(mapped.is_empty());
    let folded: Vec<Result<u64, StateError>> = no_hang(
        futures::stream::iter(Vec::<Ev>::new())
            .stateful_fold_rs2(
                StateConfig::new(),
                by_user,
                0u64,
                |s, e: Ev, _| async move { s + e.amount },
            )
            .collect(),
    )
    .await;
    assert!(folded.is_empty());
    // Even with an invalid config.
    let reduced: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(Vec::<Ev>::new())
            .stateful_reduce_rs2(
                StateConfig::new().ttl(Duration::ZERO),
                by_user,
                |a, _b, _| async move { a },
            )
            .collect(),
    )
    .await;
    assert!(reduced.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Undecodable stored bytes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    visits: u64,
    score: f64,
    name: String,
}

fn profile(visits: u64) -> Profile {
    Profile {
        visits,
        score: 1.5,
        name: "p".into(),
    }
}

/// The two kinds of shared store: a remote-style backend (async calls only) and the in-process
/// `InMemoryState` (which operators read through slots).
fn shared_stores() -> Vec<(&'static str, Arc<dyn StateStorage + Send + Sync>)> {
    vec![
        ("custom map store", Arc::new(MapStore::default())),
        (
            "shared InMemoryState",
            Arc::new(InMemoryState::new(&StateConfig::new())),
        ),
    ]
}

/// Writes a `String` (an old state type) under `key` in `store`; returns the bytes written.
async fn write_legacy_string(store: &Arc<dyn StateStorage + Send + Sync>, key: &str) -> Vec<u8> {
    let legacy: StateAccess = StateAccess::new(store.clone(), key.to_string());
    legacy.set(&"legacy text".to_string()).await.unwrap();
    let bytes = store.get(key).await.unwrap().expect("written");
    // The bytes really are undecodable as the new type.
    let check: StateAccess = StateAccess::new(store.clone(), key.to_string());
    assert!(check.try_get::<Profile>().await.is_err());
    bytes
}

#[tokio::test]
async fn map_never_overwrites_undecodable_state() {
    for (kind, store) in shared_stores() {
        let original = write_legacy_string(&store, "map:alice").await;
        let config = StateConfig::new().with_custom_storage(store.clone());

        let seen: Vec<(String, Option<Profile>, Result<(), StateError>)> = no_hang(
            futures::stream::iter(vec![ev("alice", 1), ev("bob", 1)])
                .stateful_map_rs2(config, by_user, |e, state| async move {
                    let current = state.get::<Profile>().await;
                    let next = current.clone().unwrap_or(profile(0));
                    let written = state.set(&next).await;
                    (e.user, current, written)
                })
                .collect(),
        )
        .await;

        assert_eq!(seen.len(), 2);
        let (user, current, written) = &seen[0];
        assert_eq!(user, "alice");
        assert_eq!(current, &None, "undecodable state reads as None");
        let err = written
            .as_ref()
            .expect_err("set after a failed read must be refused");
        assert!(err.to_string().contains("alice"), "{err}");
        assert_eq!(
            store.get("map:alice").await.unwrap(),
            Some(original),
            "{kind}: the undecodable bytes were overwritten"
        );

        // Another key is unaffected.
        assert_eq!(seen[1].1, None);
        assert_eq!(seen[1].2, Ok(()));
        let bob: StateAccess = StateAccess::new(store, "map:bob".into());
        assert_eq!(bob.get::<Profile>().await, Some(profile(0)));
    }
}

#[tokio::test]
async fn map_update_on_undecodable_state_fails_and_leaves_bytes() {
    for (kind, store) in shared_stores() {
        let original = write_legacy_string(&store, "map:alice").await;
        let config = StateConfig::new().with_custom_storage(store.clone());
        let results: Vec<Result<Profile, StateError>> = no_hang(
            futures::stream::iter(vec![ev("alice", 1), ev("alice", 2)])
                .stateful_map_rs2(config, by_user, |_e, state| async move {
                    state
                        .update(|p: Option<Profile>| {
                            let mut p = p.unwrap_or(profile(0));
                            p.visits += 1;
                            p
                        })
                        .await
                })
                .collect(),
        )
        .await;
        assert_eq!(results.len(), 2);
        for r in &results {
            assert!(
                matches!(r, Err(StateError::Serialization(m)) if m.contains("alice")),
                "{kind}: {r:?}"
            );
        }
        assert_eq!(
            store.get("map:alice").await.unwrap(),
            Some(original),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn try_get_reports_a_serialization_error_naming_the_key() {
    for (kind, store) in shared_stores() {
        let original = write_legacy_string(&store, "map:alice").await;
        let config = StateConfig::new().with_custom_storage(store.clone());
        let errs: Vec<StateResult<Option<Profile>>> = no_hang(
            futures::stream::iter(vec![ev("alice", 1)])
                .stateful_map_rs2(config, by_user, |_e, state| async move {
                    state.try_get::<Profile>().await
                })
                .collect(),
        )
        .await;
        assert!(
            matches!(&errs[0], Err(StateError::Serialization(m)) if m.contains("alice")),
            "{kind}: {errs:?}"
        );
        // The old type still reads fine: nothing was lost.
        let old: StateAccess = StateAccess::new(store.clone(), "map:alice".into());
        assert_eq!(old.get::<String>().await, Some("legacy text".to_string()));
        assert_eq!(store.get("map:alice").await.unwrap(), Some(original));
    }
}

#[tokio::test]
async fn delete_then_set_resets_undecodable_state_explicitly() {
    for (kind, store) in shared_stores() {
        let _original = write_legacy_string(&store, "map:alice").await;
        let config = StateConfig::new().with_custom_storage(store.clone());
        let out: Vec<(bool, StateResult<()>, StateResult<()>)> = no_hang(
            futures::stream::iter(vec![ev("alice", 1)])
                .stateful_map_rs2(config.clone(), by_user, |_e, state| async move {
                    let unreadable = state.get::<Profile>().await.is_none();
                    let deleted = state.delete().await;
                    let written = state.set(&profile(7)).await;
                    (unreadable, deleted, written)
                })
                .collect(),
        )
        .await;
        assert_eq!(out, vec![(true, Ok(()), Ok(()))], "{kind}");
        let after: StateAccess = StateAccess::new(store, "map:alice".into());
        assert_eq!(after.get::<Profile>().await, Some(profile(7)));

        // The next pipeline reads the new state normally.
        let visits: Vec<u64> = no_hang(
            futures::stream::iter(vec![ev("alice", 1)])
                .stateful_map_rs2(config, by_user, |_e, state| async move {
                    state
                        .update(|p: Option<Profile>| {
                            let mut p = p.expect("state present");
                            p.visits += 1;
                            p
                        })
                        .await
                        .unwrap()
                        .visits
                })
                .collect(),
        )
        .await;
        assert_eq!(visits, vec![8], "{kind}");
    }
}

#[tokio::test]
async fn fold_over_undecodable_accumulator_yields_err_and_keeps_bytes() {
    for (kind, store) in shared_stores() {
        let original = write_legacy_string(&store, "fold:alice").await;
        let config = StateConfig::new().with_custom_storage(store.clone());
        let items: Vec<Result<Profile, StateError>> = no_hang(
            futures::stream::iter(vec![ev("alice", 1), ev("bob", 1), ev("alice", 2)])
                .stateful_fold_rs2(config, by_user, profile(0), |mut p, e: Ev, _s| async move {
                    p.visits += e.amount;
                    p
                })
                .collect(),
        )
        .await;
        assert_eq!(items.len(), 3);
        for i in [0, 2] {
            assert!(
                matches!(&items[i], Err(StateError::Serialization(m)) if m.contains("alice")),
                "{kind}: {:?}",
                items[i]
            );
        }
        assert_eq!(items[1], Ok(profile(1)), "bob is unaffected");
        assert_eq!(
            store.get("fold:alice").await.unwrap(),
            Some(original),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn reduce_over_undecodable_value_yields_err_and_keeps_bytes() {
    for (kind, store) in shared_stores() {
        let original = write_legacy_string(&store, "reduce:alice").await;
        let config = StateConfig::new().with_custom_storage(store.clone());
        let items: Vec<Result<Ev, StateError>> = no_hang(
            futures::stream::iter(vec![ev("alice", 1), ev("bob", 5), ev("bob", 6)])
                .stateful_reduce_rs2(config, by_user, |a, b, _s| async move {
                    ev(&a.user, a.amount + b.amount)
                })
                .collect(),
        )
        .await;
        assert!(
            matches!(&items[0], Err(StateError::Serialization(m)) if m.contains("alice")),
            "{kind}: {:?}",
            items[0]
        );
        assert_eq!(items[1..], [Ok(ev("bob", 5)), Ok(ev("bob", 11))]);
        assert_eq!(
            store.get("reduce:alice").await.unwrap(),
            Some(original),
            "{kind}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A backend that fails on every call
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct MapSeen {
    user: String,
    try_get: StateResult<Option<u64>>,
    get: Option<u64>,
    exists: bool,
    set: StateResult<()>,
    update: StateResult<u64>,
    delete: StateResult<()>,
}

#[tokio::test]
async fn failing_backend_map_closure_sees_errors_naming_the_key() {
    let store = Arc::new(FailingStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());
    let seen: Vec<MapSeen> = no_hang(
        futures::stream::iter(events())
            .stateful_map_rs2(config, by_user, |e, state| async move {
                // try_get first: set/update must fail because the backend does, not only
                // because a failed `get` blocked them.
                let try_get = state.try_get::<u64>().await;
                let set = state.set(&1u64).await;
                let update = state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await;
                let get = state.get::<u64>().await;
                let exists = state.exists().await;
                let delete = state.delete().await;
                MapSeen {
                    user: e.user,
                    try_get,
                    get,
                    exists,
                    set,
                    update,
                    delete,
                }
            })
            .collect(),
    )
    .await;
    assert_eq!(seen.len(), 4, "the stream runs to the end");
    for s in &seen {
        let names_key = |r: &StateError| r.to_string().contains(&s.user);
        assert!(
            matches!(&s.try_get, Err(e @ StateError::Storage(_)) if names_key(e)),
            "{s:?}"
        );
        assert!(matches!(&s.set, Err(e) if names_key(e)), "{s:?}");
        assert!(matches!(&s.update, Err(e) if names_key(e)), "{s:?}");
        assert!(matches!(&s.delete, Err(e) if names_key(e)), "{s:?}");
        assert_eq!(s.get, None);
        assert!(!s.exists);
    }
    assert!(store.calls.load(Ordering::Relaxed) >= 4 * 4);
}

#[tokio::test]
async fn failing_backend_fold_and_reduce_yield_err_items_naming_the_key() {
    let store = Arc::new(FailingStore::default());
    let config = StateConfig::new().with_custom_storage(store.clone());

    let folded: Vec<Result<u64, StateError>> = no_hang(
        futures::stream::iter(events())
            .stateful_fold_rs2(config.clone(), by_user, 0u64, |s, e: Ev, _| async move {
                s + e.amount
            })
            .collect(),
    )
    .await;
    let reduced: Vec<Result<Ev, StateError>> = no_hang(
        futures::stream::iter(events())
            .stateful_reduce_rs2(config, by_user, |a, b, _| async move {
                ev(&a.user, a.amount + b.amount)
            })
            .collect(),
    )
    .await;

    let users: Vec<String> = events().into_iter().map(|e| e.user).collect();
    assert_eq!(folded.len(), 4, "fold runs to the end");
    assert_eq!(reduced.len(), 4, "reduce runs to the end");
    for (i, user) in users.iter().enumerate() {
        assert!(
            matches!(&folded[i], Err(StateError::Storage(m)) if m.contains(user.as_str())),
            "{:?}",
            folded[i]
        );
        assert!(
            matches!(&reduced[i], Err(StateError::Storage(m)) if m.contains(user.as_str())),
            "{:?}",
            reduced[i]
        );
    }
}

#[tokio::test]
async fn failing_backend_filter_runs_to_the_end() {
    let config = StateConfig::new().with_custom_storage(Arc::new(FailingStore::default()));
    let errors = Arc::new(AtomicUsize::new(0));
    let errors2 = errors.clone();
    let kept: Vec<Ev> = no_hang(
        futures::stream::iter(events())
            .stateful_filter_rs2(config, by_user, move |e, state| {
                let errors = errors2.clone();
                let user = e.user.clone();
                async move {
                    match state.update(|n: Option<u64>| n.unwrap_or(0) + 1).await {
                        Ok(n) => n <= 1,
                        Err(err) => {
                            assert!(err.to_string().contains(&user), "{err}");
                            errors.fetch_add(1, Ordering::Relaxed);
                            // Fail open: keep the event.
                            true
                        }
                    }
                }
            })
            .collect(),
    )
    .await;
    assert_eq!(kept, events());
    assert_eq!(errors.load(Ordering::Relaxed), 4);
}
