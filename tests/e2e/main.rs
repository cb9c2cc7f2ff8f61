//! End-to-end tests: WebSocket clients against the real chat handler, the Bedrock and gateway emulators
//! and moto_server, all on ephemeral ports.

// A test binary: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod browser;
mod capacity_plan;
mod compression;
mod context;
mod creation_order;
mod deploy;
mod guards;
mod helpers;
mod models;
mod prefetch;
mod pregen;
mod routing;
mod safety;
mod signing;
mod sources;
mod template;
mod throughput;
mod turns;
mod typing;
