//! The answer buffer: where a generation started at typing time writes its events as they arrive, and where
//! the `sendMessage` that claims it reads them (what is buffered at once, then the rest live). ElastiCache in
//! production (a Redis stream per generation, a pointer per session, a Lua claim); [`MemoryAnswers`] in one
//! process (the local system and tests).
//!
//! A session has at most one generation: [`AnswerBuffer::begin`] replaces the pointer, and the writer of the
//! replaced one learns at its next [`AnswerBuffer::append`] that it is no longer current and stops reading the
//! model (so output billing stops). [`AnswerBuffer::claim`] is atomic: one claimant gets a generation whose
//! basis equals its own; a claim with another basis cancels it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::ids::SessionId;
use crate::ports::ModelEvent;
use crate::ports::sources::SourceError;

/// A generation as its session's pointer records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationHead {
    /// Random: names the generation's event log.
    pub id: String,
    /// What it was built from ([`crate::ahead::typed::AnswerBasis::key`]): only a message with the same basis
    /// may claim it.
    pub basis: String,
    /// The model (or profile) that answers.
    pub model: String,
    /// When the model request was sent, Unix ms.
    pub started_at_ms: u64,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This caller owns the generation: read it.
    Mine(GenerationHead),
    /// There was a pending generation for another basis: it is now cancelled (its writer stops).
    Mismatch(GenerationHead),
    /// Nothing to claim: none, or already claimed, or cancelled.
    Nothing,
}

/// One buffered event of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Buffered {
    /// A model event, `at_ms` after the request was sent.
    Model { at_ms: u32, event: ModelEvent },
    /// The model failed (`code` of the error, whether a resend may succeed).
    Failed { code: String, retryable: bool },
    /// The generation ended normally: no more events.
    End,
}

/// The generation buffer port.
pub trait AnswerBuffer: Send + Sync {
    /// Whether this buffer can hold generations at all (no cache: answer speculation is off).
    fn supported(&self) -> bool {
        false
    }

    /// Makes `head` the session's generation for `ttl`. The one it replaces, if it was pending (not claimed),
    /// is returned: it is cancelled, and the caller counts its cost as waste.
    fn begin(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<GenerationHead>, SourceError>> + Send {
        let _ = (session, head, ttl);
        async { Err(unsupported()) }
    }

    /// Appends events of generation `id`. `Ok(false)`: it is no longer the session's (replaced or cancelled),
    /// so its writer must stop; claimed generations stay current until they end.
    fn append(
        &self,
        session: &SessionId,
        id: &str,
        events: &[Buffered],
    ) -> impl Future<Output = Result<bool, SourceError>> + Send {
        let _ = (session, id, events);
        async { Err(unsupported()) }
    }

    /// Claims the session's pending generation for `basis`: atomically, for one caller.
    fn claim(&self, session: &SessionId, basis: &str) -> impl Future<Output = Result<Claimed, SourceError>> + Send {
        let _ = (session, basis);
        async { Ok(Claimed::Nothing) }
    }

    /// The events of generation `id` after the first `from` of them, waiting up to `block` for at least one
    /// when there is none yet.
    fn read(
        &self,
        session: &SessionId,
        id: &str,
        from: usize,
        block: Duration,
    ) -> impl Future<Output = Result<Vec<Buffered>, SourceError>> + Send {
        let _ = (session, id, from, block);
        async { Err(unsupported()) }
    }
}

fn unsupported() -> SourceError {
    SourceError::Other("this cache holds no answer buffer".into())
}

/// No answer buffer (no cache configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAnswers;

impl AnswerBuffer for NoAnswers {}

impl<T: AnswerBuffer> AnswerBuffer for Arc<T> {
    fn supported(&self) -> bool {
        (**self).supported()
    }
    fn begin(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<GenerationHead>, SourceError>> + Send {
        (**self).begin(session, head, ttl)
    }
    fn append(
        &self,
        session: &SessionId,
        id: &str,
        events: &[Buffered],
    ) -> impl Future<Output = Result<bool, SourceError>> + Send {
        (**self).append(session, id, events)
    }
    fn claim(&self, session: &SessionId, basis: &str) -> impl Future<Output = Result<Claimed, SourceError>> + Send {
        (**self).claim(session, basis)
    }
    fn read(
        &self,
        session: &SessionId,
        id: &str,
        from: usize,
        block: Duration,
    ) -> impl Future<Output = Result<Vec<Buffered>, SourceError>> + Send {
        (**self).read(session, id, from, block)
    }
}

impl<T: AnswerBuffer> AnswerBuffer for Option<T> {
    fn supported(&self) -> bool {
        self.as_ref().is_some_and(AnswerBuffer::supported)
    }
    async fn begin(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        ttl: Duration,
    ) -> Result<Option<GenerationHead>, SourceError> {
        match self {
            Some(b) => b.begin(session, head, ttl).await,
            None => Err(unsupported()),
        }
    }
    async fn append(&self, session: &SessionId, id: &str, events: &[Buffered]) -> Result<bool, SourceError> {
        match self {
            Some(b) => b.append(session, id, events).await,
            None => Err(unsupported()),
        }
    }
    async fn claim(&self, session: &SessionId, basis: &str) -> Result<Claimed, SourceError> {
        match self {
            Some(b) => b.claim(session, basis).await,
            None => Ok(Claimed::Nothing),
        }
    }
    async fn read(
        &self,
        session: &SessionId,
        id: &str,
        from: usize,
        block: Duration,
    ) -> Result<Vec<Buffered>, SourceError> {
        match self {
            Some(b) => b.read(session, id, from, block).await,
            None => Err(unsupported()),
        }
    }
}

/// Where a pointer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Claimed,
    Cancelled,
}

#[derive(Debug, Default)]
struct Inner {
    /// Session -> its generation's head and state.
    pointers: HashMap<SessionId, (GenerationHead, State, tokio::time::Instant)>,
    /// Generation id -> its events.
    logs: HashMap<String, (Vec<Buffered>, tokio::time::Instant)>,
}

/// The answer buffer in one process, with the semantics of the Redis one (pointer per session, log per
/// generation, both expiring).
#[derive(Debug, Default)]
pub struct MemoryAnswers {
    inner: Mutex<Inner>,
    /// Woken on every append, for blocked readers.
    appended: Notify,
}

impl MemoryAnswers {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, SourceError> {
        let mut inner = self.inner.lock().map_err(|_| SourceError::Other("answer buffer lock poisoned".into()))?;
        let now = tokio::time::Instant::now();
        inner.pointers.retain(|_, (_, _, until)| *until > now);
        inner.logs.retain(|_, (_, until)| *until > now);
        Ok(f(&mut inner))
    }
}

impl AnswerBuffer for MemoryAnswers {
    fn supported(&self) -> bool {
        true
    }

    async fn begin(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        ttl: Duration,
    ) -> Result<Option<GenerationHead>, SourceError> {
        let until = tokio::time::Instant::now() + ttl;
        self.with(|i| {
            i.logs.insert(head.id.clone(), (Vec::new(), until));
            let old = i.pointers.insert(session.clone(), (head.clone(), State::Pending, until));
            old.and_then(|(h, state, _)| (state == State::Pending).then_some(h))
        })
    }

    async fn append(&self, session: &SessionId, id: &str, events: &[Buffered]) -> Result<bool, SourceError> {
        let current = self.with(|i| {
            let current = i.pointers.get(session).is_some_and(|(h, state, _)| h.id == id && *state != State::Cancelled);
            if current && let Some((log, _)) = i.logs.get_mut(id) {
                log.extend_from_slice(events);
            }
            current
        })?;
        self.appended.notify_waiters();
        Ok(current)
    }

    async fn claim(&self, session: &SessionId, basis: &str) -> Result<Claimed, SourceError> {
        self.with(|i| match i.pointers.get_mut(session) {
            Some((head, state, _)) if *state == State::Pending => {
                if head.basis == basis {
                    *state = State::Claimed;
                    Claimed::Mine(head.clone())
                } else {
                    *state = State::Cancelled;
                    Claimed::Mismatch(head.clone())
                }
            }
            _ => Claimed::Nothing,
        })
    }

    async fn read(&self, _: &SessionId, id: &str, from: usize, block: Duration) -> Result<Vec<Buffered>, SourceError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Registered before looking, so an append between the look and the wait is not missed.
            let appended = self.appended.notified();
            let events = self.with(|i| i.logs.get(id).map(|(log, _)| log.get(from..).unwrap_or_default().to_vec()))?;
            match events {
                None => return Err(SourceError::Other(format!("no generation {id}").into())),
                Some(e) if !e.is_empty() => return Ok(e),
                Some(_) => {}
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod contract {
    crate::answer_contract_tests!(async { (super::MemoryAnswers::default(), ()) });
}
