//! The embedded [`Store`]: conversation state in process memory, for `mangaassist serve`, the bench and the
//! engine's in-process tests. Same semantics as the DynamoDB adapter (conditional claim, idempotent turn
//! writes, newest-first history), pinned by the `Store` contract suite that runs on both
//! (`testkit::store_contract`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::error::StoreError;
use crate::ids::{ConnectionId, MessageId, SessionId, UserId};
use crate::ports::{Claim, ConnectionRecord, Counter, Store, Summary, TurnRecord};

#[derive(Debug, Default)]
struct Inner {
    connections: HashMap<ConnectionId, ConnectionRecord>,
    /// (session, message id) -> answered?
    claims: HashMap<(SessionId, MessageId), bool>,
    owners: HashMap<SessionId, UserId>,
    /// connection -> (message holding the turn slot, until ms)
    slots: HashMap<ConnectionId, (MessageId, u64)>,
    counters: HashMap<Counter, i64>,
    turns: HashMap<SessionId, BTreeMap<(u64, MessageId), TurnRecord>>,
    summaries: HashMap<SessionId, Summary>,
}

/// `Store` in memory, with an optional artificial latency on the memory reads (recent turns, summary) so
/// the bench can apply the design's latency profile.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Inner>, std::time::Duration);

fn poisoned() -> StoreError {
    StoreError::Other("memory store lock poisoned".into())
}

impl MemoryStore {
    /// Memory reads take `latency` (the design's profile: 50 ms).
    pub fn with_latency(latency: std::time::Duration) -> Self {
        Self(Mutex::default(), latency)
    }

    async fn read_delay(&self) {
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, StoreError> {
        self.0.lock().map(|mut g| f(&mut g)).map_err(|_| poisoned())
    }
}

impl Store for MemoryStore {
    async fn put_connection(&self, rec: &ConnectionRecord) -> Result<(), StoreError> {
        self.with(|i| {
            i.connections.insert(rec.connection_id.clone(), rec.clone());
        })
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, StoreError> {
        self.with(|i| i.connections.get(id).cloned())
    }

    async fn delete_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.with(|i| {
            i.connections.remove(id);
        })
    }

    async fn claim_message(&self, id: &MessageId, session: &SessionId, _expires_at: u64) -> Result<Claim, StoreError> {
        self.with(|i| match i.claims.entry((session.clone(), id.clone())) {
            std::collections::hash_map::Entry::Occupied(_) => Claim::Duplicate,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(false);
                Claim::Claimed
            }
        })
    }

    async fn release_claim(&self, id: &MessageId, session: &SessionId) -> Result<(), StoreError> {
        self.with(|i| {
            let key = (session.clone(), id.clone());
            if i.claims.get(&key) == Some(&false) {
                i.claims.remove(&key);
            }
        })
    }

    async fn save_turn(&self, t: &TurnRecord) -> Result<(), StoreError> {
        self.with(|i| {
            let turns = i.turns.entry(t.session_id.clone()).or_default();
            let std::collections::btree_map::Entry::Vacant(slot) = turns.entry((t.ts_ms, t.message_id.clone())) else {
                // Stored before: the repeated write changes nothing, the claim included (a retry of the
                // message may hold it anew).
                return;
            };
            slot.insert(t.clone());
            let key = (t.session_id.clone(), t.message_id.clone());
            if t.status.settles_claim() {
                i.claims.insert(key, true);
            } else {
                i.claims.remove(&key);
            }
        })
    }

    async fn session_owner(&self, session: &SessionId) -> Result<Option<UserId>, StoreError> {
        self.with(|i| i.owners.get(session).cloned())
    }

    async fn create_session(&self, session: &SessionId, user: &UserId, _expires_at: u64) -> Result<(), StoreError> {
        let owner = self.with(|i| i.owners.entry(session.clone()).or_insert_with(|| user.clone()).clone())?;
        if owner != *user {
            return Err(StoreError::Other(format!("session {session} belongs to another user").into()));
        }
        Ok(())
    }

    async fn begin_turn(
        &self,
        conn: &ConnectionId,
        msg: &MessageId,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(|i| match i.slots.get(conn) {
            Some((_, until)) if *until >= now_ms => false,
            _ => {
                i.slots.insert(conn.clone(), (msg.clone(), until_ms));
                true
            }
        })
    }

    async fn end_turn(&self, conn: &ConnectionId, msg: &MessageId) -> Result<(), StoreError> {
        self.with(|i| {
            if i.slots.get(conn).is_some_and(|(m, _)| m == msg) {
                i.slots.remove(conn);
            }
        })
    }

    async fn add_to_counter(
        &self,
        counter: &Counter,
        delta: i64,
        limit: Option<i64>,
        _expires_at: u64,
    ) -> Result<Option<i64>, StoreError> {
        self.with(|i| {
            let v = i.counters.entry(counter.clone()).or_insert(0);
            let next = *v + delta;
            if next < 0 || limit.is_some_and(|l| delta > 0 && next > l) {
                return None;
            }
            *v = next;
            Some(next)
        })
    }

    async fn counter(&self, counter: &Counter) -> Result<i64, StoreError> {
        self.with(|i| i.counters.get(counter).copied().unwrap_or(0))
    }

    async fn get_summary(&self, session: &SessionId) -> Result<Option<Summary>, StoreError> {
        self.read_delay().await;
        self.with(|i| i.summaries.get(session).cloned())
    }

    async fn put_summary(&self, session: &SessionId, summary: &Summary) -> Result<(), StoreError> {
        self.with(|i| {
            let newer = i.summaries.get(session).is_none_or(|s| s.covers_until_ms < summary.covers_until_ms);
            if newer {
                i.summaries.insert(session.clone(), summary.clone());
            }
        })
    }

    async fn recent_turns(&self, session: &SessionId, limit: u32) -> Result<Vec<TurnRecord>, StoreError> {
        self.read_delay().await;
        self.with(|i| {
            i.turns.get(session).map(|m| m.values().rev().take(limit as usize).cloned().collect()).unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod contract {
    use super::MemoryStore;

    crate::store_contract_tests!(async { (MemoryStore::default(), ()) });
}
