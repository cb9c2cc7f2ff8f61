//! Turn metrics as CloudWatch Embedded Metric Format (EMF) records, one JSON line each on stdout.
//!
//! Lambda ships every stdout line to CloudWatch Logs, and CloudWatch Logs turns a line that is an EMF
//! document into metric data points: no `PutMetricData` call, no client, nothing on the critical path but
//! one formatted line. This module is the one place where the metric names, the namespace, the dimensions
//! and the units are defined; the SAM template's alarms and dashboard name the same strings (a test in
//! `tests/e2e/template.rs` checks that every alarm's metric is in [`ALL`]).
//!
//! A record looks like this (one line in reality):
//!
//! ```json
//! {"_aws":{"Timestamp":1795770910120,
//!          "CloudWatchMetrics":[{"Namespace":"MangaAssist",
//!                                "Dimensions":[["intent","route"],["route"],[]],
//!                                "Metrics":[{"Name":"bedrock.first_token_latency_ms","Unit":"Milliseconds"}]}]},
//!  "intent":"recommendation","route":"on-demand","bedrock.first_token_latency_ms":412.5}
//! ```
//!
//! Each dimension set becomes its own CloudWatch metric: `[intent, route]` gives per-intent figures on
//! each route, `[route]` compares on-demand with provisioned throughput, and the empty set `[]` publishes
//! the metric with no dimensions at all, the aggregate over all traffic that the alarms watch (CloudWatch
//! cannot compute a percentile across dimension values afterwards, so the aggregate must be published).

use crate::protocol::TurnMetrics;

/// The CloudWatch namespace of every metric this project publishes.
pub const NAMESPACE: &str = "MangaAssist";

/// Turn start -> first delta accepted by API Gateway: the time to first token the shopper sees.
pub const FIRST_TOKEN_LATENCY_MS: &str = "bedrock.first_token_latency_ms";
/// Turn start -> last delta accepted.
pub const TOTAL_LATENCY_MS: &str = "bedrock.total_latency_ms";
/// Tokens of the prompt as sent (after compression).
pub const PROMPT_TOTAL_TOKENS: &str = "prompt.total_tokens";
/// Prompt tokens sent / prompt tokens before compression (1.0: compression saved nothing).
pub const COMPRESSION_RATIO: &str = "prompt.compression_ratio";
/// Time spent gathering the turn's context (memory, RAG, product data, prefetched entries).
pub const CONTEXT_ASSEMBLY_TIME_MS: &str = "context.assembly_time_ms";
/// Share of the turn's context lookups answered by the prefetch cache, 0..=1.
pub const PREFETCH_HIT_RATE: &str = "prefetch.hit_rate";
/// Of the overview follow-ups a pre-generated answer could serve, the share it served, 0..=1.
pub const PREGEN_HIT_RATE: &str = "pregen.hit_rate";
/// Output tokens of pre-generated answers that were never served (emitted by the prefetch function).
pub const PREGEN_WASTED_TOKENS: &str = "pregen.wasted_tokens";
/// Output tokens spent generating answers ahead of the question (emitted by the prefetch function).
pub const PREGEN_GENERATED_TOKENS: &str = "pregen.generated_tokens";
/// From the answer's last frame to a pre-generated answer of one of its products being cached, ms (0:
/// ready before the answer ended), one value per answer generated while the turn streamed.
pub const PREGEN_READY_MS: &str = "pregen.ready_ms";
/// Input tokens Bedrock read from its prompt cache for the turn.
pub const CACHE_READ_TOKENS: &str = "bedrock.cache_read_tokens";

/// One per `sendMessage` whatever its end, dimensioned by [`DIM_OUTCOME`]: the failed-turn rate alarm
/// divides `outcome=failed` by all, so a total outage (no completed turn at all) still raises it.
pub const TURNS: &str = "turn.count";
/// A turn the client saw but the store could not keep after its retries (the log has its ids).
pub const TURN_STORE_FAILED: &str = "turn.store_failed";
/// A `$connect` the authorizer refused (emitted by the authorizer function).
pub const AUTH_DENIED: &str = "auth.denied";
/// A guardrail intervention, by [`DIM_POLICY`] and [`DIM_DIRECTION`] (`input`: a message blocked before any
/// model call; `output`: an answer stopped and retracted, or a pre-generated answer discarded).
pub const GUARDRAIL_INTERVENTIONS: &str = "guardrail.interventions";
/// An input check that failed or ran out of time (the turn went on; the output guardrail still applied).
pub const GUARDRAIL_CHECK_FAILED: &str = "guardrail.check_failed";
/// ASINs an answer named that were not in its turn's context: no product card was made for them.
pub const UNKNOWN_ASINS: &str = "answer.unknown_asins";

/// A `typing` frame, by [`DIM_OUTCOME`] (`speculated`, `superseded`, `skipped`, `rate_limited`, or the frame
/// error's code when it was dropped): each is one extra chat-function invocation.
pub const TYPING_FRAMES: &str = "typing.frames";
/// Retrieval queries a speculation made (the extra retrieval work of typing-time speculation).
pub const TYPING_RETRIEVALS: &str = "typing.retrievals";
/// Product-service calls a speculation made.
pub const TYPING_SERVICE_CALLS: &str = "typing.service_calls";
/// Per answered turn while speculation is on: 1 when a speculation fitted the message and served its
/// retrieval or service legs, else 0 (a copy of the memory alone, which serves any message, is no hit).
pub const SPECULATION_HIT: &str = "typing.speculation_hit";

/// Typed-ahead generations by `outcome`: `started`, `served`, `superseded` (a newer partial replaced it),
/// `cancelled` (the message sent was another), `wasted` (finished, then cancelled or replaced), `failed`,
/// `refused` (over a budget).
pub const TYPED_AHEAD: &str = "answers.typed_ahead";
/// Model tokens of typed-ahead generations, by the same `outcome` (`served`: the turn's own; `superseded`,
/// `cancelled`, `wasted`: the waste).
pub const TYPED_AHEAD_INPUT_TOKENS: &str = "answers.typed_ahead_input_tokens";
pub const TYPED_AHEAD_OUTPUT_TOKENS: &str = "answers.typed_ahead_output_tokens";

/// A turn whose first token was late started a second stream on the next route (hedging): one per hedged
/// turn, so its sum over `turn.count{outcome=completed}` is the share of turns hedged (capped by
/// `HEDGE_SHARE`).
pub const HEDGE_STARTED: &str = "hedge.started";
/// Of those, 1 when the second stream answered, else 0: its average is the hedges' win rate.
pub const HEDGE_WON: &str = "hedge.won";
/// Model tokens a hedge race spent for nothing: the dropped stream's input estimate.
pub const HEDGE_EXTRA_TOKENS: &str = "hedge.extra_tokens";

/// Every metric name above: what alarms and dashboards may refer to. A turn's own record holds the first
/// nine ([`PER_TURN`]); the rest come in records of their own (pre-generation, typing, guardrail, hedge,
/// admission) or are added to the turn's record only when their feature runs.
pub const ALL: &[&str] = &[
    FIRST_TOKEN_LATENCY_MS,
    TOTAL_LATENCY_MS,
    PROMPT_TOTAL_TOKENS,
    COMPRESSION_RATIO,
    CONTEXT_ASSEMBLY_TIME_MS,
    PREFETCH_HIT_RATE,
    CACHE_READ_TOKENS,
    PREGEN_HIT_RATE,
    UNKNOWN_ASINS,
    PREGEN_WASTED_TOKENS,
    PREGEN_GENERATED_TOKENS,
    PREGEN_READY_MS,
    TURNS,
    TURN_STORE_FAILED,
    AUTH_DENIED,
    GUARDRAIL_INTERVENTIONS,
    GUARDRAIL_CHECK_FAILED,
    TYPING_FRAMES,
    TYPING_RETRIEVALS,
    TYPING_SERVICE_CALLS,
    SPECULATION_HIT,
    TYPED_AHEAD,
    TYPED_AHEAD_INPUT_TOKENS,
    TYPED_AHEAD_OUTPUT_TOKENS,
    HEDGE_STARTED,
    HEDGE_WON,
    HEDGE_EXTRA_TOKENS,
];

/// What every completed turn's record holds.
pub const PER_TURN: &[&str] = ALL.split_at(9).0;

/// The metrics of the design's alarm table (the first six of [`ALL`]): each has an alarm in the template.
pub const ALARMED: &[&str] = ALL.split_at(6).0;

/// Dimension: the classified intent of the turn (`recommendation`, `order_tracking`, ...).
pub const DIM_INTENT: &str = "intent";
/// Dimension: which model route answered (`on-demand` or `provisioned`, [`crate::protocol::Route`]).
pub const DIM_ROUTE: &str = "route";
/// Dimension: the model (or inference profile, or provisioned ARN) that answered.
pub const DIM_MODEL: &str = "model";
/// Dimension: how a `sendMessage` ended ([`Outcome`]).
pub const DIM_OUTCOME: &str = "outcome";
/// Dimension: the guardrail policy family that acted (`topic`, `content`, `sensitive_information`, ...).
pub const DIM_POLICY: &str = "policy";
/// Dimension: which side of the model a guardrail assessed (`input`, `output`).
pub const DIM_DIRECTION: &str = "direction";

/// How a `sendMessage` ended, as the `outcome` dimension of [`TURNS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered to the end.
    Completed,
    /// The frame was invalid, or the message a duplicate.
    Rejected,
    /// Refused by a limit (busy, rate, daily budget).
    Limited,
    /// The model or the delivery failed, or the deadline passed.
    Failed,
    /// The client left mid-answer.
    ClientGone,
    /// A guardrail blocked the message, or stopped the answer.
    Blocked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Limited => "rate_limited",
            Self::Failed => "failed",
            Self::ClientGone => "client_gone",
            Self::Blocked => "blocked",
        }
    }
}

/// CloudWatch rejects an empty dimension value (and with it the whole record), so one is written instead.
const EMPTY_DIMENSION_VALUE: &str = "unknown";
/// CloudWatch's limit on a dimension value's length, in characters.
const MAX_DIMENSION_VALUE_CHARS: usize = 1024;

/// The CloudWatch units this project uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
    /// A ratio or another dimensionless number.
    None,
}

impl Unit {
    /// The unit's name as CloudWatch spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Milliseconds => "Milliseconds",
            Self::Count => "Count",
            Self::None => "None",
        }
    }
}

/// One EMF record under [`NAMESPACE`]: dimension values and metric values sharing one timestamp.
///
/// Build it with [`Emf::new`], [`Emf::dimension`] and [`Emf::metric`]; the dimension sets default to the
/// roll-ups of the declared keys (see [`Emf::dimension`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Emf {
    timestamp_ms: u64,
    dimensions: Vec<(String, String)>,
    dimension_sets: Option<Vec<Vec<String>>>,
    metrics: Vec<(String, f64, Unit)>,
}

impl Emf {
    /// A record stamped `timestamp_ms` (milliseconds since the Unix epoch). CloudWatch drops records
    /// stamped more than two weeks in the past or two hours in the future.
    pub fn new(timestamp_ms: u64) -> Self {
        Self { timestamp_ms, dimensions: Vec::new(), dimension_sets: None, metrics: Vec::new() }
    }

    /// Adds a dimension (a repeated key replaces the value). Declare the most specific dimension first:
    /// unless [`Emf::dimension_sets`] says otherwise, keys `[k1, k2, .., kn]` publish each metric under
    /// `[k1..kn]`, `[k2..kn]`, .., `[kn]` and `[]` (no dimensions), so `intent` then `route` gives
    /// `[["intent","route"],["route"],[]]`. An empty value is written as `unknown`.
    #[must_use]
    pub fn dimension(mut self, key: &str, value: &str) -> Self {
        let value = if value.is_empty() {
            EMPTY_DIMENSION_VALUE.to_owned()
        } else {
            value.chars().take(MAX_DIMENSION_VALUE_CHARS).collect()
        };
        match self.dimensions.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.dimensions.push((key.to_owned(), value)),
        }
        self
    }

    /// Replaces the default roll-up dimension sets. Every key named must also be added with
    /// [`Emf::dimension`]; sets naming an undeclared key are left out of the record.
    #[must_use]
    pub fn dimension_sets(mut self, sets: &[&[&str]]) -> Self {
        self.dimension_sets = Some(sets.iter().map(|set| set.iter().map(|k| (*k).to_owned()).collect()).collect());
        self
    }

    /// Adds a metric value (a repeated name replaces the value). A value that is not finite (NaN, for
    /// instance a ratio of two zeros) is left out: JSON cannot carry it and CloudWatch would reject it.
    #[must_use]
    pub fn metric(mut self, name: &str, value: f64, unit: Unit) -> Self {
        if !value.is_finite() {
            return self;
        }
        match self.metrics.iter_mut().find(|(n, _, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                slot.2 = unit;
            }
            None => self.metrics.push((name.to_owned(), value, unit)),
        }
        self
    }

    /// The value recorded for metric `name`, if any.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| *v)
    }

    fn sets(&self) -> Vec<Vec<String>> {
        match &self.dimension_sets {
            Some(sets) => sets
                .iter()
                .filter(|set| set.iter().all(|k| self.dimensions.iter().any(|(d, _)| d == k)))
                .cloned()
                .collect(),
            None => (0..=self.dimensions.len())
                .map(|skip| self.dimensions.iter().skip(skip).map(|(k, _)| k.clone()).collect())
                .collect(),
        }
    }

    /// The record as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        use serde_json::{Map, Value, json};

        let definitions: Vec<Value> =
            self.metrics.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()})).collect();
        let mut root = Map::new();
        root.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": self.sets(),
                    "Metrics": definitions,
                }],
            }),
        );
        for (key, value) in &self.dimensions {
            root.insert(key.clone(), Value::String(value.clone()));
        }
        for (name, value, _) in &self.metrics {
            root.insert(name.clone(), json!(value));
        }
        Value::Object(root).to_string()
    }
}

/// The record of one finished turn: `metrics` under the design's names, dimensioned by its intent and
/// route.
/// `context_assembly_ms` and `prefetch_hit_rate` (0..=1) are recorded when the turn measured them.
pub fn turn_record(
    metrics: &TurnMetrics,
    timestamp_ms: u64,
    context_assembly_ms: Option<f64>,
    prefetch_hit_rate: Option<f64>,
    pregen_hit_rate: Option<f64>,
) -> Emf {
    let mut emf = Emf::new(timestamp_ms)
        .dimension(DIM_INTENT, metrics.intent.as_str())
        .dimension(DIM_ROUTE, metrics.route.as_str())
        .dimension(DIM_MODEL, &metrics.model)
        .dimension_sets(&[&[DIM_INTENT, DIM_ROUTE], &[DIM_ROUTE], &[DIM_MODEL], &[]])
        .metric(CACHE_READ_TOKENS, f64::from(metrics.cache_read_tokens), Unit::Count)
        .metric(FIRST_TOKEN_LATENCY_MS, metrics.first_token_ms, Unit::Milliseconds)
        .metric(TOTAL_LATENCY_MS, metrics.total_ms, Unit::Milliseconds)
        .metric(PROMPT_TOTAL_TOKENS, f64::from(metrics.prompt_tokens), Unit::Count)
        .metric(COMPRESSION_RATIO, metrics.compression_ratio, Unit::None);
    if let Some(ms) = context_assembly_ms {
        emf = emf.metric(CONTEXT_ASSEMBLY_TIME_MS, ms, Unit::Milliseconds);
    }
    if let Some(rate) = prefetch_hit_rate {
        emf = emf.metric(PREFETCH_HIT_RATE, rate, Unit::None);
    }
    if let Some(rate) = pregen_hit_rate {
        emf = emf.metric(PREGEN_HIT_RATE, rate, Unit::None);
    }
    emf.metric(UNKNOWN_ASINS, f64::from(metrics.unknown_asins), Unit::Count)
}

/// The record of one `typing` frame: how it ended, and the source calls its speculation made (when one
/// ran). Dropped frames are counted here, never answered.
pub fn typing_record(timestamp_ms: u64, outcome: &str, retrievals: u32, service_calls: u32) -> Emf {
    Emf::new(timestamp_ms)
        .dimension(DIM_OUTCOME, outcome)
        .dimension_sets(&[&[DIM_OUTCOME], &[]])
        .metric(TYPING_FRAMES, 1.0, Unit::Count)
        .metric(TYPING_RETRIEVALS, f64::from(retrievals), Unit::Count)
        .metric(TYPING_SERVICE_CALLS, f64::from(service_calls), Unit::Count)
}

/// The record of one typed-ahead generation event: its outcome, and the tokens it concerns.
pub fn typed_ahead_record(timestamp_ms: u64, outcome: &str, input_tokens: u32, output_tokens: u32) -> Emf {
    Emf::new(timestamp_ms)
        .dimension(DIM_OUTCOME, outcome)
        .dimension_sets(&[&[DIM_OUTCOME], &[]])
        .metric(TYPED_AHEAD, 1.0, Unit::Count)
        .metric(TYPED_AHEAD_INPUT_TOKENS, f64::from(input_tokens), Unit::Count)
        .metric(TYPED_AHEAD_OUTPUT_TOKENS, f64::from(output_tokens), Unit::Count)
}

/// The record of one hedged turn ([`HEDGE_STARTED`]): whether the second stream answered, and the tokens
/// the race spent for nothing. Without dimensions: hedging is rare (a capped share of turns), and the
/// aggregate is what the dashboard reads.
pub fn hedge_record(timestamp_ms: u64, won: bool, extra_tokens: u32) -> Emf {
    Emf::new(timestamp_ms)
        .metric(HEDGE_STARTED, 1.0, Unit::Count)
        .metric(HEDGE_WON, f64::from(u8::from(won)), Unit::Count)
        .metric(HEDGE_EXTRA_TOKENS, f64::from(extra_tokens), Unit::Count)
}

/// The records of one guardrail intervention: one [`GUARDRAIL_INTERVENTIONS`] per policy family that
/// acted (`unknown` when the trace named none), by policy and direction, and by direction alone.
pub fn guardrail_record(
    timestamp_ms: u64,
    direction: crate::safety::Direction,
    policies: &[crate::safety::GuardrailPolicy],
) -> GuardrailRecords {
    let policies: Vec<&str> =
        if policies.is_empty() { vec![EMPTY_DIMENSION_VALUE] } else { policies.iter().map(|p| p.as_str()).collect() };
    GuardrailRecords(
        policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                // The direction-only and total sets once per intervention, not once per policy.
                let sets: &[&[&str]] = if i == 0 {
                    &[&[DIM_POLICY, DIM_DIRECTION], &[DIM_DIRECTION], &[]]
                } else {
                    &[&[DIM_POLICY, DIM_DIRECTION]]
                };
                Emf::new(timestamp_ms)
                    .dimension(DIM_POLICY, p)
                    .dimension(DIM_DIRECTION, direction.as_str())
                    .dimension_sets(sets)
                    .metric(GUARDRAIL_INTERVENTIONS, 1.0, Unit::Count)
            })
            .collect(),
    )
}

/// The EMF lines of one intervention (see [`guardrail_record`]).
#[derive(Debug)]
pub struct GuardrailRecords(pub Vec<Emf>);

impl GuardrailRecords {
    pub fn records(&self) -> &[Emf] {
        &self.0
    }
}

/// The record of an input check that failed or ran out of time.
pub fn guardrail_check_failed_record(timestamp_ms: u64) -> Emf {
    Emf::new(timestamp_ms).metric(GUARDRAIL_CHECK_FAILED, 1.0, Unit::Count)
}

/// The record every `sendMessage` writes, whatever its end: one [`TURNS`] by [`DIM_OUTCOME`] (and in
/// total), plus [`TURN_STORE_FAILED`] when the answer could not be stored.
pub fn outcome_record(timestamp_ms: u64, outcome: Outcome, store_failed: bool) -> Emf {
    let emf = Emf::new(timestamp_ms)
        .dimension(DIM_OUTCOME, outcome.as_str())
        .dimension_sets(&[&[DIM_OUTCOME], &[]])
        .metric(TURNS, 1.0, Unit::Count);
    if store_failed { emf.metric(TURN_STORE_FAILED, 1.0, Unit::Count) } else { emf }
}

/// The record of one `$connect` the authorizer refused, by reason (`missing`, `invalid`, `expired`,
/// `guests_off`, ...).
pub fn auth_denied_record(timestamp_ms: u64, reason: &str) -> Emf {
    Emf::new(timestamp_ms).dimension("reason", reason).dimension_sets(&[&["reason"], &[]]).metric(
        AUTH_DENIED,
        1.0,
        Unit::Count,
    )
}

/// How long after its answer ended one pre-generated answer was ready ([`PREGEN_READY_MS`]).
pub fn pregen_ready_record(timestamp_ms: u64, ready_ms: f64) -> Emf {
    Emf::new(timestamp_ms).metric(PREGEN_READY_MS, ready_ms, Unit::Milliseconds)
}

/// The record of one prefetch run (or turn) that pre-generated: tokens spent, and tokens of earlier
/// answers that were never served.
pub fn pregen_record(timestamp_ms: u64, generated_tokens: u32, wasted_tokens: u32) -> Emf {
    Emf::new(timestamp_ms).metric(PREGEN_GENERATED_TOKENS, f64::from(generated_tokens), Unit::Count).metric(
        PREGEN_WASTED_TOKENS,
        f64::from(wasted_tokens),
        Unit::Count,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::GuardrailPolicy;
    use serde_json::Value;

    /// Checks `line` against the rules of the EMF specification that CloudWatch enforces, and returns it
    /// parsed.
    fn assert_valid_emf(line: &str) -> Value {
        assert!(!line.contains('\n'), "an EMF record is one line: {line}");
        let doc: Value = serde_json::from_str(line).unwrap();
        let root = doc.as_object().unwrap();
        let aws = root["_aws"].as_object().unwrap();
        assert!(aws["Timestamp"].is_u64(), "Timestamp must be an integer of milliseconds: {line}");
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for directive in directives {
            assert_eq!(directive["Namespace"], NAMESPACE);
            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(metrics.len() <= 100, "at most 100 metrics per directive");
            for m in metrics {
                let name = m["Name"].as_str().unwrap();
                assert!(root[name].is_number(), "metric {name} must be a top-level number: {line}");
                let unit = m["Unit"].as_str().unwrap();
                assert!(["Milliseconds", "Count", "None"].contains(&unit), "{unit}");
            }
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30, "at most 30 keys per dimension set");
                for key in set {
                    let key = key.as_str().unwrap();
                    let value = root[key].as_str().unwrap_or_else(|| panic!("dimension {key} must be a string"));
                    assert!(!value.is_empty());
                }
            }
        }
        doc
    }

    fn sample() -> TurnMetrics {
        TurnMetrics {
            first_token_ms: 412.5,
            model_first_token_ms: 380.0,
            total_ms: 1830.25,
            input_tokens: 900,
            output_tokens: 120,
            frames: 40,
            prompt_tokens: 1480,
            raw_tokens: 2960,
            compression_ratio: 0.5,
            intent: crate::intent::Intent::Recommendation,
            model: "anthropic.claude-3-5-haiku-20241022-v1:0".to_owned(),
            ..TurnMetrics::default()
        }
    }

    #[test]
    fn a_turn_record_is_valid_emf_with_the_designs_names() {
        let doc = assert_valid_emf(&turn_record(&sample(), 1_795_770_910_120, None, None, None).to_json());
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_770_910_120_u64);
        assert_eq!(doc[FIRST_TOKEN_LATENCY_MS], 412.5);
        assert_eq!(doc[TOTAL_LATENCY_MS], 1830.25);
        assert_eq!(doc[PROMPT_TOTAL_TOKENS], 1480.0);
        assert_eq!(doc[COMPRESSION_RATIO], 0.5);
        assert_eq!(doc["intent"], "recommendation");
        assert_eq!(doc["route"], "on-demand");
        let units: Vec<(&str, &str)> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert_eq!(
            units,
            [
                (CACHE_READ_TOKENS, "Count"),
                (FIRST_TOKEN_LATENCY_MS, "Milliseconds"),
                (TOTAL_LATENCY_MS, "Milliseconds"),
                (PROMPT_TOTAL_TOKENS, "Count"),
                (COMPRESSION_RATIO, "None"),
                (UNKNOWN_ASINS, "Count"),
            ]
        );
    }

    #[test]
    fn turn_metrics_are_published_per_intent_per_route_and_in_aggregate() {
        let m = TurnMetrics { route: crate::protocol::Route::Provisioned, ..sample() };
        let doc = assert_valid_emf(&turn_record(&m, 1, None, None, None).to_json());
        assert_eq!(doc["route"], "provisioned");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["intent", "route"], ["route"], ["model"], []])
        );
    }

    #[test]
    fn context_assembly_and_prefetch_hit_rate_are_recorded_only_when_measured() {
        let without = turn_record(&sample(), 1, None, None, None);
        assert_eq!(without.value(CONTEXT_ASSEMBLY_TIME_MS), None);
        assert_eq!(without.value(PREFETCH_HIT_RATE), None);
        let with = turn_record(&sample(), 1, Some(120.0), Some(0.25), Some(1.0));
        let doc = assert_valid_emf(&with.to_json());
        assert_eq!(doc[CONTEXT_ASSEMBLY_TIME_MS], 120.0);
        assert_eq!(doc[PREFETCH_HIT_RATE], 0.25);
        let names: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        let per_turn = PER_TURN;
        assert_eq!(per_turn.last(), Some(&UNKNOWN_ASINS));
        assert_eq!(names.len(), per_turn.len());
        assert!(per_turn.iter().all(|n| names.contains(n)));
    }

    #[test]
    fn a_hedged_turn_counts_one_hedge_whether_it_won_and_the_tokens_it_wasted() {
        let doc = assert_valid_emf(&hedge_record(7, true, 812).to_json());
        assert_eq!((doc[HEDGE_STARTED].as_f64(), doc[HEDGE_WON].as_f64()), (Some(1.0), Some(1.0)));
        assert_eq!(doc[HEDGE_EXTRA_TOKENS], 812.0);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([[]]));
        assert_eq!(hedge_record(7, false, 0).value(HEDGE_WON), Some(0.0));
    }

    #[test]
    fn a_guardrail_intervention_is_counted_once_per_policy_and_once_in_total() {
        use crate::safety::Direction;
        let recs =
            guardrail_record(1, Direction::Output, &[GuardrailPolicy::Topic, GuardrailPolicy::SensitiveInformation]).0;
        assert_eq!(recs.len(), 2);
        let docs: Vec<Value> = recs.iter().map(|r| assert_valid_emf(&r.to_json())).collect();
        assert_eq!((docs[0]["policy"].as_str(), docs[0]["direction"].as_str()), (Some("topic"), Some("output")));
        assert_eq!(docs[1]["policy"], "sensitive_information");
        let sets = |d: &Value| d["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone();
        assert_eq!(sets(&docs[0]), serde_json::json!([["policy", "direction"], ["direction"], []]));
        assert_eq!(sets(&docs[1]), serde_json::json!([["policy", "direction"]]));
        let none = guardrail_record(1, Direction::Input, &[]).0;
        assert_eq!(assert_valid_emf(&none[0].to_json())["policy"], "unknown");
    }

    #[test]
    fn every_outcome_is_counted_by_outcome_and_in_total() {
        let doc = assert_valid_emf(&outcome_record(1, Outcome::Failed, true).to_json());
        assert_eq!((doc[TURNS].as_f64(), doc[TURN_STORE_FAILED].as_f64()), (Some(1.0), Some(1.0)));
        assert_eq!(doc[DIM_OUTCOME], "failed");
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([["outcome"], []]));
        let ok = assert_valid_emf(&outcome_record(1, Outcome::Completed, false).to_json());
        assert!(ok.get(TURN_STORE_FAILED).is_none());
        let denied = assert_valid_emf(&auth_denied_record(1, "expired").to_json());
        assert_eq!(denied[AUTH_DENIED], 1.0);
    }

    #[test]
    fn a_typing_frame_is_counted_by_outcome_with_the_calls_it_cost() {
        let v = assert_valid_emf(&typing_record(1, "speculated", 1, 2).to_json());
        assert_eq!(v["outcome"], "speculated");
        assert_eq!(v[TYPING_FRAMES], 1.0);
        assert_eq!(v[TYPING_RETRIEVALS], 1.0);
        assert_eq!(v[TYPING_SERVICE_CALLS], 2.0);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([["outcome"], []]));
    }

    #[test]
    fn a_ratio_that_is_not_a_number_is_left_out_rather_than_written_as_null() {
        let mut m = sample();
        m.compression_ratio = f64::NAN;
        let doc = assert_valid_emf(&turn_record(&m, 1, None, Some(f64::INFINITY), None).to_json());
        assert!(doc.get(COMPRESSION_RATIO).is_none());
        assert!(doc.get(PREFETCH_HIT_RATE).is_none());
        assert_eq!(doc[FIRST_TOKEN_LATENCY_MS], 412.5);
    }

    #[test]
    fn repeated_dimensions_and_metrics_keep_the_last_value() {
        let emf = Emf::new(7)
            .dimension("route", "on-demand")
            .dimension("route", "provisioned")
            .metric(TOTAL_LATENCY_MS, 1.0, Unit::Milliseconds)
            .metric(TOTAL_LATENCY_MS, 2.0, Unit::Milliseconds);
        let doc = assert_valid_emf(&emf.to_json());
        assert_eq!(doc["route"], "provisioned");
        assert_eq!(doc[TOTAL_LATENCY_MS], 2.0);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().len(), 1);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([["route"], []]));
    }

    #[test]
    fn explicit_dimension_sets_drop_sets_naming_undeclared_keys() {
        let emf = Emf::new(7)
            .dimension("intent", "faq")
            .dimension_sets(&[&["intent"], &["intent", "route"], &[]])
            .metric(PROMPT_TOTAL_TOKENS, 10.0, Unit::Count);
        let doc = assert_valid_emf(&emf.to_json());
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([["intent"], []]));
    }

    #[test]
    fn the_alarmed_metrics_are_the_designs_table() {
        assert_eq!(
            ALARMED,
            [
                FIRST_TOKEN_LATENCY_MS,
                TOTAL_LATENCY_MS,
                PROMPT_TOTAL_TOKENS,
                COMPRESSION_RATIO,
                CONTEXT_ASSEMBLY_TIME_MS,
                PREFETCH_HIT_RATE
            ]
        );
    }

    #[test]
    fn metric_names_are_unique_and_fit_cloudwatch_limits() {
        for (i, name) in ALL.iter().enumerate() {
            assert!(!ALL[i + 1..].contains(name), "{name} is listed twice");
            assert!((1..=255).contains(&name.len()));
            assert!(name.is_ascii() && !name.contains(' '));
        }
        assert!(!ALL.contains(&DIM_INTENT) && !ALL.contains(&DIM_ROUTE));
    }
}
