//! The [`StateStorage`] contract as a test suite: a backend author runs every check against
//! their store in one call.
//!
//! [`Conformance`] takes a function that makes a fresh, empty store (a new prefix on a shared
//! server, a new temporary directory, ...), runs each check on stores of its own, and returns a
//! [`Report`]; [`Report::assert_passed`] panics listing every failed check by name with what
//! went wrong. A failing check never stops the others, and a check that hangs (a lock never
//! released, a request never answered) fails after a timeout instead of hanging the suite.
//!
//! ```no_run
//! # use rs2_state_core::{async_trait, StateResult, StateStorage};
//! # struct MyStore;
//! # impl MyStore { fn new() -> Self { MyStore } }
//! # #[async_trait] impl StateStorage for MyStore {
//! #   async fn get(&self, _: &str) -> StateResult<Option<Vec<u8>>> { Ok(None) }
//! #   async fn set(&self, _: &str, _: &[u8]) -> StateResult<()> { Ok(()) }
//! #   async fn delete(&self, _: &str) -> StateResult<()> { Ok(()) }
//! #   async fn exists(&self, _: &str) -> StateResult<bool> { Ok(false) }
//! #   async fn clear(&self) -> StateResult<()> { Ok(()) }
//! # }
//! use rs2_state_testkit::Conformance;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_store_meets_the_storage_contract() {
//!     Conformance::new(|| async { MyStore::new() })
//!         .per_write_ttl(false) // MyStore keeps the provided `set_with_ttl` (no expiry)
//!         .run()
//!         .await
//!         .assert_passed();
//! }
//! ```
//!
//! A store shared between processes (a Redis backend) also says that its instances share a
//! backend, and how to make a second client on the same keys as a first:
//!
//! ```no_run
//! # use rs2_state_core::{async_trait, StateResult, StateStorage};
//! # use rs2_state_testkit::Conformance;
//! # struct RedisStore(String);
//! # const URL: &str = "redis://127.0.0.1:6379";
//! # fn unique() -> String { String::new() }
//! # impl RedisStore {
//! #   async fn connect(_: &str) -> StateResult<Self> { Ok(RedisStore(String::new())) }
//! #   fn prefix(self, p: String) -> Self { RedisStore(p) }
//! #   fn prefix_name(&self) -> &str { &self.0 }
//! # }
//! # #[async_trait] impl StateStorage for RedisStore {
//! #   async fn get(&self, _: &str) -> StateResult<Option<Vec<u8>>> { Ok(None) }
//! #   async fn set(&self, _: &str, _: &[u8]) -> StateResult<()> { Ok(()) }
//! #   async fn delete(&self, _: &str) -> StateResult<()> { Ok(()) }
//! #   async fn exists(&self, _: &str) -> StateResult<bool> { Ok(false) }
//! #   async fn clear(&self) -> StateResult<()> { Ok(()) }
//! # }
//! # async fn check() {
//! Conformance::new(|| async { RedisStore::connect(URL).await.unwrap().prefix(unique()) })
//!     .second_instance(|store: &RedisStore| {
//!         let prefix = store.prefix_name().to_owned();
//!         async move { RedisStore::connect(URL).await.unwrap().prefix(prefix) }
//!     })
//!     .run()
//!     .await
//!     .assert_passed();
//! # }
//! ```
//!
//! # What is checked
//!
//! Each check is a function named after the property it checks; the report lists them by that
//! name. In order:
//!
//! * **Basics**: a missing key reads as `None` / `false` and deleting it is `Ok`; set, get,
//!   overwrite, delete; an empty value round-trips and exists; every byte value round-trips;
//!   keys with spaces, `:`, `{`, `}`, `*`, `?`, `[`, `]`, unicode and a 1 KiB key are distinct
//!   and round-trip; `clear` removes every key; with
//!   [`shared_between_instances`](Conformance::shared_between_instances), `clear` on one store
//!   from `make` leaves another's keys alone.
//! * **Per-write TTL** (with [`per_write_ttl`](Conformance::per_write_ttl)): a value written
//!   with a 100 ms TTL by `set_with_ttl`, `update_with_ttl`, `set_many` or `write_and_release`
//!   is there before the TTL has passed and gone within 2 s; a value written with `None` is
//!   still there after 500 ms.
//! * **Update**: returns the new value; the closure sees `None`, then the previous value; a
//!   failing closure writes nothing and its error is returned; 8 tasks × 50 increments of one
//!   key on one shared store (and, with `shared_between_instances`, on two instances) end at
//!   exactly 400, each increment returning a different count.
//! * **Batches**: `get_many` answers in the order asked (`None` for a missing key, a repeated
//!   key twice, nothing for no keys); `set_many` writes every entry.
//! * **Key locks**: a second `lock_key` of a held key waits until it is released; locks of
//!   other keys do not wait (at most one of eight may, as the provided striped in-process lock
//!   may put two keys in one stripe); `lock_and_get` reads the current value;
//!   `write_and_release` with `Set`, `Delete` and `Keep` does that and frees the key; 8 tasks ×
//!   25 increments under `lock_and_get` + `write_and_release` end at exactly 200 (and across
//!   instances).
//! * **Operators on the store**: fold, a map counting through `StateAccess::update`, dedup and
//!   throttle give what a `HashMap` model gives; a second fold pipeline continues the counts of
//!   the first (the state is in the store); two fold pipelines running at once over the same
//!   keys emit every count exactly once; `clear` removes the operators' state.
//! * **Undecodable state is never overwritten**: garbage bytes at the key a fold keeps its
//!   accumulator under make that event's item an `Err` naming the key, the bytes stay as they
//!   were and the key's lock is free again; `StateAccess::update` (and `set` after a failed
//!   `get`) through a map refuses the same way. The storage key is found by running the
//!   operator once on a recording store, not hard-coded.
//!
//! # Requirements
//!
//! Run in a multi-thread tokio runtime
//! (`#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`): the contention checks run
//! tasks in parallel with `tokio::spawn`. The TTL checks use real time, so do not pause the
//! clock. A run takes about two seconds plus the store's latency (most of it in the TTL and
//! lock checks, which wait on purpose).
#![warn(missing_docs)]

mod checks;
mod report;

mod faults;
pub use faults::FaultyStorage;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rs2_state_core::StateStorage;

pub use report::{CheckOutcome, Report, Status};

use checks::{Check, Kind, Stores};

/// How long one check may run before it fails as hung (see [`Conformance::check_timeout`]).
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `make` (or [`Conformance::second_instance`]'s function) may take to make a store.
const MAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes a second instance over the same keys as a first (type-erased: see
/// [`Conformance::second_instance`]).
type SecondFn<S> = Box<dyn Fn(&S) -> Pin<Box<dyn Future<Output = S>>>>;

/// Runs every conformance check against stores made by `make` (each call must return a fresh,
/// empty store, e.g. a new prefix on a shared server); [`Report::assert_passed`] panics with
/// the list of failed checks.
///
/// See the [crate docs](crate) for the list of checks and an example.
pub struct Conformance<F> {
    make: F,
    per_write_ttl: bool,
    shared_between_instances: bool,
    /// A `SecondFn<S>` for the `S` that `make` returns.
    second: Option<Box<dyn Any>>,
    check_timeout: Duration,
}

impl<F> std::fmt::Debug for Conformance<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conformance")
            .field("per_write_ttl", &self.per_write_ttl)
            .field("shared_between_instances", &self.shared_between_instances)
            .field("second_instance", &self.second.is_some())
            .field("check_timeout", &self.check_timeout)
            .finish()
    }
}

impl<F, Fut, S> Conformance<F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: StateStorage + 'static,
{
    /// The checks, run against stores made by `make`. Every call of `make` must return a
    /// fresh, empty store: each check gets stores of its own and may leave keys behind (the
    /// kit calls `clear` on each store after its check, ignoring errors).
    pub fn new(make: F) -> Self {
        Self {
            make,
            per_write_ttl: true,
            shared_between_instances: false,
            second: None,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }

    /// Whether the store drops a value `ttl` after a write that carries one (`set_with_ttl`,
    /// `update_with_ttl`, `set_many`, `write_and_release`). Default `true`; a store that keeps
    /// the provided `set_with_ttl` (which ignores the TTL) says `false`, and the TTL checks are
    /// reported as skipped.
    pub fn per_write_ttl(mut self, yes: bool) -> Self {
        self.per_write_ttl = yes;
        self
    }

    /// Whether the store's `update` and `lock_key` are atomic across *separate store
    /// instances* that share a backend (two Redis clients). Default `false`: only contention
    /// through one instance is checked.
    ///
    /// With `true`, the cross-instance checks run on two instances: `clear` isolation on two
    /// stores from `make`; contention on a store from `make` and a second instance over the
    /// *same keys*, made by the function given to
    /// [`second_instance`](Self::second_instance) (without one, by `make`, which then must
    /// return instances that share their keys).
    pub fn shared_between_instances(mut self, yes: bool) -> Self {
        self.shared_between_instances = yes;
        self
    }

    /// How to make a second instance over the same keys as `store` (another client of the
    /// same server, with the same prefix), for the cross-instance contention checks. Also
    /// turns [`shared_between_instances`](Self::shared_between_instances) on.
    ///
    /// The returned future may not borrow `store`: copy what it needs (the prefix) first.
    pub fn second_instance<G, GFut>(mut self, second: G) -> Self
    where
        G: Fn(&S) -> GFut + 'static,
        GFut: Future<Output = S> + 'static,
    {
        let second: SecondFn<S> = Box::new(move |store: &S| Box::pin(second(store)));
        self.second = Some(Box::new(second));
        self.shared_between_instances = true;
        self
    }

    /// How long one check may run before it fails as hung (default 60 s). Raise it for a
    /// store with high latency.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Runs all checks, one after another, each on fresh stores from `make`; returns a report
    /// listing each check and whether it passed.
    ///
    /// # Panics
    ///
    /// Outside a multi-thread tokio runtime.
    pub async fn run(self) -> Report {
        match tokio::runtime::Handle::try_current() {
            Ok(handle)
                if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread => {}
            _ => panic!(
                "Conformance::run needs a multi-thread tokio runtime: \
                 #[tokio::test(flavor = \"multi_thread\", worker_threads = 2)]"
            ),
        }
        // Always a `SecondFn<S>`: `second_instance` is only callable with this `S`.
        let second = self
            .second
            .as_ref()
            .and_then(|any| any.downcast_ref::<SecondFn<S>>());
        let mut outcomes = Vec::new();
        for check in checks::all::<S>() {
            let started = Instant::now();
            let status = match self.skip_reason(&check) {
                Some(reason) => Status::Skipped(reason.to_string()),
                None => match self.stores(check.kind, second).await {
                    Ok(stores) => run_check(&check, stores, self.check_timeout).await,
                    Err(message) => Status::Failed(message),
                },
            };
            outcomes.push(CheckOutcome {
                name: check.name,
                status,
                elapsed: started.elapsed(),
            });
        }
        Report::new(outcomes)
    }

    fn skip_reason(&self, check: &Check<S>) -> Option<&'static str> {
        match check.kind {
            Kind::One => None,
            Kind::Ttl if !self.per_write_ttl => Some("per_write_ttl(false)"),
            Kind::Ttl => None,
            Kind::TwoFresh | Kind::TwoSharing if !self.shared_between_instances => {
                Some("shared_between_instances(false)")
            }
            Kind::TwoFresh | Kind::TwoSharing => None,
        }
    }

    /// The stores a check of `kind` runs on.
    async fn stores(&self, kind: Kind, second: Option<&SecondFn<S>>) -> Result<Stores<S>, String> {
        let first = self.make_one("make()").await?;
        let other = match kind {
            Kind::One | Kind::Ttl => None,
            Kind::TwoFresh => Some(self.make_one("a second make()").await?),
            Kind::TwoSharing => Some(match second {
                Some(second) => within_make("second_instance(..)", second(&first)).await?,
                None => self.make_one("a second make()").await?,
            }),
        };
        Ok(Stores {
            a: Arc::new(first),
            b: other.map(Arc::new),
            sharing: kind == Kind::TwoSharing,
        })
    }

    async fn make_one(&self, what: &str) -> Result<S, String> {
        within_make(what, (self.make)()).await
    }
}

async fn within_make<S>(what: &str, fut: impl Future<Output = S>) -> Result<S, String> {
    tokio::time::timeout(MAKE_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{what} did not return a store within {MAKE_TIMEOUT:?}"))
}

/// Runs one check in a task of its own (so a panic in the store is caught and reported) with
/// a timeout, then clears its stores (best effort).
async fn run_check<S: StateStorage + 'static>(
    check: &Check<S>,
    stores: Stores<S>,
    timeout: Duration,
) -> Status {
    let keep = stores.clone();
    let mut task = tokio::spawn((check.run)(stores));
    let status = match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(Ok(()))) => Status::Passed,
        Ok(Ok(Err(message))) => Status::Failed(message),
        Ok(Err(join)) => Status::Failed(match join.try_into_panic() {
            Ok(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
            Err(join) => format!("the check's task failed: {join}"),
        }),
        Err(_) => {
            task.abort();
            Status::Failed(format!(
                "did not finish within {timeout:?} (a call to the store hung?)"
            ))
        }
    };
    for store in std::iter::once(&keep.a).chain(keep.b.as_ref()) {
        let _ = tokio::time::timeout(Duration::from_secs(5), store.clear()).await;
    }
    status
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}
