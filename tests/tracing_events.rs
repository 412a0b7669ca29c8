//! The `tracing` output (issue 11, observability): the `rs2.operator` span each operator polls
//! in, and the events for failed events, evictions and cleanup passes, seen by a small
//! capturing subscriber.
//!
//! One test in this binary: tracing caches each call site's interest process-wide, and tests
//! on other threads with other subscribers would race on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use rs2::state::{StateConfig, StatefulStreamExt};
use rs2_suite::FailingStore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    fields: Fields,
    /// The fields of the span the event happened in (`None`: outside any span).
    span: Option<(String, Fields)>,
}

#[derive(Default)]
struct Log {
    spans: Mutex<BTreeMap<u64, (String, Fields)>>,
    /// The entered spans of the (one) test thread, innermost last.
    stack: Mutex<Vec<u64>>,
    events: Mutex<Vec<Captured>>,
    next_id: AtomicU64,
}

#[derive(Clone, Default)]
struct Capture(Arc<Log>);

struct FieldsOf<'a>(&'a mut Fields);

impl Visit for FieldsOf<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        attrs.record(&mut FieldsOf(&mut fields));
        self.0
            .spans
            .lock()
            .unwrap()
            .insert(id, (attrs.metadata().name().to_string(), fields));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut FieldsOf(&mut fields));
        let span = self
            .0
            .stack
            .lock()
            .unwrap()
            .last()
            .and_then(|id| self.0.spans.lock().unwrap().get(id).cloned());
        self.0.events.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields,
            span,
        });
    }
    fn enter(&self, id: &Id) {
        self.0.stack.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, id: &Id) {
        let mut stack = self.0.stack.lock().unwrap();
        if let Some(at) = stack.iter().rposition(|&s| s == id.into_u64()) {
            stack.remove(at);
        }
    }
}

impl Capture {
    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.0.events.lock().unwrap())
    }
}

fn message(e: &Captured) -> &str {
    e.fields.get("message").map_or("", String::as_str)
}

#[test]
fn operators_log_in_their_span_failures_evictions_and_cleanups() {
    let capture = Capture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        runtime.block_on(async {
            // A backend that fails: one warn per failed event, in the operator's span, with
            // the key escaped (a forged log line stays on one line).
            let config = StateConfig::new()
                .namespace("shop")
                .with_custom_storage(Arc::new(FailingStore));
            let items: Vec<_> = stream::iter(["ann".to_string(), "evil\nINFO forged".to_string()])
                .stateful_fold_rs2(
                    config,
                    |k: &String| k.clone(),
                    0u64,
                    |n, _, _| async move { n + 1 },
                )
                .collect()
                .await;
            assert!(items.iter().all(Result::is_err));
            let events = capture.take();
            let warns: Vec<_> = events.iter().filter(|e| e.level == Level::WARN).collect();
            assert_eq!(warns.len(), 2, "{events:#?}");
            for w in &warns {
                assert_eq!(message(w), "state backend call failed");
                assert_eq!(w.target, "rs2::operator");
                assert_eq!(w.fields["operator"], "fold");
                let (name, span) = w.span.as_ref().expect("inside the operator's span");
                assert_eq!(name, "rs2.operator");
                assert_eq!(
                    (span["operator"].as_str(), span["namespace"].as_str()),
                    ("fold", "shop")
                );
            }
            assert!(
                warns[0].fields["error"].contains("ann'"),
                "{:?}",
                warns[0].fields
            );
            let forged = &warns[1].fields["error"];
            assert!(
                forged.contains(r"evil\nINFO forged'") && !forged.contains('\n'),
                "{forged}"
            );

            // A key that cannot be extracted is not a backend failure: debug.
            let items: Vec<_> = stream::iter([serde_json::json!({"id": 1})])
                .stateful_fold_rs2(
                    StateConfig::new(),
                    rs2::state::FieldKeyExtractor::new("user_id"),
                    0u64,
                    |n, _, _| async move { n + 1 },
                )
                .collect()
                .await;
            assert!(items[0].is_err());
            let events = capture.take();
            let failed: Vec<_> = events
                .iter()
                .filter(|e| message(e) == "event failed")
                .collect();
            assert_eq!(failed.len(), 1, "{events:#?}");
            assert_eq!(failed[0].level, Level::DEBUG);
            assert!(events.iter().all(|e| e.level != Level::WARN), "{events:#?}");

            // Evictions (trace, one per key evicted) and cleanup passes (debug, with a count).
            let config = StateConfig::new()
                .max_size(2)
                .ttl(Duration::from_secs(1))
                .cleanup_interval(Duration::from_secs(1));
            let input =
                rs2_suite::timed(vec![(0, "a"), (0, "b"), (0, "c"), (0, "d"), (5_000, "e")]);
            let out: Vec<_> = input
                .stateful_deduplicate_rs2(config, |e: &&str| e.to_string(), Duration::from_secs(60))
                .collect()
                .await;
            assert_eq!(out.len(), 5);
            let events = capture.take();
            let evicted = events
                .iter()
                .filter(|e| e.level == Level::TRACE && message(e).contains("evicted"))
                .count();
            assert_eq!(evicted, 2, "c and d evict a and b: {events:#?}");
            let cleanups: Vec<_> = events
                .iter()
                .filter(|e| e.level == Level::DEBUG && message(e).contains("cleanup pass"))
                .collect();
            assert_eq!(cleanups.len(), 1, "{events:#?}");
            assert_eq!(
                cleanups[0].fields["expired"], "2",
                "c and d had expired by 5 s"
            );
            assert_eq!(
                cleanups[0].span.as_ref().map(|s| s.1["operator"].as_str()),
                Some("dedup")
            );
        })
    });
}
