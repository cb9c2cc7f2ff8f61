//! Wiring only: tracing, configuration, the verifier (JWKS cache, guest key) built once, then the runtime loop.

use anyhow::Context as _;
use authorizer::config::AuthorizerConfig;
use authorizer::handler::{UNAUTHORIZED, handle};
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::auth::guest::{self, GuestKey};
use mangaassist_adapters::auth::verify::Verifier;
use mangaassist_adapters::env::FromEnv;
use mangaassist_adapters::sdk;
use mangaassist_core::clock::{Clock, SystemClock};
use mangaassist_core::metrics;
use mangaassist_core::ports::{EmfStdout, Metrics as _};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mangaassist_adapters::env::init_tracing();

    let cfg = AuthorizerConfig::from_env().context("Failed to read the authorizer's configuration")?;
    let guest_key = match &cfg.auth.guest_secret_arn {
        Some(arn) => {
            let client = guest::secrets_client(&sdk::load().await);
            Some(GuestKey::from_secrets_manager(&client, arn).await.context("Failed to read the guest key")?)
        }
        None => None,
    };
    let verifier = Verifier {
        oidc: cfg.auth.issuer.as_ref().map(|i| i.build()),
        guest_key,
        allow_guests: cfg.auth.allow_guests,
        leeway_secs: cfg.auth.leeway_secs,
    };
    let verifier = &verifier;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
        let out = handle(verifier, ev).await;
        // One EMF record per refused handshake (the auth.denied alarm); allowed ones cost nothing.
        let refused = match &out {
            Ok(r) if r.policy_document.statement.iter().any(|s| s.effect == "Deny") => Some("refused"),
            Err(e) if e.to_string() == UNAUTHORIZED => Some("unauthorized"),
            Err(_) => Some("issuer_unavailable"),
            Ok(_) => None,
        };
        if let Some(reason) = refused {
            EmfStdout.record(&metrics::auth_denied_record(SystemClock.now_ms(), reason));
        }
        out
    }))
    .await
}
