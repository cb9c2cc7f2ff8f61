//! The core's `AnswerBuffer` over Redis / Valkey (ElastiCache Serverless): a generation started at typing
//! time is a Redis stream, its session's pointer a string, both under one hash tag (`{<session>}`) so that a
//! script touching both stays in one cluster slot.
//!
//! | key | holds |
//! |---|---|
//! | `ans:{<session>}` | the pointer: `<state>:<basis key>:<generation id>:<head JSON>`, state `P` (pending), `C` (claimed) or `X` (cancelled) |
//! | `ans:{<session>}:<generation id>` | the generation's events (`XADD … e <JSON>`), in order |
//!
//! - `begin` is one `SET … PX … GET`: the new pointer replaces the old atomically, and the old one comes back
//!   (when it was pending, its cost is counted as waste by the caller; its writer stops at its next append).
//! - `append` is a script: the events are added only while the pointer names this generation and it is not
//!   cancelled, and the answer says so (`0`: stop reading the model).
//! - `claim` is a script: a pending pointer whose basis key equals the caller's becomes claimed (one caller
//!   wins), any other pending one becomes cancelled.
//! - `read` is `XRANGE` from the start, then, when nothing is new, `XREAD BLOCK` after the last entry seen, on
//!   a second connection of its own: a blocking command would hold up every command multiplexed on the shared
//!   one.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::{Expiration, KeysInterface, LuaInterface, StreamsInterface, Value as RedisValue};
use fred::types::SetOptions;
use mangaassist_core::ids::SessionId;
use mangaassist_core::ports::answers::{AnswerBuffer, Buffered, Claimed, GenerationHead};
use mangaassist_core::ports::sources::SourceError;

use crate::redis_cache::RedisCache;

/// The pointer of a session's generation.
fn pointer_key(session: &SessionId) -> String {
    format!("ans:{{{session}}}")
}

/// The event log of generation `id`.
fn log_key(session: &SessionId, id: &str) -> String {
    format!("ans:{{{session}}}:{id}")
}

/// The pointer's text for `head` in `state`.
fn pointer(state: char, head: &GenerationHead) -> String {
    let json = serde_json::to_string(head).unwrap_or_default();
    format!("{state}:{}:{}:{json}", basis_key(&head.basis), head.id)
}

/// A basis as a fixed-width key (FNV-1a 64, hex): equality is all a claim needs, and the script compares 16
/// characters instead of parsing JSON. A session only ever compares its own bases.
pub fn basis_key(basis: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in basis.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The head inside a pointer's text (after `<state>:<basis key>:<id>:`).
fn head_of(pointer: &str) -> Option<GenerationHead> {
    let rest = pointer.get(19..)?;
    let (_, json) = rest.split_once(':')?;
    serde_json::from_str(json).ok()
}

/// KEYS[1] pointer, KEYS[2] log; ARGV[1] generation id, ARGV[2..] events. The log lives as long as its
/// pointer.
const APPEND: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local st = string.sub(v, 1, 1)
local n = string.len(ARGV[1])
if st == 'X' or string.sub(v, 20, 19 + n) ~= ARGV[1] or string.sub(v, 20 + n, 20 + n) ~= ':' then return 0 end
for i = 2, #ARGV do redis.call('XADD', KEYS[2], '*', 'e', ARGV[i]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
";

/// KEYS[1] pointer; ARGV[1] basis key. Answers `M<rest>` (claimed), `X<rest>` (cancelled) or nil.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'P' then return false end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = 1 end
local rest = string.sub(v, 2)
if string.sub(v, 3, 18) == ARGV[1] then
  redis.call('SET', KEYS[1], 'C' .. rest, 'PX', ttl)
  return 'M' .. rest
end
redis.call('SET', KEYS[1], 'X' .. rest, 'PX', ttl)
return 'X' .. rest
";

/// How often a reader polls while its blocking connection is down.
const POLL: Duration = Duration::from_millis(10);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The events of `XRANGE`/`XREAD` entries, in order; an entry that does not decode is a broken buffer.
fn decode(entries: Vec<(String, HashMap<String, String>)>) -> Result<(Vec<Buffered>, Option<String>), SourceError> {
    let last = entries.last().map(|(id, _)| id.clone());
    let events = entries
        .into_iter()
        .map(|(_, fields)| {
            let json = fields.get("e").ok_or_else(|| SourceError::Other("a buffered event without `e`".into()))?;
            serde_json::from_str(json).map_err(|e| SourceError::Other(Box::new(e)))
        })
        .collect::<Result<Vec<Buffered>, SourceError>>()?;
    Ok((events, last))
}

impl AnswerBuffer for RedisCache {
    fn supported(&self) -> bool {
        true
    }

    async fn begin(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        ttl: Duration,
    ) -> Result<Option<GenerationHead>, SourceError> {
        let px = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let client = self.client();
        let set = client.set::<RedisValue, _, _>(
            pointer_key(session),
            pointer('P', head),
            Some(Expiration::PX(px)),
            None::<SetOptions>,
            true,
        );
        let old = self.bounded(set).await?.as_string();
        Ok(old.filter(|o| o.starts_with('P')).and_then(|o| head_of(&o)))
    }

    async fn append(&self, session: &SessionId, id: &str, events: &[Buffered]) -> Result<bool, SourceError> {
        let mut args = vec![id.to_owned()];
        for e in events {
            args.push(serde_json::to_string(e).map_err(|e| SourceError::Other(Box::new(e)))?);
        }
        let keys = vec![pointer_key(session), log_key(session, id)];
        let client = self.client();
        let current: i64 = self.bounded(client.eval(APPEND, keys, args)).await?;
        Ok(current == 1)
    }

    async fn claim(&self, session: &SessionId, basis: &str) -> Result<Claimed, SourceError> {
        let client = self.client();
        let answer: Option<String> =
            self.bounded(client.eval(CLAIM, vec![pointer_key(session)], vec![basis_key(basis)])).await?;
        // `M` / `X` followed by the pointer without its state letter (`:<basis key>:<id>:<json>`).
        let parsed = |a: &str| head_of(&format!("?{}", a.get(1..).unwrap_or_default()));
        Ok(match answer.as_deref() {
            Some(a) if a.starts_with('M') => parsed(a).map_or(Claimed::Nothing, Claimed::Mine),
            Some(a) if a.starts_with('X') => parsed(a).map_or(Claimed::Nothing, Claimed::Mismatch),
            _ => Claimed::Nothing,
        })
    }

    async fn read(
        &self,
        session: &SessionId,
        id: &str,
        from: usize,
        block: Duration,
    ) -> Result<Vec<Buffered>, SourceError> {
        let key = log_key(session, id);
        let client = self.client();
        let entries: Vec<(String, HashMap<String, String>)> =
            self.bounded(client.xrange_values(key.clone(), "-", "+", None)).await?;
        let (mut events, last) = decode(entries)?;
        if events.len() > from || block.is_zero() {
            return Ok(events.split_off(from.min(events.len())));
        }
        // Nothing new: wait on the reader's own connection for an entry after the last one seen (nil: none
        // within `block`). While that connection is not up (a cold start, a reconnect), poll instead.
        let after = last.unwrap_or_else(|| "0-0".to_owned());
        let deadline = tokio::time::Instant::now() + block;
        if self.blocking_connected() {
            let reader = self.blocking_client(block);
            let wait = reader.xread::<RedisValue, _, _>(Some(1), Some(millis(block)), key.clone(), after);
            match tokio::time::timeout(block + self.command_timeout(), wait).await {
                Ok(Ok(v)) if v.is_null() => return Ok(Vec::new()),
                Err(_) => return Ok(Vec::new()),
                Ok(Ok(_)) | Ok(Err(_)) => {}
            }
        }
        loop {
            let entries: Vec<(String, HashMap<String, String>)> =
                self.bounded(client.xrange_values(key.clone(), "-", "+", None)).await?;
            let (mut events, _) = decode(entries)?;
            if events.len() > from || tokio::time::Instant::now() >= deadline {
                return Ok(events.split_off(from.min(events.len())));
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_carries_its_state_basis_key_and_head() {
        let head = GenerationHead {
            id: "g-1".into(),
            basis: "m\u{1f}e\u{1f}p\u{1f}{}\u{1f}hi".into(),
            model: "m".into(),
            started_at_ms: 9,
        };
        let p = pointer('P', &head);
        assert_eq!(&p[..2], "P:");
        assert_eq!(&p[2..18], basis_key(&head.basis));
        assert_eq!(&p[18..23], ":g-1:");
        assert_eq!(head_of(&p), Some(head));
        assert_ne!(basis_key("a"), basis_key("b"));
        assert_eq!(basis_key("").len(), 16);
    }

    #[test]
    fn the_pointer_and_the_log_share_a_cluster_slot() {
        let s = SessionId::example();
        let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        assert_eq!(slot(&pointer_key(&s)), slot(&log_key(&s, "g-1")));
    }
}
