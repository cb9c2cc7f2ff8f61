//! Scripted context sources: what the retriever, the product services and the cache answer, how long each
//! takes, and a log of what a turn or the prefetcher asked of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::lock;
use crate::cache::{Lookup, RagEntry};
use crate::intent::Intent;
use crate::ports::answers::MemoryAnswers;
use crate::ports::sources::{ContextSources, Passage, SourceError};

/// `ContextSources` in memory. The retriever answers one passage `about <query>`; a service answers
/// `{"key": "<lookup key>"}` unless the key was made [`missing`](Self::missing); a `Rag` lookup answers
/// the passages `about <asin>` (as a `RagEntry`); the cache is a real map (`cache_set_if_absent` claims
/// once) unless it was taken [`down`](Self::cache_down). Every retrieval query, every `fetch` (by lookup
/// key) and every cache write (by key) is logged in order.
#[derive(Debug, Default)]
pub struct ScriptedSources {
    retrieval: Duration,
    service: Duration,
    cache_latency: Duration,
    cache_down: bool,
    missing: Vec<String>,
    cache: Mutex<HashMap<String, String>>,
    queries: Mutex<Vec<String>>,
    calls: Mutex<Vec<String>>,
    written: Mutex<Vec<String>>,
    /// The answer buffer typing-time generations write to.
    pub answers: MemoryAnswers,
}

impl ScriptedSources {
    pub fn new() -> Self {
        Self::default()
    }

    /// A retrieval takes `d`.
    #[must_use]
    pub fn retrieval_latency(mut self, d: Duration) -> Self {
        self.retrieval = d;
        self
    }

    /// A service call (`fetch` of anything but a `Rag` lookup) takes `d`.
    #[must_use]
    pub fn service_latency(mut self, d: Duration) -> Self {
        self.service = d;
        self
    }

    /// A cache read takes `d`.
    #[must_use]
    pub fn cache_latency(mut self, d: Duration) -> Self {
        self.cache_latency = d;
        self
    }

    /// Every cache call fails (`Unavailable`), as when Redis is down.
    #[must_use]
    pub fn cache_down(mut self) -> Self {
        self.cache_down = true;
        self
    }

    /// The source knows nothing of the lookup with this key (`fetch` answers `None`).
    #[must_use]
    pub fn missing(mut self, key: &str) -> Self {
        self.missing.push(key.to_owned());
        self
    }

    /// The cache holds `value` under `key` (written directly, not logged).
    #[must_use]
    pub fn cached(self, key: &str, value: &str) -> Self {
        lock(&self.cache).insert(key.to_owned(), value.to_owned());
        self
    }

    /// Retrieval queries, in order.
    pub fn queries(&self) -> Vec<String> {
        lock(&self.queries).clone()
    }

    /// The key of every `fetch`, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// The key of every cache write (`cache_set`, and `cache_set_if_absent` that set), in order.
    pub fn written(&self) -> Vec<String> {
        lock(&self.written).clone()
    }

    /// What the cache holds under `key`.
    pub fn cache_value(&self, key: &str) -> Option<String> {
        lock(&self.cache).get(key).cloned()
    }

    fn cache_up(&self) -> Result<(), SourceError> {
        match self.cache_down {
            true => Err(SourceError::Unavailable("the scripted cache is down".into())),
            false => Ok(()),
        }
    }
}

fn about(what: &str) -> Vec<Passage> {
    vec![Passage { content: format!("about {what}"), score: 0.5, tokens: None }]
}

impl ContextSources for ScriptedSources {
    type Answers = MemoryAnswers;
    fn answers(&self) -> &MemoryAnswers {
        &self.answers
    }
    async fn retrieve(&self, query: &str, _: Intent, _: usize) -> Result<Vec<Passage>, SourceError> {
        lock(&self.queries).push(query.to_owned());
        tokio::time::sleep(self.retrieval).await;
        Ok(about(query))
    }

    async fn cache_get(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
        tokio::time::sleep(self.cache_latency).await;
        self.cache_up()?;
        let cache = lock(&self.cache);
        Ok(keys.iter().map(|k| cache.get(k).cloned()).collect())
    }

    async fn cache_set(&self, key: &str, value: &str, _: Duration) -> Result<(), SourceError> {
        self.cache_up()?;
        lock(&self.cache).insert(key.to_owned(), value.to_owned());
        lock(&self.written).push(key.to_owned());
        Ok(())
    }

    async fn cache_set_if_absent(&self, key: &str, value: &str, _: Duration) -> Result<bool, SourceError> {
        self.cache_up()?;
        let mut cache = lock(&self.cache);
        if cache.contains_key(key) {
            return Ok(false);
        }
        cache.insert(key.to_owned(), value.to_owned());
        lock(&self.written).push(key.to_owned());
        Ok(true)
    }

    async fn fetch(&self, lookup: &Lookup) -> Result<Option<Value>, SourceError> {
        let key = lookup.key();
        lock(&self.calls).push(key.clone());
        if let Lookup::Rag { asin, .. } = lookup {
            tokio::time::sleep(self.retrieval).await;
            return Ok(RagEntry(about(asin.as_str())).into_value());
        }
        tokio::time::sleep(self.service).await;
        if self.missing.contains(&key) {
            return Ok(None);
        }
        Ok(Some(serde_json::json!({ "key": key })))
    }
}
