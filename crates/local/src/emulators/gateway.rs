//! An API Gateway WebSocket emulator.
//!
//! - Clients connect with WebSocket at `ws://addr/` (or `ws://addr/{stage}`); a plain `GET /` gets the demo
//!   page ([`crate::web`]) instead. Query parameters reach
//!   `$connect` as `queryStringParameters`, and a non-2xx `$connect` answer refuses the handshake (403), as
//!   on AWS.
//! - With a REQUEST authorizer (`$connect` only, as on AWS), the handshake first invokes it with the event API
//!   Gateway builds (`type` `REQUEST`, `methodArn`, headers, query string, `requestContext`): the error
//!   `Unauthorized` answers 401, a policy that does not allow the `methodArn` 403, any other error 500, and
//!   none of those reaches the integration. An allowed connection carries `principalId` and the policy's
//!   `context` as `requestContext.authorizer` on `$connect` and on every later event.
//! - Each text frame is routed by the route selection expression `$request.body.action`: a JSON body
//!   whose `action` names a configured route goes to that route, anything else to `$default`. Each frame is
//!   its own invocation, run concurrently, with the same event JSON API Gateway sends
//!   (`requestContext.routeKey`, `eventType`, `connectionId`, `domainName`, `stage`, `messageId`, ...).
//! - The management API `POST|GET|DELETE /{stage}/@connections/{id}` is what
//!   `aws-sdk-apigatewaymanagement` calls; unknown ids get `410` with `x-amzn-ErrorType: GoneException`.
//!   A POST returns once the frame has been written to the client's socket. Every request must be signed
//!   with SigV4 by the run's [`ManagementKey`] (see [`auth`]); anything else is refused with 403.
//! - A `$connect` integration answering a non-2xx `statusCode` refuses the handshake with that status (as
//!   on AWS: a Lambda returning 400 makes `wscat` report `Unexpected server response: 400`, AWS docs "Set
//!   up a $connect route that requires a WebSocket subprotocol"); so a connection cap's 429 reaches the
//!   client as 429.
//! - At most [`GatewayConfig::max_inflight_per_connection`] frames of one connection are in flight at once:
//!   the next frame is read from the socket when one finishes, so a burst waits in the client's TCP buffer
//!   (nothing is dropped, nothing answered twice) instead of opening a task and an HTTP connection per
//!   frame. AWS bounds this differently (Lambda concurrency, route throttling); the bound here keeps one
//!   client from exhausting the process's file descriptors.
//! - A closed socket removes the connection and invokes `$disconnect`.
//!
//! Real API Gateway limits a message to 128 KB (32 KB frames); here the inbound limit is configurable and
//! generous by default so that the chat function's own validation can be exercised.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

mod auth;

pub use auth::{ManagementKey, Refusal};

/// Invokes the route's Lambda with an event and returns its response JSON.
pub type Invoke = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub stage: String,
    /// Route keys besides `$connect`, `$disconnect`, `$default`.
    pub routes: Vec<String>,
    /// Largest inbound message accepted.
    pub max_message_bytes: usize,
    /// Added to every `@connections` POST after the frame is written and before the POST answers: models
    /// the management API's round trip as the Lambda waits on it (tens of ms on AWS), which is what
    /// coalescing hides. Zero by default.
    pub post_delay: std::time::Duration,
    /// The only credentials the `@connections` API accepts (SigV4); a fresh pair per configuration.
    pub management_key: ManagementKey,
    /// Frames of one connection invoked at once; the next is read when one finishes.
    pub max_inflight_per_connection: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            stage: "local".to_owned(),
            routes: vec!["sendMessage".to_owned(), "session".to_owned(), "typing".to_owned()],
            max_message_bytes: 256 * 1024,
            post_delay: std::time::Duration::ZERO,
            management_key: ManagementKey::random(),
            max_inflight_per_connection: 8,
        }
    }
}

enum Outbound {
    Frame(Message, oneshot::Sender<()>),
    Close,
}

struct Conn {
    tx: mpsc::Sender<Outbound>,
    connected_at_ms: u64,
    last_active_ms: Arc<AtomicU64>,
    source_ip: String,
    user_agent: String,
}

struct Shared {
    cfg: GatewayConfig,
    invoke: Invoke,
    authorizer: Option<Invoke>,
    /// Integration invocations (every route), to show what never reached the function.
    invocations: AtomicU64,
    conns: Mutex<HashMap<String, Conn>>,
    addr: SocketAddr,
    posts: AtomicU64,
    /// `@connections` requests refused for their signature.
    refused: AtomicU64,
}

/// A running gateway emulator.
#[derive(Clone)]
pub struct Gateway {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn iso(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(0);
    aws_smithy_types::DateTime::from_secs(secs).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default()
}

/// An id shaped like API Gateway's (`L0SM9cOFvHcCIhw=`).
fn new_connection_id() -> String {
    let mut s: String = (0..15).map(|_| fastrand::alphanumeric()).collect();
    s.push('=');
    s
}

impl Gateway {
    /// Serves on `listener` (bound beforehand, so its address can be configured into the function that
    /// `invoke` calls) until the runtime stops.
    pub fn start(listener: tokio::net::TcpListener, cfg: GatewayConfig, invoke: Invoke) -> std::io::Result<Self> {
        Self::start_with(listener, cfg, invoke, None, Router::new())
    }

    /// The same, with a `$connect` REQUEST authorizer and `extra` routes served on the same address (the local
    /// token issuer's).
    pub fn start_with(
        listener: tokio::net::TcpListener,
        cfg: GatewayConfig,
        invoke: Invoke,
        authorizer: Option<Invoke>,
        extra: Router,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cfg,
            invoke,
            authorizer,
            invocations: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            addr,
            posts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/", get(root))
            .route("/{stage}", get(upgrade_stage))
            .route("/{stage}/@connections/{id}", any(manage))
            .with_state(shared.clone())
            .merge(extra);
        tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).await {
                tracing::error!(error = %e, "gateway emulator stopped");
            }
        });
        Ok(Self { addr, shared })
    }

    /// The WebSocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/{}", self.addr, self.shared.cfg.stage)
    }

    /// The management endpoint for `aws-sdk-apigatewaymanagement` (`APIGW_MANAGEMENT_ENDPOINT`).
    pub fn management_endpoint(&self) -> String {
        format!("http://{}/{}", self.addr, self.shared.cfg.stage)
    }

    /// The ids of the open connections (what a caller of `@connections` would have to learn).
    pub fn connection_ids(&self) -> Vec<String> {
        self.shared.conns.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The credentials the `@connections` API accepts (for the chat handler's SDK client).
    pub fn management_key(&self) -> &ManagementKey {
        &self.shared.cfg.management_key
    }

    /// `@connections` requests refused for their signature so far.
    pub fn refused_management_requests(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// `@connections` POSTs served so far.
    pub fn posts(&self) -> u64 {
        self.shared.posts.load(Ordering::Relaxed)
    }

    /// Invocations of the route integration (the chat function) so far, all routes.
    pub fn invocations(&self) -> u64 {
        self.shared.invocations.load(Ordering::Relaxed)
    }
}

impl Shared {
    async fn integration(&self, ev: Value) -> Result<Value, String> {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        (self.invoke)(ev).await
    }
}

/// Whether an IAM `Resource` (a string or a list; `*` wildcards at the end) covers `arn`.
fn covers(resource: &Value, arn: &str) -> bool {
    let one = |r: &str| r == arn || r.strip_suffix('*').is_some_and(|p| arn.starts_with(p));
    match resource {
        Value::String(r) => one(r),
        Value::Array(rs) => rs.iter().filter_map(Value::as_str).any(one),
        _ => false,
    }
}

/// Whether the policy allows `execute-api:Invoke` on `arn`: some Allow statement covers it and no Deny does.
fn policy_allows(resp: &Value, arn: &str) -> bool {
    let statements = match &resp["policyDocument"]["Statement"] {
        Value::Array(s) => s.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => return false,
    };
    let invoke = |s: &Value| covers(&s["Action"], "execute-api:Invoke") || s["Action"] == "*";
    let matching =
        |effect: &str| statements.iter().any(|s| s["Effect"] == effect && invoke(s) && covers(&s["Resource"], arn));
    matching("Allow") && !matching("Deny")
}

/// Runs the REQUEST authorizer on a `$connect` event; the `requestContext.authorizer` of the connection, or the
/// status that refuses the handshake.
async fn authorize(s: &Shared, auth: &Invoke, connect: &Map<String, Value>) -> Result<Value, StatusCode> {
    let method_arn = format!("arn:aws:execute-api:us-east-1:000000000000:local/{}/$connect", s.cfg.stage);
    let mut ev = connect.clone();
    ev.insert("type".into(), json!("REQUEST"));
    ev.insert("methodArn".into(), json!(method_arn));
    ev.insert("stageVariables".into(), json!({}));
    ev.remove("isBase64Encoded");
    let started = std::time::Instant::now();
    match auth(Value::Object(ev)).await {
        Err(e) if e == "Unauthorized" => Err(StatusCode::UNAUTHORIZED),
        Err(e) => {
            tracing::error!(error = %e, "the authorizer failed");
            Err(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Ok(resp) if !policy_allows(&resp, &method_arn) => Err(StatusCode::FORBIDDEN),
        Ok(resp) => {
            let mut ctx = resp["context"].as_object().cloned().unwrap_or_default();
            ctx.insert("principalId".into(), resp["principalId"].clone());
            ctx.insert("integrationLatency".into(), json!(started.elapsed().as_millis() as u64));
            Ok(Value::Object(ctx))
        }
    }
}

fn header_maps(headers: &HeaderMap) -> (Map<String, Value>, Map<String, Value>) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (k, v) in headers {
        let v = v.to_str().unwrap_or_default().to_owned();
        single.insert(k.as_str().to_owned(), Value::String(v.clone()));
        if let Some(Value::Array(a)) = multi.get_mut(k.as_str()) {
            a.push(Value::String(v));
        } else {
            multi.insert(k.as_str().to_owned(), json!([v]));
        }
    }
    (single, multi)
}

fn request_context(
    s: &Shared,
    route_key: &str,
    event_type: &str,
    conn_id: &str,
    connected_at: u64,
    source_ip: &str,
    user_agent: &str,
) -> Map<String, Value> {
    let now = now_ms();
    let mut rc = Map::new();
    rc.insert("routeKey".into(), json!(route_key));
    rc.insert("eventType".into(), json!(event_type));
    rc.insert("extendedRequestId".into(), json!(uuid::Uuid::new_v4().to_string()));
    rc.insert("requestTime".into(), json!(iso(now)));
    rc.insert("messageDirection".into(), json!("IN"));
    rc.insert("stage".into(), json!(s.cfg.stage));
    rc.insert("connectedAt".into(), json!(connected_at));
    rc.insert("requestTimeEpoch".into(), json!(now));
    rc.insert("identity".into(), json!({ "sourceIp": source_ip, "userAgent": user_agent }));
    rc.insert("requestId".into(), json!(uuid::Uuid::new_v4().to_string()));
    rc.insert("domainName".into(), json!(s.addr.to_string()));
    rc.insert("connectionId".into(), json!(conn_id));
    rc.insert("apiId".into(), json!("local"));
    rc
}

fn accepted(resp: &Result<Value, String>) -> bool {
    match resp {
        Ok(v) => v.get("statusCode").and_then(Value::as_u64).is_none_or(|c| (200..300).contains(&c)),
        Err(_) => false,
    }
}

/// `GET /`: a WebSocket handshake connects; any other request gets the demo page.
async fn root(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    state: State<Arc<Shared>>,
    peer: ConnectInfo<SocketAddr>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match ws {
        Ok(ws) => upgrade(ws, state, peer, query, headers).await,
        Err(_) => crate::web::page().await,
    }
}

async fn upgrade_stage(
    ws: WebSocketUpgrade,
    State(s): State<Arc<Shared>>,
    Path(_stage): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    upgrade(ws, State(s), ConnectInfo(peer), Query(q), headers).await
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let conn_id = new_connection_id();
    let connected_at = now_ms();
    let source_ip = peer.ip().to_string();
    let user_agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (h, mh) = header_maps(&headers);
    let multi_q: Map<String, Value> = q.iter().map(|(k, v)| (k.clone(), json!([v]))).collect();
    let mut ev = Map::new();
    ev.insert("headers".into(), Value::Object(h));
    ev.insert("multiValueHeaders".into(), Value::Object(mh));
    ev.insert("queryStringParameters".into(), if q.is_empty() { Value::Null } else { json!(q) });
    ev.insert(
        "multiValueQueryStringParameters".into(),
        if q.is_empty() { Value::Null } else { Value::Object(multi_q) },
    );
    let mut rc = request_context(&s, "$connect", "CONNECT", &conn_id, connected_at, &source_ip, &user_agent);
    ev.insert("requestContext".into(), Value::Object(rc.clone()));
    ev.insert("isBase64Encoded".into(), json!(false));
    let authorizer = match &s.authorizer {
        None => None,
        Some(auth) => match authorize(&s, auth, &ev).await {
            Ok(ctx) => Some(ctx),
            Err(status) => {
                tracing::info!(connection_id = conn_id, %status, "the authorizer refused the connection");
                return status.into_response();
            }
        },
    };
    if let Some(a) = &authorizer {
        rc.insert("authorizer".into(), a.clone());
        ev.insert("requestContext".into(), Value::Object(rc));
    }
    let resp = s.integration(Value::Object(ev)).await;
    if !accepted(&resp) {
        tracing::warn!(connection_id = conn_id, response = ?resp, "$connect refused the connection");
        // The integration's own status when it answered one (a connection cap's 429), as API Gateway does.
        let status = resp
            .ok()
            .and_then(|v| v.get("statusCode").and_then(Value::as_u64))
            .and_then(|c| StatusCode::from_u16(u16::try_from(c).ok()?).ok())
            .filter(|c| c.is_client_error() || c.is_server_error())
            .unwrap_or(StatusCode::FORBIDDEN);
        return status.into_response();
    }
    let ids = ConnIds { conn_id, connected_at, source_ip, user_agent, authorizer };
    ws.max_message_size(s.cfg.max_message_bytes).on_upgrade(move |socket| run_connection(s, socket, ids))
}

fn route_for(s: &Shared, body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_owned))
        .filter(|a| s.cfg.routes.iter().any(|r| r == a))
        .unwrap_or_else(|| "$default".to_owned())
}

/// What every event of a connection carries.
struct ConnIds {
    conn_id: String,
    connected_at: u64,
    source_ip: String,
    user_agent: String,
    /// `requestContext.authorizer`, when an authorizer let the connection in.
    authorizer: Option<Value>,
}

async fn run_connection(s: Arc<Shared>, socket: WebSocket, ids: ConnIds) {
    let ConnIds { conn_id, connected_at, source_ip, user_agent, authorizer } = ids;
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(64);
    let last_active = Arc::new(AtomicU64::new(connected_at));
    if let Ok(mut m) = s.conns.lock() {
        m.insert(
            conn_id.clone(),
            Conn {
                tx,
                connected_at_ms: connected_at,
                last_active_ms: last_active.clone(),
                source_ip: source_ip.clone(),
                user_agent: user_agent.clone(),
            },
        );
    }
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outbound::Frame(msg, ack) => {
                    if ws_tx.send(msg).await.is_err() {
                        break;
                    }
                    let _ = ack.send(());
                }
                Outbound::Close => {
                    let _ = ws_tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
                    break;
                }
            }
        }
    });

    let mut tasks = tokio::task::JoinSet::new();
    let mut close_code = 1006u16;
    let inflight = Arc::new(tokio::sync::Semaphore::new(s.cfg.max_inflight_per_connection.max(1)));
    loop {
        // A slot first, then the next frame: a burst waits in the socket, not in tasks.
        let Ok(permit) = inflight.clone().acquire_owned().await else { break };
        let Some(msg) = ws_rx.next().await else { break };
        let (body, b64) = match msg {
            Ok(Message::Text(t)) => (t.to_string(), false),
            Ok(Message::Binary(b)) => (base64::engine::general_purpose::STANDARD.encode(&b), true),
            Ok(Message::Close(f)) => {
                close_code = f.map_or(1005, |f| f.code);
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(connection_id = conn_id, error = %e, "websocket read failed");
                break;
            }
        };
        last_active.store(now_ms(), Ordering::Relaxed);
        let route = if b64 { "$default".to_owned() } else { route_for(&s, &body) };
        let mut rc = request_context(&s, &route, "MESSAGE", &conn_id, connected_at, &source_ip, &user_agent);
        rc.insert("messageId".into(), json!(uuid::Uuid::new_v4().to_string()));
        if let Some(a) = &authorizer {
            rc.insert("authorizer".into(), a.clone());
        }
        let ev = json!({ "requestContext": rc, "body": body, "isBase64Encoded": b64 });
        let s2 = s.clone();
        tasks.spawn(async move {
            if let Err(e) = s2.integration(ev).await {
                tracing::error!(error = %e, "route invocation failed");
            }
            drop(permit);
        });
        // Reap finished invocations so the set does not grow with the connection's life.
        while tasks.try_join_next().is_some() {}
    }

    if let Ok(mut m) = s.conns.lock() {
        m.remove(&conn_id);
    }
    writer.abort();
    let mut rc = request_context(&s, "$disconnect", "DISCONNECT", &conn_id, connected_at, &source_ip, &user_agent);
    rc.insert("disconnectStatusCode".into(), json!(close_code));
    if let Some(a) = &authorizer {
        rc.insert("authorizer".into(), a.clone());
    }
    rc.insert(
        "disconnectReason".into(),
        json!(if close_code == 1000 || close_code == 1001 {
            "Client-side close frame status code"
        } else {
            "Connection closed"
        }),
    );
    let _ = s.integration(json!({ "requestContext": rc, "isBase64Encoded": false })).await;
    // In-flight invocations finish on their own (as Lambda invocations would); their posts now get 410.
    tasks.detach_all();
}

fn gone() -> Response {
    let mut h = HeaderMap::new();
    h.insert("x-amzn-errortype", axum::http::HeaderValue::from_static("GoneException"));
    (StatusCode::GONE, h, axum::Json(json!({ "message": "The connection is gone" }))).into_response()
}

/// A 403 as API Gateway answers an unauthenticated or badly signed request.
fn forbidden(r: Refusal) -> Response {
    let mut h = HeaderMap::new();
    h.insert("x-amzn-errortype", axum::http::HeaderValue::from_static(r.error_type()));
    (StatusCode::FORBIDDEN, h, axum::Json(json!({ "message": r.to_string() }))).into_response()
}

async fn manage(
    State(s): State<Arc<Shared>>,
    Path((stage, id)): Path<(String, String)>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let signed = auth::verify(&s.cfg.management_key, method.as_str(), target, &headers, &body, SystemTime::now());
    if let Err(r) = signed {
        s.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(refusal = r.error_type(), "refused an @connections request");
        return forbidden(r);
    }
    if stage != s.cfg.stage {
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "message": "Not Found" }))).into_response();
    }
    let conn = s.conns.lock().ok().and_then(|m| {
        m.get(&id).map(|c| {
            (
                c.tx.clone(),
                c.connected_at_ms,
                c.last_active_ms.load(Ordering::Relaxed),
                c.source_ip.clone(),
                c.user_agent.clone(),
            )
        })
    });
    let Some((tx, connected_at, last_active, ip, ua)) = conn else { return gone() };
    match method.as_str() {
        "POST" => {
            if body.len() > 128 * 1024 {
                let mut h = HeaderMap::new();
                h.insert("x-amzn-errortype", axum::http::HeaderValue::from_static("PayloadTooLargeException"));
                return (StatusCode::PAYLOAD_TOO_LARGE, h, axum::Json(json!({ "message": "Payload too large" })))
                    .into_response();
            }
            s.posts.fetch_add(1, Ordering::Relaxed);
            let msg = match std::str::from_utf8(&body) {
                Ok(t) => Message::Text(t.into()),
                Err(_) => Message::Binary(body),
            };
            let (ack_tx, ack_rx) = oneshot::channel();
            if tx.send(Outbound::Frame(msg, ack_tx)).await.is_err() || ack_rx.await.is_err() {
                return gone();
            }
            // The frame is on the client's socket; the caller still waits out the emulated round trip.
            if !s.cfg.post_delay.is_zero() {
                tokio::time::sleep(s.cfg.post_delay).await;
            }
            StatusCode::OK.into_response()
        }
        "GET" => axum::Json(json!({
            "ConnectedAt": iso(connected_at),
            "Identity": { "SourceIp": ip, "UserAgent": ua },
            "LastActiveAt": iso(last_active),
        }))
        .into_response(),
        "DELETE" => {
            let _ = tx.send(Outbound::Close).await;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}
