//! The embedded cache: the core's `Cache` in process memory, standing in for ElastiCache in local runs, the
//! bench and tests. TTLs are honoured on read with `tokio::time::Instant` (so paused-clock tests work too),
//! and the size is bounded: when full, expired entries go first, then the entry closest to expiring.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use mangaassist_core::ids::SessionId;
use mangaassist_core::ports::answers::{AnswerBuffer, Buffered, Claimed, GenerationHead, MemoryAnswers};
use mangaassist_core::ports::sources::{Cache, SourceError};
use tokio::time::Instant;

/// The capacity `mangaassist serve` uses.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Entry {
    value: String,
    expires: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// `(expires, seq)` -> key: the eviction order.
    by_expiry: BTreeMap<(Instant, u64), String>,
    seq: u64,
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.by_expiry.remove(&(e.expires, e.seq));
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    fn evict_soonest(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.entries.remove(&key);
        }
    }

    /// Replaces `key`'s value and TTL, evicting to stay within `capacity`; a zero TTL only removes it.
    fn insert(&mut self, capacity: usize, key: &str, value: &str, ttl: Duration, now: Instant) {
        self.remove(key);
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= capacity {
            self.purge_expired(now);
        }
        while self.entries.len() >= capacity {
            self.evict_soonest();
        }
        let expires = now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        self.seq += 1;
        let seq = self.seq;
        self.by_expiry.insert((expires, seq), key.to_owned());
        self.entries.insert(key.to_owned(), Entry { value: value.to_owned(), expires, seq });
    }
}

/// `Cache` in memory, with TTLs and a size bound.
#[derive(Debug)]
pub struct TtlCache {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Typing-time generations: a pointer per session and an event log per generation, as on ElastiCache.
    answers: MemoryAnswers,
}

impl Default for TtlCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

fn poisoned() -> SourceError {
    SourceError::Other("embedded cache lock poisoned".into())
}

impl TtlCache {
    /// A cache of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity: capacity.max(1), answers: MemoryAnswers::default() }
    }

    /// Live entries now.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.inner.lock().map(|i| i.entries.values().filter(|e| e.expires > now).count()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer buffer of the local system: the core's in-process one, with the Redis adapter's semantics.
impl AnswerBuffer for TtlCache {
    fn supported(&self) -> bool {
        true
    }
    fn begin(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<GenerationHead>, SourceError>> + Send {
        self.answers.begin(session, head, ttl)
    }
    fn append(
        &self,
        session: &SessionId,
        id: &str,
        events: &[Buffered],
    ) -> impl Future<Output = Result<bool, SourceError>> + Send {
        self.answers.append(session, id, events)
    }
    fn claim(&self, session: &SessionId, basis: &str) -> impl Future<Output = Result<Claimed, SourceError>> + Send {
        self.answers.claim(session, basis)
    }
    fn read(
        &self,
        session: &SessionId,
        id: &str,
        from: usize,
        block: Duration,
    ) -> impl Future<Output = Result<Vec<Buffered>, SourceError>> + Send {
        self.answers.read(session, id, from, block)
    }
}

impl Cache for TtlCache {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
        let now = Instant::now();
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        Ok(keys.iter().map(|k| inner.entries.get(k).filter(|e| e.expires > now).map(|e| e.value.clone())).collect())
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SourceError> {
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        inner.insert(self.capacity, key, value, ttl, Instant::now());
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, SourceError> {
        let now = Instant::now();
        // Check and set under one lock: two claims racing for the same key cannot both win.
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        if inner.entries.get(key).is_some_and(|e| e.expires > now) {
            return Ok(false);
        }
        inner.insert(self.capacity, key, value, ttl, now);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> Vec<String> {
        ks.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_value_is_read_back_until_its_ttl_passes() {
        let c = TtlCache::new(10);
        c.set("a", "1", Duration::from_millis(40)).await.unwrap();
        c.set("b", "2", Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.get_many(&keys(&["a", "b", "c"])).await.unwrap(), vec![Some("1".into()), Some("2".into()), None]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(c.get_many(&keys(&["a", "b"])).await.unwrap(), vec![None, Some("2".into())]);
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn setting_a_key_again_replaces_its_value_and_ttl() {
        let c = TtlCache::new(10);
        c.set("a", "1", Duration::from_millis(20)).await.unwrap();
        c.set("a", "2", Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(c.get_many(&keys(&["a"])).await.unwrap(), vec![Some("2".into())]);
    }

    #[tokio::test]
    async fn a_full_cache_evicts_expired_entries_then_the_soonest_to_expire() {
        let c = TtlCache::new(3);
        c.set("short", "s", Duration::from_secs(10)).await.unwrap();
        c.set("long1", "l", Duration::from_secs(100)).await.unwrap();
        c.set("long2", "l", Duration::from_secs(200)).await.unwrap();
        c.set("new", "n", Duration::from_secs(50)).await.unwrap();
        assert_eq!(
            c.get_many(&keys(&["short", "long1", "long2", "new"])).await.unwrap(),
            vec![None, Some("l".into()), Some("l".into()), Some("n".into())]
        );
        let inner = c.inner.lock().unwrap();
        assert_eq!((inner.entries.len(), inner.by_expiry.len()), (3, 3));
    }

    #[tokio::test]
    async fn set_if_absent_claims_a_key_once_until_it_expires() {
        let c = TtlCache::new(10);
        assert!(c.set_if_absent("claim", "1", Duration::from_millis(40)).await.unwrap());
        assert!(!c.set_if_absent("claim", "2", Duration::from_secs(60)).await.unwrap());
        assert_eq!(c.get_many(&keys(&["claim"])).await.unwrap(), vec![Some("1".into())]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(c.set_if_absent("claim", "3", Duration::from_secs(60)).await.unwrap());
    }

    #[tokio::test]
    async fn a_zero_ttl_stores_nothing() {
        let c = TtlCache::new(3);
        c.set("a", "1", Duration::ZERO).await.unwrap();
        assert!(c.is_empty());
    }
}
