//! The core's ports implemented with the AWS SDK for Rust, plus the context sources over HTTP and Redis. Every
//! SDK client is built once per container from
//! one `SdkConfig` (so they share one HTTP connection pool) and any endpoint can be overridden with the
//! SDK's own `AWS_ENDPOINT_URL_<SERVICE>` variables, which is how local runs and tests reach the emulators
//! and moto.
//!
//! # Layout
//! - [`bedrock`]: `ModelClient` over Bedrock `ConverseStream`.
//! - [`apigw`]: `ConnectionSink` over API Gateway `PostToConnection`, one cached client per endpoint.
//! - [`env`]: settings from the environment, the context-source settings and adapters, Lambda logging.
//! - [`dynamo`]: `Store` over one DynamoDB table.
//! - [`bedrock_control`]: `ThroughputControl` over the Bedrock provisioned-throughput control plane.
//! - [`throughput_state`]: `ThroughputStateStore` over the `CONFIG/THROUGHPUT` item, optimistically locked.
//! - [`sdk`]: shared SDK configuration (the pooled HTTP client, timeouts, retries).
//! - [`warm`]: opening the hot-path connections at init and again after idle.
//! - [`opensearch`]: `Retriever` over OpenSearch `_search` (BM25 `multi_match`, intent filter on `kind`), unsigned,
//!   basic auth, or SigV4 ([`sigv4`]).
//! - [`sigv4`]: AWS Signature Version 4 of HTTP requests to OpenSearch Service (`es`) and Serverless (`aoss`).
//! - [`services`]: `ProductService` over the store's HTTP product, review, recommendation and promotion services.
//! - [`redis_cache`]: `Cache` over Redis/Valkey (ElastiCache Serverless: TLS, cluster mode), self-reconnecting.
//! - [`transitions`]: `TransitionStore` over Redis hashes (`HINCRBY`/`HGETALL`), sharing the cache's connection.
//! - [`lambda_queue`]: `PrefetchQueue` over an asynchronous Lambda `Invoke` of the prefetch function.
//! - [`http`]: shared plumbing of the HTTP sources (timeouts, bounded jittered retries, error mapping).
//! - [`auth`]: `$connect` authentication: JWT verification against the issuer's JWKS, guest tokens, the
//!   token endpoint's rate limit.

pub mod apigw;
pub mod auth;
pub mod bedrock;
pub mod bedrock_control;
pub mod dynamo;
pub mod env;
pub mod http;
pub mod lambda_queue;
pub mod opensearch;
pub mod redis_answers;
pub mod redis_cache;
pub mod sdk;
pub mod services;
pub mod sigv4;
pub mod throughput_state;
pub mod transitions;
pub mod warm;
