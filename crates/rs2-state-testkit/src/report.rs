//! What a run found: each check by name, passed, failed (with what went wrong) or skipped.

use std::fmt;
use std::time::Duration;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The store behaved as the contract says.
    Passed,
    /// It did not: what was expected and what the store did.
    Failed(String),
    /// The check does not apply to this store (the option that would enable it).
    Skipped(String),
}

/// One check's name, result and running time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The check's name (the name of the function that runs it, e.g.
    /// `update_is_atomic_under_contention`).
    pub name: &'static str,
    /// Whether it passed.
    pub status: Status,
    /// How long it took (making its stores included).
    pub elapsed: Duration,
}

impl CheckOutcome {
    /// Whether the check failed.
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed(_))
    }

    /// The failure message, or the reason the check was skipped.
    pub fn message(&self) -> Option<&str> {
        match &self.status {
            Status::Passed => None,
            Status::Failed(message) | Status::Skipped(message) => Some(message),
        }
    }
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.elapsed.as_millis();
        match &self.status {
            Status::Passed => write!(f, "ok    {} ({ms} ms)", self.name),
            Status::Failed(message) => write!(f, "FAIL  {} ({ms} ms): {message}", self.name),
            Status::Skipped(reason) => write!(f, "skip  {}: {reason}", self.name),
        }
    }
}

/// Every check of a [`Conformance`](crate::Conformance) run, in the order run.
///
/// `Display` prints a summary line and one line per check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a report does nothing unless checked: call assert_passed()"]
pub struct Report {
    checks: Vec<CheckOutcome>,
    failures: Vec<CheckOutcome>,
}

impl Report {
    pub(crate) fn new(checks: Vec<CheckOutcome>) -> Self {
        let failures = checks.iter().filter(|c| c.failed()).cloned().collect();
        Self { checks, failures }
    }

    /// Every check, in the order run.
    pub fn checks(&self) -> &[CheckOutcome] {
        &self.checks
    }

    /// The failed checks, in the order run.
    pub fn failures(&self) -> &[CheckOutcome] {
        &self.failures
    }

    /// Whether no check failed (skipped checks do not count as failures).
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The outcome of the check called `name`, if there is one.
    pub fn check(&self, name: &str) -> Option<&CheckOutcome> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Panics, listing every failed check by name with its message, unless all passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if self.passed() {
            return;
        }
        let mut message = format!(
            "{} of {} storage conformance checks failed:\n",
            self.failures.len(),
            self.checks.len()
        );
        for failure in &self.failures {
            message.push_str(&format!(
                "  {}: {}\n",
                failure.name,
                failure.message().unwrap_or_default()
            ));
        }
        message.push_str("\nfull report:\n");
        message.push_str(&self.to_string());
        panic!("{message}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            |want: fn(&Status) -> bool| self.checks.iter().filter(|c| want(&c.status)).count();
        writeln!(
            f,
            "storage conformance: {} passed, {} failed, {} skipped",
            count(|s| matches!(s, Status::Passed)),
            count(|s| matches!(s, Status::Failed(_))),
            count(|s| matches!(s, Status::Skipped(_))),
        )?;
        for check in &self.checks {
            writeln!(f, "  {check}")?;
        }
        Ok(())
    }
}
