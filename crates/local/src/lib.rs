//! The embedded defaults: everything needed to run MangaAssist on one machine with no AWS account.
//!
//! # Layout
//! - [`emulators`]: the AWS services the functions talk to, speaking their real wire protocols: Bedrock
//!   (runtime and provisioned-throughput control plane) and the API Gateway WebSocket gateway.
//! - [`embedded`]: in-process implementations of the context-source ports: catalog, search index, product
//!   services, cache, and the prefetch worker. (The embedded store is the core's `memory_store`.)
//! - [`system`]: the emulators, the embedded sources and the real chat handler wired together in one process.
//! - [`client`]: a chat protocol client.
//! - [`faults`]: failure drills around the store (throttled writes, slow claims) for tests and the bench.
//! - [`web`]: the demo page and its latency waterfall.
//!
//! A library only: the `mangaassist` binary (`serve`, `chat`, `token`, `create-table`, and the bench) is
//! the `mangaassist-cli` crate (`crates/cli`), so the workspace's tests do not compile the bench.

pub mod client;
pub mod embedded;
pub mod emulators;
pub mod faults;
pub mod system;
pub mod web;
