//! The model calls made for a user off the turn, counted: [`Metered`] wraps a model client and adds up the
//! tokens (input and output) of the calls made through it, so the work done for a shopper beside their
//! turn (a summary of their older exchanges, an answer generated ahead) is spent against their day like the
//! turn's own ([`crate::admit::limits::Limiter::spend`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ModelError;
use crate::ports::{Completion, ModelClient, ModelRequest};
use crate::safety::{Assessment, Direction, GuardrailRef};

/// A model client that counts the tokens of its `complete` calls. Streams are the turn's and are counted
/// from their own usage event; guardrail checks are not model tokens.
#[derive(Debug)]
pub struct Metered<'a, M> {
    inner: &'a M,
    tokens: AtomicU64,
}

impl<'a, M> Metered<'a, M> {
    pub fn new(inner: &'a M) -> Self {
        Self { inner, tokens: AtomicU64::new(0) }
    }

    /// Input and output tokens of the calls made so far.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}

impl<M: ModelClient> ModelClient for Metered<'_, M> {
    type Stream = M::Stream;

    fn converse_stream(&self, req: &ModelRequest) -> impl Future<Output = Result<Self::Stream, ModelError>> + Send {
        self.inner.converse_stream(req)
    }

    async fn complete(&self, req: &ModelRequest) -> Result<Completion, ModelError> {
        let done = self.inner.complete(req).await?;
        let spent = u64::from(done.input_tokens) + u64::from(done.output_tokens);
        self.tokens.fetch_add(spent, Ordering::Relaxed);
        Ok(done)
    }

    fn apply_guardrail(
        &self,
        guardrail: &GuardrailRef,
        direction: Direction,
        texts: &[&str],
    ) -> impl Future<Output = Result<Assessment, ModelError>> + Send {
        self.inner.apply_guardrail(guardrail, direction, texts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ScriptedModel;

    #[tokio::test]
    async fn the_tokens_of_every_completion_are_added_up() {
        let model = ScriptedModel::default().completion_usage(300, 40);
        let metered = Metered::new(&model);
        let req = ModelRequest::default();
        metered.complete(&req).await.unwrap();
        metered.complete(&req).await.unwrap();
        assert_eq!(metered.tokens(), 680);
    }
}
