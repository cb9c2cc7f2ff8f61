//! Domain logic of the MangaAssist latency engine. It knows nothing of AWS or sockets: every outside
//! dependency is a narrow trait in [`ports`], implemented by `mangaassist-adapters` (AWS SDK) and by
//! `mangaassist-local` (embedded defaults for local runs and tests).
//!
//! # Layout
//! - [`ids`]: validated newtypes for the identifiers that cross the wire (message, connection, session, user).
//! - [`protocol`]: the client <-> server JSON frames (`ClientMessage`, `ServerEvent`) and their size limits.
//! - [`error`]: the typed errors a turn can end in, each with a stable `code()` and `is_retryable()`.
//! - [`ports`]: the traits the turn is generic over: model stream, connection sink, store.
//! - [`relay`]: model deltas -> coalesced, sequenced WebSocket frames under the frame limit.
//! - [`prompt`]: the system prompt and the request sent to the model.
//! - [`turn`]: one chat turn from frame to persisted answer, and the connect/disconnect handlers.
//! - [`clock`]: wall-clock time behind a trait so that logic never reads the system clock directly.

pub mod clock;
pub mod error;
pub mod ids;
pub mod ports;
pub mod prompt;
pub mod protocol;
pub mod relay;
pub mod turn;
