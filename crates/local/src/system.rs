//! The whole system in one process: the Bedrock emulator, the gateway emulator, and the real chat
//! handler (`chat::handler::handle`) invoked in-process with the same event JSON API Gateway sends. The
//! handler talks to both emulators through the real AWS SDK clients over HTTP. Connections are authenticated
//! as on AWS: the real `$connect` authorizer (`authorizer::handler::handle`) runs in-process against the local
//! token issuer, whose JWKS it fetches over HTTP from the gateway's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::apigw::{ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayWebsocketProxyRequest};
use chat::handler::{App, handle};
use lambda_runtime::LambdaEvent;
use mangaassist_adapters::apigw::ApiGatewaySinks;
use mangaassist_adapters::auth::verify::Verifier;
use mangaassist_adapters::bedrock::{BedrockModel, StreamOpen};
use mangaassist_adapters::warm::Warmer;
use mangaassist_core::ahead::prefetch::{Budgeted, PrefetchConfig, Prefetcher, Pregenerator};
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::clock::SystemClock;
use mangaassist_core::ports::Store;
use mangaassist_core::ports::answers::AnswerBuffer;
use mangaassist_core::ports::sources::Cache;
use mangaassist_core::ports::sources::Sources;
use mangaassist_core::prompt::Prompter;
use mangaassist_core::safety::{GuardrailRef, SafetyConfig};
use mangaassist_core::turn::{Engine, TurnConfig};
use serde_json::Value;

use crate::embedded::catalog::Catalog;
use crate::embedded::issuer::LocalIssuer;
use crate::embedded::ledger::LocalLedger;
use crate::embedded::prefetch::{EmbeddedQueue, MemoryTransitions};
use crate::embedded::search::EmbeddedRetriever;
use crate::embedded::services::{EmbeddedServices, Latency, ServiceLatencies};
use crate::embedded::ttl_cache::TtlCache;
use crate::emulators::bedrock::{BedrockEmulator, EmulatorConfig};
use crate::emulators::gateway::{Gateway, GatewayConfig, Invoke};

/// The embedded context sources; the cache is a parameter (in-process by default, Redis in tests), shared
/// with the prefetcher.
pub type LocalSources<K> = Sources<Arc<EmbeddedRetriever>, Arc<EmbeddedServices>, Arc<K>>;

/// The prefetch Lambda, emulated by tasks in this process, pre-generating with the Bedrock emulator.
pub type LocalPrefetch<K> =
    EmbeddedQueue<LocalSources<K>, MemoryTransitions, Budgeted<Pregenerator<BedrockModel, SystemClock>, LocalLedger>>;

/// The chat function's state as the local system runs it.
pub type LocalApp<St, K = TtlCache> =
    App<BedrockModel, St, SystemClock, LocalSources<K>, Option<Arc<LocalPrefetch<K>>>>;

/// Artificial latencies of the embedded sources.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceLatency {
    pub retrieval: Duration,
    pub services: Duration,
}

impl SourceLatency {
    /// The design's latency profile (RAG 200 ms, product services 100 ms; memory 50 ms is the store's).
    pub fn design() -> Self {
        Self { retrieval: Duration::from_millis(200), services: Duration::from_millis(100) }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Where the gateway listens (port 0: ephemeral).
    pub gateway_addr: SocketAddr,
    /// Where the Bedrock emulator listens (port 0: ephemeral).
    pub bedrock_addr: SocketAddr,
    pub emulator: EmulatorConfig,
    pub turn: TurnConfig,
    pub gateway: GatewayConfig,
    /// Zero by default (tests); `serve` and the bench use [`SourceLatency::design`].
    pub sources: SourceLatency,
    /// Speculative prefetch after each answer (off by default so tests see only their own requests).
    pub prefetch: bool,
    /// `ALLOW_GUESTS` of the local authorizer and token endpoint (on by default).
    pub allow_guests: bool,
    /// The chat function's connection warm-up (`WARM_CONNECTIONS`): the Bedrock connection opened at start,
    /// refreshed on `$connect` and `typing` after `idle` without traffic. Off by default.
    pub warm: Option<std::time::Duration>,
    /// How the chat function opens a Bedrock stream (`BEDROCK_FIRST_BYTE_MS`): the production default.
    pub stream_open: StreamOpen,
    /// How long the chat function's Bedrock client keeps an idle pooled connection; `None`: the production
    /// [`mangaassist_adapters::sdk::POOL_IDLE_TIMEOUT`]. A bench that scales the endpoint's idle timeout
    /// down (`bench --scenario tail`) scales this with it, to keep the pool's below the endpoint's.
    pub pool_idle: Option<Duration>,
    /// Runs the chat function on a thread of its own with a single-threaded runtime, as a Lambda process
    /// runs it, and reads `completed.metrics.cpu_us` from that thread's CPU clock: the handler's own CPU
    /// (its SDK connections, parsing, the engine, the embedded sources' in-process work), without the
    /// emulators, the gateway and the clients that share this process. Off by default (one runtime for all).
    pub chat_thread: bool,
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            bedrock_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            emulator: EmulatorConfig::default(),
            turn: TurnConfig::default(),
            gateway: GatewayConfig::default(),
            sources: SourceLatency::default(),
            prefetch: false,
            allow_guests: true,
            warm: None,
            stream_open: StreamOpen::default(),
            pool_idle: None,
            chat_thread: false,
        }
    }
}

/// The guardrail the local system uses (the emulator applies its documented policy to any id).
pub fn local_guardrail() -> GuardrailRef {
    GuardrailRef { id: "mangaassistlocal".to_owned(), version: "1".to_owned() }
}

/// Guardrails on the answer, on the input and on pre-generated answers, as the template deploys them
/// (`serve --guardrail on`, the guardrail bench, the safety tests).
pub fn with_guardrails(opts: &mut SystemOptions) {
    let g = Some(local_guardrail());
    opts.turn.safety = SafetyConfig { output: g.clone(), input: g.clone(), ..SafetyConfig::default() };
    opts.turn.pregen.guardrail = g;
}

/// A `serve` address other machines could reach, refused without `--expose-on-network`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} is reachable from other machines; `serve` listens on loopback only unless --expose-on-network is given (see `mangaassist serve --help` for what that exposes)"
)]
pub struct NotLoopback(pub SocketAddr);

/// The addresses among `addrs` that other machines could reach (anything but loopback: `0.0.0.0` and
/// `::` included); an error for the first of them unless `expose` says so.
pub fn check_exposure(addrs: &[SocketAddr], expose: bool) -> Result<Vec<SocketAddr>, NotLoopback> {
    let public: Vec<SocketAddr> = addrs.iter().copied().filter(|a| !a.ip().to_canonical().is_loopback()).collect();
    match public.first() {
        Some(first) if !expose => Err(NotLoopback(*first)),
        _ => Ok(public),
    }
}

/// What a `serve` exposed on the network offers to anyone who can reach it.
pub fn exposure_notice(gateway: SocketAddr, bedrock: SocketAddr, public: &[SocketAddr]) -> String {
    let shown = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            format!("port {} on every address of this machine", a.port())
        } else {
            a.to_string()
        }
    };
    let mut lines = vec![format!(
        "Exposed on the network (--expose-on-network): anyone who can reach {} can load the demo page, take a \
         guest token (POST /token) and chat as a guest.",
        shown(gateway)
    )];
    lines.push(
        "Not exposed: the development login (POST /local/login) answers this machine only; the @connections API \
         accepts only this run's SigV4 key."
            .to_owned(),
    );
    if public.contains(&bedrock) {
        lines.push(format!(
            "The Bedrock emulator at {} answers anyone, without authentication (model calls, guardrail, and its \
             provisioned-throughput control plane).",
            shown(bedrock)
        ));
    }
    lines.join("\n")
}

/// A running local system.
pub struct LocalSystem<St, K = TtlCache> {
    pub emulator: BedrockEmulator,
    pub gateway: Gateway,
    pub app: Arc<LocalApp<St, K>>,
    /// The embedded product services (request counts per service).
    pub services: Arc<EmbeddedServices>,
    /// The embedded retriever (its request count).
    pub retriever: Arc<EmbeddedRetriever>,
    /// The emulated prefetch Lambda, when prefetch is on (`drain` waits for its jobs).
    pub prefetch: Option<Arc<LocalPrefetch<K>>>,
    /// The local token issuer (user and guest tokens, JWKS).
    pub issuer: Arc<LocalIssuer>,
}

impl<St, K> LocalSystem<St, K> {
    /// The WebSocket URL with a user token for a new random user: each call is another shopper. Append other
    /// query parameters with `&`.
    pub fn ws_url(&self) -> String {
        self.ws_url_for(&format!("user-{}", uuid::Uuid::new_v4().simple()))
    }

    /// The WebSocket URL with a user token for `user` (user id `u-<user>`).
    pub fn ws_url_for(&self, user: &str) -> String {
        let token = self.issuer.user_token(user).unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not sign a local user token");
            String::new()
        });
        crate::client::with_token(&self.gateway.ws_url(), &token)
    }

    /// The WebSocket URL with a fresh guest token (the bare URL when guests are off, which the authorizer refuses).
    pub fn guest_ws_url(&self) -> String {
        match self.issuer.guest_token() {
            Ok(t) => crate::client::with_token(&self.gateway.ws_url(), &t.token),
            Err(_) => self.bare_ws_url(),
        }
    }

    /// The WebSocket URL without a token (refused at the handshake); for clients that log in themselves.
    pub fn bare_ws_url(&self) -> String {
        self.gateway.ws_url()
    }
}

/// Invokes the `$connect` authorizer in-process: JSON in, JSON out; a Lambda error's message (`Unauthorized`)
/// as the error.
pub fn in_process_authorizer(verifier: Arc<Verifier>) -> Invoke {
    Arc::new(move |ev: Value| {
        let verifier = verifier.clone();
        Box::pin(async move {
            let req: ApiGatewayCustomAuthorizerRequestTypeRequest =
                serde_json::from_value(ev).map_err(|e| format!("authorizer event does not parse: {e}"))?;
            let mut ctx = lambda_runtime::Context::default();
            ctx.request_id = uuid::Uuid::new_v4().to_string();
            let resp =
                authorizer::handler::handle(&verifier, LambdaEvent::new(req, ctx)).await.map_err(|e| e.to_string())?;
            serde_json::to_value(resp).map_err(|e| e.to_string())
        })
    })
}

/// The chat function's timeout in the template, which sets each invocation's deadline.
const CHAT_TIMEOUT_MS: u64 = 28_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Invokes the chat handler in-process: JSON in, JSON out, as the Lambda runtime would; on `thread` when
/// given (see [`SystemOptions::chat_thread`]), else on the caller's runtime.
pub fn in_process<St: Store + 'static, K: Cache + AnswerBuffer + 'static>(
    app: Arc<LocalApp<St, K>>,
    thread: Option<ChatThread>,
) -> Invoke {
    Arc::new(move |ev: Value| {
        let app = app.clone();
        let invoke = async move {
            let req: ApiGatewayWebsocketProxyRequest =
                serde_json::from_value(ev).map_err(|e| format!("event does not parse: {e}"))?;
            let mut ctx = lambda_runtime::Context::default();
            ctx.request_id = uuid::Uuid::new_v4().to_string();
            // As the Lambda runtime does: the invocation's deadline, from the function's timeout (the
            // template's 28 s).
            ctx.deadline = crate::system::now_ms() + CHAT_TIMEOUT_MS;
            let resp = handle(&app, LambdaEvent::new(req, ctx)).await.map_err(|e| e.to_string())?;
            serde_json::to_value(resp).map_err(|e| e.to_string())
        };
        match thread.clone() {
            Some(t) => Box::pin(async move { t.run(invoke).await }),
            // A task of its own, as the Lambda runtime runs an invocation: not nested under the gateway's
            // connection task (whose frames would add to the handler's stack), and not cancelled when that
            // task's client goes away.
            None => Box::pin(async move {
                tokio::spawn(invoke).await.map_err(|e| format!("the chat invocation did not finish: {e}"))?
            }),
        }
    })
}

/// A thread with a single-threaded runtime of its own, where the chat function runs as in a Lambda process.
/// It ends when the last handle is dropped.
#[derive(Clone)]
pub struct ChatThread {
    jobs: tokio::sync::mpsc::UnboundedSender<futures_util::future::BoxFuture<'static, ()>>,
}

impl ChatThread {
    pub fn start() -> anyhow::Result<Self> {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<futures_util::future::BoxFuture<'static, ()>>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("Failed to build the chat thread's runtime")?;
        std::thread::Builder::new()
            .name("chat-lambda".to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job);
                    }
                });
            })
            .context("Failed to start the chat thread")?;
        Ok(Self { jobs })
    }

    /// Runs `fut` on the thread; an error when the thread is gone or dropped the job.
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::pin(async move {
            let _ = tx.send(fut.await);
        });
        self.jobs.send(job).map_err(|_| "the chat thread has stopped".to_owned())?;
        rx.await.map_err(|_| "the chat thread dropped the invocation".to_owned())?
    }
}

/// Starts the emulators and wires the chat handler to them, with `store` as its store.
pub async fn start<St: Store + 'static>(store: St, opts: SystemOptions) -> anyhow::Result<LocalSystem<St>> {
    start_routed(store, opts, Routes::default()).await
}

/// The same, with provisioned-throughput routing.
pub async fn start_routed<St: Store + 'static>(
    store: St,
    opts: SystemOptions,
    routes: Routes,
) -> anyhow::Result<LocalSystem<St>> {
    start_full(store, TtlCache::default(), opts, routes).await
}

/// The same, with a cache of the caller's choice (e.g. Redis).
pub async fn start_full<St: Store + 'static, K: Cache + AnswerBuffer + 'static>(
    store: St,
    cache: K,
    opts: SystemOptions,
    routes: Routes,
) -> anyhow::Result<LocalSystem<St, K>> {
    // Boxed: starting the emulators and loading the SDK config make a ~17 KB future, which every caller
    // (each test, each bench scenario) would otherwise hold inline.
    Box::pin(start_unboxed(store, cache, opts, routes)).await
}

async fn start_unboxed<St: Store + 'static, K: Cache + AnswerBuffer + 'static>(
    store: St,
    cache: K,
    opts: SystemOptions,
    routes: Routes,
) -> anyhow::Result<LocalSystem<St, K>> {
    let catalog = Arc::new(Catalog::default());
    let retriever = Arc::new(
        EmbeddedRetriever::build(&catalog)
            .context("Failed to index the catalog")?
            .with_latency(Latency::fixed(opts.sources.retrieval)),
    );
    let services = Arc::new(
        EmbeddedServices::new(catalog.clone())
            .with_latency(ServiceLatencies::all(Latency::fixed(opts.sources.services))),
    );
    let emulator = BedrockEmulator::start(opts.bedrock_addr, opts.emulator)
        .await
        .context("Failed to start the Bedrock emulator")?;
    let listener = tokio::net::TcpListener::bind(opts.gateway_addr)
        .await
        .with_context(|| format!("Failed to bind the gateway emulator to {}", opts.gateway_addr))?;
    let gw_addr = listener.local_addr()?;
    let management = format!("http://{gw_addr}/{}", opts.gateway.stage);
    let sdk = mangaassist_adapters::sdk::local(&emulator.url()).await;
    let key = &opts.gateway.management_key;
    let management_sdk =
        mangaassist_adapters::sdk::local_with_key(&emulator.url(), &key.access_key_id, &key.secret_access_key).await;
    let cache = Arc::new(cache);
    // Pre-generated answers count against the users' days in the engine's store, as on AWS.
    let ledger = LocalLedger::default();
    let prefetch = opts.prefetch.then(|| {
        let sources = Sources { retriever: retriever.clone(), products: services.clone(), cache: cache.clone() };
        // The chat turn's own prompt settings: a pre-generated answer is asked as the turn would ask it.
        let t = &opts.turn;
        let pregen = Pregenerator {
            model: BedrockModel::new(&sdk),
            prompter: Prompter::new(t.prompt.clone(), t.budget, t.compression),
            cfg: t.pregen.clone(),
            clock: SystemClock,
        };
        let prefetcher = Prefetcher::new(sources, MemoryTransitions::default(), PrefetchConfig::default());
        let pregen = Budgeted { inner: pregen, ledger: ledger.clone() };
        Arc::new(EmbeddedQueue::new(prefetcher.with_pregen(pregen)))
    });
    let model_sdk = match opts.pool_idle {
        Some(idle) => sdk.to_builder().http_client(mangaassist_adapters::sdk::http_client(idle)).build(),
        None => sdk.clone(),
    };
    let model = BedrockModel::new(&model_sdk).with_stream_open(opts.stream_open);
    let warm = match opts.warm {
        Some(idle) => Warmer::default().with_idle(idle).with_bedrock(model.clone()),
        None => Warmer::default(),
    };
    let thread = opts.chat_thread.then(ChatThread::start).transpose()?;
    // On the chat thread when there is one, so the warmed connections' tasks run (and count) there.
    let warm = match &thread {
        Some(t) => {
            let w = warm.clone();
            t.run(async move { Ok(w.warm_all(None).await) }).await.map_err(anyhow::Error::msg)?;
            warm
        }
        None => {
            warm.warm_all(None).await;
            warm
        }
    };
    let engine = Engine::new(model, store, SystemClock, opts.turn)
        .with_sources(Sources { retriever: retriever.clone(), products: services.clone(), cache })
        .with_prefetch(prefetch.clone())
        .with_routes(routes);
    // Signed with the run's own key: the emulated `@connections` API accepts no other.
    let mut app = App::new(engine, ApiGatewaySinks::new(management_sdk, Some(management)), warm);
    if thread.is_some() {
        app.cpu = chat::handler::thread_cpu;
    }
    let app = Arc::new(app);
    ledger.attach(&app);
    let issuer = Arc::new(LocalIssuer::new(gw_addr, opts.allow_guests)?);
    let authorizer = in_process_authorizer(Arc::new(issuer.verifier()));
    let gateway = Gateway::start_with(
        listener,
        opts.gateway,
        in_process(app.clone(), thread),
        Some(authorizer),
        issuer.clone().router().merge(crate::web::products_router(catalog)),
    )?;
    Ok(LocalSystem { emulator, gateway, app, services, retriever, prefetch, issuer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_refuses_an_address_other_machines_can_reach_unless_told_to_expose_it() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let loopback = [at("127.0.0.1:8080"), at("[::1]:8081")];
        assert_eq!(check_exposure(&loopback, false), Ok(vec![]));
        for public in ["0.0.0.0:8080", "[::]:8080", "192.168.1.20:8080"] {
            let addrs = [at(public), at("127.0.0.1:8081")];
            assert_eq!(check_exposure(&addrs, false), Err(NotLoopback(at(public))));
            assert_eq!(check_exposure(&addrs, true), Ok(vec![at(public)]));
        }
        let notice = exposure_notice(at("0.0.0.0:8080"), at("0.0.0.0:8081"), &[at("0.0.0.0:8080"), at("0.0.0.0:8081")]);
        assert!(notice.contains("guest") && notice.contains("development login") && notice.contains("Bedrock"));
    }
}
