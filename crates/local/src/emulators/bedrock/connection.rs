//! The connection model: what a client pays for a new TCP+TLS connection, and when the endpoint drops a
//! pooled (keep-alive) connection, gracefully or silently.
//!
//! The emulator speaks plain HTTP on loopback, where a connection costs nothing, so the cost is modelled at
//! the server: [`ConnListener`] wraps every accepted socket in a [`ConnIo`] that knows whether it has served
//! a request yet, and [`pay_for_new_connection`] (a middleware) holds the first request of each connection
//! for [`ConnectionModel::handshake`] before the handler sees it. To the client this is the same as a slow
//! connect: the response to the first request on a new connection arrives `handshake` later.
//!
//! An idle timeout ([`ConnectionModel::idle_timeout`]) is counted on the socket: no byte read or written and
//! no request in a handler for that long. Then the emulator either closes the connection (the client's
//! pool sees the FIN and opens a new one next time, paying the handshake), or, when
//! [`ConnectionModel::silent`], stops answering on it without FIN or RST: the client's pooled socket looks
//! alive, its next request is written and never answered, and it stalls until the client's own timeout.
//! That is the stale-socket stall a Lambda container meets after a freeze longer than a middlebox's idle
//! timeout (a NAT gateway or load balancer drops the flow without telling either end), and what the
//! "20-60 s after idle" reports describe (see [`ConnectionModel`]).
//!
//! Everything is off by default ([`ConnectionModel::default`]), so benches that do not ask for it see a
//! free, never-closing connection as before.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use super::record::Stats;

/// What a connection costs and how long an idle one lives.
///
/// Published figures behind [`ConnectionModel::published`]:
/// - **Handshake, 100 ms.** A Rust Lambda in ap-northeast-1 on the AWS SDK for Rust measured DNS 7.3 ms,
///   TCP 0.7 ms and a TLS handshake of 745 ms at 128 MB (~7% of a vCPU: the handshake is CPU-bound)
///   (Shinya Tahara, "Lambda Rust First-Request 900ms Explained — TLS Handshake Accounts for 99%",
///   shinyaz.com, 2026-03-31). Scaled to the chat function's 1,024 MB (8x the CPU share) that is ~93 ms of
///   TLS plus ~8 ms of DNS and TCP: ~100 ms, the bottom of the +100 to +450 ms issue 26 quotes for a new
///   connection to a Bedrock endpoint, and the "100ms or so" a Lambda user measured on reconnects after an
///   idle connection was dropped (rusoto/rusoto#1686).
/// - **Idle timeout, 60 s.** Bedrock publishes none for its runtime endpoint. AWS front ends observed
///   elsewhere: DynamoDB drops idle connections after ~60 s (aws/aws-sdk-java#1365), S3 after ~20 s
///   (vectordotdev/vector#9703), ALB's default idle timeout is 60 s, NAT gateways and NLBs 350 s (AWS
///   knowledge center "lambda-vpc-timeout"). 60 s is the common one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionModel {
    /// Added to the first request of every new TCP connection; zero: connections are free.
    pub handshake: Duration,
    /// A connection with no traffic and no request in progress for this long is dropped; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Drop idle connections silently (no FIN, no RST, no answer) instead of closing them.
    pub silent: bool,
}

impl Default for ConnectionModel {
    /// Off: free connections that live as long as the client keeps them.
    fn default() -> Self {
        Self { handshake: Duration::ZERO, idle_timeout: None, silent: false }
    }
}

impl ConnectionModel {
    /// The published figures (see the type's docs): 100 ms per new connection, idle connections closed after
    /// 60 s.
    pub fn published() -> Self {
        Self { handshake: Duration::from_millis(100), idle_timeout: Some(Duration::from_secs(60)), silent: false }
    }
}

/// What the server knows about one accepted connection.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// No request has been served on it yet.
    fresh: AtomicBool,
    /// Requests inside a handler right now (an idle timeout never fires under them).
    in_flight: AtomicUsize,
}

/// The per-connection state, handed to the middleware through `ConnectInfo`.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo(Arc<ConnState>);

impl Connected<IncomingStream<'_, ConnListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, ConnListener>) -> Self {
        Self(stream.io().state.clone())
    }
}

/// How a request met its connection, for the handlers to record.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnectionUse {
    /// First request on a new TCP connection.
    pub new: bool,
    /// The handshake time it was held for.
    pub handshake: Duration,
}

/// A `TcpListener` whose sockets carry the connection model.
pub(crate) struct ConnListener {
    inner: TcpListener,
    model: ConnectionModel,
    stats: Arc<Stats>,
}

impl ConnListener {
    pub(crate) fn new(inner: TcpListener, model: ConnectionModel, stats: Arc<Stats>) -> Self {
        Self { inner, model, stats }
    }
}

impl Listener for ConnListener {
    type Io = ConnIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ConnIo, SocketAddr) {
        let (io, addr) = Listener::accept(&mut self.inner).await;
        self.stats.connection_opened();
        (ConnIo::new(io, self.model, self.stats.clone()), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted socket with an idle timer.
pub(crate) struct ConnIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    idle_timeout: Option<Duration>,
    silent: bool,
    /// When the connection goes idle unless something happens first.
    timer: Option<Pin<Box<Sleep>>>,
    /// Dropped silently: nothing more reaches the server.
    dead: bool,
    stats: Arc<Stats>,
}

impl ConnIo {
    fn new(inner: TcpStream, model: ConnectionModel, stats: Arc<Stats>) -> Self {
        let state = Arc::new(ConnState { fresh: AtomicBool::new(true), in_flight: AtomicUsize::new(0) });
        let timer = model.idle_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        Self { inner, state, idle_timeout: model.idle_timeout, silent: model.silent, timer, dead: false, stats }
    }

    /// Traffic: the idle clock starts again.
    fn touch(&mut self) {
        if let (Some(timer), Some(t)) = (self.timer.as_mut(), self.idle_timeout) {
            timer.as_mut().reset(Instant::now() + t);
        }
    }

    /// Whether the idle timeout has passed with no request in a handler (re-armed when one is).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(t) = self.idle_timeout else { return false };
        let Some(timer) = self.timer.as_mut() else { return false };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.state.in_flight.load(Ordering::Acquire) > 0 {
            timer.as_mut().reset(Instant::now() + t);
            // Registers the waker for the new deadline.
            let _ = timer.as_mut().poll(cx);
            return false;
        }
        true
    }

    /// Reads and discards whatever the client sends on a silently dropped connection; `Ready` only when the
    /// client closes it (so the server side is torn down too).
    fn swallow(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.dead {
            return this.swallow(cx);
        }
        if this.idle_expired(cx) {
            this.stats.connection_dropped_idle();
            if this.silent {
                this.dead = true;
                return this.swallow(cx);
            }
            // End of stream: hyper closes the connection (FIN), and the client's pool drops it.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        res
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request as in progress on its connection while it is in a handler.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: holds the first request of a new connection for the handshake time, marks the request with
/// how it met its connection ([`ConnectionUse`]), and keeps the idle timer off while it is handled.
pub(crate) async fn pay_for_new_connection(
    State((model, stats)): State<(ConnectionModel, Arc<Stats>)>,
    ConnectInfo(info): ConnectInfo<ConnInfo>,
    mut req: Request,
    next: Next,
) -> Response {
    info.0.in_flight.fetch_add(1, Ordering::AcqRel);
    let _busy = Busy(info.0.clone());
    let new = info.0.fresh.swap(false, Ordering::AcqRel);
    let handshake = if new { model.handshake } else { Duration::ZERO };
    if !handshake.is_zero() {
        stats.handshake_paid();
        tokio::time::sleep(handshake).await;
    }
    req.extensions_mut().insert(ConnectionUse { new, handshake });
    next.run(req).await
}
