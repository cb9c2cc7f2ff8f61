//! Emulators of the AWS services the functions call, speaking the real wire protocols so the unmodified
//! AWS SDK clients talk to them.
//!
//! - [`bedrock`]: Bedrock runtime (`ConverseStream` event-stream framing, `Converse`), its documented
//!   latency and capacity model, fault injection.
//! - [`answers`]: the deterministic answers the Bedrock emulator gives.
//! - [`guardrail`]: the guardrail it applies (`ApplyGuardrail`, `guardrailConfig`): a small documented policy.
//! - [`control_plane`]: the Bedrock provisioned-throughput control plane (served by the Bedrock emulator).
//! - [`models`]: which model ids and levers the emulator accepts, and each model family's speed.
//! - [`gateway`]: API Gateway WebSocket (event shapes, routing on `action`, `@connections`).

pub mod answers;
pub mod bedrock;
pub mod control_plane;
pub mod gateway;
pub mod guardrail;
pub mod models;
