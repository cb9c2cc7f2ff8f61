//! Hedging the first token (issue 26): when a turn's first token is late, a second `ConverseStream` on the
//! plan's next route races the first, whichever yields a text delta first answers, and the other is dropped
//! (dropping a model stream cancels its request). The race itself runs in [`super::routes::open_hedged`],
//! inside the failover rule; this module decides *whether* and *when* to hedge, from what this container
//! has seen.
//!
//! - **When**: after the hedge delay, [`HedgeDelay::Learned`] by default: the p90 of the route's recent
//!   first-token times, learned per container from the last [`SAMPLES`] turns routed there (the time each
//!   turn waited, its first request sent to its first text served), and, until [`MIN_SAMPLES`] turns were
//!   seen, the configured initial delay. Or a fixed delay ([`HedgeDelay::Fixed`], `HEDGE_DELAY_MS`).
//!   A hedge that wins caps what its turn waited, but not below the delay itself, so the samples above the
//!   p90 stay above it and the learned p90 does not drift down with hedging.
//! - **Where**: the plan's next entry (the same model's other inference profile, or the fallback model);
//!   with a one-route plan there is nothing to hedge on.
//! - **Never** while either route was throttled in this container within [`HedgeConfig::throttle_window`]:
//!   both calls draw on the same quota, and a hedge would only deepen the throttle. Never for a failover
//!   (after a failed attempt the next stream is already the second one).
//! - **At most a share of turns**: a token bucket that every turn fills by [`HedgeConfig::share`] and every
//!   hedge empties by one, holding at most [`HedgeConfig::burst`] hedges: over `n` turns, at most
//!   `burst + share x n` are hedged. The burst matters: the turns later than the p90 come at random, so a
//!   bucket of one is often empty when a slow one comes (it halves the hedges a 10% share allows, and a
//!   tail event then goes unhedged half the time); five in hand hedge nearly all of them.
//!
//! What a hedge costs is counted per turn ([`Hedged`]): the loser's request is billed at least its input
//! (Bedrock does not say what a cancelled stream bills; its output is nothing we saw: a loser has produced no
//! text by definition, or it would have won).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// First-token times kept per route: the last 200 turns (a few minutes of a busy container, the last hours
/// of a quiet one).
pub const SAMPLES: usize = 200;
/// Turns a route must have served before its learned p90 is used (below it, the p90 is one of the few
/// slowest samples, i.e. noise).
pub const MIN_SAMPLES: usize = 20;

/// The hedge delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelay {
    /// The route's recent p90 first-token time; `initial` until [`MIN_SAMPLES`] turns were seen.
    Learned { initial: Duration },
    /// Always this long.
    Fixed(Duration),
}

/// Hedging settings (`HEDGE`, `HEDGE_DELAY_MS`, `HEDGE_INITIAL_DELAY_MS`, `HEDGE_SHARE`, `HEDGE_BURST`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    pub enabled: bool,
    pub delay: HedgeDelay,
    /// The share of turns that may be hedged (0..=1).
    pub share: f64,
    /// The most hedges the bucket holds (at least 1).
    pub burst: u32,
    /// A throttle seen on a route within this long stops hedges on it.
    pub throttle_window: Duration,
}

impl Default for HedgeConfig {
    /// On, at the learned p90 (1 s until learned: about Claude Haiku 4.5's published first token, 0.5-0.9 s,
    /// plus a margin), for at most 10% of turns with up to 5 in hand, not within 30 s of a throttle.
    fn default() -> Self {
        Self {
            enabled: true,
            delay: HedgeDelay::Learned { initial: Duration::from_secs(1) },
            share: 0.1,
            burst: 5,
            throttle_window: Duration::from_secs(30),
        }
    }
}

impl HedgeConfig {
    /// Hedging off.
    pub fn off() -> Self {
        Self { enabled: false, ..Self::default() }
    }
}

/// What hedging did in one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hedged {
    /// A second stream was started.
    pub started: bool,
    /// The second stream answered (first, or after the first failed).
    pub won: bool,
    /// A stream was dropped while it was still running: its input was spent for nothing.
    pub loser_cancelled: bool,
}

/// What this container has seen, for the hedging decisions: first-token times and throttles per route
/// (model id or ARN), and the token bucket. One per container, shared by its turns.
#[derive(Debug)]
pub struct Hedger {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    first_tokens: HashMap<String, VecDeque<Duration>>,
    throttled_at: HashMap<String, Instant>,
    /// Hedges available now, in millionths of a hedge ([`WHOLE`] is one); integers, so that ten turns at
    /// 10% make exactly one hedge.
    tokens: u64,
}

/// One hedge, in the bucket's units.
const WHOLE: u64 = 1_000_000;

impl Default for Hedger {
    /// Nothing seen yet; one hedge available.
    fn default() -> Self {
        Self { state: Mutex::new(State { first_tokens: HashMap::new(), throttled_at: HashMap::new(), tokens: WHOLE }) }
    }
}

impl Hedger {
    /// A turn that may hedge starts: the bucket gains [`HedgeConfig::share`] of a hedge, up to
    /// [`HedgeConfig::burst`] hedges.
    pub fn turn(&self, cfg: &HedgeConfig) {
        if let Ok(mut s) = self.state.lock() {
            // In 0..=WHOLE after the clamp: the cast neither truncates nor wraps.
            let add = (cfg.share.clamp(0.0, 1.0) * WHOLE as f64).round() as u64;
            s.tokens = (s.tokens + add).min(WHOLE * u64::from(cfg.burst.max(1)));
        }
    }

    /// A turn routed to `route` waited `took` for its first text (its first request sent -> text served).
    pub fn first_token(&self, route: &str, took: Duration) {
        if let Ok(mut s) = self.state.lock() {
            let samples = s.first_tokens.entry(route.to_owned()).or_default();
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(took);
        }
    }

    /// `route` answered with a throttle.
    pub fn throttled(&self, route: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.throttled_at.insert(route.to_owned(), Instant::now());
        }
    }

    /// When to hedge a request to `route` on `alternate`, from its send: `None` when hedging is off or either
    /// route was throttled lately. (Whether the bucket allows it is asked when the delay has passed:
    /// [`Hedger::take`].)
    pub fn delay(&self, cfg: &HedgeConfig, route: &str, alternate: &str) -> Option<Duration> {
        if !cfg.enabled {
            return None;
        }
        let s = self.state.lock().ok()?;
        if s.throttling(route, cfg.throttle_window) || s.throttling(alternate, cfg.throttle_window) {
            return None;
        }
        Some(match cfg.delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Learned { initial } => s.p90(route).unwrap_or(initial),
        })
    }

    /// The delay has passed without a first token: whether to hedge now (neither route throttled since, and
    /// a hedge left in the bucket, which this takes).
    pub fn take(&self, cfg: &HedgeConfig, route: &str, alternate: &str) -> bool {
        let Ok(mut s) = self.state.lock() else { return false };
        if s.throttling(route, cfg.throttle_window) || s.throttling(alternate, cfg.throttle_window) || s.tokens < WHOLE
        {
            return false;
        }
        s.tokens -= WHOLE;
        true
    }

    /// The learned p90 of `route`, once [`MIN_SAMPLES`] turns were seen.
    pub fn learned_p90(&self, route: &str) -> Option<Duration> {
        self.state.lock().ok()?.p90(route)
    }
}

impl State {
    fn throttling(&self, route: &str, window: Duration) -> bool {
        self.throttled_at.get(route).is_some_and(|at| at.elapsed() < window)
    }

    fn p90(&self, route: &str) -> Option<Duration> {
        let samples = self.first_tokens.get(route).filter(|s| s.len() >= MIN_SAMPLES)?;
        let mut v: Vec<Duration> = samples.iter().copied().collect();
        // Nearest rank: the smallest sample with at least 90% of the samples at or below it.
        let rank = (v.len() * 9).div_ceil(10).clamp(1, v.len()) - 1;
        Some(*v.select_nth_unstable(rank).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_delay_is_the_initial_one_until_enough_turns_then_the_routes_p90() {
        let (h, cfg) = (Hedger::default(), HedgeConfig::default());
        for i in 1..MIN_SAMPLES as u64 {
            h.first_token("m", ms(i * 10));
        }
        assert_eq!(h.delay(&cfg, "m", "fb"), Some(Duration::from_secs(1)), "19 turns: still the initial delay");
        h.first_token("m", ms(200));
        // 10, 20, ..., 190, 200: the 18th of 20 is the p90.
        assert_eq!(h.delay(&cfg, "m", "fb"), Some(ms(180)));
        assert_eq!(h.delay(&cfg, "other", "fb"), Some(Duration::from_secs(1)), "learned per route");
        let fixed = HedgeConfig { delay: HedgeDelay::Fixed(ms(700)), ..cfg };
        assert_eq!(h.delay(&fixed, "m", "fb"), Some(ms(700)));
        assert_eq!(h.delay(&HedgeConfig::off(), "m", "fb"), None);
    }

    #[test]
    fn only_the_last_turns_are_kept() {
        let h = Hedger::default();
        for _ in 0..SAMPLES {
            h.first_token("m", ms(5_000));
        }
        for _ in 0..SAMPLES {
            h.first_token("m", ms(100));
        }
        assert_eq!(h.learned_p90("m"), Some(ms(100)), "the slow turns have aged out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_on_either_route_stops_hedging_for_the_window() {
        let (h, cfg) = (Hedger::default(), HedgeConfig::default());
        h.throttled("fb");
        assert_eq!(h.delay(&cfg, "m", "fb"), None);
        assert!(!h.take(&cfg, "m", "fb"));
        assert!(h.delay(&cfg, "m", "other").is_some(), "another pair of routes may still hedge");
        tokio::time::advance(cfg.throttle_window).await;
        assert!(h.delay(&cfg, "m", "fb").is_some());
        assert!(h.take(&cfg, "m", "fb"));
    }

    #[test]
    fn the_bucket_allows_one_hedge_then_a_share_of_turns() {
        let (h, cfg) = (Hedger::default(), HedgeConfig::default());
        let mut hedges = 0;
        for _ in 0..1_000 {
            h.turn(&cfg);
            hedges += usize::from(h.take(&cfg, "m", "fb"));
        }
        // The one in hand at the start, then one per ten turns: 1 + 0.1 n.
        assert_eq!(hedges, 101, "1,000 turns that all wanted a hedge at a 10% share");
    }

    #[test]
    fn quiet_turns_save_up_to_the_burst_and_no_more() {
        let (h, cfg) = (Hedger::default(), HedgeConfig::default());
        for _ in 0..1_000 {
            h.turn(&cfg);
        }
        // Then slow turns in a row: the five saved, then one per ten turns again (the first of them added
        // nothing to a full bucket).
        let mut took = Vec::new();
        for _ in 0..30 {
            h.turn(&cfg);
            took.push(h.take(&cfg, "m", "fb"));
        }
        assert!(took[..5].iter().all(|t| *t), "{took:?}");
        assert_eq!(took.iter().filter(|t| **t).count(), 5 + 2, "{took:?}");
        assert!(took[10] && took[20], "{took:?}");
        let one = HedgeConfig { burst: 1, ..cfg };
        let h = Hedger::default();
        for _ in 0..100 {
            h.turn(&one);
        }
        assert!(h.take(&one, "m", "fb"));
        assert!(!h.take(&one, "m", "fb"), "a burst of one holds one");
    }
}
