//! The HTTP handlers: `ConverseStream` (event-stream relay on the latency, capacity and guardrail models),
//! `Converse`, `ApplyGuardrail`, and `ListAsyncInvokes` (an empty list: a connection warmer's cheap call).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::Shared;
use super::connection::ConnectionUse;
use super::latency::{SYNC_CHUNK_TOKENS, Timing, timing};
use super::record::{Fault, GuardrailCall, InFlight, RequestRecord, Stats};
use super::request::{Parsed, answer_tokens, billed_tokens, family_of, parse, say_after_first_sentence};
use super::wire::{error_response, event, exception, guardrail_not_found, metadata, refuse};
use crate::emulators::answers::estimate_tokens;
use crate::emulators::guardrail::{self, Direction, StreamMode, Trace};
use mangaassist_core::ids::Asin;

/// A model call as both answering handlers take it: the emulator, the connection it came on, the model id
/// of its path, when its body had been read, and the body parsed. A body that does not parse is refused
/// before a handler runs (Bedrock's `ValidationException`).
pub(super) struct Call {
    shared: Arc<Shared>,
    conn: ConnectionUse,
    model_id: String,
    received_at: Instant,
    parsed: Parsed,
}

impl FromRequest<Arc<Shared>> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<Shared>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Extension(conn) = Extension::<ConnectionUse>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(model_id) =
            Path::<String>::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        let body =
            Bytes::from_request(Request::from_parts(parts, body), state).await.map_err(IntoResponse::into_response)?;
        let received_at = Instant::now();
        let parsed = parse(state, &body).map_err(refuse)?;
        Ok(Self { shared: state.clone(), conn, model_id, received_at, parsed })
    }
}

pub(super) async fn converse_stream(call: Call) -> Response {
    let Call { shared, conn, model_id, received_at, parsed } = call;
    let family = family_of(&shared, &model_id, &parsed.asked);
    let key = parsed.key.clone();
    let input_tokens = billed_tokens(&parsed.context, parsed.messages);
    // A refused request is recorded too (what it asked for is what tests look at); it takes no fault.
    let fault = if family.is_ok() { shared.faults.lock().ok().and_then(|mut q| q.pop_front()) } else { None };
    let (tokens, stop_reason) = answer_tokens(&shared, &parsed, fault.as_ref());
    let idx = shared.stats.insert(
        key.clone(),
        RequestRecord {
            model_id: model_id.clone(),
            received_at,
            first_delta_at: None,
            input_tokens,
            deltas_sent: 0,
            deltas_planned: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            output_tokens: 0,
            completed: false,
            cancelled: false,
            fault: fault.clone(),
            asked: parsed.asked.clone(),
            cache_read_tokens: 0,
            prompt: parsed.context.clone(),
            guardrail_config: parsed.guardrail_config.clone(),
            guardrail: parsed.guardrail.as_ref().map(|g| g.id.clone()),
            stream_mode: parsed.guardrail.as_ref().map(|g| g.mode),
            guardrail_intervened: false,
            new_connection: conn.new,
            handshake: conn.handshake,
        },
    );
    let family = match family {
        Ok(f) => f,
        Err(r) => return refuse(r),
    };
    match fault {
        Some(Fault::ThrottleBeforeStream) => {
            return error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            );
        }
        Some(Fault::UnavailableBeforeStream) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "Service unavailable.",
            );
        }
        Some(Fault::AccessDeniedBeforeStream) => {
            let message = format!(
                "User: arn:aws:sts::123456789012:assumed-role/chat-role/chat is not authorized to perform: \
                 bedrock:InvokeModelWithResponseStream on resource: arn:aws:bedrock:ap-northeast-1:123456789012:\
                 inference-profile/{model_id}"
            );
            return error_response(StatusCode::FORBIDDEN, "AccessDeniedException", &message);
        }
        _ => {}
    }

    // Admission: which capacity serves this model id, and is there room?
    let cap = shared.cfg.capacity;
    let model_key = model_id;
    let provisioned = model_key.contains(":provisioned-model/");
    let (limit, jitter, load_penalty) = if provisioned {
        let view = shared.control.list().into_iter().find(|p| p.arn == model_key);
        match view {
            Some(p) if p.status == "InService" => (
                cap.provisioned_streams_per_unit * usize::try_from(p.model_units).unwrap_or(1).max(1),
                cap.provisioned_jitter,
                0.0,
            ),
            Some(_) => {
                return error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ModelNotReadyException",
                    "The provisioned model is not ready to serve inference requests.",
                );
            }
            None => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFoundException",
                    "The specified resource ARN was not found.",
                );
            }
        }
    } else {
        (cap.on_demand_concurrency, shared.cfg.latency.jitter, cap.on_demand_load_penalty)
    };
    let admitted = shared.active.lock().ok().and_then(|mut m| {
        let n = m.entry(model_key.clone()).or_insert(0);
        (*n < limit).then(|| {
            *n += 1;
            *n
        })
    });
    let Some(load) = admitted else {
        shared.stats.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        );
    };
    let in_flight = InFlight { active: shared.active.clone(), key: model_key.clone() };
    let Timing { latency: mut lat, cache_read, cache_write } = timing(&shared, &model_key, family, &parsed);
    shared.stats.update(&key, idx, |r| r.cache_read_tokens = cache_read);
    lat.jitter = jitter;
    // The heavy tail is on-demand's: provisioned capacity keeps its steady latency.
    let tail = shared.cfg.tail.filter(|_| !provisioned);
    let load_penalty = if parsed.asked.service_tier.as_deref() == Some("priority") { 0.0 } else { load_penalty };
    lat.overhead_ms *= 1.0 + load_penalty * (load as f64 / limit.max(1) as f64);
    lat.prefill_ms_per_token *= 1.0 + load_penalty * (load as f64 / limit.max(1) as f64);

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let stats = shared.stats.clone();
    let asked = parsed.asked;
    let in_call = parsed.guardrail;
    let scan = shared.cfg.guardrail_scan();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        let delta =
            |tok: &str| event("contentBlockDelta", &json!({ "contentBlockIndex": 0, "delta": { "text": tok } }));
        let sent = |stats: &Stats| {
            stats.update(&key, idx, |r| {
                r.first_delta_at.get_or_insert_with(Instant::now);
                r.deltas_sent += 1;
            })
        };
        let cancelled = |stats: &Stats| stats.update(&key, idx, |r| r.cancelled = true);
        if !send(event("messageStart", &json!({ "role": "assistant" }))).await {
            return cancelled(&stats);
        }
        let mut at = received_at + lat.first_token(input_tokens, tail.as_ref());
        if let Some(Fault::StallBeforeFirstToken(d)) = &fault {
            at += *d;
        }
        let per = lat.per_token();
        // What the client has been sent, what a sync guardrail holds, and the guardrail's last verdict.
        let mut shown = String::new();
        let mut held: Vec<&str> = Vec::new();
        let mut verdict: Option<guardrail::Assessment> = None;
        let mut generated = 0;
        for (i, tok) in tokens.iter().enumerate() {
            if let Some(Fault::ExceptionAfter { deltas, exception_type }) = &fault
                && i == *deltas as usize
            {
                let _ = send(exception(exception_type, "injected failure")).await;
                return;
            }
            if let Some(Fault::StallAfter { deltas, pause }) = &fault
                && i == *deltas as usize
            {
                at += *pause;
            }
            sleep_until(at).await;
            at += per;
            generated = i + 1;
            match in_call.as_ref().map(|g| g.mode) {
                None | Some(StreamMode::Async) => {
                    if !send(delta(tok)).await {
                        return cancelled(&stats);
                    }
                    sent(&stats);
                    shown.push_str(tok);
                    if in_call.is_some() {
                        let a = guardrail::assess(Direction::Output, &shown);
                        let stop = a.intervened();
                        verdict = Some(a);
                        if stop {
                            break;
                        }
                    }
                }
                Some(StreamMode::Sync) => {
                    held.push(tok);
                    if held.len() < SYNC_CHUNK_TOKENS && generated < tokens.len() {
                        continue;
                    }
                    tokio::time::sleep(scan).await;
                    let candidate = format!("{shown}{}", held.concat());
                    let a = guardrail::assess(Direction::Output, &candidate);
                    let stop = a.intervened();
                    verdict = Some(a);
                    if stop {
                        break;
                    }
                    for t in held.drain(..) {
                        if !send(delta(t)).await {
                            return cancelled(&stats);
                        }
                        sent(&stats);
                    }
                    shown = candidate;
                    // The next chunk's schedule starts after the scan.
                    at = at.max(Instant::now());
                }
            }
        }
        let intervened = verdict.as_ref().is_some_and(guardrail::Assessment::intervened);
        let latency_ms = received_at.elapsed().as_millis();
        let mut meta = metadata(&asked, input_tokens, generated, (cache_read, cache_write), latency_ms);
        if let (Some(g), Some(a)) = (&in_call, &verdict)
            && g.trace != Trace::Disabled
        {
            let full = (g.trace == Trace::EnabledFull).then(|| tokens[..generated].concat());
            meta["trace"] = guardrail::trace(&g.id, a, scan.as_millis() as u64, full.as_deref());
        }
        let stop_reason = if intervened { "guardrail_intervened" } else { stop_reason };
        let tail = [
            event("contentBlockStop", &json!({ "contentBlockIndex": 0 })),
            event("messageStop", &json!({ "stopReason": stop_reason })),
            event("metadata", &meta),
        ];
        for b in tail {
            if !send(b).await {
                return cancelled(&stats);
            }
        }
        stats.update(&key, idx, |r| {
            r.completed = true;
            r.guardrail_intervened = intervened;
        });
    });

    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `Converse`: the whole answer at once: a summary-like digest of the user lines (the chat's summaries), or
/// the deterministic answer when the request is not a summary (pre-generated answers).
pub(super) async fn converse(call: Call) -> Response {
    let Call { shared, conn, model_id, received_at, parsed } = call;
    let family = match family_of(&shared, &model_id, &parsed.asked) {
        Ok(f) => f,
        Err(r) => return refuse(r),
    };
    // Only a `Say` is for a `Converse`; the other faults wait for a stream.
    let fault = shared.faults.lock().ok().and_then(|mut q| match q.front() {
        Some(Fault::Say(_)) => q.pop_front(),
        _ => None,
    });
    let text = if parsed.context.contains(mangaassist_core::gather::summary::SUMMARY_PROMPT) {
        let mut asked: Vec<String> = Vec::new();
        for line in parsed.context.lines() {
            if let Some(q) = line.strip_prefix("user: ") {
                asked.push(q.split_whitespace().take(8).collect::<Vec<_>>().join(" "));
            }
        }
        let asins: Vec<String> = Asin::all_in(&parsed.context).into_iter().map(String::from).collect();
        // A summary carries the one before it forward, as a model asked to extend it would.
        match parsed.context.lines().find_map(|l| l.strip_prefix("Summary so far: ")) {
            Some(before) => format!("{before} Then the shopper asked: {}.", asked.join("; ")),
            None => format!("The shopper asked: {}. Products discussed: {}.", asked.join("; "), asins.join(", ")),
        }
    } else {
        answer_tokens(&shared, &parsed, fault.as_ref()).0.concat()
    };
    let text = match (&fault, parsed.context.contains(mangaassist_core::gather::summary::SUMMARY_PROMPT)) {
        (Some(Fault::Say(sentence)), true) => say_after_first_sentence(&text, sentence),
        _ => text,
    };
    let input_tokens = billed_tokens(&parsed.context, parsed.messages);
    let output_tokens = estimate_tokens(&text);
    let Timing { latency: lat, cache_read, cache_write } = timing(&shared, &model_id, family, &parsed);
    let provisioned = mangaassist_core::models::ModelId::parse(&model_id).is_ok_and(|m| m.is_provisioned());
    let tail = shared.cfg.tail.filter(|_| !provisioned);
    let mut done = lat.first_token(input_tokens, tail.as_ref()) + lat.per_token() * output_tokens;
    // The guardrail scans the whole answer once it is generated.
    let verdict = parsed.guardrail.as_ref().map(|_| guardrail::assess(Direction::Output, &text));
    let intervened = verdict.as_ref().is_some_and(guardrail::Assessment::intervened);
    if verdict.is_some() {
        done += shared.cfg.guardrail_scan();
    }
    let key = format!("converse-{}", shared.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    shared.stats.insert(
        key,
        RequestRecord {
            model_id,
            received_at,
            first_delta_at: None,
            input_tokens,
            deltas_sent: 0,
            deltas_planned: 0,
            output_tokens,
            completed: true,
            cancelled: false,
            fault,
            asked: parsed.asked.clone(),
            cache_read_tokens: cache_read,
            prompt: parsed.context.clone(),
            guardrail_config: parsed.guardrail_config.clone(),
            guardrail: parsed.guardrail.as_ref().map(|g| g.id.clone()),
            stream_mode: None,
            guardrail_intervened: intervened,
            new_connection: conn.new,
            handshake: conn.handshake,
        },
    );
    sleep_until(received_at + done).await;
    let latency_ms = received_at.elapsed().as_millis();
    let mut reply =
        metadata(&parsed.asked, input_tokens, output_tokens as usize, (cache_read, cache_write), latency_ms);
    let shown = if intervened { guardrail::BLOCKED_MESSAGE } else { text.as_str() };
    reply["output"] = json!({ "message": { "role": "assistant", "content": [{ "text": shown }] } });
    reply["stopReason"] = json!(if intervened { "guardrail_intervened" } else { "end_turn" });
    if let (Some(g), Some(a)) = (&parsed.guardrail, &verdict)
        && g.trace != Trace::Disabled
    {
        let full = (g.trace == Trace::EnabledFull).then_some(text.as_str());
        reply["trace"] = guardrail::trace(&g.id, a, shared.cfg.guardrail_scan().as_millis() as u64, full);
    }
    axum::Json(reply).into_response()
}

/// `ApplyGuardrail`: assesses `content[].text.text` for `source` (see [`super::guardrail`]), answers after
/// the guardrail's scan time, and records the call.
pub(super) async fn apply_guardrail(
    State(shared): State<Arc<Shared>>,
    Path((guardrail_id, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let received_at = Instant::now();
    let bad = |m: &str| error_response(StatusCode::BAD_REQUEST, "ValidationException", m);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else { return bad("malformed request body") };
    if guardrail_id == guardrail::MISSING_GUARDRAIL {
        return refuse(guardrail_not_found());
    }
    if !guardrail::valid_version(&version) {
        return bad("guardrailVersion must be DRAFT or a version number");
    }
    let Some(source) = req.get("source").and_then(Value::as_str).and_then(Direction::parse) else {
        return bad("source must be INPUT or OUTPUT");
    };
    let blocks = req.get("content").and_then(Value::as_array).cloned().unwrap_or_default();
    let texts: Vec<String> =
        blocks.iter().filter_map(|b| b.pointer("/text/text").and_then(Value::as_str)).map(str::to_owned).collect();
    if texts.is_empty() {
        return bad("content must hold at least one text block");
    }
    let scan = shared.cfg.guardrail_scan();
    let (reply, verdict) = guardrail::apply_reply(source, &texts, scan.as_millis() as u64);
    if let Ok(mut calls) = shared.stats.guardrail_calls.lock() {
        calls.push(GuardrailCall {
            guardrail_id,
            version,
            source,
            text: texts.join("\n"),
            intervened: verdict.intervened(),
            blocked: verdict.blocked,
            received_at,
        });
    }
    sleep_until(received_at + scan).await;
    axum::Json(reply).into_response()
}

/// `ListAsyncInvokes`: no asynchronous invocations, at once. Clients call it to open a pooled connection
/// without side effects (it reads nothing a model call would, and bills nothing).
pub(super) async fn list_async_invokes() -> Response {
    axum::Json(json!({ "asyncInvokeSummaries": [] })).into_response()
}
