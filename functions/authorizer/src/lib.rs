//! The WebSocket `$connect` REQUEST authorizer: `handler` decides, `config` reads the environment once.

pub mod config;
pub mod handler;
