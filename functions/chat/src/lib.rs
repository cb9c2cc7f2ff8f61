//! The chat Lambda: API Gateway WebSocket routes `$connect`, `$disconnect`, `sendMessage` and `$default`.
//! `main.rs` is wiring; [`handler`] is the logic; [`config`] is the typed configuration read once.
//!
//! The crate is also a library so that the local gateway emulator invokes exactly this handler.

pub mod config;
pub mod handler;
