//! A scripted model: [`ScriptedModel`] plays one [`Script`] per `converse_stream` call, in order, then a
//! default answer; it records every request (and when it came) so a test can assert what was asked of
//! which model.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::lock;
use crate::error::ModelError;
use crate::ports::{Completion, ModelClient, ModelEvent, ModelRequest, ModelStream};
use crate::safety::{Assessment, Direction, GuardrailRef};

/// What the model answers once the scripts have run out (names two products, so a turn has cards).
pub const DEFAULT_ANSWER: &str = "Try B0AAAAAAA1 or B0BBBBBBB2, both are popular.";

/// One event of a scripted stream: what arrives, after how long.
pub type Step = (Duration, Result<ModelEvent, ModelError>);

/// A model stream that yields its steps in order, each after its delay, then ends.
#[derive(Debug, Default)]
pub struct ScriptedStream {
    steps: VecDeque<Step>,
    polled_after_end: bool,
}

impl ScriptedStream {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self { steps: steps.into_iter().collect(), polled_after_end: false }
    }

    /// `n` text deltas `t0 `, `t1 `, ... each `gap` after the previous, and no stop or usage.
    pub fn tokens(n: usize, gap: Duration) -> Self {
        Self::new((0..n).map(|i| (gap, Ok(ModelEvent::Text(format!("t{i} "))))))
    }

    /// `text` word by word (each word 5 ms after the previous), then `end_turn` and a usage of 300 input and
    /// 12 output tokens: what a short answer from Bedrock looks like.
    pub fn answer(text: &str) -> Self {
        let words = text.split_inclusive(' ').map(|w| (Duration::from_millis(5), Ok(ModelEvent::Text(w.to_owned()))));
        Self::new(words).then(Duration::ZERO, Ok(ModelEvent::Stop("end_turn".into()))).then(
            Duration::ZERO,
            Ok(ModelEvent::Usage { input_tokens: 300, output_tokens: 12, cache_read_tokens: 0, cache_write_tokens: 0 }),
        )
    }

    /// Adds a step at the end.
    #[must_use]
    pub fn then(mut self, after: Duration, event: Result<ModelEvent, ModelError>) -> Self {
        self.push(after, event);
        self
    }

    /// Adds a step at the end.
    pub fn push(&mut self, after: Duration, event: Result<ModelEvent, ModelError>) {
        self.steps.push_back((after, event));
    }

    /// Steps not read yet (a relay that stopped reading leaves them).
    pub fn remaining(&self) -> usize {
        self.steps.len()
    }

    /// Whether the stream was read again after it had ended.
    pub fn polled_after_end(&self) -> bool {
        self.polled_after_end
    }
}

impl ModelStream for ScriptedStream {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        let Some((delay, event)) = self.steps.pop_front() else {
            self.polled_after_end = true;
            return None;
        };
        tokio::time::sleep(delay).await;
        Some(event)
    }
}

/// What the scripted model does for one `converse_stream` call.
#[derive(Debug)]
pub enum Script {
    /// Fails before the stream starts (a throttle, a refusal, a missing model).
    Refuse(ModelError),
    /// Starts this stream.
    Stream(ScriptedStream),
}

impl Script {
    /// [`ScriptedStream::answer`].
    pub fn answer(text: &str) -> Self {
        Self::Stream(ScriptedStream::answer(text))
    }

    /// A stream of these steps.
    pub fn stream(steps: impl IntoIterator<Item = Step>) -> Self {
        Self::Stream(ScriptedStream::new(steps))
    }
}

/// A `ModelClient` that plays scripts in order, then [`DEFAULT_ANSWER`] (or the one set with
/// [`ScriptedModel::answering`]); `complete` (summaries, pre-generation) returns one fixed text, and
/// `apply_guardrail` refuses unless [`ScriptedModel::guarding`] set an assessment. Use it as is or in an
/// `Arc` (both implement `ModelClient`), and keep a handle to read what it was asked.
#[derive(Debug)]
pub struct ScriptedModel {
    scripts: Mutex<VecDeque<Script>>,
    answer: String,
    completion: String,
    /// Input and output tokens each `complete` reports.
    completion_usage: (u32, u32),
    assessment: Option<Assessment>,
    requests: Mutex<Vec<(ModelRequest, Instant)>>,
    completions: Mutex<Vec<ModelRequest>>,
    guardrail_calls: Mutex<Vec<(Direction, Vec<String>)>>,
}

impl Default for ScriptedModel {
    fn default() -> Self {
        Self {
            scripts: Mutex::default(),
            answer: DEFAULT_ANSWER.to_owned(),
            completion: "The shopper likes horror.".to_owned(),
            completion_usage: (0, 0),
            assessment: None,
            requests: Mutex::default(),
            completions: Mutex::default(),
            guardrail_calls: Mutex::default(),
        }
    }
}

impl ScriptedModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Plays `script` after those queued before it.
    #[must_use]
    pub fn then(self, script: Script) -> Self {
        self.push(script);
        self
    }

    /// Refuses the next requests with these errors, one each, then answers.
    #[must_use]
    pub fn refusing(self, errors: impl IntoIterator<Item = ModelError>) -> Self {
        for e in errors {
            self.push(Script::Refuse(e));
        }
        self
    }

    /// Answers `text` (as [`ScriptedStream::answer`]) once the scripts have run out.
    #[must_use]
    pub fn answering(mut self, text: &str) -> Self {
        text.clone_into(&mut self.answer);
        self
    }

    /// `complete` returns `text`.
    #[must_use]
    pub fn completing(mut self, text: &str) -> Self {
        text.clone_into(&mut self.completion);
        self
    }

    /// Each `complete` reports this usage (input, output tokens).
    #[must_use]
    pub fn completion_usage(mut self, input: u32, output: u32) -> Self {
        self.completion_usage = (input, output);
        self
    }

    /// `apply_guardrail` returns `assessment` for every check.
    #[must_use]
    pub fn guarding(mut self, assessment: Assessment) -> Self {
        self.assessment = Some(assessment);
        self
    }

    /// Queues a script (also after the model was handed to the code under test).
    pub fn push(&self, script: Script) {
        lock(&self.scripts).push_back(script);
    }

    /// Every `converse_stream` request, in order.
    pub fn requests(&self) -> Vec<ModelRequest> {
        lock(&self.requests).iter().map(|(r, _)| r.clone()).collect()
    }

    /// The model id of every `converse_stream` request, in order.
    pub fn asked(&self) -> Vec<String> {
        lock(&self.requests).iter().map(|(r, _)| r.model_id.clone()).collect()
    }

    /// When each `converse_stream` request came (tokio's clock: exact under a paused runtime).
    pub fn asked_at(&self) -> Vec<Instant> {
        lock(&self.requests).iter().map(|(_, t)| *t).collect()
    }

    /// Every `complete` request, in order.
    pub fn completions(&self) -> Vec<ModelRequest> {
        lock(&self.completions).clone()
    }

    /// Every `apply_guardrail` call: which side, and the texts assessed.
    pub fn guardrail_calls(&self) -> Vec<(Direction, Vec<String>)> {
        lock(&self.guardrail_calls).clone()
    }
}

impl ModelClient for ScriptedModel {
    type Stream = ScriptedStream;

    async fn converse_stream(&self, req: &ModelRequest) -> Result<ScriptedStream, ModelError> {
        lock(&self.requests).push((req.clone(), Instant::now()));
        let script = lock(&self.scripts).pop_front();
        match script.unwrap_or_else(|| Script::answer(&self.answer)) {
            Script::Refuse(e) => Err(e),
            Script::Stream(s) => Ok(s),
        }
    }

    async fn complete(&self, req: &ModelRequest) -> Result<Completion, ModelError> {
        lock(&self.completions).push(req.clone());
        let (input_tokens, output_tokens) = self.completion_usage;
        Ok(Completion { text: self.completion.clone(), input_tokens, output_tokens, ..Completion::default() })
    }

    async fn apply_guardrail(
        &self,
        _: &GuardrailRef,
        direction: Direction,
        texts: &[&str],
    ) -> Result<Assessment, ModelError> {
        lock(&self.guardrail_calls).push((direction, texts.iter().map(|t| (*t).to_owned()).collect()));
        match &self.assessment {
            Some(a) => Ok(a.clone()),
            None => Err(ModelError::Rejected("no guardrail was scripted".to_owned(), "unsupported".into())),
        }
    }
}

/// The engine holds its model by value while the test keeps a handle.
impl ModelClient for Arc<ScriptedModel> {
    type Stream = ScriptedStream;

    async fn converse_stream(&self, req: &ModelRequest) -> Result<ScriptedStream, ModelError> {
        (**self).converse_stream(req).await
    }

    async fn complete(&self, req: &ModelRequest) -> Result<Completion, ModelError> {
        (**self).complete(req).await
    }

    async fn apply_guardrail(
        &self,
        guardrail: &GuardrailRef,
        direction: Direction,
        texts: &[&str],
    ) -> Result<Assessment, ModelError> {
        (**self).apply_guardrail(guardrail, direction, texts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scripts_play_in_order_then_the_default_answer_and_every_request_is_recorded() {
        let model = ScriptedModel::new()
            .refusing([ModelError::Throttled("429".into())])
            .then(Script::stream([(Duration::from_millis(7), Ok(ModelEvent::Text("hi".into())))]));
        let ask = |id: &str| ModelRequest { model_id: id.to_owned(), ..ModelRequest::default() };
        assert!(matches!(model.converse_stream(&ask("a")).await, Err(ModelError::Throttled(_))));
        let started = Instant::now();
        let mut s = model.converse_stream(&ask("b")).await.unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), ModelEvent::Text("hi".into()));
        assert_eq!(started.elapsed(), Duration::from_millis(7), "each event after its delay");
        assert!(s.next().await.is_none() && s.polled_after_end());
        let mut text = String::new();
        let mut s = model.converse_stream(&ask("c")).await.unwrap();
        while let Some(Ok(ev)) = s.next().await {
            if let ModelEvent::Text(t) = ev {
                text.push_str(&t);
            }
        }
        assert_eq!(text, DEFAULT_ANSWER);
        assert_eq!(model.asked(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn without_a_scripted_assessment_the_guardrail_refuses_like_a_client_without_one() {
        let g = GuardrailRef { id: "g".into(), version: "1".into() };
        assert!(ScriptedModel::new().apply_guardrail(&g, Direction::Input, &["x"]).await.is_err());
        let model = ScriptedModel::new().guarding(Assessment::default());
        assert_eq!(model.apply_guardrail(&g, Direction::Input, &["x"]).await.unwrap(), Assessment::default());
        assert_eq!(model.guardrail_calls(), [(Direction::Input, vec!["x".to_owned()])]);
    }
}
