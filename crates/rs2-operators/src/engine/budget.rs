//! The yield budget: how many events an operator may take in without yielding an item before
//! it gives the executor back its thread.

use std::task::Context;

/// Events an operator takes in without yielding an item before it returns `Pending` (after
/// waking itself), so a long run of dropped or buffered events cannot hold the executor's
/// thread for the whole of a ready input.
pub(crate) const YIELD_BUDGET: u32 = 1024;

/// Counts the events one `poll_next` call took in without yielding an item.
///
/// Made fresh at the top of each `poll_next`; [`spend`](Self::spend) once per event that
/// yields nothing, and return `Poll::Pending` when it says so.
#[derive(Debug, Default)]
pub(crate) struct YieldBudget(u32);

impl YieldBudget {
    /// Counts an event taken in without an item; `true` (having woken the task, so it is
    /// polled again) when the poll should return `Pending` now.
    #[inline]
    pub fn spend(&mut self, cx: &mut Context<'_>) -> bool {
        self.0 += 1;
        if self.0 >= YIELD_BUDGET {
            cx.waker().wake_by_ref();
            true
        } else {
            false
        }
    }
}
