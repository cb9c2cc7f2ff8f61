//! The embedded defaults: everything needed to run MangaAssist on one machine with no AWS account.
//!
//! # Layout
//! - [`bedrock`]: Bedrock emulator (ConverseStream event-stream framing, latency model, fault injection).
//! - [`control_plane`]: the Bedrock provisioned-throughput control plane (served by the Bedrock emulator).
//! - [`gateway`]: API Gateway WebSocket emulator (event shapes, routing, `@connections`).
//! - [`memory`]: the in-memory store.
//! - [`system`]: both emulators plus the real chat handler in one process.
//! - [`corpus`]: the seeded synthetic request corpus for the compression benchmark.
//! - [`client`]: a chat protocol client.
//! - [`bench`]: the end-to-end benchmark over WebSocket.

pub mod bedrock;
pub mod bench;
pub mod client;
pub mod control_plane;
pub mod corpus;
pub mod gateway;
pub mod memory;
pub mod system;
