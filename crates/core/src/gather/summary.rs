//! The running summary of a session: after an answer, once enough exchanges have left the verbatim window
//! uncovered, a small model folds them into `SESSION#<id>` / `SUMMARY`, off the critical path. Later prompts
//! carry the summary instead of those exchanges.

use std::time::Duration;

use crate::admit::session::Memory;
use crate::deadline::within;
use crate::error::chain;
use crate::ids::SessionId;
use crate::ports::{ChatMessage, ModelClient, ModelRequest, Role, Store, Summary, TurnRecord};

/// Instructions for the summary model.
pub const SUMMARY_PROMPT: &str = "Summarize this manga-store chat for the assistant's memory in at most 60 words: \
what the shopper wants, titles and ASINs discussed, open questions. Same language as the chat.";

/// Settings of the summarizer.
#[derive(Debug, Clone)]
pub struct SummaryConfig {
    /// Model for summaries (a small, fast one); `None` disables them.
    pub model_id: Option<String>,
    /// Summarize once this many exchanges older than the verbatim window are not yet covered.
    pub after: usize,
    /// Exchanges kept verbatim in prompts (never summarized yet).
    pub verbatim_exchanges: usize,
    /// Bound of the model call.
    pub timeout: Duration,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self { model_id: None, after: 2, verbatim_exchanges: 2, timeout: Duration::from_secs(5) }
    }
}

/// The exchanges a new summary would cover (newest first), or `None` when it is not yet time.
fn due<'a>(cfg: &SummaryConfig, memory: &'a Memory, latest: &'a TurnRecord) -> Option<Vec<&'a TurnRecord>> {
    let covered = memory.summary.as_ref().map_or(0, |s| s.covers_until_ms);
    let older: Vec<&TurnRecord> = std::iter::once(latest)
        .chain(memory.turns.iter())
        .skip(cfg.verbatim_exchanges)
        .filter(|t| t.ts_ms > covered)
        .collect();
    (older.len() >= cfg.after.max(1)).then_some(older)
}

/// The summary model's input: the summary so far, then the exchanges oldest first.
fn transcript(previous: Option<&Summary>, older: &[&TurnRecord]) -> String {
    let mut text = String::new();
    if let Some(s) = previous {
        text.push_str("Summary so far: ");
        text.push_str(&s.text);
        text.push('\n');
    }
    for t in older.iter().rev() {
        text.push_str("user: ");
        text.push_str(&t.user_text);
        text.push_str("\nassistant: ");
        text.push_str(&t.assistant_text);
        text.push('\n');
    }
    text
}

/// Folds old exchanges into the session's summary when due. Bounded; a failure only means the digest of
/// older questions is used until the next try. Returns whether the summary was (or may have been: the
/// write was tried) changed.
pub async fn maybe_summarize<M: ModelClient, St: Store>(
    model: &M,
    store: &St,
    cfg: &SummaryConfig,
    session: &SessionId,
    memory: &Memory,
    latest: &TurnRecord,
) -> bool {
    let Some(model_id) = &cfg.model_id else { return false };
    let Some(older) = due(cfg, memory, latest) else { return false };
    let req = ModelRequest {
        model_id: model_id.clone(),
        system: SUMMARY_PROMPT.to_owned(),
        messages: vec![ChatMessage { role: Role::User, text: transcript(memory.summary.as_ref(), &older) }],
        max_tokens: 120,
        temperature: 0.0,
        metadata: vec![("purpose".to_owned(), "summary".to_owned())],
        ..ModelRequest::default()
    };
    let text = match within("summary", cfg.timeout, model.complete(&req)).await {
        Ok(Ok(c)) if !c.text.trim().is_empty() => c.text.trim().to_owned(),
        Ok(Ok(_)) => return false,
        Ok(Err(e)) => {
            tracing::warn!(session_id = %session, error = %chain(&e), "summary failed");
            return false;
        }
        Err(e) => {
            tracing::warn!(session_id = %session, error = %e, "summary timed out");
            return false;
        }
    };
    let covered = memory.summary.as_ref().map_or(0, |s| s.covers_until_ms);
    let s =
        Summary { text, covers_until_ms: older.first().map_or(covered, |t| t.ts_ms), expires_at: latest.expires_at };
    if let Err(e) = store.put_summary(session, &s).await {
        tracing::warn!(session_id = %session, error = %chain(&e), "could not store the summary");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(ts_ms: u64, text: &str) -> TurnRecord {
        crate::testkit::turn("s", &format!("m{ts_ms}"))
            .at(ts_ms)
            .user_text(text)
            .answer(&format!("answer to {text}"))
            .build()
    }

    #[test]
    fn a_summary_is_due_once_two_exchanges_left_the_verbatim_window() {
        let cfg = SummaryConfig { model_id: Some("small".into()), ..SummaryConfig::default() };
        let latest = turn(4, "q4");
        let memory = Memory { turns: vec![turn(3, "q3"), turn(2, "q2")], summary: None };
        assert!(due(&cfg, &memory, &latest).is_none(), "only one exchange is older than the window");
        let memory = Memory { turns: vec![turn(3, "q3"), turn(2, "q2"), turn(1, "q1")], summary: None };
        let older = due(&cfg, &memory, &latest).unwrap();
        assert_eq!(older.iter().map(|t| t.ts_ms).collect::<Vec<_>>(), [2, 1]);
        let text = transcript(None, &older);
        assert!(text.starts_with("user: q1\nassistant: answer to q1\nuser: q2"), "{text}");
    }

    #[test]
    fn exchanges_already_summarized_are_not_summarized_again() {
        let cfg = SummaryConfig { model_id: Some("small".into()), ..SummaryConfig::default() };
        let summary = Summary { text: "old".into(), covers_until_ms: 2, expires_at: 0 };
        let memory = Memory { turns: vec![turn(3, "q3"), turn(2, "q2"), turn(1, "q1")], summary: Some(summary) };
        assert!(due(&cfg, &memory, &turn(4, "q4")).is_none());
    }
}
