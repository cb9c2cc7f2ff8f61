//! A turn's latency waterfall: the parts of the wait on one time axis, from `completed.metrics`.
//!
//! The demo page draws the same rows with the same rules in JavaScript (`index.html`, `waterfall()`); the
//! bench report draws a median turn's from this module. Times are ms from the turn's start at the server
//! (the gateway invoking the chat function), shifted by the connection time when there is one:
//!
//! | row | from | to | deadline |
//! |---|---|---|---|
//! | connect | 0 | connect | |
//! | memory | 0 | `memory_ms` | its start + the leg's deadline, and never past the overall one |
//! | cache | memory's end | + `cache_ms` | likewise |
//! | services | cache's end | + `services_ms` | likewise |
//! | retrieval | 0, or services' end when the legs ran one after another | + `retrieval_ms` | likewise |
//! | context | 0 | `assembly_ms` | the overall context deadline |
//! | compress | `assembly_ms` | + `compress_ms` | |
//! | model first token | `first_token_ms - relay_ms - model_first_token_ms`; typed ahead: `-ahead_ms` | + `model_first_token_ms` | |
//! | relay | `first_token_ms - relay_ms` | `first_token_ms` | |
//! | stream | `first_token_ms` | `total_ms` | |
//!
//! That is the assembly's shape (`crates/core/src/context.rs`): retrieval runs beside memory, and the cache
//! and the product services wait for memory (it resolves "the first one"). The sequential baseline runs
//! retrieval last: recognised when `assembly_ms` is the sum of all legs rather than the longer branch. A
//! leg that did not run (0 ms) keeps its row, empty. Cache hits mark the cache row; a pre-generated answer
//! marks the model row.

use mangaassist_core::gather::ContextConfig;
use serde::Serialize;
use serde_json::Value;

/// One row of the waterfall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    /// Stable key (`memory`, `model`, ...), also the page's `data-leg`.
    pub key: &'static str,
    pub label: &'static str,
    pub start_ms: f64,
    pub end_ms: f64,
    /// When the leg would have been cut.
    pub deadline_ms: Option<f64>,
    /// A note drawn beside the bar (`2 cache hits`, `pre-generated`).
    pub mark: Option<String>,
}

impl Bar {
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

/// The rows in drawing order, and the axis length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waterfall {
    pub bars: Vec<Bar>,
    /// The start of the axis: 0 (the message sent), or earlier when the answer was typed ahead and the model
    /// started before the message was sent.
    pub origin_ms: f64,
    /// The end of the axis: the latest end or deadline.
    pub axis_ms: f64,
}

/// The row keys, in order (the page draws the same).
pub const KEYS: [&str; 10] =
    ["connect", "memory", "retrieval", "cache", "services", "context", "compress", "model", "relay", "stream"];

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The waterfall of one turn's `completed.metrics`, with the deadlines of `deadlines` and the connection
/// time `connect_ms` drawn first when the turn opened the connection.
pub fn waterfall(metrics: &Value, deadlines: &ContextConfig, connect_ms: Option<f64>) -> Waterfall {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0).max(0.0);
    let m = |k: &str| num(&metrics[k]);
    let leg = |k: &str| num(&metrics["legs"][k]);
    let c = connect_ms.unwrap_or(0.0).max(0.0);
    let (assembly, first, total) = (m("assembly_ms"), m("first_token_ms"), m("total_ms"));
    let relay = m("relay_ms").min(first);
    let model_end = first - relay;
    let hits = metrics["cache_hits"].as_array().map_or(0, Vec::len);
    let served = metrics["served"].as_str().unwrap_or("model");
    // Typed ahead, the model was asked `ahead_ms` before the message was sent: its bar starts before 0.
    let (model_start, model_end) = if served == "typed_ahead" {
        let start = -m("ahead_ms");
        (start, (start + m("model_first_token_ms")).max(model_end.min(0.0)))
    } else {
        ((model_end - m("model_first_token_ms")).max(0.0), model_end)
    };
    let bar = |key, label, start: f64, end: f64, deadline: Option<f64>, mark: Option<String>| Bar {
        key,
        label,
        start_ms: c + start,
        end_ms: c + end.max(start),
        deadline_ms: deadline.map(|d| c + d),
        mark,
    };
    let (memory, cache, services, retrieval) =
        (leg("memory_ms"), leg("cache_ms"), leg("services_ms"), leg("retrieval_ms"));
    let chain = memory + cache + services;
    let slack = (assembly * 0.05).max(3.0);
    let sequential = retrieval > 0.0
        && chain > 0.0
        && (assembly - (chain + retrieval)).abs() <= slack
        && assembly > chain.max(retrieval) + slack;
    let retrieval_start = if sequential { chain } else { 0.0 };
    let overall = ms(deadlines.overall);
    let due = |start: f64, d: std::time::Duration| Some((start + ms(d)).min(overall));
    let bars = vec![
        Bar {
            key: "connect",
            label: "connect",
            start_ms: 0.0,
            end_ms: c,
            deadline_ms: None,
            mark: connect_ms.is_none().then(|| "open socket reused".to_owned()),
        },
        bar("memory", "memory", 0.0, memory, due(0.0, deadlines.memory), None),
        bar(
            "retrieval",
            "retrieval",
            retrieval_start,
            retrieval_start + retrieval,
            due(retrieval_start, deadlines.retrieval),
            None,
        ),
        bar(
            "cache",
            "cache",
            memory,
            memory + cache,
            due(memory, deadlines.cache),
            (hits > 0).then(|| format!("{hits} cache hit{}", if hits == 1 { "" } else { "s" })),
        ),
        bar("services", "services", memory + cache, chain, due(memory + cache, deadlines.services), None),
        bar("context", "context", 0.0, assembly, Some(overall), None),
        bar("compress", "compress", assembly, assembly + m("compress_ms"), None, None),
        bar(
            "model",
            "model first token",
            model_start,
            model_end,
            None,
            match served {
                "pregen" => Some("pre-generated: no model call".to_owned()),
                "pregen_opening" => Some("pre-generated opening".to_owned()),
                "typed_ahead" => Some("typed ahead: asked before send".to_owned()),
                _ => None,
            },
        ),
        bar("relay", "relay", model_end, first, None, None),
        bar("stream", "stream to the end", first, total, None, None),
    ];
    let axis_ms = bars.iter().flat_map(|b| [b.end_ms, b.deadline_ms.unwrap_or(0.0)]).fold(1.0, f64::max);
    let origin_ms = bars.iter().map(|b| b.start_ms).fold(0.0, f64::min);
    Waterfall { bars, origin_ms, axis_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metrics() -> Value {
        json!({
            "first_token_ms": 724.0, "model_first_token_ms": 586.0, "total_ms": 1900.0,
            "assembly_ms": 201.0, "compress_ms": 0.5, "relay_ms": 16.0,
            "legs": {"memory_ms": 50.0, "retrieval_ms": 200.0, "cache_ms": 2.0, "services_ms": 100.0},
            "cache_hits": ["product:B0SPIRAL01", "review:B0SPIRAL01"], "served": "model"
        })
    }

    #[test]
    fn rows_come_in_the_documented_order_one_per_leg() {
        let w = waterfall(&metrics(), &ContextConfig::default(), None);
        let keys: Vec<&str> = w.bars.iter().map(|b| b.key).collect();
        assert_eq!(keys, KEYS);
    }

    #[test]
    fn widths_are_the_measured_durations_on_one_axis() {
        let w = waterfall(&metrics(), &ContextConfig::default(), None);
        let d = |k: &str| w.bars.iter().find(|b| b.key == k).unwrap().clone();
        assert_eq!((d("memory").start_ms, d("memory").end_ms), (0.0, 50.0));
        // Retrieval beside memory; the cache, then the services, after memory.
        assert_eq!((d("retrieval").start_ms, d("retrieval").end_ms), (0.0, 200.0));
        assert_eq!((d("cache").start_ms, d("cache").end_ms), (50.0, 52.0));
        assert_eq!((d("services").start_ms, d("services").end_ms), (52.0, 152.0));
        assert_eq!(d("context").end_ms, 201.0);
        assert_eq!((d("compress").start_ms, d("compress").end_ms), (201.0, 201.5));
        // The model's first token ends where the relay starts, and the relay ends at the first token.
        assert_eq!((d("model").start_ms, d("model").end_ms), (122.0, 708.0));
        assert_eq!((d("relay").start_ms, d("relay").end_ms), (708.0, 724.0));
        assert_eq!((d("stream").start_ms, d("stream").end_ms), (724.0, 1900.0));
        assert_eq!(w.axis_ms, 1900.0);
    }

    #[test]
    fn deadlines_are_marked_per_leg_and_cache_hits_are_noted() {
        let w = waterfall(&metrics(), &ContextConfig::default(), None);
        let deadline = |k: &str| w.bars.iter().find(|b| b.key == k).unwrap().deadline_ms;
        // Each from its leg's start, never past the overall deadline.
        assert_eq!(deadline("memory"), Some(150.0));
        assert_eq!(deadline("retrieval"), Some(240.0));
        assert_eq!(deadline("cache"), Some(90.0));
        assert_eq!(deadline("services"), Some(202.0));
        assert_eq!(deadline("context"), Some(300.0));
        assert_eq!(deadline("model"), None);
        let cache = w.bars.iter().find(|b| b.key == "cache").unwrap();
        assert_eq!(cache.mark.as_deref(), Some("2 cache hits"));
    }

    #[test]
    fn legs_run_one_after_another_are_drawn_so() {
        let mut m = metrics();
        m["assembly_ms"] = json!(353.0);
        let w = waterfall(&m, &ContextConfig::default(), None);
        let retrieval = w.bars.iter().find(|b| b.key == "retrieval").unwrap();
        assert_eq!((retrieval.start_ms, retrieval.end_ms), (152.0, 352.0));
        assert_eq!(retrieval.deadline_ms, Some(300.0), "capped by the overall deadline");
    }

    #[test]
    fn an_answer_typed_ahead_starts_its_model_row_before_the_message_was_sent() {
        let mut m = metrics();
        m["served"] = json!("typed_ahead");
        m["ahead_ms"] = json!(500.0);
        m["model_first_token_ms"] = json!(586.0);
        let wf = waterfall(&m, &ContextConfig::default(), None);
        let model = wf.bars.iter().find(|b| b.key == "model").unwrap();
        assert_eq!((model.start_ms, model.end_ms), (-500.0, 86.0));
        assert_eq!(model.mark.as_deref(), Some("typed ahead: asked before send"));
        assert_eq!(wf.origin_ms, -500.0);
    }

    #[test]
    fn a_connection_shifts_the_turn_and_a_pregenerated_answer_is_marked() {
        let mut m = metrics();
        m["served"] = json!("pregen");
        let w = waterfall(&m, &ContextConfig::default(), Some(40.0));
        assert_eq!((w.bars[0].start_ms, w.bars[0].end_ms), (0.0, 40.0));
        assert_eq!(w.bars[1].start_ms, 40.0);
        assert_eq!(w.bars[1].deadline_ms, Some(190.0));
        let model = w.bars.iter().find(|b| b.key == "model").unwrap();
        assert_eq!(model.mark.as_deref(), Some("pre-generated: no model call"));
    }
}
