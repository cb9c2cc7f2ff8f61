//! The streaming relay: model text deltas in, WebSocket frames out.
//!
//! - The first token is posted the moment it arrives.
//! - While a post is in flight, further tokens are coalesced into the next frame, so a slow
//!   `PostToConnection` (tens of ms) never makes the stream fall behind the model, and a fast one costs
//!   one frame per token at most.
//! - Every frame carries a sequence number; every frame stays under API Gateway's 32 KB frame limit,
//!   splitting on character boundaries (JSON escaping accounted for).
//! - A `Gone` client stops the relay at once; the caller drops the model stream, which cancels it.
//! - Retryable post failures are retried a bounded number of times with jittered backoff.
//!
//! [`RelayMode::PerToken`] is the seed design's post-and-wait-per-token relay, kept for the bench's
//! side-by-side ablation.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::OptionFuture;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{ModelError, SinkError};
use crate::ids::{ConnectionId, MessageId};
use crate::ports::{ConnectionSink, ModelEvent, ModelStream, STOP_GUARDRAIL};
use crate::protocol::{MAX_FRAME_BYTES, ServerEvent, prefix_fitting};
use crate::safety::Assessment;

/// How deltas become frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Post at once when idle; coalesce while a post is in flight.
    Coalesce,
    /// One frame per model delta, each awaited before reading the next (the baseline).
    PerToken,
}

impl RelayMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "coalesce" => Some(Self::Coalesce),
            "per_token" | "per-token" => Some(Self::PerToken),
            _ => None,
        }
    }
}

/// Relay tuning.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    pub mode: RelayMode,
    /// Upper bound of one frame, bytes. API Gateway's limit is 32 KB.
    pub max_frame_bytes: usize,
    /// Attempts per frame for retryable post failures (1 = no retry).
    pub post_attempts: u32,
    /// Deadline of one post attempt.
    pub post_timeout: Duration,
    /// The waits between post attempts.
    pub post_backoff: Backoff,
    /// The longest silence tolerated between two model events once the stream is open.
    pub idle_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            mode: RelayMode::Coalesce,
            max_frame_bytes: MAX_FRAME_BYTES,
            post_attempts: 3,
            post_timeout: Duration::from_secs(2),
            post_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// How the relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The model finished and every delta was posted.
    Completed,
    /// The client left; nothing more can be sent.
    ClientGone,
    /// The model stream failed; what had arrived before was posted.
    ModelFailed(ModelError),
    /// Posting failed for good (not `Gone`).
    SinkFailed(SinkError),
    /// The guardrail stopped the answer: nothing after the intervention was posted, and the client is to
    /// be told to retract what it showed.
    Retracted,
}

/// What the relay saw and did.
#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    /// All text received from the model (what the client saw, unless the sink failed).
    pub text: String,
    /// When the first text delta arrived from the model.
    pub first_delta_at: Option<Instant>,
    /// When the first frame was accepted by the sink.
    pub first_post_at: Option<Instant>,
    /// When the last frame was accepted by the sink.
    pub last_post_at: Option<Instant>,
    /// Frames posted; also the next sequence number.
    pub frames: u32,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_read_tokens: u32,
    pub cache_write_tokens: u32,
    /// The performance tier that served the request, as Bedrock reported it.
    pub latency: Option<String>,
    pub service_tier: Option<String>,
    pub stop_reason: Option<String>,
    /// The guardrail intervened (stop reason `guardrail_intervened`, or its trace said so): text still
    /// buffered was dropped and later text is ignored.
    pub retracted: bool,
    /// The guardrail's trace, when the stream carried one.
    pub guardrail: Option<Assessment>,
}

impl RelayOutcome {
    fn new() -> Self {
        Self {
            end: RelayEnd::Completed,
            text: String::new(),
            first_delta_at: None,
            first_post_at: None,
            last_post_at: None,
            frames: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency: None,
            service_tier: None,
            stop_reason: None,
            retracted: false,
            guardrail: None,
        }
    }

    /// Whether any frame reached the client.
    pub fn sent_anything(&self) -> bool {
        self.first_post_at.is_some()
    }

    fn record_post(&mut self) {
        let now = Instant::now();
        self.first_post_at.get_or_insert(now);
        self.last_post_at = Some(now);
    }

    /// Applies one model event; returns the text to forward, if any.
    fn apply(&mut self, ev: ModelEvent) -> Option<String> {
        match ev {
            ModelEvent::Text(t) if t.is_empty() || self.retracted => None,
            ModelEvent::Text(t) => {
                self.first_delta_at.get_or_insert_with(Instant::now);
                self.text.push_str(&t);
                Some(t)
            }
            ModelEvent::Usage { input_tokens, output_tokens, cache_read_tokens, cache_write_tokens } => {
                self.input_tokens = input_tokens;
                self.output_tokens = output_tokens;
                self.cache_read_tokens = cache_read_tokens;
                self.cache_write_tokens = cache_write_tokens;
                None
            }
            ModelEvent::Served { latency, service_tier } => {
                self.latency = latency;
                self.service_tier = service_tier;
                None
            }
            ModelEvent::Stop(reason) => {
                self.retracted |= reason == STOP_GUARDRAIL;
                self.stop_reason = Some(reason);
                None
            }
            ModelEvent::Guardrail(a) => {
                self.retracted |= a.intervened;
                self.guardrail = Some(a);
                None
            }
        }
    }
}

/// Builds the next delta frame from the front of `buf`, draining what it takes.
fn take_frame(buf: &mut String, message_id: &MessageId, seq: u32, max_frame: usize) -> Bytes {
    let overhead = ServerEvent::Delta { message_id: message_id.as_str(), seq, text: "" }.to_frame().len();
    let budget = max_frame.saturating_sub(overhead).max(4);
    let mut n = prefix_fitting(buf, budget);
    if n == 0 {
        // A single character wider than the budget cannot happen with a sane limit; never loop forever.
        n = buf.chars().next().map_or(0, char::len_utf8);
    }
    let frame = ServerEvent::Delta { message_id: message_id.as_str(), seq, text: &buf[..n] }.to_frame();
    buf.drain(..n);
    Bytes::from(frame)
}

/// Posts one frame with a per-attempt timeout and bounded, jittered retries.
pub async fn post_with_retry<S: ConnectionSink>(
    sink: &S,
    conn: &ConnectionId,
    frame: Bytes,
    cfg: &RelayConfig,
) -> Result<(), SinkError> {
    let mut attempt = 1;
    loop {
        let res = match tokio::time::timeout(cfg.post_timeout, sink.post(conn, frame.clone())).await {
            Ok(r) => r,
            Err(elapsed) => Err(SinkError::Retryable(Box::new(elapsed))),
        };
        match res {
            Err(SinkError::Retryable(e)) if attempt < cfg.post_attempts => {
                tracing::warn!(attempt, error = %crate::error::chain(e.as_ref()), "post to connection failed; retrying");
                tokio::time::sleep(cfg.post_backoff.delay(attempt - 1)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Relays `stream` to `conn` until the model ends, the client leaves, or something fails. The caller owns
/// the stream and drops it on return, which cancels generation if it is still running.
pub async fn relay<M: ModelStream, S: ConnectionSink>(
    stream: &mut M,
    sink: &S,
    conn: &ConnectionId,
    message_id: &MessageId,
    cfg: &RelayConfig,
) -> RelayOutcome {
    match cfg.mode {
        RelayMode::Coalesce => relay_coalescing(stream, sink, conn, message_id, cfg).await,
        RelayMode::PerToken => relay_per_token(stream, sink, conn, message_id, cfg).await,
    }
}

async fn next_event<M: ModelStream>(stream: &mut M, idle: Duration) -> Option<Result<ModelEvent, ModelError>> {
    match tokio::time::timeout(idle, stream.next()).await {
        Ok(ev) => ev,
        Err(_) => Some(Err(ModelError::Timeout(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX)))),
    }
}

async fn relay_coalescing<M: ModelStream, S: ConnectionSink>(
    stream: &mut M,
    sink: &S,
    conn: &ConnectionId,
    message_id: &MessageId,
    cfg: &RelayConfig,
) -> RelayOutcome {
    let mut out = RelayOutcome::new();
    let mut buf = String::new();
    let mut model_done = false;
    let mut model_error = None;
    let mut inflight = pin!(OptionFuture::from(None));
    let mut posting = false;
    // The model read lives in this stream across loop turns: `select!` may drop a `next()` call, but never
    // a read in progress, so no event is lost when a post finishes first (the SDK's `recv()` is not
    // documented as cancel-safe, and neither need any `ModelStream` be).
    let idle = cfg.idle_timeout;
    let mut events = pin!(futures_util::stream::unfold(stream, move |s| async move {
        let ev = next_event(s, idle).await?;
        Some((ev, s))
    }));

    loop {
        if !posting && !buf.is_empty() {
            let frame = take_frame(&mut buf, message_id, out.frames, cfg.max_frame_bytes);
            out.frames += 1;
            inflight.set(Some(post_with_retry(sink, conn, frame, cfg)).into());
            posting = true;
        }
        if model_done && !posting {
            break;
        }
        tokio::select! {
            // Finish posts first: a finished post frees the way for the next (coalesced) frame.
            biased;
            res = &mut inflight, if posting => {
                posting = false;
                match res {
                    Some(Ok(())) => out.record_post(),
                    Some(Err(SinkError::Gone)) => {
                        out.end = RelayEnd::ClientGone;
                        return out;
                    }
                    Some(Err(e)) => {
                        out.end = RelayEnd::SinkFailed(e);
                        return out;
                    }
                    None => {}
                }
            }
            ev = events.next(), if !model_done => match ev {
                Some(Ok(ev)) => {
                    if let Some(t) = out.apply(ev) {
                        buf.push_str(&t);
                    }
                    if out.retracted {
                        // Nothing the guardrail stopped is posted after it said so.
                        buf.clear();
                    }
                }
                None => model_done = true,
                Some(Err(e)) => {
                    // Flush what already arrived, then report the failure.
                    model_done = true;
                    model_error = Some(e);
                }
            },
        }
    }
    if out.retracted {
        out.end = RelayEnd::Retracted;
    } else if let Some(e) = model_error {
        out.end = RelayEnd::ModelFailed(e);
    }
    out
}

async fn relay_per_token<M: ModelStream, S: ConnectionSink>(
    stream: &mut M,
    sink: &S,
    conn: &ConnectionId,
    message_id: &MessageId,
    cfg: &RelayConfig,
) -> RelayOutcome {
    let mut out = RelayOutcome::new();
    loop {
        let ev = match next_event(stream, cfg.idle_timeout).await {
            None => {
                if out.retracted {
                    out.end = RelayEnd::Retracted;
                }
                return out;
            }
            Some(Err(e)) => {
                out.end = RelayEnd::ModelFailed(e);
                return out;
            }
            Some(Ok(ev)) => ev,
        };
        let Some(mut piece) = out.apply(ev) else { continue };
        while !piece.is_empty() {
            let frame = take_frame(&mut piece, message_id, out.frames, cfg.max_frame_bytes);
            out.frames += 1;
            match post_with_retry(sink, conn, frame, cfg).await {
                Ok(()) => out.record_post(),
                Err(SinkError::Gone) => {
                    out.end = RelayEnd::ClientGone;
                    return out;
                }
                Err(e) => {
                    out.end = RelayEnd::SinkFailed(e);
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{RecordingSink, ScriptedStream};

    fn ids() -> (ConnectionId, MessageId) {
        (ConnectionId::parse("c1=").unwrap(), MessageId::parse("m1").unwrap())
    }

    fn text_of(frames: &[serde_json::Value]) -> String {
        frames.iter().map(|f| f["text"].as_str().unwrap()).collect()
    }

    /// A sink whose posts take `delay`.
    fn posting_in(delay: Duration) -> RecordingSink {
        RecordingSink::new().with_delay(delay)
    }

    fn under_the_limit(sink: &RecordingSink) -> bool {
        sink.raw().iter().all(|f| f.len() <= MAX_FRAME_BYTES)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_is_posted_before_the_second_arrives() {
        let (c, m) = ids();
        let mut s = ScriptedStream::tokens(2, Duration::from_millis(100));
        let sink = posting_in(Duration::from_millis(1));
        let out = relay(&mut s, &sink, &c, &m, &RelayConfig::default()).await;
        let first_post = out.first_post_at.unwrap() - out.first_delta_at.unwrap();
        assert!(first_post < Duration::from_millis(100), "first post took {first_post:?}");
        assert_eq!(out.frames, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_arriving_during_a_slow_post_are_coalesced_in_order() {
        let (c, m) = ids();
        let mut s = ScriptedStream::tokens(100, Duration::from_millis(2));
        let sink = posting_in(Duration::from_millis(20));
        let out = relay(&mut s, &sink, &c, &m, &RelayConfig::default()).await;
        assert!(matches!(out.end, RelayEnd::Completed));
        let frames = sink.frames();
        assert!(frames.len() < 20, "{} frames for 100 tokens", frames.len());
        assert!(under_the_limit(&sink));
        assert_eq!(frames.len() as u32, out.frames);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f["seq"], i as u64);
            assert_eq!(f["type"], "delta");
        }
        assert_eq!(text_of(&frames), out.text);
        assert_eq!(out.text, (0..100).map(|i| format!("t{i} ")).collect::<String>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_guardrail_stop_drops_what_was_not_posted_and_ends_retracted() {
        for mode in [RelayMode::Coalesce, RelayMode::PerToken] {
            let (c, m) = ids();
            let mut s = ScriptedStream::tokens(3, Duration::from_millis(50));
            let fast = Duration::from_millis(1);
            // The bad sentence arrives while the first post is in flight; the stop follows at once.
            s.push(fast, Ok(ModelEvent::Text("raw scans here ".into())));
            s.push(Duration::ZERO, Ok(ModelEvent::Stop(STOP_GUARDRAIL.into())));
            s.push(Duration::ZERO, Ok(ModelEvent::Text("ignored".into())));
            let mut a = Assessment::default();
            a.acted(crate::safety::GuardrailPolicy::Topic, true);
            s.push(Duration::ZERO, Ok(ModelEvent::Guardrail(a)));
            let sink = posting_in(Duration::from_millis(20));
            let cfg = RelayConfig { mode, ..RelayConfig::default() };
            let out = relay(&mut s, &sink, &c, &m, &cfg).await;
            assert!(matches!(out.end, RelayEnd::Retracted), "{mode:?}: {:?}", out.end);
            assert_eq!(
                out.guardrail.as_ref().map(|a| a.policies.clone()),
                Some(vec![crate::safety::GuardrailPolicy::Topic])
            );
            let shown = text_of(&sink.frames());
            assert!(!shown.contains("ignored"), "{mode:?}: {shown}");
            if mode == RelayMode::Coalesce {
                assert!(!shown.contains("raw scans"), "buffered text is dropped: {shown}");
            }
            assert_eq!(sink.frames().len() as u32, out.frames);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_token_baseline_posts_one_frame_per_token() {
        let (c, m) = ids();
        let mut s = ScriptedStream::tokens(30, Duration::from_millis(2));
        let sink = posting_in(Duration::from_millis(20));
        let cfg = RelayConfig { mode: RelayMode::PerToken, ..RelayConfig::default() };
        let out = relay(&mut s, &sink, &c, &m, &cfg).await;
        assert_eq!(out.frames, 30);
        assert_eq!(text_of(&sink.frames()), out.text);
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_burst_is_split_into_frames_under_the_limit_without_breaking_characters() {
        let (c, m) = ids();
        let big = "漫画\"\n".repeat(20_000); // ~220 KB of text, with characters JSON must escape
        let mut s = ScriptedStream::new([(Duration::ZERO, Ok(ModelEvent::Text(big.clone())))]);
        let sink = posting_in(Duration::from_millis(1));
        let out = relay(&mut s, &sink, &c, &m, &RelayConfig::default()).await;
        let frames = sink.frames();
        assert!(frames.len() >= 7);
        assert!(under_the_limit(&sink));
        assert_eq!(text_of(&frames), big);
        assert!(matches!(out.end, RelayEnd::Completed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_client_stops_the_relay_without_reading_the_rest_of_the_stream() {
        let (c, m) = ids();
        let mut s = ScriptedStream::tokens(50, Duration::from_millis(10));
        let sink = posting_in(Duration::from_millis(1)).gone_from(3);
        let out = relay(&mut s, &sink, &c, &m, &RelayConfig::default()).await;
        assert!(matches!(out.end, RelayEnd::ClientGone));
        assert!(s.remaining() > 40, "relay kept reading: {} events left", s.remaining());
        assert!(!s.polled_after_end());
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_failure_mid_stream_flushes_what_arrived_then_reports() {
        let (c, m) = ids();
        let mut s = ScriptedStream::tokens(3, Duration::from_millis(5));
        s.push(Duration::from_millis(5), Err(ModelError::Throttled("boom".into())));
        let sink = posting_in(Duration::from_millis(30));
        let out = relay(&mut s, &sink, &c, &m, &RelayConfig::default()).await;
        assert!(matches!(out.end, RelayEnd::ModelFailed(ModelError::Throttled(_))));
        assert_eq!(text_of(&sink.frames()), "t0 t1 t2 ");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_post_is_retried_after_a_jittered_backoff_that_doubles_then_given_up() {
        let (c, _) = ids();
        let ms = Duration::from_millis;
        let retryable = || SinkError::Retryable("throttled".into());
        let mut longest = [Duration::ZERO; 2];
        for _ in 0..40 {
            let sink = RecordingSink::new().failing(0..2, retryable);
            post_with_retry(&sink, &c, Bytes::from_static(b"{}"), &RelayConfig::default()).await.unwrap();
            let at = sink.posted_at();
            let waits = [at[1] - at[0], at[2] - at[1]];
            // Full jitter under a ceiling that doubles: 20 ms, then 40 ms.
            assert!(waits[0] <= ms(20), "first wait {:?}", waits[0]);
            assert!(waits[1] <= ms(40), "second wait {:?}", waits[1]);
            longest = [longest[0].max(waits[0]), longest[1].max(waits[1])];
            assert_eq!(sink.frames().len(), 1);
        }
        // It does wait: over 40 retries the waits reach the top quarter of their range.
        assert!(longest[0] >= ms(15) && longest[1] >= ms(30), "{longest:?}");
        let sink = RecordingSink::new().failing(0..3, retryable);
        let res = post_with_retry(&sink, &c, Bytes::from_static(b"{}"), &RelayConfig::default()).await;
        assert!(matches!(res, Err(SinkError::Retryable(_))) && sink.posts() == 3, "three attempts, then the error");
        let gone = RecordingSink::new().gone_from(0);
        let res = post_with_retry(&gone, &c, Bytes::from_static(b"{}"), &RelayConfig::default()).await;
        assert!(matches!(res, Err(SinkError::Gone)) && gone.posts() == 1, "a gone client is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_model_times_out() {
        let (c, m) = ids();
        let mut s = ScriptedStream::tokens(2, Duration::from_secs(60));
        let sink = posting_in(Duration::ZERO);
        let out = relay(&mut s, &sink, &c, &m, &RelayConfig::default()).await;
        assert!(matches!(out.end, RelayEnd::ModelFailed(ModelError::Timeout(_))));
    }
}
