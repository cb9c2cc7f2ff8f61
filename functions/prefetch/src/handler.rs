//! Parses one [`PrefetchJob`] and runs the prefetcher. A job that does not parse is a Lambda error (it will
//! never succeed, but it shows in the function's errors); everything else returns the [`PrefetchReport`],
//! failures included, so Lambda does not retry a best-effort prefetch (the claim would skip it anyway).

use lambda_runtime::LambdaEvent;
use mangaassist_core::ahead::prefetch::{PrefetchJob, PrefetchReport, Prefetcher, Pregenerate, TransitionStore};
use mangaassist_core::clock::{Clock as _, SystemClock};
use mangaassist_core::metrics;
use mangaassist_core::ports::sources::ContextSources;
use mangaassist_core::ports::{EmfStdout, Metrics as _};
use mangaassist_core::safety::Direction;
use serde_json::Value;
use tracing::Instrument;

/// An event that is not a prefetch job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the event is not a prefetch job: {0}")]
    BadJob(#[source] serde_json::Error),
}

impl JobError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadJob(_) => "bad_job",
        }
    }
}

/// Reads the job out of an event.
pub fn parse_job(event: Value) -> Result<PrefetchJob, JobError> {
    serde_json::from_value(event).map_err(JobError::BadJob)
}

/// Handles one invocation.
pub async fn handle<X: ContextSources, T: TransitionStore, G: Pregenerate>(
    prefetcher: &Prefetcher<X, T, G>,
    event: LambdaEvent<Value>,
) -> Result<PrefetchReport, lambda_runtime::Error> {
    let (payload, ctx) = event.into_parts();
    let job = match parse_job(payload) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "event rejected");
            return Err(e.into());
        }
    };
    let span = tracing::info_span!("prefetch", message_id = %job.message_id, request_id = %ctx.request_id);
    let report = prefetcher.run(&job).instrument(span).await;
    // What pre-generation cost, and what it wasted: EMF, like the chat function's turn records.
    if let Some(p) = &report.pregen {
        let now = SystemClock.now_ms();
        EmfStdout.record(&metrics::pregen_record(now, p.output_tokens, p.wasted_tokens));
        for policies in &p.blocked {
            EmfStdout.record_all(metrics::guardrail_record(now, Direction::Output, policies).records());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_job() {
        let path = format!("{}/../../events/prefetch.json", env!("CARGO_MANIFEST_DIR"));
        let job = parse_job(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()).unwrap();
        assert_eq!(job.intent, mangaassist_core::intent::Intent::ProductDiscovery);
        assert!(!job.products.is_empty());
    }

    #[test]
    fn an_event_that_is_not_a_job_is_rejected_with_a_code() {
        assert_eq!(parse_job(serde_json::json!({"action": "x"})).unwrap_err().code(), "bad_job");
    }
}
