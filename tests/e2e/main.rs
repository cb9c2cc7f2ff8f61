//! End-to-end tests: WebSocket clients against the real chat handler, the Bedrock and gateway emulators
//! and moto_server, all on ephemeral ports.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test binary, helpers included: failing loudly is its job"
)]

mod auth;
mod browser;
mod budgets;
mod capacity_plan;
mod compression;
mod connections;
mod context;
mod creation_order;
mod deploy;
mod guards;
mod hardening;
mod helpers;
mod models;
mod prefetch;
mod pregen;
mod routing;
mod safety;
mod signing;
mod sources;
mod store;
mod template;
mod throughput;
mod turns;
mod typed_ahead;
mod typing;
