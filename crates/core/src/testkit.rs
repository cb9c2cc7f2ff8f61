//! The shared test kit: in-process fakes of every port a turn depends on, with scripted behaviour and a
//! record of what they were asked, so that a test states what happens and asserts what a user would
//! notice. Built for this crate's own tests and, behind the `testkit` feature, for other crates' tests
//! (`mangaassist-core = { workspace = true, features = ["testkit"] }` under `[dev-dependencies]` only: no
//! product binary links it).
//!
//! - [`MemoryStore`]: the embedded `Store` (the same one `mangaassist serve` runs on), re-exported.
//! - [`model`]: [`ScriptedModel`], a `ModelClient` that plays [`Script`]s (streams of deltas, errors and
//!   usage, each event after its delay, or a refusal before the stream) and records every request;
//!   [`ScriptedStream`] on its own for the relay.
//! - [`sink`]: [`RecordingSink`], a `ConnectionSink` that records every frame and can be slow, fail or say
//!   `Gone` from a given post on.
//! - [`sources`]: [`ScriptedSources`], `ContextSources` with scripted latencies, a real in-memory cache, a
//!   failing cache on demand, unknown lookups, and a log of queries, service calls and cache writes.
//! - [`queue`]: [`RecordingQueue`], a `PrefetchQueue` that keeps the jobs it was handed.
//! - [`clock`]: [`TestClock`], a `Clock` set by the test, fixed or moving 1 ms per reading.
//! - [`fixtures`]: ids from literals, and builders of `TurnRecord`s and `ConnectionRecord`s.
//! - [`store_contract`]: the behaviour every `Store` must have, one function per property, and
//!   [`store_contract_tests!`](crate::store_contract_tests), which turns them into tests for one store.

pub mod answer_contract;
pub mod clock;
pub mod fixtures;
pub mod model;
pub mod queue;
pub mod sink;
pub mod sources;
pub mod store_contract;

pub use clock::TestClock;
pub use fixtures::{ConnectionFixture, TurnFixture, asin, conn, connection, message, session, turn, user};
pub use model::{DEFAULT_ANSWER, Script, ScriptedModel, ScriptedStream};
pub use queue::RecordingQueue;
pub use sink::RecordingSink;
pub use sources::ScriptedSources;

pub use crate::ports::memory::MemoryStore;

/// Locks `m`, taking the value of a poisoned lock as it is (a test that panicked while holding it has
/// failed already; the others should still see what was recorded).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
