//! The one way to bound a call in time. Every leg, lookup, hand-off and model read runs under [`within`]
//! (a duration from now) or [`until`] (an instant shared by several calls, such as the context cap); an
//! overrun is a [`DeadlineExceeded`] that names what was cut and after how long, so logs, `context_errors`
//! and prefetch reports all say it the same way.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub use crate::error::DeadlineExceeded;

/// Whole milliseconds, rounded (a deadline computed a few microseconds after it was set still reads as set).
fn millis(d: Duration) -> u64 {
    (d.as_secs_f64() * 1000.0).round() as u64
}

/// Runs `fut` for at most `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, fut: F) -> Result<F::Output, DeadlineExceeded> {
    tokio::time::timeout(limit, fut).await.map_err(|_| DeadlineExceeded { what: what.to_owned(), ms: millis(limit) })
}

/// Runs `fut` until `deadline`; the error reports the time it was given from now.
pub async fn until<F: Future>(what: &str, deadline: Instant, fut: F) -> Result<F::Output, DeadlineExceeded> {
    let given = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| DeadlineExceeded { what: what.to_owned(), ms: millis(given) })
}

/// Runs a fallible call until `deadline` and reports either failure (an error, or the cut) as one
/// `what: why` line, logged once here. For best-effort work (context legs, prefetch steps) whose failures
/// are recorded and skipped, never raised.
pub async fn bounded<T, E: std::error::Error + 'static>(
    what: &str,
    deadline: Instant,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match until(what, deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(what, error = %crate::error::chain(&e), "call failed");
            Err(format!("{what}: {e}"))
        }
        Err(cut) => {
            tracing::warn!(what, deadline_ms = cut.ms, "call cut at its deadline");
            Err(cut.to_string())
        }
    }
}

/// Runs a best-effort call (an optional check, a cache write, a hand-off) for at most `limit`: its value,
/// or `None` when it failed or ran out of time, logged once here as `what: why`. For calls whose failure the
/// caller skips and never raises.
pub async fn best_effort<T, E: std::error::Error + 'static>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    bounded(what, Instant::now() + limit, fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_overrun_names_the_leg_and_its_deadline() {
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let err = within("retrieval", Duration::from_millis(240), slow).await.unwrap_err();
        assert_eq!(err.to_string(), "retrieval: deadline of 240 ms");
        assert_eq!(within("fast", Duration::from_secs(1), async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_call_reports_an_error_or_a_cut_as_one_line() {
        let cap = Instant::now() + Duration::from_millis(100);
        let cut = bounded("services", cap, std::future::pending::<Result<(), std::io::Error>>()).await;
        assert_eq!(cut.unwrap_err(), "services: deadline of 100 ms");
        let failed = bounded("cache", cap, async { Err::<(), _>(std::io::Error::other("redis down")) }).await;
        assert_eq!(failed.unwrap_err(), "cache: redis down");
    }
}
