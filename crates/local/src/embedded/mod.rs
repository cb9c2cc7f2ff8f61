//! In-process implementations of the core's context-source ports, for `serve`, the bench and tests.
//!
//! - [`catalog`]: the seeded store catalog: product details, reviews, recommendations, promotions, help pages.
//! - [`corpus`]: the seeded generator behind the catalog's titles and the compression bench's requests.
//! - [`search`]: the embedded `Retriever`, an in-RAM tantivy index (English words, Japanese bigrams).
//! - [`services`]: the embedded `ProductService` (latency, request counts) and its HTTP emulator.
//! - [`ttl_cache`]: the embedded `Cache`, in memory with TTLs and a size bound.
//! - [`prefetch`]: the prefetch Lambda emulated by tracked tasks, and in-memory transition counts.
//! - [`issuer`]: the local token issuer (JWKS, development login, guest `POST /token`).
//! - [`ledger`]: the users' days the emulated prefetch Lambda spends pre-generated answers against.

pub mod catalog;
pub mod corpus;
pub mod issuer;
pub mod ledger;
pub mod prefetch;
pub mod search;
pub mod services;
pub mod ttl_cache;
