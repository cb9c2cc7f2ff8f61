//! A minimal WebSocket client of the chat protocol, for `mangaassist chat`, the bench and tests, and how it
//! gets a token from a running `serve` (its development login or guest endpoint).

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// `url` with the `token` query parameter added.
pub fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

/// Whether `url` already carries a token.
pub fn has_token(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("token=")))
}

/// The HTTP origin of a WebSocket URL (`ws://h:p/stage?x` -> `http://h:p`), where `serve` answers logins.
pub fn http_origin(ws_url: &str) -> anyhow::Result<String> {
    let (scheme, rest) = ws_url.split_once("://").context("not a URL")?;
    let scheme = match scheme {
        "ws" => "http",
        "wss" => "https",
        other => bail!("not a WebSocket URL scheme: {other}"),
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    Ok(format!("{scheme}://{host}"))
}

/// A token from a running `serve`: a user token for `user` (its development login), or a guest token (`None`).
pub async fn fetch_token(ws_url: &str, user: Option<&str>) -> anyhow::Result<String> {
    let origin = http_origin(ws_url)?;
    let url = match user {
        Some(u) => format!("{origin}/local/login?user={u}"),
        None => format!("{origin}/token"),
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let resp = http.post(&url).send().await.with_context(|| format!("Failed to reach {url}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.with_context(|| format!("{url} did not answer JSON (HTTP {status})"))?;
    if !status.is_success() {
        bail!("{url} answered HTTP {status}: {body}");
    }
    body["token"].as_str().map(str::to_owned).with_context(|| format!("{url} answered no token: {body}"))
}

/// `ws_url` as is when it carries a token; otherwise with a token for `user` from the `serve` behind it.
pub async fn authenticated(ws_url: &str, user: &str) -> anyhow::Result<String> {
    if has_token(ws_url) {
        return Ok(ws_url.to_owned());
    }
    let token = fetch_token(ws_url, Some(user))
        .await
        .context("Failed to get a token (a local `serve` issues them; elsewhere pass ?token=... in the URL)")?;
    Ok(with_token(ws_url, &token))
}

/// What the client has seen of one message's current attempt.
#[derive(Debug, Default)]
struct Seen {
    /// `seq` values shown (deltas, and the `completed` / `retract` that follow them).
    seqs: std::collections::HashSet<u64>,
    /// `completed`, `error` or `retract` arrived: the message is over.
    ended: bool,
}

/// A connected chat client.
///
/// Repeats are dropped as the wire protocol says a client must (README, Wire protocol): a post the server
/// retried after an ambiguous failure (its first attempt timed out, yet reached the socket) delivers a frame
/// twice, so an event whose `message_id` and `seq` were seen already, or any event of a message that has
/// ended, is not returned; [`ChatClient::repeats_dropped`] counts them.
pub struct ChatClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    seen: std::collections::HashMap<String, Seen>,
    repeats: u64,
}

impl ChatClient {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect_async(url))
            .await
            .context("Timed out connecting")?
            .with_context(|| format!("Failed to connect to {url}"))?;
        Ok(Self { ws, seen: std::collections::HashMap::new(), repeats: 0 })
    }

    /// Sends a raw text frame.
    pub async fn send_raw(&mut self, frame: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::Text(frame.into().into())).await.context("Failed to send a frame")
    }

    /// Sends a `sendMessage` frame and returns its message id.
    pub async fn send_message(&mut self, text: &str, page_context: Option<&Value>) -> anyhow::Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.send_with_id(&id, text, page_context).await?;
        Ok(id)
    }

    pub async fn send_with_id(&mut self, id: &str, text: &str, page_context: Option<&Value>) -> anyhow::Result<()> {
        // A resend under the same id is a new attempt: its events start again.
        self.seen.remove(id);
        let mut frame = json!({ "action": "sendMessage", "message_id": id, "text": text });
        if let Some(pc) = page_context {
            frame["page_context"] = pc.clone();
        }
        self.send_raw(frame.to_string()).await
    }

    /// The next server event, or an error after `timeout` or when the connection closes.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next()).await.context("Timed out waiting for an event")?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let ev: Value = serde_json::from_str(&t).context("Server sent a non-JSON frame")?;
                    if self.is_repeat(&ev) {
                        self.repeats += 1;
                        continue;
                    }
                    return Ok(ev);
                }
                Some(Ok(Message::Close(_))) | None => bail!("connection closed"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("WebSocket error"),
            }
        }
    }

    /// Events dropped as repeats so far (a retried post delivered twice).
    pub fn repeats_dropped(&self) -> u64 {
        self.repeats
    }

    /// Whether `ev` repeats what this client has seen (and records it when not).
    fn is_repeat(&mut self, ev: &Value) -> bool {
        let Some(id) = ev["message_id"].as_str() else { return false };
        let seen = self.seen.entry(id.to_owned()).or_default();
        if seen.ended {
            return true;
        }
        if let Some(seq) = ev["seq"].as_u64()
            && !seen.seqs.insert(seq)
        {
            return true;
        }
        seen.ended = matches!(ev["type"].as_str(), Some("completed" | "error" | "retract"));
        false
    }

    /// The connection's session id (a `session` frame, answered with the `session` event): pass it back
    /// as `session_id` on a later connect to resume the conversation.
    pub async fn session(&mut self) -> anyhow::Result<String> {
        self.send_raw(r#"{"action":"session"}"#).await?;
        loop {
            let ev = self.next_event(Duration::from_secs(10)).await?;
            if ev["type"] == "session" {
                return ev["session_id"].as_str().map(str::to_owned).context("session event without an id");
            }
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// `724 ms`, or `1.24 s` from a second on.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 { format!("{:.2} s", ms / 1000.0) } else { format!("{ms:.0} ms") }
}

/// The one line `chat` prints after an answer: `first token 724 ms · model 586 ms · context 201 ms · 96
/// tokens · on-demand`, with the first token as the client saw it when measured, and what served it when it
/// was not the model alone.
pub fn turn_line(metrics: &Value, client_first_token_ms: Option<f64>) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = client_first_token_ms.or_else(|| metrics["first_token_ms"].as_f64()) {
        parts.push(format!("first token {}", fmt_ms(ms)));
    }
    match metrics["served"].as_str() {
        Some("pregen") => parts.push("pre-generated, no model call".to_owned()),
        _ => {
            if let Some(ms) = metrics["model_first_token_ms"].as_f64() {
                parts.push(format!("model {}", fmt_ms(ms)));
            }
        }
    }
    if let Some(ms) = metrics["assembly_ms"].as_f64() {
        parts.push(format!("context {}", fmt_ms(ms)));
    }
    if let Some(n) = metrics["output_tokens"].as_u64() {
        parts.push(format!("{n} tokens"));
    }
    if metrics["served"].as_str() == Some("pregen_opening") {
        parts.push("pre-generated opening".to_owned());
    }
    let hits = metrics["cache_hits"].as_array().map_or(0, Vec::len);
    if hits > 0 {
        parts.push(format!("{hits} cache hit{}", if hits == 1 { "" } else { "s" }));
    }
    if let Some(route) = metrics["route"].as_str() {
        parts.push(route.to_owned());
    }
    parts.join(" · ")
}

/// A product's title as the answer gives it: the text before its ASIN on the line that names it
/// (`1. Spiral Chronicle (B0SPIRAL01): ...` -> `Spiral Chronicle`).
pub fn title_in_answer(answer: &str, asin: &str) -> Option<String> {
    let line = answer.lines().find(|l| l.contains(asin))?;
    let before = &line[..line.find(asin)?];
    let before = before.trim_end().trim_end_matches(['(', '（', '[']).trim_end();
    let before = before.strip_suffix("ASIN:").or_else(|| before.strip_suffix("ASIN")).unwrap_or(before).trim_end();
    let before = before.trim_end().trim_end_matches(['(', '（', '[']);
    let start = before.trim_start();
    let start = start
        .strip_prefix(|c: char| c.is_ascii_digit())
        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start_matches(['.', ')']))
        .or_else(|| start.strip_prefix(['-', '*', '•']))
        .unwrap_or(start);
    let title = start.replace("**", "");
    let title = title.trim().trim_end_matches([':', '-', '—', '–']).trim();
    (!title.is_empty() && title.chars().count() <= 80).then(|| title.to_owned())
}

/// Titles for the products of an answer: from the catalog of the local `serve` behind `ws_url` when it
/// answers (`GET /local/products`), else from the answer's own text, else the ASIN.
pub async fn product_titles(ws_url: &str, asins: &[String], answer: &str, japanese: bool) -> Vec<String> {
    let mut records: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    if let Ok(origin) = http_origin(ws_url)
        && !asins.is_empty()
    {
        let url = format!("{origin}/local/products?asins={}", asins.join(","));
        let fetched = async {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
            let resp = http.get(&url).send().await.ok()?.error_for_status().ok()?;
            resp.json::<Value>().await.ok()
        };
        if let Some(body) = fetched.await {
            for p in body["products"].as_array().into_iter().flatten() {
                if let Some(a) = p["asin"].as_str() {
                    records.insert(a.to_owned(), p.clone());
                }
            }
        }
    }
    asins
        .iter()
        .map(|asin| {
            let r = records.get(asin);
            let field = |k: &str| r.and_then(|r| r[k].as_str()).map(str::to_owned);
            let title = if japanese { field("title_ja").or_else(|| field("title_en")) } else { field("title_en") };
            let title = title.or_else(|| title_in_answer(answer, asin)).unwrap_or_else(|| asin.clone());
            let mut extra = Vec::new();
            if let Some(p) = r.and_then(|r| r["price_jpy"].as_u64()) {
                extra.push(format!("¥{p}"));
            }
            match r.and_then(|r| r["in_stock"].as_bool()) {
                Some(true) => extra.push("in stock".to_owned()),
                Some(false) => extra.push("out of stock".to_owned()),
                None => {}
            }
            if extra.is_empty() { title } else { format!("{title} ({})", extra.join(", ")) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turn_line_reads_like_the_issue_asks() {
        let m = json!({"first_token_ms": 700.0, "model_first_token_ms": 586.0, "assembly_ms": 201.2,
            "output_tokens": 96, "route": "on-demand", "served": "model", "cache_hits": []});
        assert_eq!(
            turn_line(&m, Some(724.4)),
            "first token 724 ms · model 586 ms · context 201 ms · 96 tokens · on-demand"
        );
        let m = json!({"first_token_ms": 52.0, "model_first_token_ms": 0.0, "assembly_ms": 30.0, "output_tokens": 80,
            "route": "on-demand", "served": "pregen", "cache_hits": ["product:B0X", "pregen:B0X"]});
        assert_eq!(
            turn_line(&m, None),
            "first token 52 ms · pre-generated, no model call · context 30 ms · 80 tokens · 2 cache hits · on-demand"
        );
    }

    #[test]
    fn titles_are_read_from_the_line_that_names_the_asin() {
        let a = "Here are two:\n1. Spiral Chronicle (B0SPIRAL01): a horror series.\n2. **Night Ward** (ASIN: B0NIGHTW02)\n- 渦巻く年代記（B0SPIRAL03）";
        assert_eq!(title_in_answer(a, "B0SPIRAL01").as_deref(), Some("Spiral Chronicle"));
        assert_eq!(title_in_answer(a, "B0NIGHTW02").as_deref(), Some("Night Ward"));
        assert_eq!(title_in_answer(a, "B0SPIRAL03").as_deref(), Some("渦巻く年代記"));
        assert_eq!(title_in_answer(a, "B0MISSING1"), None);
        assert_eq!(title_in_answer("B0SPIRAL01 is great", "B0SPIRAL01"), None);
    }
}
