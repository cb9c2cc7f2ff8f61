//! The whole system in one process: the Bedrock emulator, the gateway emulator, and the real chat
//! handler (`chat::handler::handle`) invoked in-process with the same event JSON API Gateway sends. The
//! handler talks to both emulators through the real AWS SDK clients over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chat::handler::{App, handle};
use lambda_runtime::LambdaEvent;
use mangaassist_adapters::apigw::ApiGatewaySinks;
use mangaassist_adapters::bedrock::BedrockModel;
use mangaassist_core::clock::SystemClock;
use mangaassist_core::ports::Store;
use mangaassist_core::turn::{Engine, TurnConfig};
use serde_json::Value;

use crate::bedrock::{BedrockEmulator, EmulatorConfig};
use crate::gateway::{Gateway, GatewayConfig, Invoke};

/// The chat function's state as the local system runs it.
pub type LocalApp<St> = App<BedrockModel, St, SystemClock>;

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
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            bedrock_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            emulator: EmulatorConfig::default(),
            turn: TurnConfig::default(),
            gateway: GatewayConfig::default(),
        }
    }
}

/// A running local system.
pub struct LocalSystem<St> {
    pub emulator: BedrockEmulator,
    pub gateway: Gateway,
    pub app: Arc<LocalApp<St>>,
}

impl<St> LocalSystem<St> {
    pub fn ws_url(&self) -> String {
        self.gateway.ws_url()
    }
}

/// Invokes the chat handler in-process: JSON in, JSON out, as the Lambda runtime would.
pub fn in_process<St: Store + 'static>(app: Arc<LocalApp<St>>) -> Invoke {
    Arc::new(move |ev: Value| {
        let app = app.clone();
        Box::pin(async move {
            let req: ApiGatewayWebsocketProxyRequest =
                serde_json::from_value(ev).map_err(|e| format!("event does not parse: {e}"))?;
            let mut ctx = lambda_runtime::Context::default();
            ctx.request_id = uuid::Uuid::new_v4().to_string();
            let resp = handle(&app, LambdaEvent::new(req, ctx)).await.map_err(|e| e.to_string())?;
            serde_json::to_value(resp).map_err(|e| e.to_string())
        })
    })
}

/// Starts the emulators and wires the chat handler to them, with `store` as its store.
pub async fn start<St: Store + 'static>(store: St, opts: SystemOptions) -> anyhow::Result<LocalSystem<St>> {
    let emulator = BedrockEmulator::start(opts.bedrock_addr, opts.emulator)
        .await
        .context("Failed to start the Bedrock emulator")?;
    let listener = tokio::net::TcpListener::bind(opts.gateway_addr)
        .await
        .with_context(|| format!("Failed to bind the gateway emulator to {}", opts.gateway_addr))?;
    let gw_addr = listener.local_addr()?;
    let management = format!("http://{gw_addr}/{}", opts.gateway.stage);
    let sdk = mangaassist_adapters::sdk::local(&emulator.url()).await;
    let app = Arc::new(App {
        engine: Engine::new(BedrockModel::new(&sdk), store, SystemClock, opts.turn),
        sinks: ApiGatewaySinks::new(sdk, Some(management)),
    });
    let gateway = Gateway::start(listener, opts.gateway, in_process(app.clone()))?;
    Ok(LocalSystem { emulator, gateway, app })
}
