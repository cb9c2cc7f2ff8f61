//! Routes one API Gateway WebSocket event to the turn engine.
//!
//! `sendMessage`, `$default` and any other route run a turn (a frame that is not a valid `sendMessage`
//! gets a typed `error` event from the engine; a `session` frame gets the session id; a `typing` frame
//! speculates the context and gets nothing back). The response's
//! status code matters only for `$connect`, where anything but 2xx refuses the connection.
//!
//! `$connect` and `typing` also refresh the container's pooled connections when they have been idle
//! ([`Warmer::refresh_if_idle`]), concurrently with the event's own work and bounded, so the message that
//! follows finds a warm connection to Bedrock; a `sendMessage` never waits for a warm-up.
//!
//! Who is talking comes from the `$connect` authorizer (`functions/authorizer`): API Gateway passes its
//! `principalId` and context (`guest`) with every event of the connection. A `$connect` without them is
//! refused: the route is never meant to be reachable without the authorizer.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::LambdaEvent;
use mangaassist_adapters::apigw::ApiGatewaySinks;
use mangaassist_adapters::warm::Warmer;
use mangaassist_core::admit::session::Principal;
use mangaassist_core::ahead::prefetch::{NoPrefetch, PrefetchQueue};
use mangaassist_core::clock::{Clock, CpuClock, CpuMeter, SystemClock};
use mangaassist_core::error::chain;
use mangaassist_core::ids::{ConnectionId, SourceAddr, UserId};
use mangaassist_core::ports::sources::{ContextSources, NoSources};
use mangaassist_core::ports::{ModelClient, Store};
use mangaassist_core::turn::{ConnectError, Engine, Invocation, TurnResult};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// What API Gateway expects back from a WebSocket route integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WsResponse {
    pub status_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl WsResponse {
    fn status(code: u16) -> Self {
        Self { status_code: code, body: None }
    }
}

/// The process's CPU time so far (user and system, every thread): the clock behind
/// `completed.metrics.cpu_us`. Lambda runs one invocation per process at a time, so the difference over an
/// invocation is that invocation's CPU (the runtime's own polling included, which is ours too).
pub fn process_cpu() -> Option<Duration> {
    cpu_clock(rustix::time::ClockId::ProcessCPUTime)
}

/// The calling thread's CPU time so far: the clock of a handler that runs alone on its own thread (the local
/// system's `chat_thread`, which shares its process with the emulators, the gateway and the clients).
pub fn thread_cpu() -> Option<Duration> {
    cpu_clock(rustix::time::ClockId::ThreadCPUTime)
}

fn cpu_clock(id: rustix::time::ClockId) -> Option<Duration> {
    let t = rustix::time::clock_gettime(id);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u32::try_from(t.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Kept between the turn's deadline and the Lambda's: time to store what was sent and tell the client.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// The principal the authorizer put on the event (`principalId`, context `guest`; API Gateway passes them
/// with every event of the connection, not only `$connect`), seen from the event's source address
/// (`identity.sourceIp`: what guests are counted by). Both are WebSocket request-context variables
/// (`$context.authorizer.principalId`, `$context.identity.sourceIp`: API Gateway developer guide, "WebSocket
/// API mapping template reference").
fn principal(rc: &aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequestContext) -> Option<Principal> {
    let fields = &rc.authorizer.fields;
    let user = fields.get("principalId").and_then(|v| v.as_str()).and_then(|u| UserId::parse(u).ok())?;
    let guest = fields.get("guest").is_some_and(|v| v.as_str() == Some("true") || v.as_bool() == Some(true));
    let addr = rc.identity.source_ip.as_deref().and_then(|ip| SourceAddr::parse(ip).ok());
    Some(Principal { user, guest, addr })
}

/// The chat function's state, built once per container.
pub struct App<M, St, C, X = NoSources, Q = NoPrefetch> {
    pub engine: Engine<M, St, C, X, Q>,
    pub sinks: ApiGatewaySinks,
    /// The hot-path connections to keep open ([`Warmer::default`]: none).
    pub warm: Warmer,
    /// What `completed.metrics.cpu_us` reads: [`process_cpu`] ([`App::new`]), or [`thread_cpu`] where the
    /// handler runs alone on a thread of a shared process.
    pub cpu: CpuClock,
}

impl<M, St, C, X, Q> App<M, St, C, X, Q> {
    /// The chat function's state, its CPU read from the process's clock (one invocation per process).
    pub fn new(engine: Engine<M, St, C, X, Q>, sinks: ApiGatewaySinks, warm: Warmer) -> Self {
        Self { engine, sinks, warm, cpu: process_cpu }
    }
}

/// Whether a frame is a `typing` frame (its `action`), read without parsing the rest.
fn is_typing(body: &str) -> bool {
    #[derive(Deserialize)]
    struct Action<'a> {
        #[serde(borrow)]
        action: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Action<'_>>(body).is_ok_and(|a| a.action.as_deref() == Some("typing"))
}

/// Handles one event. Errors are answered, never raised: a Lambda error on `sendMessage` would only be
/// logged by API Gateway, and the client would hear nothing.
pub async fn handle<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue>(
    app: &App<M, St, C, X, Q>,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<WsResponse, lambda_runtime::Error> {
    let started = Instant::now();
    let cpu = CpuMeter::start(app.cpu);
    let (ev, ctx) = event.into_parts();
    // The turn must end before the Lambda does (API Gateway's integration gives up at 29 s anyway). An
    // event without a deadline (0) leaves the turn's own `TURN_DEADLINE_MS`.
    let deadline = match ctx.deadline {
        0 => started + Duration::from_secs(24 * 3600),
        ms => {
            let left = Duration::from_millis(ms.saturating_sub(SystemClock.now_ms()));
            started + left.saturating_sub(DEADLINE_MARGIN).max(Duration::from_secs(1))
        }
    };
    let rc = &ev.request_context;
    let route = rc.route_key.as_deref().unwrap_or("$default");
    let Some(conn) = rc.connection_id.as_deref().and_then(|c| ConnectionId::parse(c).ok()) else {
        tracing::error!(route, "event without a valid connectionId");
        return Ok(WsResponse::status(400));
    };
    // session_id and message_id are recorded on the span by the turn once it knows them.
    let span = tracing::info_span!(
        "ws",
        route,
        connection_id = %conn,
        request_id = %ctx.request_id,
        session_id = tracing::field::Empty,
        message_id = tracing::field::Empty
    );
    async move {
        match route {
            "$connect" => {
                let q = &ev.query_string_parameters;
                let Some(who) = principal(rc) else {
                    tracing::error!("$connect without an authorizer principal; refused (is the authorizer attached?)");
                    return Ok(WsResponse::status(403));
                };
                // Boxed, like the turn: the SDK's futures are deep, and so the handler's would be. The warm-up
                // runs alongside (bounded by the warmer's budget).
                let sink = app
                    .sinks
                    .for_event(rc.domain_name.as_deref().unwrap_or_default(), rc.stage.as_deref().unwrap_or_default());
                let connect = Box::pin(app.engine.connect(conn, q.first("session_id"), &who));
                let (connected, _) = tokio::join!(connect, Box::pin(app.warm.refresh_if_idle(Some(&sink))));
                match connected {
                    Ok(c) => {
                        tracing::info!(session_id = %c.record.session_id, user_id = %who.user, resumed = c.resumed, "connected");
                        Ok(WsResponse::status(200))
                    }
                    Err(ConnectError::TooManyConnections) => {
                        tracing::info!(user_id = %who.user, "refused: too many connections");
                        Ok(WsResponse::status(429))
                    }
                    Err(ConnectError::Store(e)) => {
                        // Accept anyway: the shopper can chat, with a connection-scoped session, rather than
                        // not at all. Turns are still stored (under that session) once the store recovers.
                        tracing::error!(error = %chain(&e), "could not store the connection; accepting it without a record");
                        Ok(WsResponse::status(200))
                    }
                }
            }
            "$disconnect" => {
                if let Err(e) = Box::pin(app.engine.disconnect(&conn)).await {
                    tracing::error!(error = %chain(&e), "could not delete the connection record (its TTL will)");
                }
                Ok(WsResponse::status(200))
            }
            _ => {
                let sink = app
                    .sinks
                    .for_event(rc.domain_name.as_deref().unwrap_or_default(), rc.stage.as_deref().unwrap_or_default());
                let body = ev.body.as_deref().unwrap_or_default();
                // Boxed: the turn's state machine is large, and an invocation should not depend on the
                // caller's stack size (one allocation per turn).
                let inv = Invocation { conn, body, started, deadline, cpu, caller: principal(rc) };
                let turn = Box::pin(app.engine.handle_frame(&sink, &inv));
                // A typing frame refreshes idle connections for the message it announces; a sendMessage never
                // waits for a warm-up.
                let result = if is_typing(body) {
                    tokio::join!(turn, Box::pin(app.warm.refresh_if_idle(Some(&sink)))).0
                } else {
                    turn.await
                };
                let status = match result {
                    TurnResult::Completed(_)
                    | TurnResult::ClientGone
                    | TurnResult::Duplicate
                    | TurnResult::Session
                    | TurnResult::Typing(_)
                    | TurnResult::Blocked(_) => 200,
                    TurnResult::Rejected(_) => 400,
                    TurnResult::Limited(_) => 429,
                    TurnResult::Failed(_) | TurnResult::Undelivered => 502,
                };
                Ok(WsResponse::status(status))
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::is_typing;

    #[test]
    fn the_process_cpu_clock_counts_work_done() {
        use super::{CpuMeter, process_cpu};
        let meter = CpuMeter::start(process_cpu).unwrap();
        // Busy for a while: the clock moves by about that much (it reads CPU, not wall time).
        let until = std::time::Instant::now() + std::time::Duration::from_millis(20);
        let mut spins = 0u64;
        while std::time::Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        let used = meter.used().unwrap();
        assert!(used >= std::time::Duration::from_millis(10), "{used:?} after 20 ms of spinning ({spins} spins)");
        // Sleeping costs none.
        let meter = CpuMeter::start(process_cpu).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(meter.used().unwrap() < std::time::Duration::from_millis(25));
        // (In the same test: a test running beside this one would spend the process's CPU.) The thread
        // clock counts none of another thread's work, and all of its own.
        let meter = CpuMeter::start(super::thread_cpu).unwrap();
        std::thread::spawn(|| spin(40)).join().unwrap();
        assert!(meter.used().unwrap() < std::time::Duration::from_millis(20), "{:?}", meter.used());
        spin(20);
        assert!(meter.used().unwrap() >= std::time::Duration::from_millis(10));
    }

    fn spin(ms: u64) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while std::time::Instant::now() < until {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn only_typing_frames_are_taken_for_typing() {
        assert!(is_typing(r#"{"action":"typing","text":"one pi"}"#));
        assert!(!is_typing(r#"{"action":"sendMessage","text":"typing"}"#));
        assert!(!is_typing("not json"));
        assert!(!is_typing(r#"{"text":"typing"}"#));
    }
}
