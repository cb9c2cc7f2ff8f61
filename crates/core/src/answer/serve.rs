//! Where a turn's answer comes from: the model (opened with failover), a pre-generated answer streamed at
//! once with no model call, or the pre-generated answer's first sentence streamed at once and continued by
//! the model from it (assistant prefill). [`decide`] picks one; [`answer`] streams it through the relay.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use tokio::time::Instant;

use crate::answer::hedge::Hedged;
use crate::answer::relay::{RelayConfig, RelayOutcome, relay};
use crate::answer::routes::{FailoverConfig, Opened, Routes, open_hedged, open_stream};
use crate::cache::Lookup;
use crate::error::ModelError;
use crate::gather::Gathered;
use crate::ids::SessionId;
use crate::ids::{ConnectionId, MessageId};
use crate::models::family;
use crate::ports::answers::{self, AnswerBuffer, GenerationHead, NoAnswers};
use crate::ports::{
    ChatMessage, ConnectionSink, ModelClient, ModelEvent, ModelRequest, ModelStream, Role, STOP_GUARDRAIL,
};
use crate::pregen::{Ask, PregenEntry, PregenMode, fingerprint, same_language};
use crate::protocol::{Route, Served};

/// How this turn will be answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Serving {
    Model,
    /// The generation started while the shopper typed, claimed: relayed from the answer buffer.
    TypedAhead(GenerationHead),
    /// The pre-generated answer, whole.
    Pregen(PregenEntry),
    /// This first sentence now, then the model continues from it.
    Opening(PregenEntry, String),
}

/// The facts a pre-generated answer about `asin` is checked against, as this turn gathered them.
fn current_fingerprint(gathered: &Gathered, asin: &crate::ids::Asin) -> Option<String> {
    let value = |want: Lookup| {
        gathered
            .context
            .values
            .iter()
            .find(|(l, _)| *l == want)
            .and_then(|(_, v)| serde_json::from_str::<Value>(v).ok())
    };
    let product = value(Lookup::Product(asin.clone()))?;
    Some(fingerprint(&product, value(Lookup::Review(asin.clone())).as_ref()))
}

/// Serves a pre-generated answer only where it fits: a generic overview request (or, in opening mode, a
/// specific question, to a model that accepts a prefill) about the product it was generated for, in the
/// same language, whose facts have not changed since.
pub fn decide(mode: PregenMode, text: &str, gathered: &Gathered, model_id: &str) -> Serving {
    let (Some(ask), Some(entry)) = (&gathered.context.ask, &gathered.context.pregen) else { return Serving::Model };
    let (Ask::Overview(asin) | Ask::Specific(asin)) = ask else { return Serving::Model };
    if !mode.is_on()
        || !same_language(entry, text, &gathered.entities)
        || current_fingerprint(gathered, asin).as_ref() != Some(&entry.fingerprint)
    {
        return Serving::Model;
    }
    match ask {
        Ask::Overview(_) => Serving::Pregen(entry.clone()),
        Ask::Specific(_) if mode == PregenMode::FullOpening && family(model_id).is_some_and(|f| f.prefill) => {
            match entry.opening() {
                Some(first) if first.len() < entry.text.len() => Serving::Opening(entry.clone(), first.to_owned()),
                _ => Serving::Model,
            }
        }
        _ => Serving::Model,
    }
}

/// A pre-generated answer as a model stream: the text at once, then the end.
struct Canned(Vec<ModelEvent>);

impl ModelStream for Canned {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        (!self.0.is_empty()).then(|| Ok(self.0.remove(0)))
    }
}

/// The opening sentence at once, then the model's continuation. The model request starts when the relay
/// asks for the second event, i.e. while the opening is being posted.
struct Led<'a, S> {
    lead: Option<String>,
    open: Pin<Box<dyn Future<Output = Result<Opened<S>, ModelError>> + Send + 'a>>,
    opened: Option<Opened<S>>,
    first_model_delta_at: Option<Instant>,
}

impl<S: ModelStream> ModelStream for Led<'_, S> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(lead) = self.lead.take() {
            return Some(Ok(ModelEvent::Text(lead)));
        }
        if self.opened.is_none() {
            match self.open.as_mut().await {
                Ok(o) => self.opened = Some(o),
                Err(e) => return Some(Err(e)),
            }
        }
        let ev = self.opened.as_mut()?.stream.next().await;
        if let Some(Ok(ModelEvent::Text(_))) = &ev {
            self.first_model_delta_at.get_or_insert_with(Instant::now);
        }
        ev
    }
}

/// A claimed typed-ahead generation as a model stream: the buffered events, then the rest as the writer adds
/// them. A wait longer than `wait` for the next event is a timeout; the writer's failure is its error.
struct Buffered<'a, B> {
    buffer: &'a B,
    session: &'a SessionId,
    id: &'a str,
    /// Events read so far (the next read starts after them).
    read: usize,
    queue: std::collections::VecDeque<answers::Buffered>,
    wait: std::time::Duration,
    ended: bool,
    /// The writer's time to the first text, ms after its request was sent.
    first_text_at_ms: Option<u32>,
}

impl<B: AnswerBuffer> ModelStream for Buffered<'_, B> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            if self.ended {
                return None;
            }
            match self.queue.pop_front() {
                Some(answers::Buffered::Model { at_ms, event }) => {
                    if matches!(event, ModelEvent::Text(_)) {
                        self.first_text_at_ms.get_or_insert(at_ms);
                    }
                    return Some(Ok(event));
                }
                Some(answers::Buffered::Failed { code, retryable }) => {
                    self.ended = true;
                    let why: crate::error::BoxError = format!("the typed-ahead generation failed: {code}").into();
                    return Some(Err(if retryable { ModelError::Unavailable(why) } else { ModelError::Other(why) }));
                }
                Some(answers::Buffered::End) => {
                    self.ended = true;
                    return None;
                }
                None => {}
            }
            match self.buffer.read(self.session, self.id, self.read, self.wait).await {
                Ok(events) if events.is_empty() => {
                    self.ended = true;
                    return Some(Err(ModelError::Timeout(u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX))));
                }
                Ok(events) => {
                    self.read += events.len();
                    self.queue.extend(events);
                }
                Err(e) => {
                    self.ended = true;
                    return Some(Err(ModelError::Unavailable(Box::new(e))));
                }
            }
        }
    }
}

/// What streamed, and who answered.
#[derive(Debug)]
pub struct Streamed {
    pub out: RelayOutcome,
    pub model: String,
    pub route: Route,
    pub failovers: u32,
    /// Model request sent -> its first text delta (0 when no model was asked).
    pub model_first_token_ms: f64,
    pub served: Served,
    /// Of a typed-ahead answer: the part of the model's first-token time that had passed at send, ms.
    pub ahead_ms: f64,
    /// Whether the model's first token was hedged, and by whom it came.
    pub hedge: Hedged,
}

fn ms(from: Instant, to: Option<Instant>) -> f64 {
    to.map_or(0.0, |t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
}

/// What an answer needs: the model, the relay settings, the failover settings, and the route table (told
/// when a provisioned throughput turns out to be gone).
pub struct Answerer<'a, M, B = NoAnswers> {
    pub model: &'a M,
    pub relay: &'a RelayConfig,
    pub failover: &'a FailoverConfig,
    pub routes: &'a Routes,
    /// The turn's overall deadline: the stream is cut there (`ModelError::Deadline`), opened or not.
    pub deadline: Instant,
    /// Where a claimed typed-ahead generation is read, and how long to wait for its next event.
    pub typed: Option<TypedSource<'a, B>>,
}

/// The answer buffer of the turn's session.
pub struct TypedSource<'a, B> {
    pub buffer: &'a B,
    pub session: &'a SessionId,
    pub wait: std::time::Duration,
    /// When the message was sent, Unix ms (what the shopper did not wait for is measured from it).
    pub sent_at_ms: u64,
}

/// A model stream cut at a deadline: past it, the next event is [`ModelError::Deadline`], then the end.
struct Deadlined<'s, S> {
    inner: &'s mut S,
    deadline: Instant,
    cut: bool,
}

impl<'s, S> Deadlined<'s, S> {
    fn new(inner: &'s mut S, deadline: Instant) -> Self {
        Self { inner, deadline, cut: false }
    }
}

impl<S: ModelStream> ModelStream for Deadlined<'_, S> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if self.cut {
            return None;
        }
        match tokio::time::timeout_at(self.deadline, self.inner.next()).await {
            Ok(ev) => ev,
            Err(_) => {
                self.cut = true;
                Some(Err(ModelError::Deadline))
            }
        }
    }
}

impl<M: ModelClient, B: AnswerBuffer> Answerer<'_, M, B> {
    /// Streams the answer `serving` says. `Err` only when the model failed before anything was sent.
    pub async fn answer<Si: ConnectionSink>(
        &self,
        sink: &Si,
        conn: &ConnectionId,
        message_id: &MessageId,
        request: &ModelRequest,
        plan: &[(String, Route)],
        serving: Serving,
    ) -> Result<Streamed, ModelError> {
        match serving {
            Serving::TypedAhead(head) => {
                match self.typed_ahead(sink, conn, message_id, &head).await {
                    Some(streamed) => Ok(streamed),
                    // The generation gave nothing before its first token: the model is asked now.
                    None => Box::pin(self.answer(sink, conn, message_id, request, plan, Serving::Model)).await,
                }
            }
            Serving::Model => {
                let open = Box::pin(open_hedged(self.model, request, plan, self.failover, self.routes));
                let Opened { mut stream, model, route, failovers, sent_at, hedge } =
                    tokio::time::timeout_at(self.deadline, open).await.map_err(|_| ModelError::Deadline)??;
                let out = Box::pin(relay(
                    &mut Deadlined::new(&mut stream, self.deadline),
                    sink,
                    conn,
                    message_id,
                    self.relay,
                ))
                .await;
                drop(stream); // cancels generation if the relay stopped early
                let model_first_token_ms = ms(sent_at, out.first_delta_at);
                Ok(Streamed {
                    out,
                    model,
                    route,
                    failovers,
                    model_first_token_ms,
                    served: Served::Model,
                    ahead_ms: 0.0,
                    hedge,
                })
            }
            Serving::Pregen(entry) => {
                // What the answer cost when it was generated: the turn reports it (it was counted against the
                // shopper's day then).
                let usage = ModelEvent::Usage {
                    input_tokens: entry.input_tokens,
                    output_tokens: entry.output_tokens,
                    cache_read_tokens: 0,
                    cache_write_tokens: 0,
                };
                let events = vec![ModelEvent::Text(entry.text.clone()), usage, ModelEvent::Stop("end_turn".into())];
                let out = relay(&mut Canned(events), sink, conn, message_id, self.relay).await;
                let (model, route) = (entry.model, Route::OnDemand);
                Ok(Streamed {
                    out,
                    model,
                    route,
                    failovers: 0,
                    model_first_token_ms: 0.0,
                    served: Served::Pregen,
                    ahead_ms: 0.0,
                    hedge: Hedged::default(),
                })
            }
            Serving::Opening(_, first) => {
                // Bedrock rejects a prefill that ends in white space; the opening is trimmed.
                let mut req = request.clone();
                req.messages.push(ChatMessage { role: Role::Assistant, text: first.trim_end().to_owned() });
                let sent_at = Instant::now();
                let mut led = Led {
                    lead: Some(first),
                    open: Box::pin(open_stream(self.model, &req, plan, self.failover, self.routes)),
                    opened: None,
                    first_model_delta_at: None,
                };
                let out = relay(&mut Deadlined::new(&mut led, self.deadline), sink, conn, message_id, self.relay).await;
                let model_first_token_ms = ms(sent_at, led.first_model_delta_at);
                let (model, route, failovers) = match led.opened.take() {
                    Some(o) => (o.model, o.route, o.failovers),
                    None => plan.first().map_or((String::new(), Route::OnDemand, 0), |p| (p.0.clone(), p.1, 0)),
                };
                Ok(Streamed {
                    out,
                    model,
                    route,
                    failovers,
                    model_first_token_ms,
                    served: Served::PregenOpening,
                    ahead_ms: 0.0,
                    hedge: Hedged::default(),
                })
            }
        }
    }

    /// Relays a claimed typed-ahead generation: `None` (nothing sent) when it yields no text before its
    /// next event is overdue or it failed, so the caller asks the model instead.
    async fn typed_ahead<Si: ConnectionSink>(
        &self,
        sink: &Si,
        conn: &ConnectionId,
        message_id: &MessageId,
        head: &GenerationHead,
    ) -> Option<Streamed> {
        let typed = self.typed.as_ref()?;
        let stream = Buffered {
            buffer: typed.buffer,
            session: typed.session,
            id: &head.id,
            read: 0,
            queue: std::collections::VecDeque::new(),
            wait: typed.wait,
            ended: false,
            first_text_at_ms: None,
        };
        // Up to the first text: a generation that died before it is not served.
        let (rest, head_events) = match crate::answer::routes::first_text(stream).await {
            Ok((rest, events)) if events.iter().any(|e| matches!(e, ModelEvent::Text(_))) => (rest, events),
            Ok(_) | Err(_) => {
                tracing::warn!(generation = head.id, "the typed-ahead generation gave no text; asking the model");
                return None;
            }
        };
        // A generation the output guardrail already stopped is never served (one stopped later, while relayed,
        // is retracted like a live stream).
        let stopped = |e: &ModelEvent| match e {
            ModelEvent::Stop(reason) => reason == STOP_GUARDRAIL,
            ModelEvent::Guardrail(a) => a.intervened,
            _ => false,
        };
        let queued = rest.queue.iter().any(|b| matches!(b, answers::Buffered::Model { event, .. } if stopped(event)));
        if queued || head_events.iter().any(stopped) {
            tracing::info!(
                generation = head.id,
                "the typed-ahead generation was stopped by the guardrail; asking the model"
            );
            return None;
        }
        let mut primed = crate::answer::routes::Primed::new(head_events, rest);
        let out = relay(&mut Deadlined::new(&mut primed, self.deadline), sink, conn, message_id, self.relay).await;
        let model_first_token_ms = primed.rest().first_text_at_ms.map_or(0.0, f64::from);
        let waited = typed.sent_at_ms.saturating_sub(head.started_at_ms) as f64;
        let ahead_ms = waited.clamp(0.0, model_first_token_ms);
        let route = if head.model.contains(":provisioned-model/") { Route::Provisioned } else { Route::OnDemand };
        let (model, failovers, served) = (head.model.clone(), 0, Served::TypedAhead);
        let hedge = Hedged::default();
        Some(Streamed { out, model, route, failovers, model_first_token_ms, served, ahead_ms, hedge })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::Assembled;
    use crate::ids::Asin;

    fn entry(fp: &str, japanese: bool) -> PregenEntry {
        PregenEntry {
            text: "Spiral is a horror series in 12 volumes. It follows Kirie.".into(),
            fingerprint: fp.into(),
            model: "m".into(),
            input_tokens: 10,
            output_tokens: 20,
            created_at_ms: 0,
            japanese,
            served: false,
        }
    }

    fn gathered(ask: Ask, price: u32, e: PregenEntry) -> Gathered {
        let a = Asin::parse("B0AAAAAAA1").unwrap();
        let product = serde_json::json!({"asin": "B0AAAAAAA1", "price_jpy": price}).to_string();
        let context = Assembled {
            ask: Some(ask),
            pregen: Some(e),
            values: vec![(Lookup::Product(a), product)],
            ..Assembled::default()
        };
        Gathered { context, ..Gathered::default() }
    }

    const HAIKU: &str = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";

    #[test]
    fn an_overview_request_with_unchanged_facts_is_served_the_entry() {
        let a = Asin::parse("B0AAAAAAA1").unwrap();
        let fp = fingerprint(&serde_json::json!({"asin": "B0AAAAAAA1", "price_jpy": 715}), None);
        let g = gathered(Ask::Overview(a.clone()), 715, entry(&fp, false));
        assert!(matches!(decide(PregenMode::Full, "tell me more about the first one", &g, HAIKU), Serving::Pregen(_)));
        let changed = gathered(Ask::Overview(a.clone()), 660, entry(&fp, false));
        assert_eq!(decide(PregenMode::Full, "tell me more about the first one", &changed, HAIKU), Serving::Model);
        assert_eq!(decide(PregenMode::Full, "1つ目について詳しく", &g, HAIKU), Serving::Model, "another language");
        assert_eq!(decide(PregenMode::Off, "tell me more about the first one", &g, HAIKU), Serving::Model);
    }

    #[test]
    fn a_specific_question_is_only_ever_opened_and_only_where_prefill_is_accepted() {
        let a = Asin::parse("B0AAAAAAA1").unwrap();
        let fp = fingerprint(&serde_json::json!({"asin": "B0AAAAAAA1", "price_jpy": 715}), None);
        let g = gathered(Ask::Specific(a), 715, entry(&fp, false));
        match decide(PregenMode::FullOpening, "is the first one scary?", &g, HAIKU) {
            Serving::Opening(_, first) => assert_eq!(first, "Spiral is a horror series in 12 volumes."),
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(PregenMode::Full, "is the first one scary?", &g, HAIKU), Serving::Model);
        assert_eq!(
            decide(PregenMode::FullOpening, "is the first one scary?", &g, "jp.amazon.nova-2-lite-v1:0"),
            Serving::Model
        );
    }
}
