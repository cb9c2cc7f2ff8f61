//! `POST /token`: a guest token for an anonymous shopper, `{"token": "...", "expires_in": 900, "user_id":
//! "g-..."}`, or 403 when guests are off, or 429 (with `Retry-After`) past the per-IP rate limit.
//!
//! [`issue`] is the decision, over a source IP; [`handle`] adapts it to the HTTP API (payload 2.0) request
//! `lambda_http` hands the function. The local system serves [`issue`] at its own `POST /token`.

use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use mangaassist_adapters::auth::guest::GuestIssuer;
use mangaassist_adapters::auth::limit::{Decision, RateLimiter};
use serde_json::{Value, json};

/// The token function's state, built once per container.
pub struct App<L> {
    /// `None` when guests are not allowed.
    pub issuer: Option<GuestIssuer>,
    pub limiter: L,
}

/// An answer: status, JSON body, and `Retry-After` seconds on a 429.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after_secs: Option<u64>,
}

impl Reply {
    fn error(status: u16, code: &str, message: &str) -> Self {
        Self { status, body: json!({ "error": code, "message": message }), retry_after_secs: None }
    }
}

/// One token request from `source_ip` at `now_secs`.
pub async fn issue<L: RateLimiter>(app: &App<L>, source_ip: &str, now_secs: u64) -> Reply {
    let Some(issuer) = &app.issuer else {
        return Reply::error(403, "guests_forbidden", "guest access is turned off");
    };
    if let Decision::Limited { retry_after_secs } = app.limiter.check(source_ip, now_secs).await {
        let mut r = Reply::error(429, "rate_limited", "too many token requests; try again shortly");
        r.retry_after_secs = Some(retry_after_secs);
        return r;
    }
    match issuer.issue(now_secs) {
        Ok(t) => Reply { status: 200, body: json!(t), retry_after_secs: None },
        Err(e) => {
            tracing::error!(error = %e, "could not sign a guest token");
            Reply::error(500, "internal", "could not issue a token")
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The HTTP API's view of the caller's address (`requestContext.http.sourceIp`).
fn source_ip(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Adapts [`issue`] to the HTTP API. Only `POST` is routed here by the template; anything else is 405.
pub async fn handle<L: RateLimiter>(app: &App<L>, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let reply = if req.method() == lambda_http::http::Method::POST {
        issue(app, &source_ip(&req), now_secs()).await
    } else {
        Reply::error(405, "method_not_allowed", "use POST")
    };
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-store");
    if let Some(s) = reply.retry_after_secs {
        resp = resp.header("retry-after", s.to_string());
    }
    Ok(resp.body(Body::Text(reply.body.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mangaassist_adapters::auth::guest::GuestKey;
    use mangaassist_adapters::auth::limit::MemoryRateLimiter;
    use std::time::Duration;

    fn app(guests: bool, per_minute: u32) -> App<MemoryRateLimiter> {
        App {
            issuer: guests.then(|| GuestIssuer::new(GuestKey::random(), Duration::from_secs(900))),
            limiter: MemoryRateLimiter::new(per_minute),
        }
    }

    #[tokio::test]
    async fn a_guest_gets_a_token_until_its_address_is_over_the_limit() {
        let app = app(true, 2);
        for _ in 0..2 {
            let r = issue(&app, "203.0.113.7", 120).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body["expires_in"], 900);
            assert!(r.body["user_id"].as_str().unwrap().starts_with("g-"));
            assert_eq!(r.body["token"].as_str().unwrap().split('.').count(), 3);
        }
        let r = issue(&app, "203.0.113.7", 150).await;
        assert_eq!((r.status, r.retry_after_secs), (429, Some(30)));
        assert_eq!(r.body["error"], "rate_limited");
    }

    #[tokio::test]
    async fn with_guests_off_the_endpoint_answers_403() {
        assert_eq!(issue(&app(false, 10), "203.0.113.7", 0).await.status, 403);
    }

    #[tokio::test]
    async fn the_sample_http_api_event_gets_a_token_with_no_store_caching() {
        let req = lambda_http::request::from_str(include_str!("../../../events/token-request.json")).unwrap();
        let resp = handle(&app(true, 10), req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let Body::Text(body) = resp.body() else { panic!("a text body") };
        let body: Value = serde_json::from_str(body).unwrap();
        assert!(body["user_id"].as_str().unwrap().starts_with("g-"));
    }
}
