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
//! - [`catalog`]: the seeded store catalog: product details, reviews, recommendations, promotions, help pages.
//! - [`search`]: the embedded `Retriever`, an in-RAM tantivy index (English words, Japanese bigrams).
//! - [`services`]: the embedded `ProductService` (latency, request counts) and its HTTP emulator.
//! - [`prefetch`]: the prefetch Lambda emulated by tracked tasks, and in-memory transition counts.
//! - [`ttl_cache`]: the embedded `Cache`, in memory with TTLs and a size bound.

pub mod bedrock;
pub mod bench;
pub mod catalog;
pub mod client;
pub mod control_plane;
pub mod corpus;
pub mod gateway;
pub mod memory;
pub mod prefetch;
pub mod search;
pub mod services;
pub mod system;
pub mod ttl_cache;
