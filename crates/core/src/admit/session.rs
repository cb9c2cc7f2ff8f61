//! Who is talking, and what their session remembers: `$connect` / `$disconnect`, the connection ->
//! session lookup (cached per warm container, bounded like a memory read), and [`Memory`], the recent
//! exchanges and running summary a turn is answered with.
//!
//! Sessions belong to their user: the server issues session ids, records the owner, and a resume request
//! for a session that is unknown or owned by someone else starts a new session instead (logged); no
//! connection ever reads or writes another user's session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Clock;
use crate::deadline::within;
use crate::error::{ErrorCode, StoreError, chain};
use crate::ids::{Asin, ConnectionId, SessionId, SourceAddr, UserId};
use crate::intent::Intent;
use crate::ports::{ChatMessage, ConnectionRecord, Role, Store, Summary, TurnRecord, TurnStatus};

/// Who is talking: the user the `$connect` authorizer verified, whether with a guest token, and from which
/// address (API Gateway's `sourceIp` on the event; `None` where an event does not say, as in unit tests).
/// A guest token costs nothing to get, so guests are also counted by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub guest: bool,
    pub addr: Option<SourceAddr>,
}

impl Principal {
    /// A signed-in user.
    pub fn user(user: UserId) -> Self {
        Self { user, guest: false, addr: None }
    }

    /// A guest.
    pub fn guest(user: UserId) -> Self {
        Self { user, guest: true, addr: None }
    }

    /// The same principal, seen at `addr`.
    pub fn from_addr(self, addr: Option<SourceAddr>) -> Self {
        Self { addr, ..self }
    }

    /// Someone the store cannot place (a connection without a record, on an event without the authorizer's
    /// principal): the tightest limits.
    pub fn unknown() -> Self {
        Self { user: UserId::anonymous(), guest: true, addr: None }
    }
}

/// The connection's session could not be read (the store failed or was slower than its bound). The frame
/// is refused, retryably: answering it under a stand-in identity would move the shopper into someone
/// else's limits and memory.
#[derive(Debug, thiserror::Error)]
#[error("the connection's session could not be read")]
pub struct SessionUnavailable(#[source] pub StoreError);

impl SessionUnavailable {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::SessionUnavailable
    }

    pub fn is_retryable(&self) -> bool {
        true
    }

    /// The sentence the client reads.
    pub fn client_message(&self) -> &'static str {
        "your session could not be loaded just now; please send that again"
    }
}

/// What `$connect` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub record: ConnectionRecord,
    /// The requested session was resumed (else a new one started).
    pub resumed: bool,
}

/// Connection id -> session. Connection records never change after `$connect`, so a warm container can
/// skip the store lookup on every turn after a connection's first.
#[derive(Debug, Default)]
struct SessionCache(Mutex<HashMap<ConnectionId, (SessionId, Principal)>>);

impl SessionCache {
    const CAP: usize = 10_000;

    fn get(&self, id: &ConnectionId) -> Option<(SessionId, Principal)> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn put(&self, id: ConnectionId, v: (SessionId, Principal)) {
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
    /// Retention of a session's owner record (as long as its turns).
    pub session_ttl: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            connection_ttl: Duration::from_secs(3 * 3600),
            lookup_deadline: Duration::from_millis(150),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
        }
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

    /// `$connect`: stores the connection record. `requested` resumes that session when `principal` owns
    /// it; otherwise (none, malformed, unknown, someone else's) a new session with a server-issued id
    /// starts.
    pub async fn connect<St: Store, C: Clock>(
        &self,
        store: &St,
        clock: &C,
        conn: ConnectionId,
        requested: Option<&str>,
        principal: &Principal,
    ) -> Result<Connected, StoreError> {
        let now = clock.now_ms();
        let resumed = match requested.map(SessionId::parse) {
            Some(Ok(s)) => match store.session_owner(&s).await {
                Ok(Some(owner)) if owner == principal.user => Some(s),
                Ok(owner) => {
                    let why = if owner.is_some() { "owned by another user" } else { "unknown or expired" };
                    tracing::warn!(requested = %s, user_id = %principal.user, why, "refusing to resume a session; starting a new one");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %chain(&e), "could not read the session owner; starting a new session");
                    None
                }
            },
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ignoring invalid session_id on connect; starting a new session");
                None
            }
            None => None,
        };
        let session_id = match resumed.clone() {
            Some(s) => s,
            None => {
                let s = SessionId::random();
                let expires = now / 1000 + self.cfg.session_ttl.as_secs();
                if let Err(e) = store.create_session(&s, &principal.user, expires).await {
                    // The shopper can still chat; only a later resume of this session will start afresh.
                    tracing::error!(error = %chain(&e), "could not record the session owner");
                }
                s
            }
        };
        let rec = ConnectionRecord {
            connection_id: conn,
            session_id,
            user_id: principal.user.clone(),
            guest: principal.guest,
            connected_at_ms: now,
            expires_at: now / 1000 + self.cfg.connection_ttl.as_secs(),
        };
        store.put_connection(&rec).await?;
        self.cache.put(rec.connection_id.clone(), (rec.session_id.clone(), principal.clone()));
        Ok(Connected { record: rec, resumed: resumed.is_some() })
    }

    /// `$disconnect`: forgets the connection (its turns stay with the session).
    pub async fn disconnect<St: Store>(&self, store: &St, conn: &ConnectionId) -> Result<(), StoreError> {
        self.cache.remove(conn);
        store.delete_connection(conn).await
    }

    /// The session of a connection and who holds it. `caller` is the principal the event itself carries
    /// (API Gateway passes the `$connect` authorizer's context with every frame): when present, it is who
    /// is talking. A connection without a record (expired TTL, lost write) gets a session of its own, keyed
    /// by the connection id, and keeps its caller (without one: the tightest limits). A lookup that fails
    /// or outlasts its bound refuses the frame ([`SessionUnavailable`]) and is not remembered: the next
    /// frame asks again, and nobody is ever answered as someone else.
    pub async fn session_of<St: Store>(
        &self,
        store: &St,
        conn: &ConnectionId,
        caller: Option<&Principal>,
    ) -> Result<(SessionId, Principal), SessionUnavailable> {
        let as_caller = |(s, p): (SessionId, Principal)| (s, caller.cloned().unwrap_or(p));
        if let Some(v) = self.cache.get(conn) {
            return Ok(as_caller(v));
        }
        let lookup = within("connection lookup", self.cfg.lookup_deadline, store.get_connection(conn)).await;
        let v = match lookup.map_err(StoreError::from).and_then(|r| r) {
            Ok(Some(rec)) => (rec.session_id, Principal { user: rec.user_id, guest: rec.guest, addr: None }),
            Ok(None) => {
                tracing::warn!(connection_id = %conn, "no connection record; using a connection-scoped session");
                let s =
                    SessionId::parse(conn.as_str().replace(['=', '+'], "_")).unwrap_or_else(|_| SessionId::random());
                (s, Principal::unknown())
            }
            Err(e) => {
                tracing::error!(connection_id = %conn, code = e.code(), error = %chain(&e), "connection lookup failed; refusing the frame");
                return Err(SessionUnavailable(e));
            }
        };
        self.cache.put(conn.clone(), v.clone());
        Ok(as_caller(v))
    }
}

/// What the store remembers of a session: recent exchanges (newest first) and the running summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    pub turns: Vec<TurnRecord>,
    pub summary: Option<Summary>,
}

impl Memory {
    /// Recent exchanges and the summary, side by side; a failure leaves the turn without that part.
    pub async fn load<St: Store>(store: &St, session: &SessionId, limit: u32) -> Self {
        Self::load_whole(store, session, limit).await.0
    }

    /// [`Memory::load`], and whether both parts were read (a memory missing a part is never kept for a
    /// later turn).
    pub async fn load_whole<St: Store>(store: &St, session: &SessionId, limit: u32) -> (Self, bool) {
        let (turns, summary) = tokio::join!(store.recent_turns(session, limit), store.get_summary(session));
        let whole = turns.is_ok() && summary.is_ok();
        let turns = turns.unwrap_or_else(|e| {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not load recent turns; answering without them");
            Vec::new()
        });
        let summary = summary.unwrap_or_else(|e| {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not load the summary");
            None
        });
        (Self { turns, summary }, whole)
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
        // A turn the guardrail stopped is not shown to the model again.
        for t in self.turns.iter().rev().filter(|t| t.ts_ms > covered && t.status != TurnStatus::Blocked) {
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
    use crate::ports::memory::MemoryStore;
    use crate::testkit::TestClock;

    /// The clock of these tests: 1,000 s after the epoch.
    fn clock() -> TestClock {
        TestClock::at(1_000_000)
    }

    fn conn(s: &str) -> ConnectionId {
        ConnectionId::parse(s).unwrap()
    }

    fn user(u: &str) -> Principal {
        Principal::user(UserId::parse(u).unwrap())
    }

    #[tokio::test]
    async fn a_session_is_resumed_only_by_its_owner() {
        let (store, sessions) = (MemoryStore::default(), Sessions::default());
        let a = sessions.connect(&store, &clock(), conn("c1"), None, &user("alice")).await.unwrap();
        assert!(!a.resumed);
        assert_eq!(a.record.expires_at, 1_000 + 3 * 3600);
        let sid = a.record.session_id.clone();
        let again = sessions.connect(&store, &clock(), conn("c2"), Some(sid.as_str()), &user("alice")).await.unwrap();
        assert!(again.resumed);
        assert_eq!(again.record.session_id, sid);
        let bob = sessions.connect(&store, &clock(), conn("c3"), Some(sid.as_str()), &user("bob")).await.unwrap();
        assert!(!bob.resumed);
        assert_ne!(bob.record.session_id, sid, "never someone else's session");
        for bad in ["bad id!", "never-issued"] {
            let c = sessions.connect(&store, &clock(), conn("c4"), Some(bad), &user("alice")).await.unwrap();
            assert!(!c.resumed);
            assert_ne!(c.record.session_id, bad);
        }
        assert_eq!(store.session_owner(&sid).await.unwrap(), Some(UserId::parse("alice").unwrap()));
    }

    #[test]
    fn ordinals_point_into_the_latest_list_not_into_an_answer_about_one_of_its_products() {
        let turn = |ts_ms: u64, products: &[&str]| {
            crate::testkit::turn("s", &format!("m{ts_ms}")).at(ts_ms).products(products).build()
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
        let (s, p) = sessions.session_of(&store, &conn("Ab=+"), None).await.unwrap();
        assert_eq!((s.as_str(), p), ("Ab__", Principal::unknown()));
        let (_, p) = sessions.session_of(&store, &conn("Ab=+"), Some(&user("u9"))).await.unwrap();
        assert_eq!(p, user("u9"), "the event's principal, never a stand-in");
        sessions.connect(&store, &clock(), conn("c3"), None, &user("u3")).await.unwrap();
        sessions.disconnect(&store, &conn("c3")).await.unwrap();
        let (s, _) = sessions.session_of(&store, &conn("c3"), None).await.unwrap();
        assert_eq!(s, "c3", "forgotten on disconnect");
    }
}
