//! Who is talking, and what their session remembers: `$connect` / `$disconnect`, the connection ->
//! session lookup (cached per warm container, bounded like a memory read), and [`Memory`], the recent
//! exchanges and running summary a turn is answered with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;
use crate::deadline::within;
use crate::error::{StoreError, chain};
use crate::ids::{Asin, ConnectionId, SessionId, UserId};
use crate::intent::Intent;
use crate::ports::{ChatMessage, ConnectionRecord, Role, Store, Summary, TurnRecord};

/// Connection id -> session. Connection records never change after `$connect`, so a warm container can
/// skip the store lookup on every turn after a connection's first.
#[derive(Debug, Default)]
struct SessionCache(Mutex<HashMap<ConnectionId, (SessionId, UserId)>>);

impl SessionCache {
    const CAP: usize = 10_000;

    fn get(&self, id: &ConnectionId) -> Option<(SessionId, UserId)> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn put(&self, id: ConnectionId, v: (SessionId, UserId)) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::CAP {
                m.clear();
            }
            m.insert(id, v);
        }
    }

    fn remove(&self, id: &ConnectionId) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }
}

/// Settings of the session handling.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Retention of a connection record.
    pub connection_ttl: Duration,
    /// Bound of the connection lookup on a turn's path (a throttled table must not hold the first token
    /// hostage).
    pub lookup_deadline: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { connection_ttl: Duration::from_secs(3 * 3600), lookup_deadline: Duration::from_millis(150) }
    }
}

/// Connections and their sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    cfg: SessionConfig,
    cache: SessionCache,
}

impl Sessions {
    pub fn new(cfg: SessionConfig) -> Self {
        Self { cfg, cache: SessionCache::default() }
    }

    /// `$connect`: stores the connection record. A valid `session_id` from the client resumes that session;
    /// otherwise a new one starts.
    pub async fn connect<St: Store, C: Clock>(
        &self,
        store: &St,
        clock: &C,
        conn: ConnectionId,
        session_id: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<ConnectionRecord, StoreError> {
        let session_id = match session_id.map(SessionId::parse) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ignoring invalid session_id on connect; starting a new session");
                SessionId::random()
            }
            None => SessionId::random(),
        };
        let user_id = user_id.and_then(|u| UserId::parse(u).ok()).unwrap_or_else(UserId::anonymous);
        let now = clock.now_ms();
        let rec = ConnectionRecord {
            connection_id: conn,
            session_id,
            user_id,
            connected_at_ms: now,
            expires_at: now / 1000 + self.cfg.connection_ttl.as_secs(),
        };
        store.put_connection(&rec).await?;
        self.cache.put(rec.connection_id.clone(), (rec.session_id.clone(), rec.user_id.clone()));
        Ok(rec)
    }

    /// `$disconnect`: forgets the connection (its turns stay with the session).
    pub async fn disconnect<St: Store>(&self, store: &St, conn: &ConnectionId) -> Result<(), StoreError> {
        self.cache.remove(conn);
        store.delete_connection(conn).await
    }

    /// The session of a connection. A connection without a record (expired TTL, lost write) gets a session
    /// of its own, keyed by the connection id, rather than a failed turn.
    pub async fn session_of<St: Store>(&self, store: &St, conn: &ConnectionId) -> (SessionId, UserId) {
        if let Some(v) = self.cache.get(conn) {
            return v;
        }
        let fallback = || {
            let s = SessionId::parse(conn.as_str().replace(['=', '+'], "_")).unwrap_or_else(|_| SessionId::random());
            (s, UserId::anonymous())
        };
        let lookup = within("connection lookup", self.cfg.lookup_deadline, store.get_connection(conn)).await;
        let v = match lookup.map_err(StoreError::from).and_then(|r| r) {
            Ok(Some(rec)) => (rec.session_id, rec.user_id),
            Ok(None) => {
                tracing::warn!(connection_id = %conn, "no connection record; using a connection-scoped session");
                fallback()
            }
            Err(e) => {
                tracing::error!(connection_id = %conn, error = %chain(&e), "connection lookup failed");
                fallback()
            }
        };
        self.cache.put(conn.clone(), v.clone());
        v
    }
}

/// What the store remembers of a session: recent exchanges (newest first) and the running summary.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub turns: Vec<TurnRecord>,
    pub summary: Option<Summary>,
}

impl Memory {
    /// Recent exchanges and the summary, side by side; a failure leaves the turn without that part.
    pub async fn load<St: Store>(store: &St, session: &SessionId, limit: u32) -> Self {
        let (turns, summary) = tokio::join!(store.recent_turns(session, limit), store.get_summary(session));
        let turns = turns.unwrap_or_else(|e| {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not load recent turns; answering without them");
            Vec::new()
        });
        let summary = summary.unwrap_or_else(|e| {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not load the summary");
            None
        });
        Self { turns, summary }
    }

    /// The list "the first one" points into: the products of the latest answer that listed several (an
    /// answer about one product, such as "tell me more about the first one", does not replace the list the
    /// shopper is going through), else of the latest answer that named any.
    pub fn previous_products(&self) -> &[Asin] {
        let list = self.turns.iter().find(|t| t.products.len() > 1);
        let any = || self.turns.iter().find(|t| !t.products.is_empty());
        list.or_else(any).map(|t| t.products.as_slice()).unwrap_or_default()
    }

    /// The intent of the previous turn.
    pub fn previous_intent(&self) -> Option<Intent> {
        self.turns.first().and_then(|t| t.intent)
    }

    /// The exchanges the summary does not cover, as messages oldest first, with their stored token counts.
    pub fn messages(&self) -> (Vec<ChatMessage>, Vec<Option<usize>>) {
        let covered = self.summary.as_ref().map_or(0, |s| s.covers_until_ms);
        let mut out = Vec::with_capacity(self.turns.len() * 2);
        let mut counts = Vec::with_capacity(self.turns.len() * 2);
        let n = |c: Option<u32>| c.map(|c| c as usize);
        for t in self.turns.iter().rev().filter(|t| t.ts_ms > covered) {
            out.push(ChatMessage { role: Role::User, text: t.user_text.clone() });
            counts.push(n(t.user_tokens));
            if !t.assistant_text.is_empty() {
                out.push(ChatMessage { role: Role::Assistant, text: t.assistant_text.clone() });
                counts.push(n(t.assistant_tokens));
            }
        }
        (out, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;

    struct Fixed;
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            1_000_000
        }
    }

    fn conn(s: &str) -> ConnectionId {
        ConnectionId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_connection_resumes_a_valid_session_and_replaces_an_invalid_one() {
        let (store, sessions) = (MemoryStore::default(), Sessions::default());
        let rec = sessions.connect(&store, &Fixed, conn("c1"), Some("s-1"), Some("u1")).await.unwrap();
        assert_eq!(rec.session_id, "s-1");
        assert_eq!(rec.expires_at, 1_000 + 3 * 3600);
        let rec = sessions.connect(&store, &Fixed, conn("c2"), Some("bad id!"), None).await.unwrap();
        assert_ne!(rec.session_id, "bad id!");
        assert_eq!(rec.user_id, "anon");
    }

    #[test]
    fn ordinals_point_into_the_latest_list_not_into_an_answer_about_one_of_its_products() {
        let turn = |ts_ms: u64, products: &[&str]| TurnRecord {
            session_id: SessionId::parse("s").unwrap(),
            message_id: crate::ids::MessageId::parse(format!("m{ts_ms}")).unwrap(),
            ts_ms,
            user_text: String::new(),
            assistant_text: String::new(),
            products: products.iter().map(|a| Asin::parse(*a).unwrap()).collect(),
            intent: None,
            status: crate::ports::TurnStatus::Complete,
            model: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            user_tokens: None,
            assistant_tokens: None,
            expires_at: 0,
        };
        let list = ["B0AAAAAAA1", "B0BBBBBBB2"];
        let m = Memory {
            turns: vec![turn(3, &["B0AAAAAAA1"]), turn(2, &list), turn(1, &["B0CCCCCCC3", "B0DDDDDDD4"])],
            summary: None,
        };
        assert_eq!(m.previous_products(), list.map(|a| Asin::parse(a).unwrap()));
        let one = Memory { turns: vec![turn(2, &[]), turn(1, &["B0AAAAAAA1"])], summary: None };
        assert_eq!(one.previous_products(), [Asin::parse("B0AAAAAAA1").unwrap()]);
        assert!(Memory::default().previous_products().is_empty());
    }

    #[tokio::test]
    async fn a_connection_without_a_record_gets_a_session_of_its_own() {
        let (store, sessions) = (MemoryStore::default(), Sessions::default());
        let (s, u) = sessions.session_of(&store, &conn("Ab=+")).await;
        assert_eq!((s.as_str(), u.as_str()), ("Ab__", "anon"));
        sessions.connect(&store, &Fixed, conn("c3"), Some("s-3"), None).await.unwrap();
        sessions.disconnect(&store, &conn("c3")).await.unwrap();
        let (s, _) = sessions.session_of(&store, &conn("c3")).await;
        assert_eq!(s, "c3", "forgotten on disconnect");
    }
}
