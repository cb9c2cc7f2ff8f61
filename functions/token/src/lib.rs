//! The guest-token endpoint: `handler` decides (shared with the local system's `POST /token`), `config` reads
//! the environment once.

pub mod config;
pub mod handler;
