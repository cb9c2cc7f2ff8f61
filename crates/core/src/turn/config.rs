//! The turn's settings, read once at cold start (`functions/chat/src/config.rs` fills them from the
//! environment; the local system from the same reader).

use std::time::Duration;

use crate::admit::limits::LimitConfig;
use crate::admit::session::SessionConfig;
use crate::ahead::speculate::SpeculationConfig;
use crate::ahead::typed::TypedAheadConfig;
use crate::answer::relay::RelayConfig;
use crate::answer::routes::FailoverConfig;
use crate::gather::ContextConfig;
use crate::gather::summary::SummaryConfig;
use crate::models::{CLAUDE_HAIKU_4_5, ModelRouting, NOVA_2_LITE};
use crate::pregen::PregenConfig;
use crate::prompt::PromptConfig;
use crate::prompt::compress::PromptBudget;
use crate::safety::SafetyConfig;

/// Settings of the turn, read once at cold start.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Which model (on-demand model id or inference profile) answers each intent, with its answer cap.
    pub models: ModelRouting,
    /// Tried when the first attempt fails before its first token; defaults to the intent's model again.
    pub fallback_model_id: Option<String>,
    /// The model the provisioned throughput serves (its base id decides which intents may use it); `None`:
    /// the default route's model.
    pub provisioned_model: Option<String>,
    pub prompt: PromptConfig,
    pub relay: RelayConfig,
    pub failover: FailoverConfig,
    /// Token budgets of the prompt sections.
    pub budget: PromptBudget,
    /// Compress the prompt (off only for the ablation benchmark).
    pub compression: bool,
    pub summary: SummaryConfig,
    /// Deadlines of the context legs (and of the memory read).
    pub context: ContextConfig,
    pub session: SessionConfig,
    /// Write one CloudWatch EMF record per answered turn to stdout (on in Lambda; off locally, where stdout
    /// is the terminal).
    pub emf: bool,
    pub turn_ttl: Duration,
    pub claim_ttl: Duration,
    /// Bound of the hand-off to the prefetch worker.
    pub prefetch_handoff: Duration,
    /// Serving pre-generated answers (`PREGEN`); the entries' TTL.
    pub pregen: PregenConfig,
    /// Per-user and per-connection limits.
    pub limits: LimitConfig,
    /// A turn's overall deadline from its start (the handler lowers it to the Lambda's own deadline minus
    /// a margin); under API Gateway's 29 s integration timeout.
    pub turn_deadline: Duration,
    /// How long the message claim may take before the turn gives up on answering it (a slow claim delays
    /// the first token rather than risk a second answer).
    pub claim_deadline: Duration,
    /// Attempts to store a finished turn (retryable store errors, with backoff).
    pub store_attempts: u32,
    /// Guardrails on the answer and on the shopper's input (off unless configured).
    pub safety: SafetyConfig,
    /// Typing-time speculation (`TYPING_SPECULATION`).
    pub speculation: SpeculationConfig,
    /// Answers started while the shopper types (`ANSWER_SPECULATION`).
    pub typed: TypedAheadConfig,
}

impl Default for TurnConfig {
    fn default() -> Self {
        let budget = PromptBudget::default();
        Self {
            models: ModelRouting::split(&format!("jp.{CLAUDE_HAIKU_4_5}"), &format!("jp.{NOVA_2_LITE}"), 400, 200),
            fallback_model_id: None,
            provisioned_model: None,
            prompt: PromptConfig::default(),
            relay: RelayConfig::default(),
            failover: FailoverConfig::default(),
            budget,
            compression: true,
            summary: SummaryConfig {
                model_id: Some(format!("jp.{NOVA_2_LITE}")),
                verbatim_exchanges: budget.verbatim_messages.div_ceil(2),
                ..SummaryConfig::default()
            },
            context: ContextConfig::default(),
            session: SessionConfig::default(),
            emf: false,
            turn_ttl: Duration::from_secs(30 * 24 * 3600),
            claim_ttl: Duration::from_secs(24 * 3600),
            prefetch_handoff: Duration::from_secs(1),
            pregen: PregenConfig::default(),
            limits: LimitConfig::default(),
            turn_deadline: Duration::from_secs(20),
            claim_deadline: Duration::from_secs(2),
            store_attempts: 4,
            safety: SafetyConfig::default(),
            speculation: SpeculationConfig::default(),
            typed: TypedAheadConfig::default(),
        }
    }
}
