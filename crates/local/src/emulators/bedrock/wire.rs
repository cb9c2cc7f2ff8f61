//! Bedrock's wire shapes: `application/vnd.amazon.eventstream` frames (written with the SDK's own codec),
//! error responses with `x-amzn-errortype`, and the `metadata` event's usage and tiers.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::emulators::models::{Asked, Refusal};

fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let msg = Message::new_from_parts(headers, payload);
    let mut buf = Vec::with_capacity(128);
    if let Err(e) = write_message_to(&msg, &mut buf) {
        tracing::error!(error = %e, "event-stream encoding failed");
    }
    Bytes::from(buf)
}

fn hs(name: &'static str, value: &'static str) -> Header {
    Header::new(name, HeaderValue::String(value.into()))
}

pub(crate) fn event(event_type: &'static str, payload: &Value) -> Bytes {
    let headers =
        vec![hs(":message-type", "event"), hs(":event-type", event_type), hs(":content-type", "application/json")];
    frame(headers, serde_json::to_vec(payload).unwrap_or_default())
}

pub(crate) fn exception(exception_type: &'static str, message: &str) -> Bytes {
    let headers = vec![
        hs(":message-type", "exception"),
        hs(":exception-type", exception_type),
        hs(":content-type", "application/json"),
    ];
    frame(headers, serde_json::to_vec(&json!({ "message": message })).unwrap_or_default())
}

pub(crate) fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = error_type.parse() {
        headers.insert("x-amzn-errortype", v);
    }
    (status, headers, axum::Json(json!({ "message": message }))).into_response()
}

/// A refusal as Bedrock sends it.
pub(crate) fn refuse(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(status, r.error_type, &r.message)
}

pub(crate) fn guardrail_not_found() -> Refusal {
    Refusal {
        status: 404,
        error_type: "ResourceNotFoundException",
        message: "The guardrail identifier or version is not valid.".to_owned(),
    }
}

/// The `metadata` event (and the `Converse` reply's fields of the same names): usage with the prompt-cache
/// reads and writes, and the tiers that served the request when it asked for one.
pub(crate) fn metadata(asked: &Asked, input: u32, output: usize, (read, write): (u32, u32), latency_ms: u128) -> Value {
    let mut m = json!({
        "usage": {
            "inputTokens": input, "outputTokens": output, "totalTokens": input as usize + output,
            "cacheReadInputTokens": read, "cacheWriteInputTokens": write,
        },
        "metrics": { "latencyMs": latency_ms },
    });
    if asked.latency_optimized {
        m["performanceConfig"] = json!({ "latency": "optimized" });
    }
    if let Some(tier) = &asked.service_tier {
        m["serviceTier"] = json!({ "type": tier });
    }
    m
}
