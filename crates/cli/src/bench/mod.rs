//! The end-to-end benchmark: scripted conversations over real WebSocket connections, against the local
//! system (started in-process) or a deployed stage (`--url`). One file per scenario:
//!
//! - [`turns`]: first-token and total latency, our overhead, the relay ablation (the default scenario).
//! - [`compression`]: prompt tokens, compression CPU, TTFT with compression on and off; its requests come
//!   from `mangaassist_local::embedded::corpus`.
//! - [`context`]: sequential vs parallel context assembly.
//! - [`spike`]: a concurrency ramp under each peak capacity plan (on-demand, provisioned, priority at peak).
//! - [`capacity`]: 200 concurrent shoppers on-demand, with throttle retries, and on provisioned units.
//! - [`abuse`]: 200 signed-in shoppers and a flooder with faults injected: nothing lost, duplicated or leaked.
//! - [`followups`]: follow-up TTFT with speculative prefetch on and off.
//! - [`models`]: one model for everything vs per-intent routing, and each request lever on and off.
//! - [`guardrail`]: first token with guardrails off and on, side by side in the same run.
//! - [`typing`]: first token with typing-time speculation on and off, messages replayed as typed.
//! - [`tail`]: the first token's tail after idle gaps on the heavy-tail model, warm connections, the
//!   fresh-connection retry and hedging off and on, each alone; our CPU per turn.
//!
//! [`driver`] runs conversations and measures turns; [`stats`] holds the percentiles and the JSON writer;
//! [`report`] records turns per variant for `--report FILE.html` (a [`report::Recorder`] that `main` builds
//! and passes down) and prints progress on stderr.

pub mod abuse;
pub mod capacity;
pub mod compression;
pub mod context;
pub mod driver;
pub mod followups;
pub mod guardrail;
pub mod models;
pub mod report;
pub mod spike;
pub mod stats;
pub mod tail;
pub mod turns;
pub mod typing;

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};

/// One scripted conversation: `{"messages":[{"text":"...","page_context":{...}}]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub messages: Vec<ScriptedMessage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScriptedMessage {
    pub text: String,
    #[serde(default)]
    pub page_context: Option<Value>,
    /// For follow-ups (the followups scenario): `pregen` for a generic overview request a pre-generated
    /// answer should serve, `model` for a specific question it must never serve.
    #[serde(default)]
    pub expect: Option<String>,
}

impl Conversation {
    /// A conversation of `(text, page context or null)` messages.
    pub fn of(msgs: &[(&str, Value)]) -> Self {
        let message = |(t, pc): &(&str, Value)| ScriptedMessage {
            text: (*t).to_owned(),
            page_context: (!pc.is_null()).then(|| pc.clone()),
            expect: None,
        };
        Self { messages: msgs.iter().map(message).collect() }
    }
}

/// The built-in conversations: English and Japanese, product questions, recommendations and follow-ups.
pub fn builtin_conversations() -> Vec<Conversation> {
    let c = Conversation::of;
    vec![
        c(&[
            (
                "Show me some horror manga",
                json!({"store_section":"horror","browsing_history":["B0UZUMAKI1","B0CHAINSAW"]}),
            ),
            ("Tell me more about the first one", json!({"current_asin":"B0UZUMAKI1"})),
            ("Is volume 1 in stock?", json!({"current_asin":"B0UZUMAKI1"})),
        ]),
        c(&[
            (
                "おすすめのファンタジー漫画はありますか?",
                json!({"store_section":"fantasy","browsing_history":["B0FRIEREN1","B0BERSERK1"]}),
            ),
            ("2つ目について詳しく教えて", json!({"current_asin":"B0BERSERK1"})),
            ("全巻セットはありますか?", Value::Null),
        ]),
        c(&[
            ("Where is my order 112-1234567-1234567?", Value::Null),
            ("Can I return a damaged volume?", json!({"current_asin":"B0ONEPIECE"})),
        ]),
        c(&[
            (
                "Something like Vagabond, but shorter?",
                json!({"current_asin":"B0VAGABOND","browsing_history":["B0VAGABOND","B0MONSTER1"]}),
            ),
            ("Which one has the best reviews?", json!({"browsing_history":["B0MONSTER1","B0AKIRA001"]})),
            ("Add the first one to my cart", json!({"cart_asins":["B0SPYFAMLY"]})),
        ]),
        c(&[
            ("今月のセールは?", json!({"store_section":"promotions"})),
            ("SPY×FAMILYの最新刊はいつ発売?", json!({"current_asin":"B0SPYFAMLY"})),
        ]),
    ]
}

/// Reads one JSON value per non-empty line.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))?;
    let out: Vec<T> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not {what}", path.display(), i + 1)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!out.is_empty(), "{} holds no {what}", path.display());
    Ok(out)
}

/// Reads conversations from a JSONL file.
pub fn read_script(path: &PathBuf) -> anyhow::Result<Vec<Conversation>> {
    let out: Vec<Conversation> = read_jsonl(path, "a conversation")?;
    anyhow::ensure!(out.iter().all(|c| !c.messages.is_empty()), "{}: a conversation needs messages", path.display());
    Ok(out)
}
