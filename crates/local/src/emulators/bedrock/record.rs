//! What the emulator records: the faults queued for the next requests, one record per model request and
//! per `ApplyGuardrail` call, the connection counters, and the in-flight count per route.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::emulators::guardrail::{Direction, StreamMode};
use crate::emulators::models::Asked;

/// A failure to inject into the next request(s), for tests and failure drills.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 429 `ThrottlingException` before the stream starts.
    ThrottleBeforeStream,
    /// HTTP 503 `ServiceUnavailableException` before the stream starts.
    UnavailableBeforeStream,
    /// An `exception` message of this type (e.g. `throttlingException`) after this many text deltas.
    ExceptionAfter { deltas: u32, exception_type: &'static str },
    /// Headers are sent, then nothing for this long.
    StallBeforeFirstToken(Duration),
    /// This many text deltas, then nothing for this long (a stream that stalls mid-answer).
    StallAfter { deltas: u32, pause: Duration },
    /// HTTP 403 `AccessDeniedException` before the stream, with a message naming the model ARN and the
    /// account, as Bedrock's does.
    AccessDeniedBeforeStream,
    /// The next answer says this sentence right after its first sentence, so a few deltas stream before
    /// it (e.g. something the guardrail blocks, to see it intervene mid-stream). Unlike the other faults it
    /// is also taken by a `Converse` request when it is first in the queue.
    Say(String),
}

/// What the emulator saw of one request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub model_id: String,
    pub received_at: Instant,
    pub first_delta_at: Option<Instant>,
    pub input_tokens: u32,
    /// Text deltas written so far.
    pub deltas_sent: u32,
    /// Text deltas the full answer has.
    pub deltas_planned: u32,
    /// A `Converse` answer's output tokens (a stream's are its `deltas_sent`).
    pub output_tokens: u32,
    pub completed: bool,
    /// The client went away before the end: generation stopped.
    pub cancelled: bool,
    pub fault: Option<Fault>,
    /// The levers and prefill the request carried.
    pub asked: Asked,
    /// Input tokens served from the prompt cache.
    pub cache_read_tokens: u32,
    /// The system text and every message of the request, as the answer draws from them.
    pub prompt: String,
    /// The `guardrailConfig` object of the request body, as the SDK sent it.
    pub guardrail_config: Option<Value>,
    /// The guardrail identifier the request named.
    pub guardrail: Option<String>,
    /// Its `streamProcessingMode` (`sync` when the stream did not say; `None` for `Converse`).
    pub stream_mode: Option<StreamMode>,
    /// The guardrail stopped or replaced the answer.
    pub guardrail_intervened: bool,
    /// The request was the first on a new TCP connection.
    pub new_connection: bool,
    /// How long the connection model held it for the handshake (zero on a reused connection).
    pub handshake: Duration,
}

impl RequestRecord {
    /// The tokens the request was billed, input and output (a stream's output as far as it went).
    pub fn billed_tokens(&self) -> u64 {
        u64::from(self.input_tokens) + u64::from(self.deltas_sent) + u64::from(self.output_tokens)
    }

    /// Request received -> first text delta written, ms.
    pub fn first_token_ms(&self) -> Option<f64> {
        self.first_delta_at.map(|t| (t - self.received_at).as_secs_f64() * 1000.0)
    }
}

/// One `ApplyGuardrail` call.
#[derive(Debug, Clone)]
pub struct GuardrailCall {
    pub guardrail_id: String,
    pub version: String,
    pub source: Direction,
    /// The content blocks' texts, joined with newlines.
    pub text: String,
    /// The reply's `action` was `GUARDRAIL_INTERVENED` (masking included).
    pub intervened: bool,
    /// A policy blocked (not just masked).
    pub blocked: bool,
    pub received_at: Instant,
}

/// Everything the emulator recorded, keyed by `requestMetadata.message_id` (or a counter when absent).
#[derive(Debug, Default)]
pub struct Stats {
    requests: Mutex<HashMap<String, Vec<RequestRecord>>>,
    pub(crate) throttled: AtomicU64,
    pub(crate) guardrail_calls: Mutex<Vec<GuardrailCall>>,
    connections: AtomicU64,
    handshakes: AtomicU64,
    idle_drops: AtomicU64,
}

impl Stats {
    /// Every `ApplyGuardrail` call, in arrival order (refused ones not included).
    pub fn guardrail_calls(&self) -> Vec<GuardrailCall> {
        self.guardrail_calls.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every request made for a message id (more than one when the turn retried).
    pub fn for_message(&self, message_id: &str) -> Vec<RequestRecord> {
        self.requests.lock().map(|m| m.get(message_id).cloned().unwrap_or_default()).unwrap_or_default()
    }

    /// Every request made for a message id starting with `prefix` (typed-ahead generations: `typed-`), in
    /// arrival order.
    pub fn for_messages_starting(&self, prefix: &str) -> Vec<RequestRecord> {
        let mut all: Vec<RequestRecord> = self
            .requests
            .lock()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with(prefix)).flat_map(|(_, v)| v.clone()).collect())
            .unwrap_or_default();
        all.sort_by_key(|r| r.received_at);
        all
    }

    /// Requests refused with `ThrottlingException` for lack of capacity (injected faults not counted).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests held for a new connection's handshake so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Connections dropped (closed, or silently abandoned) after the idle timeout so far.
    pub fn idle_drops(&self) -> u64 {
        self.idle_drops.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshake_paid(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_dropped_idle(&self) {
        self.idle_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Every `Converse` and `ConverseStream` request, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let mut all: Vec<RequestRecord> =
            self.requests.lock().map(|m| m.values().flatten().cloned().collect()).unwrap_or_default();
        all.sort_by_key(|r| r.received_at);
        all
    }

    pub fn total_requests(&self) -> usize {
        self.requests.lock().map(|m| m.values().map(Vec::len).sum()).unwrap_or(0)
    }

    pub(crate) fn update(&self, key: &str, idx: usize, f: impl FnOnce(&mut RequestRecord)) {
        if let Ok(mut m) = self.requests.lock()
            && let Some(r) = m.get_mut(key).and_then(|v| v.get_mut(idx))
        {
            f(r);
        }
    }

    pub(crate) fn insert(&self, key: String, rec: RequestRecord) -> usize {
        let Ok(mut m) = self.requests.lock() else { return 0 };
        let v = m.entry(key).or_default();
        v.push(rec);
        v.len() - 1
    }
}

/// Decrements a route's in-flight count when a stream ends, however it ends.
pub(crate) struct InFlight {
    pub active: Arc<Mutex<HashMap<String, usize>>>,
    pub key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.active.lock()
            && let Some(n) = m.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
        }
    }
}
