//! Domain logic of the MangaAssist latency engine. It knows nothing of AWS or sockets: every outside
//! dependency is a narrow trait in [`ports`] or [`sources`], implemented by `mangaassist-adapters` (AWS SDK,
//! Redis, HTTP) and by `mangaassist-local` (embedded defaults for local runs and tests).
//!
//! # Layout
//! The modules read top-down: each uses only modules listed above it.
//!
//! Values at the bottom:
//! - [`ids`]: validated newtypes for identifiers (message, connection, session, user, ASIN).
//! - [`error`]: the typed errors of each dependency family, each with a stable `code()` and `is_retryable()`.
//! - [`deadline`]: the one way to bound a call in time; an overrun names what was cut.
//! - [`clock`]: wall-clock time behind a trait so that logic never reads the system clock directly.
//! - [`intent`]: the shopper's intent and the entities of a message (ASINs, order ids, ordinals), EN and JA.
//! - [`protocol`]: the client <-> server JSON frames, their size limits, and the wire values (route, metrics).
//! - [`safety`]: untrusted text made inert for the prompt, the page-context schema, guardrail settings and
//!   assessments, the products a turn may show.
//! - [`tokenizer`]: token counting (cl100k BPE, warmed off the critical path) and per-model calibration.
//! - [`models`]: which model answers which intent; the capability table per model family; request levers.
//!
//! Ports and what flows through them:
//! - [`ports`]: the model stream, the connection sink and the store, with their records.
//! - [`sources`]: the context sources (retrieval, product services, cache) and their bundle.
//! - [`entries`]: what the cache holds, one type per entry with its key and TTL.
//! - [`memory_store`]: the embedded `Store` (local runs and in-process tests).
//! - [`pregen`]: pre-generated answers: the cache entry, its fingerprint, and when one may be served.
//!
//! The steps of a turn:
//! - [`session`]: `$connect` / `$disconnect`, connection -> session (owned by its user), and what a
//!   session remembers.
//! - [`limits`]: one turn in flight per connection, per-user request rate, daily tokens, connections.
//! - [`context`]: parallel context assembly under per-leg deadlines, and the cache write-back.
//! - [`speculate`]: typing-time speculation: the context gathered from the partial text, its cache entry,
//!   and when a sent message may reuse it.
//! - [`compress`]: prompt compression to per-section token budgets under a hard total; the prompt's tags.
//! - [`prompt`]: the system prompt, and the request built from what was gathered.
//! - [`throughput`]: the provisioned-throughput reconciler (desired vs actual, JST peak hours).
//! - [`routes`]: provisioned vs on-demand routing, and opening the model stream with failover and throttle
//!   retries.
//! - [`relay`]: model deltas -> coalesced, sequenced WebSocket frames under the frame limit.
//! - [`serve`]: where an answer comes from: the model, a pre-generated answer, or its opening continued.
//! - [`summary`]: the running summary of older exchanges, written after the answer by a small model.
//! - [`prefetch`]: speculative prefetch: next-intent prediction (prior, then learned) and cache filling.
//! - [`metrics`]: CloudWatch Embedded Metric Format records of a turn; the one list of metric names.
//! - [`turn`]: the pipeline of one chat turn, from frame to stored answer ([`turn::Engine`]).
//!
//! Beside them, for tests only (this crate's, and others' with the `testkit` feature): `testkit`, fakes of
//! every port with scripted behaviour, record fixtures, and the `Store` contract suite.

pub mod clock;
pub mod compress;
pub mod context;
pub mod deadline;
pub mod entries;
pub mod error;
pub mod ids;
pub mod intent;
pub mod limits;
pub mod memory_store;
pub mod metrics;
pub mod models;
pub mod ports;
pub mod prefetch;
pub mod pregen;
pub mod prompt;
pub mod protocol;
pub mod relay;
pub mod routes;
pub mod safety;
pub mod serve;
pub mod session;
pub mod sources;
pub mod speculate;
pub mod summary;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod throughput;
pub mod tokenizer;
pub mod turn;
