//! A recording connection sink: every frame a turn posts, in order, as the client would receive it.

use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::lock;
use crate::error::SinkError;
use crate::ids::ConnectionId;
use crate::ports::ConnectionSink;

/// A `ConnectionSink` that records each frame it accepts. Each post takes `delay` (the management API's
/// round trip); from post number `gone_from` on (0-based, counting every post) it says `Gone`, the client
/// having left; posts numbered in `failing` fail with the error their function makes (a throttle, a 5xx).
#[derive(Default)]
pub struct RecordingSink {
    frames: Mutex<Vec<(ConnectionId, Bytes)>>,
    posts: Mutex<Vec<Instant>>,
    delay: Duration,
    gone_from: Option<usize>,
    failing: Option<Failing>,
}

/// The posts that fail, and the error each one gets.
type Failing = (Range<usize>, fn() -> SinkError);

impl std::fmt::Debug for RecordingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSink").field("frames", &lock(&self.frames).len()).finish_non_exhaustive()
    }
}

impl RecordingSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Each post takes `delay`.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Post number `n` and every later one say `Gone` (`gone_from(1)`: the first frame arrives, then the
    /// client has left).
    #[must_use]
    pub fn gone_from(mut self, n: usize) -> Self {
        self.gone_from = Some(n);
        self
    }

    /// Posts numbered in `posts` fail with `error()` (e.g. `|| SinkError::Retryable("429".into())`).
    #[must_use]
    pub fn failing(mut self, posts: Range<usize>, error: fn() -> SinkError) -> Self {
        self.failing = Some((posts, error));
        self
    }

    /// The frames accepted, parsed as JSON (a frame that is not JSON is kept as a string).
    pub fn frames(&self) -> Vec<Value> {
        lock(&self.frames).iter().map(|(_, f)| parse(f)).collect()
    }

    /// The frames accepted for `conn`.
    pub fn frames_for(&self, conn: &ConnectionId) -> Vec<Value> {
        lock(&self.frames).iter().filter(|(c, _)| c == conn).map(|(_, f)| parse(f)).collect()
    }

    /// The frames accepted, as posted.
    pub fn raw(&self) -> Vec<Bytes> {
        lock(&self.frames).iter().map(|(_, f)| f.clone()).collect()
    }

    /// Each frame's `type` (`delta`, `completed`, `error`, ...).
    pub fn types(&self) -> Vec<String> {
        self.frames().iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// The last frame accepted (`Null` when none was).
    pub fn last(&self) -> Value {
        self.frames().pop().unwrap_or_default()
    }

    /// The answer as the client saw it: the `text` of every `delta`, joined.
    pub fn text(&self) -> String {
        self.frames()
            .iter()
            .filter(|f| f["type"] == "delta")
            .filter_map(|f| f["text"].as_str().map(str::to_owned))
            .collect()
    }

    /// Posts attempted, accepted or not.
    pub fn posts(&self) -> usize {
        lock(&self.posts).len()
    }

    /// When each post was attempted (tokio's clock: exact under a paused runtime), accepted or not.
    pub fn posted_at(&self) -> Vec<Instant> {
        lock(&self.posts).clone()
    }
}

fn parse(frame: &Bytes) -> Value {
    serde_json::from_slice(frame).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(frame).into_owned()))
}

impl ConnectionSink for RecordingSink {
    async fn post(&self, conn: &ConnectionId, frame: Bytes) -> Result<(), SinkError> {
        let n = {
            let mut posts = lock(&self.posts);
            posts.push(Instant::now());
            posts.len() - 1
        };
        tokio::time::sleep(self.delay).await;
        if self.gone_from.is_some_and(|g| n >= g) {
            return Err(SinkError::Gone);
        }
        if let Some((range, error)) = &self.failing
            && range.contains(&n)
        {
            return Err(error());
        }
        lock(&self.frames).push((conn.clone(), frame));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_recorded_until_the_client_is_gone_and_failures_are_what_was_scripted() {
        let c = ConnectionId::parse("c1").unwrap();
        let sink = RecordingSink::new().failing(1..2, || SinkError::Retryable("429".into())).gone_from(3);
        let delta = |t: &str| Bytes::from(serde_json::json!({"type": "delta", "text": t}).to_string());
        assert!(sink.post(&c, delta("a")).await.is_ok());
        assert!(matches!(sink.post(&c, delta("b")).await, Err(SinkError::Retryable(_))));
        assert!(sink.post(&c, delta("b")).await.is_ok());
        assert!(matches!(sink.post(&c, delta("c")).await, Err(SinkError::Gone)));
        assert_eq!((sink.text(), sink.types(), sink.posts()), ("ab".to_owned(), vec!["delta".to_owned(); 2], 4));
        assert!(sink.frames_for(&ConnectionId::parse("c2").unwrap()).is_empty());
    }
}
