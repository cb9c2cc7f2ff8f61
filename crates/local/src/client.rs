//! A minimal WebSocket client of the chat protocol, for `mangaassist chat`, the bench and tests.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

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

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
