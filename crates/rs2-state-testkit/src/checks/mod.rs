//! The checks, one function each, and what they share.
//!
//! A check is `async fn name<S: StateStorage + 'static>(stores: Stores<S>) -> Checked`: it
//! returns `Err(message)` on the first thing the store got wrong (never panics on purpose),
//! and every call to the store goes through [`op`], which gives a call that hangs a deadline.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rs2_state_core::{StateResult, StateStorage};

mod basics;
mod batch;
mod locks;
mod operators;
mod ttl;
mod undecodable;
mod update;

/// What a check returns: `Err` says what the store got wrong.
pub(crate) type Checked = Result<(), String>;

/// Returns `Err(format!(..))` from the check unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Returns an error from the check unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!(
                "{}: expected {}, got {}",
                format!($($msg)+),
                $crate::checks::show(right),
                $crate::checks::show(left)
            ));
        }
    }};
}

pub(crate) use {ensure, ensure_eq};

/// Which stores a check runs on, and when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One store; always runs.
    One,
    /// One store; only with `per_write_ttl(true)`.
    Ttl,
    /// Two fresh stores from `make`; only with `shared_between_instances(true)`.
    TwoFresh,
    /// Two instances over the same keys; only with `shared_between_instances(true)`.
    TwoSharing,
}

/// The stores a check runs on.
pub(crate) struct Stores<S> {
    /// The store (from `make`).
    pub a: Arc<S>,
    /// The second store of a two-store check.
    pub b: Option<Arc<S>>,
    /// Whether `b` is meant to share `a`'s keys.
    pub sharing: bool,
}

impl<S> Clone for Stores<S> {
    fn clone(&self) -> Self {
        Self {
            a: Arc::clone(&self.a),
            b: self.b.clone(),
            sharing: self.sharing,
        }
    }
}

impl<S> Stores<S> {
    /// The second store (two-store checks only).
    pub fn b(&self) -> Result<Arc<S>, String> {
        self.b
            .clone()
            .ok_or_else(|| "internal: a two-store check was given one store".to_string())
    }
}

/// One check: its name (its function's), when it runs, and the function.
pub(crate) struct Check<S> {
    pub name: &'static str,
    pub kind: Kind,
    pub run: fn(Stores<S>) -> BoxFuture<'static, Checked>,
}

macro_rules! checks {
    ($($kind:ident $module:ident :: $name:ident),* $(,)?) => {
        vec![$(Check {
            name: stringify!($name),
            kind: Kind::$kind,
            run: |stores| Box::pin($module::$name::<S>(stores)),
        }),*]
    };
}

/// Every check, in the order run.
pub(crate) fn all<S: StateStorage + 'static>() -> Vec<Check<S>> {
    checks![
        One basics::missing_key_reads_as_absent,
        One basics::set_get_overwrite_delete,
        One basics::empty_value_round_trips,
        One basics::every_byte_value_round_trips,
        One basics::unusual_keys_are_distinct_and_round_trip,
        One basics::clear_removes_every_key,
        TwoFresh basics::clear_leaves_other_instances_alone,
        Ttl ttl::set_with_ttl_expires,
        Ttl ttl::write_without_ttl_does_not_expire,
        Ttl ttl::update_with_ttl_expires,
        Ttl ttl::set_many_with_ttl_expires,
        Ttl ttl::write_and_release_with_ttl_expires,
        One update::update_returns_the_new_value_and_sees_the_previous,
        One update::update_closure_error_writes_nothing,
        One update::update_is_atomic_under_contention,
        TwoSharing update::update_is_atomic_across_instances,
        One batch::get_many_answers_in_order_asked,
        One batch::set_many_writes_every_entry,
        One locks::lock_key_excludes_the_same_key,
        One locks::lock_key_leaves_other_keys_free,
        One locks::lock_and_get_reads_the_current_value,
        One locks::write_and_release_set_writes_and_frees_the_key,
        One locks::write_and_release_delete_removes_and_frees_the_key,
        One locks::write_and_release_keep_keeps_and_frees_the_key,
        One locks::locked_counter_is_exact_under_contention,
        TwoSharing locks::locked_counter_is_exact_across_instances,
        One operators::fold_matches_a_hashmap_model,
        One operators::fold_state_persists_between_pipelines,
        One operators::map_state_access_update_counts_per_key,
        One operators::deduplicate_passes_each_id_once,
        One operators::throttle_limits_each_key,
        One operators::concurrent_folds_emit_every_count_once,
        One operators::clear_removes_operator_state,
        One undecodable::fold_never_overwrites_undecodable_state,
        One undecodable::state_access_never_overwrites_undecodable_state,
    ]
}

/// How long one call to the store may take before the check fails as hung.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a lock that was just freed may take to be taken again, or a pipeline of a few
/// dozen events to finish.
pub(crate) const PROMPT: Duration = Duration::from_secs(10);

/// A call to the store: its error, or it taking over [`CALL_TIMEOUT`], becomes the check's
/// failure, naming `what` was being done.
pub(crate) async fn op<T>(
    what: impl Display,
    call: impl Future<Output = StateResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what}: returned an error: {err}")),
        Err(_) => Err(format!("{what}: did not return within {CALL_TIMEOUT:?}")),
    }
}

/// `fut`, or a failure saying `what` did not finish within `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: impl Display,
    fut: impl Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("{what}: did not finish within {limit:?}"))
}

/// A value for a failure message: `Debug`, cut short when long (a 64 KiB value).
pub(crate) fn show<T: Debug + ?Sized>(value: &T) -> String {
    const MAX: usize = 200;
    let text = format!("{value:?}");
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} chars)", &text[..end], text.len())
}

/// A counter's value as stored by the contention checks: a little-endian `u64`.
pub(crate) fn decode_counter(bytes: Option<&[u8]>) -> Result<u64, String> {
    match bytes {
        None => Ok(0),
        Some(bytes) => bytes.try_into().map(u64::from_le_bytes).map_err(|_| {
            format!(
                "counter holds {} bytes, not 8: {}",
                bytes.len(),
                show(bytes)
            )
        }),
    }
}
