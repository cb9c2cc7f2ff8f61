//! Domain logic of the MangaAssist latency engine. It knows nothing of AWS or sockets: every outside
//! dependency is a narrow trait in [`ports`], implemented by `mangaassist-adapters` (AWS SDK) and by
//! `mangaassist-local` (embedded defaults for local runs and tests).
//!
//! # Layout
//! - [`ids`]: validated newtypes for the identifiers that cross the wire (message, connection, session, user).
//! - [`protocol`]: the client <-> server JSON frames (`ClientMessage`, `ServerEvent`) and their size limits.
//! - [`error`]: the typed errors a turn can end in, each with a stable `code()` and `is_retryable()`.
//! - [`ports`]: the traits the turn is generic over: model stream, connection sink, store.
//! - [`tokenizer`]: token counting (cl100k BPE, warmed off the critical path) and per-model calibration.
//! - [`intent`]: intent classification and entities (ASINs, order ids, ordinals), English and Japanese.
//! - [`compress`]: prompt compression to per-section token budgets under a hard total.
//! - [`sources`]: ports of the context sources (retrieval, product services, cache) and the cache keys.
//! - [`routes`]: provisioned vs on-demand model routing, cached, with the failover order.
//! - [`context`]: parallel context assembly with per-leg deadlines (retrieval, cache, product services).
//! - [`relay`]: model deltas -> coalesced, sequenced WebSocket frames under the frame limit.
//! - [`prompt`]: the system prompt and the request sent to the model.
//! - [`prefetch`]: speculative prefetch: next-intent prediction (prior, then learned) and cache filling.
//! - [`turn`]: one chat turn from frame to persisted answer, and the connect/disconnect handlers.
//! - [`throughput`]: the provisioned-throughput reconciler (desired vs actual, JST peak hours, routing).
//! - [`metrics`]: CloudWatch Embedded Metric Format records of a turn; the one list of metric names.
//! - [`clock`]: wall-clock time behind a trait so that logic never reads the system clock directly.

pub mod clock;
pub mod compress;
pub mod context;
pub mod error;
pub mod ids;
pub mod intent;
pub mod metrics;
pub mod ports;
pub mod prefetch;
pub mod prompt;
pub mod protocol;
pub mod relay;
pub mod routes;
pub mod sources;
pub mod throughput;
pub mod tokenizer;
pub mod turn;
