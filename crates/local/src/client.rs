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

/// A connected chat client.
pub struct ChatClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl ChatClient {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect_async(url))
            .await
            .context("Timed out connecting")?
            .with_context(|| format!("Failed to connect to {url}"))?;
        Ok(Self { ws })
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
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).context("Server sent a non-JSON frame"),
                Some(Ok(Message::Close(_))) | None => bail!("connection closed"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("WebSocket error"),
            }
        }
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
