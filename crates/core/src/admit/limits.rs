//! Who may do how much: one turn in flight per connection, a per-user request rate and daily token budget,
//! and a cap on a user's open connections, tighter for guests; a per-user rate of `typing` frames (all the
//! user's connections together: each admitted frame runs retrieval, product lookups and an input check, see
//! [`crate::ahead::speculate`]), which never touches the message rate; and, because a guest token costs
//! nothing to get, per source address caps on what guests do, whatever guest tokens they hold (connects,
//! messages and typing frames per minute, [`AddressLimits`]).
//!
//! Every model call a user causes counts against their day ([`Limiter::spend`]): the turn's, and the work
//! done for them off the turn (typed-ahead answers, pre-generated answers, summaries).
//!
//! The counters live in the store (atomic conditional writes shared by every container: a user's frames
//! land on many Lambda containers). Windows are fixed: requests per UTC minute, tokens per JST day (the
//! store's business day). The checks run beside the turn's context assembly, so they cost the first token
//! nothing. A store failure admits the request (logged): our outage must not refuse a shopper.

use std::time::Duration;

use crate::admit::session::Principal;
use crate::cache::CounterKey;
use crate::clock::{Clock, jst_day};
use crate::deadline::{DeadlineExceeded, within};
use crate::error::{ErrorCode, StoreError, chain, retry_store};
use crate::ids::{ConnectionId, MessageId, UserId};
use crate::ports::{Counter, Store};

const MINUTE_MS: u64 = 60_000;

/// The limits of one kind of principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// `sendMessage` frames per minute.
    pub requests_per_minute: u32,
    /// Model tokens (input + output) per JST day.
    pub tokens_per_day: u64,
    /// Open WebSocket connections at once.
    pub connections: u32,
}

/// Limits of signed-in users and of guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    pub user: Tier,
    pub guest: Tier,
    /// Bound of the admission checks on the turn's path; past it the turn is admitted (a slow table must
    /// neither hold the first token nor refuse the shopper).
    pub deadline: Duration,
    /// `typing` frames speculated per user per minute, all connections together; the rest are dropped
    /// (and counted).
    pub typing_per_minute: u32,
    /// What guests may do from one source address, whatever guest tokens they hold.
    pub guest_address: AddressLimits,
}

/// Per-address caps on guests (signed-in users are never counted by address). One address may be many
/// shoppers (a carrier's NAT, an office): the caps are set where a household or a small office of guests
/// is not refused, and a shopper refused by them can sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLimits {
    /// Guest `$connect`s per minute from one address.
    pub connects_per_minute: u32,
    /// Guest `sendMessage`s per minute from one address.
    pub turns_per_minute: u32,
    /// Guest `typing` frames per minute from one address.
    pub typing_per_minute: u32,
}

impl Default for AddressLimits {
    /// Connects: the token endpoint's 10 guest tokens per address per minute, each token good for its 2
    /// connections once; messages: one signed-in user's rate (20), so that churning guest tokens from one
    /// address never buys more than signing in would; typing: one user's typing rate.
    fn default() -> Self {
        Self { connects_per_minute: 10, turns_per_minute: 20, typing_per_minute: 60 }
    }
}

impl Default for LimitConfig {
    /// A shopper types a message every 10-30 s and a turn costs ~1,500-2,500 tokens: 20 messages a minute
    /// and 200k tokens a day (about 100 turns) leave a real shopper far from the limits and bound what one
    /// stolen token can spend. Guests get a third of the rate and a tenth of the budget.
    fn default() -> Self {
        Self {
            user: Tier { requests_per_minute: 20, tokens_per_day: 200_000, connections: 5 },
            guest: Tier { requests_per_minute: 6, tokens_per_day: 20_000, connections: 2 },
            deadline: Duration::from_millis(150),
            // The page sends one after each pause in typing (debounced, 300 ms): a shopper typing
            // continuously pauses a few times per message, so one a second is far above real use and
            // bounds what a scripted client can make the sources do.
            typing_per_minute: 60,
            guest_address: AddressLimits::default(),
        }
    }
}

impl LimitConfig {
    pub fn tier(&self, p: &Principal) -> Tier {
        if p.guest { self.guest } else { self.user }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another turn of this connection is streaming.
    Busy,
    /// Over the request rate or the day's token budget: try again after this long.
    RateLimited { retry_after_ms: u64, budget: bool },
}

impl Refusal {
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Busy => ErrorCode::Busy,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }

    /// The sentence the client sees.
    pub fn message(self) -> &'static str {
        match self {
            Self::Busy => "another message of this connection is still being answered; send this one after it",
            Self::RateLimited { budget: false, .. } => "too many messages; please wait a moment",
            Self::RateLimited { budget: true, .. } => "today's chat allowance is used up; it renews at midnight JST",
        }
    }

    pub fn retry_after_ms(self) -> Option<u64> {
        match self {
            Self::Busy => None,
            Self::RateLimited { retry_after_ms, .. } => Some(retry_after_ms),
        }
    }
}

/// What admission decided: whether the turn took the connection's turn slot (to free when it ends; a slot
/// write that failed or timed out may still have landed, so it counts as taken), and the refusal, if any.
/// A refused turn may hold the slot too: whoever ends the turn frees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub slot: bool,
    pub refusal: Option<Refusal>,
}

/// The counters of one user.
pub struct Limiter<'a, St, C> {
    pub store: &'a St,
    pub clock: &'a C,
    pub cfg: &'a LimitConfig,
}

fn counter(user: &UserId, key: CounterKey) -> Counter {
    Counter::new(user, key)
}

/// `who`'s address counter of `key`, when `who` is a guest whose address the event gave.
fn guest_address(who: &Principal, key: CounterKey) -> Option<Counter> {
    let addr = who.addr.filter(|_| who.guest)?;
    Some(Counter::of_address(addr, key))
}

fn flat<T>(r: Result<Result<T, StoreError>, DeadlineExceeded>) -> Result<T, StoreError> {
    r.map_err(StoreError::from).and_then(|r| r)
}

impl<St: Store, C: Clock> Limiter<'_, St, C> {
    /// Admits one `sendMessage`: takes the connection's turn slot until `slot_for` has passed, counts the
    /// request in its minute, and checks the day's tokens, the three side by side.
    pub async fn admit(&self, conn: &ConnectionId, msg: &MessageId, who: &Principal, slot_for: Duration) -> Admission {
        let now = self.clock.now_ms();
        let tier = self.cfg.tier(who);
        let until = now + u64::try_from(slot_for.as_millis()).unwrap_or(u64::MAX / 2);
        let minute = now / MINUTE_MS;
        let (day, day_left) = jst_day(now);
        let rate = counter(&who.user, CounterKey::Rate { minute });
        let tokens = counter(&who.user, CounterKey::Tokens { jst_day: day });
        let d = self.cfg.deadline;
        let rate_limit = Some(i64::from(tier.requests_per_minute));
        let address = guest_address(who, CounterKey::GuestTurns { minute });
        let address_limit = i64::from(self.cfg.guest_address.turns_per_minute);
        let (slot, counted, spent, from_address) = tokio::join!(
            within("turn slot", d, self.store.begin_turn(conn, msg, now, until)),
            within("rate counter", d, self.store.add_to_counter(&rate, 1, rate_limit, rate.expires_at(now))),
            within("token counter", d, self.store.counter(&tokens)),
            self.count_address(address.as_ref(), address_limit, now),
        );
        let (slot, counted, spent) = (flat(slot), flat(counted), flat(spent));
        let slot = match slot {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(code = e.code(), error = %chain(&e), "turn slot unavailable; admitting");
                true
            }
        };
        let refusal = if !slot {
            Some(Refusal::Busy)
        } else if matches!(counted, Ok(None)) || !from_address {
            Some(Refusal::RateLimited { retry_after_ms: MINUTE_MS - now % MINUTE_MS, budget: false })
        } else if spent.as_ref().is_ok_and(|&t| u64::try_from(t).unwrap_or(0) >= tier.tokens_per_day) {
            Some(Refusal::RateLimited { retry_after_ms: day_left, budget: true })
        } else {
            None
        };
        for (what, e) in [("rate", counted.err()), ("token budget", spent.err())] {
            if let Some(e) = e {
                tracing::error!(what, code = e.code(), error = %chain(&e), "limit counter unavailable; admitting");
            }
        }
        Admission { slot, refusal }
    }

    /// Frees the connection's turn slot (retried: a slot left behind answers the connection `busy` until
    /// the turn's deadline passes).
    pub async fn release(&self, conn: &ConnectionId, msg: &MessageId) {
        if let Err(e) = retry_store("turn slot", 4, || self.store.end_turn(conn, msg)).await {
            // The slot expires on its own at the turn's deadline.
            tracing::error!(code = e.code(), error = %chain(&e), "could not free the turn slot");
        }
    }

    /// Counts model tokens spent for `who` (a turn's, or work done for them off the turn) against their day.
    pub async fn spend(&self, who: &Principal, tokens: u64) {
        self.spend_for(&who.user, tokens).await;
    }

    /// [`Limiter::spend`] for a user known only by id (the prefetch worker's jobs).
    pub async fn spend_for(&self, user: &UserId, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let now = self.clock.now_ms();
        let c = counter(user, CounterKey::Tokens { jst_day: jst_day(now).0 });
        let delta = i64::try_from(tokens).unwrap_or(i64::MAX);
        // Not retried: an `ADD` whose reply was lost may have landed, and counting twice refuses a shopper.
        if let Err(e) = self.store.add_to_counter(&c, delta, None, c.expires_at(now)).await {
            tracing::error!(code = e.code(), error = %chain(&e), tokens, "could not count the tokens spent");
        }
    }

    /// Whether `user` has tokens left today under `tier` (bounded; a table that cannot say admits: see the
    /// module docs).
    pub async fn has_tokens_left(&self, user: &UserId, tier: Tier) -> bool {
        self.has_room(user, tier, 0).await
    }

    /// Whether `user` has more than `reserve` tokens left today under `tier` (a turn in progress reserves
    /// what it may still spend; bounded, and a table that cannot say admits, as above).
    pub async fn has_room(&self, user: &UserId, tier: Tier, reserve: u64) -> bool {
        let now = self.clock.now_ms();
        let c = counter(user, CounterKey::Tokens { jst_day: jst_day(now).0 });
        match flat(within("token counter", self.cfg.deadline, self.store.counter(&c)).await) {
            Ok(spent) => u64::try_from(spent).unwrap_or(0).saturating_add(reserve) < tier.tokens_per_day,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %chain(&e), "token counter unavailable; admitting");
                true
            }
        }
    }

    /// Counts one more event on a guest address's counter, under `limit`: `false` when over it. No counter
    /// (not a guest, or no address) and a table that cannot answer admit (logged).
    async fn count_address(&self, c: Option<&Counter>, limit: i64, now: u64) -> bool {
        let Some(c) = c else { return true };
        let add = self.store.add_to_counter(c, 1, Some(limit), c.expires_at(now));
        match flat(within("address counter", self.cfg.deadline, add).await) {
            Ok(counted) => counted.is_some(),
            Err(e) => {
                tracing::error!(code = e.code(), error = %chain(&e), "address counter unavailable; admitting");
                true
            }
        }
    }

    /// Admits one `typing` frame of `who` against the user's typing rate (all connections together), the
    /// address's when a guest, and the user's day: a user with no tokens left cannot send the message the
    /// speculation prepares. Unlike a message, a typing frame is refused when the rate cannot be read:
    /// speculation is optional work.
    pub async fn admit_typing(&self, who: &Principal) -> bool {
        let now = self.clock.now_ms();
        let minute = now / MINUTE_MS;
        let c = counter(&who.user, CounterKey::Typing { minute });
        let limit = Some(i64::from(self.cfg.typing_per_minute));
        let add =
            within("typing counter", self.cfg.deadline, self.store.add_to_counter(&c, 1, limit, c.expires_at(now)));
        let address = guest_address(who, CounterKey::GuestTyping { minute });
        let address_limit = i64::from(self.cfg.guest_address.typing_per_minute);
        let tier = self.cfg.tier(who);
        let (counted, from_address, left) = tokio::join!(
            add,
            self.count_address(address.as_ref(), address_limit, now),
            self.has_tokens_left(&who.user, tier),
        );
        match flat(counted) {
            Ok(counted) => counted.is_some() && from_address && left,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %chain(&e), "typing counter unavailable; not speculating");
                false
            }
        }
    }

    /// `$connect`: counts one more open connection of the user; `false` when at the cap, or (a guest) when
    /// the address has connected guests too often this minute.
    pub async fn open_connection(&self, who: &Principal) -> bool {
        let now = self.clock.now_ms();
        let address = guest_address(who, CounterKey::GuestConnects { minute: now / MINUTE_MS });
        let address_limit = i64::from(self.cfg.guest_address.connects_per_minute);
        if !self.count_address(address.as_ref(), address_limit, now).await {
            tracing::info!(addr = ?who.addr, "refused: guest connects from this address this minute");
            return false;
        }
        let c = counter(&who.user, CounterKey::Connections);
        // API Gateway closes a WebSocket connection after 2 hours at most: a count that missed its
        // `$disconnect` heals when the item expires.
        let limit = i64::from(self.cfg.tier(who).connections);
        match self.store.add_to_counter(&c, 1, Some(limit), c.expires_at(now)).await {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(e) => {
                tracing::error!(code = e.code(), error = %chain(&e), "connection counter unavailable; admitting");
                true
            }
        }
    }

    /// `$disconnect`: one connection fewer.
    pub async fn close_connection(&self, user: &UserId) {
        let now = self.clock.now_ms();
        let c = counter(user, CounterKey::Connections);
        if let Err(e) = self.store.add_to_counter(&c, -1, None, c.expires_at(now)).await {
            tracing::warn!(error = %chain(&e), "could not count the connection closed");
        }
    }
}

/// Where the tokens of work done for a user outside the chat turn are counted (the prefetch worker's
/// pre-generated answers): the user's day, as their turns are.
pub trait TokenLedger: Send + Sync {
    /// Whether the user (a guest or not) has tokens left today; a ledger that cannot say answers `true`.
    fn has_tokens_left(&self, user: &UserId, guest: bool) -> impl Future<Output = bool> + Send;
    /// Counts `tokens` against the user's day.
    fn spend(&self, user: &UserId, tokens: u64) -> impl Future<Output = ()> + Send;
}

/// The users' day in the store, under these limits.
#[derive(Debug)]
pub struct StoreLedger<St, C> {
    pub store: St,
    pub clock: C,
    pub cfg: LimitConfig,
}

impl<St: Store, C: Clock> TokenLedger for StoreLedger<St, C> {
    async fn has_tokens_left(&self, user: &UserId, guest: bool) -> bool {
        let l = Limiter { store: &self.store, clock: &self.clock, cfg: &self.cfg };
        let tier = if guest { self.cfg.guest } else { self.cfg.user };
        l.has_tokens_left(user, tier).await
    }

    async fn spend(&self, user: &UserId, tokens: u64) {
        Limiter { store: &self.store, clock: &self.clock, cfg: &self.cfg }.spend_for(user, tokens).await;
    }
}

/// No ledger: nothing is counted (a prefetch worker without the table).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl TokenLedger for NoLedger {
    async fn has_tokens_left(&self, _: &UserId, _: bool) -> bool {
        true
    }
    async fn spend(&self, _: &UserId, _: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::memory::MemoryStore;
    use crate::testkit::TestClock;

    fn ids(c: &str, m: &str) -> (ConnectionId, MessageId) {
        (ConnectionId::parse(c).unwrap(), MessageId::parse(m).unwrap())
    }

    #[test]
    fn the_jst_day_turns_at_15_00_utc() {
        let utc_14_59 = 14 * 3600 * 1000 + 59 * 60_000;
        let (d1, left) = jst_day(utc_14_59);
        assert_eq!(left, 60_000);
        assert_eq!(jst_day(utc_14_59 + 60_000).0, d1 + 1);
    }

    #[tokio::test]
    async fn one_turn_per_connection_a_rate_per_minute_and_a_daily_budget() {
        let store = MemoryStore::default();
        let clock = TestClock::at(10 * MINUTE_MS + 1_000);
        let cfg = LimitConfig {
            user: Tier { requests_per_minute: 3, tokens_per_day: 1_000, connections: 1 },
            ..LimitConfig::default()
        };
        let l = Limiter { store: &store, clock: &clock, cfg: &cfg };
        let who = Principal::user(UserId::parse("u1").unwrap());
        let slot = Duration::from_secs(30);
        let (c, m1) = ids("c1", "m1");
        assert_eq!(l.admit(&c, &m1, &who, slot).await, Admission { slot: true, refusal: None });
        let (_, m2) = ids("c1", "m2");
        assert_eq!(l.admit(&c, &m2, &who, slot).await, Admission { slot: false, refusal: Some(Refusal::Busy) });
        l.release(&c, &m1).await;
        assert_eq!(l.admit(&c, &m2, &who, slot).await.refusal, None);
        l.release(&c, &m2).await;
        // The third request of the minute was the busy one: the fourth is over the rate. A refused turn
        // that took the slot says so: whoever ends the turn frees it.
        let (_, m3) = ids("c1", "m3");
        let refused = Refusal::RateLimited { retry_after_ms: 59_000, budget: false };
        assert_eq!(l.admit(&c, &m3, &who, slot).await, Admission { slot: true, refusal: Some(refused) });
        assert!(!store.begin_turn(&c, &m2, clock.now_ms(), clock.now_ms() + 1).await.unwrap(), "still held");
        l.release(&c, &m3).await;
        assert!(store.begin_turn(&c, &m2, clock.now_ms(), clock.now_ms() + 1).await.unwrap(), "slot freed");
        store.end_turn(&c, &m2).await.unwrap();
        clock.advance(Duration::from_millis(MINUTE_MS));
        l.spend(&who, 1_000).await;
        match l.admit(&c, &m3, &who, slot).await.refusal {
            Some(Refusal::RateLimited { budget: true, retry_after_ms }) => assert!(retry_after_ms <= 86_400_000),
            other => panic!("{other:?}"),
        }
        let guest = Principal::guest(UserId::parse("g1").unwrap());
        assert!(l.open_connection(&guest).await && l.open_connection(&guest).await);
        assert!(!l.open_connection(&guest).await, "guests: 2 connections");
        l.close_connection(&guest.user).await;
        assert!(l.open_connection(&guest).await);
    }

    #[tokio::test]
    async fn typing_frames_are_counted_per_user_across_connections_and_stop_with_the_day() {
        let store = MemoryStore::default();
        let clock = TestClock::at(10 * MINUTE_MS + 1_000);
        let cfg = LimitConfig {
            typing_per_minute: 2,
            user: Tier { tokens_per_day: 1_000, ..LimitConfig::default().user },
            ..LimitConfig::default()
        };
        let l = Limiter { store: &store, clock: &clock, cfg: &cfg };
        let who = Principal::user(UserId::parse("u1").unwrap());
        // Whichever connection they come from: one user, one rate.
        assert!(l.admit_typing(&who).await && l.admit_typing(&who).await);
        assert!(!l.admit_typing(&who).await, "the third typing frame of the minute is dropped");
        let other = Principal::user(UserId::parse("u2").unwrap());
        assert!(l.admit_typing(&other).await, "another user has their own");
        clock.advance(Duration::from_millis(MINUTE_MS));
        assert!(l.admit_typing(&who).await, "a new minute");
        l.spend(&who, 1_000).await;
        assert!(!l.admit_typing(&who).await, "no tokens left today: nothing to speculate for");
        // The message rate is untouched by typing.
        let (c, m) = ids("c1", "m1");
        let admitted = l.admit(&c, &m, &other, Duration::from_secs(30)).await;
        assert_eq!(admitted.refusal, None);
    }

    #[tokio::test]
    async fn guests_are_held_to_per_address_caps_whatever_token_they_hold() {
        let store = MemoryStore::default();
        let clock = TestClock::at(10 * MINUTE_MS + 1_000);
        let cfg = LimitConfig {
            guest_address: AddressLimits { connects_per_minute: 3, turns_per_minute: 2, typing_per_minute: 2 },
            ..LimitConfig::default()
        };
        let l = Limiter { store: &store, clock: &clock, cfg: &cfg };
        let addr = crate::ids::SourceAddr::parse("203.0.113.7").ok();
        let guest = |n: usize| Principal::guest(UserId::parse(format!("g{n}")).unwrap()).from_addr(addr);
        // A fresh guest token per connection: the address is what is counted.
        let l = &l;
        let opened: Vec<bool> = futures_util::future::join_all((0..5).map(|n| async move {
            let g = guest(n);
            l.open_connection(&g).await
        }))
        .await;
        assert_eq!(opened.iter().filter(|o| **o).count(), 3, "{opened:?}");
        let slot = Duration::from_secs(30);
        let mut refused = 0;
        for n in 0..4 {
            let (c, m) = ids(&format!("c{n}"), &format!("m{n}"));
            if l.admit(&c, &m, &guest(10 + n), slot).await.refusal.is_some() {
                refused += 1;
            }
        }
        assert_eq!(refused, 2, "two guest messages a minute from the address");
        assert!(l.admit_typing(&guest(20)).await && l.admit_typing(&guest(21)).await);
        assert!(!l.admit_typing(&guest(22)).await);
        // Signed-in users are never counted by address, nor guests from elsewhere.
        let user = Principal::user(UserId::parse("u1").unwrap()).from_addr(addr);
        assert!(l.open_connection(&user).await);
        let (c, m) = ids("c9", "m9");
        assert_eq!(l.admit(&c, &m, &user, slot).await.refusal, None);
        let elsewhere = Principal::guest(UserId::parse("g99").unwrap())
            .from_addr(crate::ids::SourceAddr::parse("198.51.100.1").ok());
        assert!(l.open_connection(&elsewhere).await);
        clock.advance(Duration::from_millis(MINUTE_MS));
        assert!(l.open_connection(&guest(30)).await, "a new minute");
    }
}
