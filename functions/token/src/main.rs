//! Wiring only: tracing, configuration, the guest key (Secrets Manager, read once) and the DynamoDB rate
//! limiter built once, then the `lambda_http` loop.

use anyhow::Context as _;
use lambda_http::{Request, service_fn};
use mangaassist_adapters::auth::guest::{self, GuestIssuer, GuestKey};
use mangaassist_adapters::auth::limit::DynamoRateLimiter;
use mangaassist_adapters::env::FromEnv;
use mangaassist_adapters::sdk;
use token::config::TokenConfig;
use token::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mangaassist_adapters::env::init_tracing();

    let cfg = TokenConfig::from_env().context("Failed to read the token function's configuration")?;
    let sdk = sdk::load().await;
    let issuer = match (&cfg.auth.guest_secret_arn, cfg.auth.allow_guests) {
        (Some(arn), true) => {
            let key = GuestKey::from_secrets_manager(&guest::secrets_client(&sdk), arn)
                .await
                .context("Failed to read the guest key")?;
            Some(GuestIssuer::new(key, cfg.ttl))
        }
        _ => None,
    };
    let app = App { issuer, limiter: DynamoRateLimiter::new(&sdk, &cfg.table_name, cfg.per_minute) };
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| async move { handle(app, req).await })).await
}
