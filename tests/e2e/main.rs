//! End-to-end tests: WebSocket clients against the real chat handler, the Bedrock and gateway emulators
//! and moto_server, all on ephemeral ports.

mod helpers;
mod turns;
