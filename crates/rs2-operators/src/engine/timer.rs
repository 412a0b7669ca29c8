//! The operators' processing-time timer: a tokio `Sleep` set for a deadline on the operator's
//! clock (group_by's timeouts, event-time windows' idle rule).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use super::keyed::KeyedState;

/// Polls the timer set for `deadline`, (re)setting it first if it is set for another one.
/// `Ready` only once `deadline` has passed on the operator's clock.
pub(crate) fn poll_timer(
    mut timer: Pin<&mut Option<Sleep>>,
    armed_for: &mut Option<u64>,
    keyed: &KeyedState,
    deadline: u64,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if *armed_for != Some(deadline) || timer.is_none() {
            let now = keyed.now();
            if now >= deadline {
                return Poll::Ready(());
            }
            // `now` is whole milliseconds rounded down, so this instant is at or after
            // `deadline` on the operator's clock.
            // A deadline too far off for the clock (say `u64::MAX`) waits a year and is set again.
            let base = tokio::time::Instant::now();
            let at = base
                .checked_add(Duration::from_millis(deadline - now))
                .unwrap_or_else(|| base + Duration::from_secs(365 * 86_400));
            match timer.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(at),
                None => {
                    if tokio::runtime::Handle::try_current().is_err() {
                        return Poll::Pending; // no timer outside tokio: checked when polled
                    }
                    timer.set(Some(tokio::time::sleep_until(at)));
                }
            }
            *armed_for = Some(deadline);
        }
        let Some(sleep) = timer.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match sleep.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(()) if keyed.now() >= deadline => return Poll::Ready(()),
            // Fired early by our clock's reckoning: set it again.
            Poll::Ready(()) => *armed_for = None,
        }
    }
}
