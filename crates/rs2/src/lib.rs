//! # rs2: keyed state for async streams
//!
//! Per-key memory across the events of a [`futures::Stream`]: running totals, sessions, rate
//! limits, fraud rules, as plain stream pipelines.
//!
//! ```
//! use rs2::{
//!     rs2_stream_ext::Rs2StreamExt,
//!     state::{CustomKeyExtractor, StateConfigs, StatefulStreamExt},
//! };
//!
//! # #[derive(Clone)] struct Payment { user: String, amount: u64 }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let payments = futures::stream::iter(vec![
//!     Payment { user: "ann".into(), amount: 5 },
//!     Payment { user: "bob".into(), amount: 7 },
//!     Payment { user: "ann".into(), amount: 3 },
//! ]);
//! let totals: Vec<(String, u64)> = payments
//!     .stateful_map_rs2(
//!         StateConfigs::session(),
//!         CustomKeyExtractor::new(|p: &Payment| p.user.clone()),
//!         |p, state| async move {
//!             let total = state.update(|t: Option<u64>| t.unwrap_or(0) + p.amount).await.unwrap();
//!             (p.user, total)
//!         },
//!     )
//!     .collect()
//!     .await;
//! assert_eq!(totals[2], ("ann".to_string(), 8));
//! # }
//! ```
//!
//! Crates behind the facade: `rs2-state-core` (the storage contract a backend implements),
//! `rs2-state-memory` (the default store), `rs2-operators` (the operators), and with the
//! `redis` feature `rs2-state-redis` (`state::RedisState`: state shared by replicas), with the
//! `durable` feature `rs2-state-durable` (`state::DurableState`: state on local disk that
//! survives a restart).
#![warn(missing_docs)]

/// Keyed state: configuration, storage, key extractors, typed access and the operators.
pub mod state {
    pub use rs2_operators::*;
    pub use rs2_state_core::*;
    /// Keyed state in a directory on local disk, surviving restarts (feature `durable`).
    #[cfg(feature = "durable")]
    pub use rs2_state_durable::{Durability, DurableState, DurableStateBuilder};
    pub use rs2_state_memory::{AdmissionState, CreateStorage, InMemoryState, StateClock};
    /// Keyed state in Redis, shared by every replica of a pipeline (feature `redis`). Its
    /// `RetryPolicy` is core's, re-exported above.
    #[cfg(feature = "redis")]
    pub use rs2_state_redis::{default_retry_policy, RedisState};
}

/// Stream combinators (`map`, `filter`, `for_each`, `collect`, ...).
///
/// This is futures' [`StreamExt`](futures::StreamExt) under rs2's name, so importing it and
/// `futures::StreamExt` together is not ambiguous.
pub mod rs2_stream_ext {
    pub use futures::StreamExt as Rs2StreamExt;
}

/// Everything a pipeline usually needs: `use rs2::prelude::*;`.
pub mod prelude {
    pub use crate::rs2_stream_ext::Rs2StreamExt;
    pub use crate::state::{
        CreateStorage, CustomKeyExtractor, EventTimeOutput, EventTimeWindow, FieldKeyExtractor,
        InMemoryState, KeyExtractor, RetryPolicy, StateAccess, StateConfig, StateConfigBuilder,
        StateConfigs, StateError, StateResult, StateStats, StateStorage, StateStorageType,
        StatefulStreamExt, TimeWindow,
    };
    pub use futures::{Stream, StreamExt};
}

pub use futures;
