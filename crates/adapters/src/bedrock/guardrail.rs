//! Guardrails on Bedrock calls: the `guardrailConfig` each call sends (trace on; asynchronous on a stream),
//! and what an assessment says (which policy families acted, and whether any blocked).

use super::*;

/// `guardrailConfig` of a `Converse` call: trace on, so an intervention says which policy acted.
pub(super) fn converse_guardrail(g: &GuardrailRef) -> GuardrailConfiguration {
    GuardrailConfiguration::builder()
        .guardrail_identifier(&g.id)
        .guardrail_version(&g.version)
        .trace(GuardrailTrace::Enabled)
        .build()
}

/// `guardrailConfig` of a `ConverseStream` call: asynchronous processing, so deltas are not held back while
/// the guardrail assesses them (an intervention ends the stream; the turn retracts what was shown).
pub(super) fn stream_guardrail(g: &GuardrailRef) -> GuardrailStreamConfiguration {
    GuardrailStreamConfiguration::builder()
        .guardrail_identifier(&g.id)
        .guardrail_version(&g.version)
        .stream_processing_mode(GuardrailStreamProcessingMode::Async)
        .trace(GuardrailTrace::Enabled)
        .build()
}

/// Which policy families acted in an assessment, and whether any blocked (not only masked).
pub(super) fn assess(into: &mut Assessment, a: &GuardrailAssessment) {
    if let Some(t) = &a.topic_policy {
        for topic in &t.topics {
            into.acted(GuardrailPolicy::Topic, topic.action.as_str() == "BLOCKED");
        }
    }
    if let Some(c) = &a.content_policy {
        for f in &c.filters {
            if f.detected.unwrap_or(true) && f.action.as_str() != "NONE" {
                into.acted(GuardrailPolicy::Content, f.action.as_str() == "BLOCKED");
            }
        }
    }
    if let Some(w) = &a.word_policy {
        for m in w
            .custom_words
            .iter()
            .map(|c| c.action.as_str())
            .chain(w.managed_word_lists.iter().map(|m| m.action.as_str()))
        {
            if m != "NONE" {
                into.acted(GuardrailPolicy::Word, m == "BLOCKED");
            }
        }
    }
    if let Some(p) = &a.sensitive_information_policy {
        for act in p.pii_entities.iter().map(|e| e.action.as_str()).chain(p.regexes.iter().map(|r| r.action.as_str())) {
            if act != "NONE" {
                into.acted(GuardrailPolicy::SensitiveInformation, act == "BLOCKED");
            }
        }
    }
    if let Some(g) = &a.contextual_grounding_policy
        && g.filters.as_ref().is_some_and(|f| f.iter().any(|f| f.action.as_str() == "BLOCKED"))
    {
        into.acted(GuardrailPolicy::ContextualGrounding, true);
    }
}

/// The assessment of a model answer in a trace (`outputAssessments`), when the guardrail intervened.
pub(super) fn trace_assessment(t: &GuardrailTraceAssessment) -> Assessment {
    let mut a = Assessment::default();
    for list in t.output_assessments.iter().flat_map(|m| m.values()) {
        for one in list {
            assess(&mut a, one);
        }
    }
    a
}
