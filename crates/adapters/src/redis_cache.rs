//! The core's `Cache` over Redis or Valkey (ElastiCache Serverless in production), with `fred`.
//!
//! - `get_many` is one `MGET`. In cluster mode (ElastiCache Serverless always is) a multi-key command must
//!   stay within one hash slot, so keys are grouped by slot, one `MGET` per slot is sent concurrently, and the
//!   answers are put back in the caller's order.
//! - `set` is `SET key value PX ttl`; `set_if_absent` is `SET key value PX ttl NX`.
//! - Every command runs under `command_timeout` and fails fast while the connection is down: a cache that is
//!   away costs a turn one `Unavailable` error (a miss), never a wait for reconnection.
//! - The connection is driven by a background task that reconnects by itself with jittered exponential
//!   backoff, forever, including when Redis is down at start-up. Dropping the cache stops that task.
//!
//! URLs: `redis://host:port` or `rediss://host:port` (TLS over rustls with the system's root certificates;
//! ElastiCache Serverless requires TLS), optionally with `user:password@`.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::{
    Builder, ClientLike, Config, Error as RedisError, ErrorKind, Expiration, KeysInterface, Options, ReconnectPolicy,
    SetOptions, Value as RedisValue,
};
use futures_util::future::try_join_all;
use mangaassist_core::ports::sources::{Cache, SourceError};

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS).
    pub url: String,
    /// Cluster mode (ElastiCache Serverless, or a cluster-mode-enabled replication group).
    pub cluster: bool,
    /// Deadline of one command, the whole round trip.
    pub command_timeout: Duration,
    /// Deadline of one connection attempt, TLS handshake included.
    pub connect_timeout: Duration,
    /// Ceiling of the reconnection backoff.
    pub reconnect_max_delay: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>, cluster: bool) -> Self {
        Self {
            url: url.into(),
            cluster,
            command_timeout: Duration::from_millis(150),
            connect_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(2),
        }
    }
}

/// A cache that cannot be set up (a bad URL, no Tokio runtime, TLS roots unreadable).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid Redis configuration")]
    Config(#[source] RedisError),
    #[error("the Redis URL must start with redis:// or rediss://, not {0:?}")]
    Scheme(String),
    #[error("the Redis cache must be created inside a Tokio runtime")]
    NoRuntime,
}

/// `Cache` over Redis.
#[derive(Debug)]
pub struct RedisCache {
    client: fred::clients::Client,
    /// A second connection for blocking reads (`XREAD BLOCK`), which would hold up everything multiplexed on
    /// the first.
    blocking: fred::clients::Client,
    blocking_task: tokio::task::JoinHandle<Result<(), RedisError>>,
    options: Options,
    cluster: bool,
    timeout: Duration,
    task: tokio::task::JoinHandle<Result<(), RedisError>>,
}

impl Drop for RedisCache {
    fn drop(&mut self) {
        // The connection tasks would otherwise keep reconnecting for a client nobody can use.
        self.task.abort();
        self.blocking_task.abort();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl RedisCache {
    /// Starts connecting in the background and returns at once; see [`Self::wait_connected`].
    pub fn connect(config: &RedisConfig) -> Result<Self, RedisSetupError> {
        let scheme = config.url.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "redis" | "rediss" | "valkey" | "valkeys") {
            return Err(RedisSetupError::Scheme(scheme.to_owned()));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisSetupError::NoRuntime);
        }
        if matches!(scheme, "rediss" | "valkeys") {
            // fred builds its TLS config with the process-wide rustls provider; name it, so a second provider
            // compiled in by some other crate can never make that ambiguous (rustls would panic).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let mut fc =
            if config.cluster { Config::from_url_clustered(&config.url) } else { Config::from_url(&config.url) }
                .map_err(RedisSetupError::Config)?;
        // A Redis that is down at start-up is retried like one that went away later.
        fc.fail_fast = false;
        let mut policy = ReconnectPolicy::new_exponential(0, 50, millis_u32(config.reconnect_max_delay).max(50), 2);
        policy.set_jitter(50);
        let mut builder = Builder::from_config(fc);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.connect_timeout;
                c.max_command_attempts = 1;
                // ElastiCache can answer NOAUTH during maintenance; treat it as a dropped connection.
                c.reconnect_on_auth_error = true;
            })
            .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
            .set_policy(policy);
        let client = builder.build().map_err(RedisSetupError::Config)?;
        let task = client.connect();
        let blocking = client.clone_new();
        let blocking_task = blocking.connect();
        let options = Options {
            timeout: Some(config.command_timeout),
            max_attempts: Some(1),
            fail_fast: true,
            ..Options::default()
        };
        let timeout = config.command_timeout;
        Ok(Self { client, blocking, blocking_task, options, cluster: config.cluster, timeout, task })
    }

    /// Whether the connection (every node's, in cluster mode) is up now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Waits up to `within` for the connection to be up (for start-up, not for the turn's path).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The client with this cache's per-command options (timeout, one attempt, fail fast), for other ports
    /// sharing the connection (the transition counts).
    pub(crate) fn client(&self) -> fred::clients::WithOptions<fred::clients::Client> {
        self.client.with_options(&self.options)
    }

    /// The blocking connection, with a command timeout that covers a block of `block`.
    pub(crate) fn blocking_client(&self, block: Duration) -> fred::clients::WithOptions<fred::clients::Client> {
        self.blocking.with_options(&Options { timeout: Some(block + self.timeout), ..self.options.clone() })
    }

    /// Whether the blocking connection is up.
    pub(crate) fn blocking_connected(&self) -> bool {
        self.blocking.is_connected()
    }

    /// The deadline of one command.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) async fn bounded<T>(&self, fut: impl Future<Output = Result<T, RedisError>>) -> Result<T, SourceError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(res) => res.map_err(|e| source_error(e, self.timeout)),
            Err(_) => Err(SourceError::Timeout(millis(self.timeout))),
        }
    }

    async fn mget(&self, keys: Vec<String>) -> Result<Vec<Option<String>>, SourceError> {
        let n = keys.len();
        let client = self.client.with_options(&self.options);
        let value: RedisValue = self.bounded(client.mget(keys)).await?;
        decode_values(value, n)
    }
}

/// Maps a client error: a timeout is `Timeout`; a connection that is down, dropped, refused or being
/// redirected is `Unavailable`, and so is `fred`'s catch-all `Unknown`, which is what a command gets when the
/// connection vanished under it ("Failed to route command.") and what generic server errors (`LOADING`,
/// `OOM`) map to. A malformed reply, a wrong type or a bad argument or configuration is `Other`.
fn source_error(err: RedisError, timeout: Duration) -> SourceError {
    match err.kind() {
        ErrorKind::Timeout => SourceError::Timeout(millis(timeout)),
        ErrorKind::Protocol
        | ErrorKind::Parse
        | ErrorKind::InvalidArgument
        | ErrorKind::InvalidCommand
        | ErrorKind::Config
        | ErrorKind::Url
        | ErrorKind::NotFound => SourceError::Other(Box::new(err)),
        _ => SourceError::Unavailable(Box::new(err)),
    }
}

/// `MGET`'s array (or, for one key, possibly a bare value) as `n` optional strings.
fn decode_values(value: RedisValue, n: usize) -> Result<Vec<Option<String>>, SourceError> {
    let items = match value {
        RedisValue::Array(items) => items,
        other => vec![other],
    };
    if items.len() != n {
        return Err(SourceError::Other(format!("MGET answered {} values for {n} keys", items.len()).into()));
    }
    Ok(items
        .into_iter()
        .map(|v| match v {
            RedisValue::Null => None,
            RedisValue::String(s) => Some(s.to_string()),
            RedisValue::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
            other => other.as_string(),
        })
        .collect())
}

/// Positions of `keys` grouped by hash slot, in slot order.
fn group_by_slot(keys: &[String]) -> BTreeMap<u16, Vec<usize>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(fred::util::redis_keyslot(k.as_bytes())).or_default().push(i);
    }
    groups
}

impl Cache for RedisCache {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !self.cluster {
            return self.mget(keys.to_vec()).await;
        }
        let groups = group_by_slot(keys);
        if groups.len() == 1 {
            return self.mget(keys.to_vec()).await;
        }
        let answers = try_join_all(groups.values().map(|idx| {
            let group: Vec<String> = idx.iter().map(|&i| keys[i].clone()).collect();
            self.mget(group)
        }))
        .await?;
        let mut out = vec![None; keys.len()];
        for (idx, values) in groups.values().zip(answers) {
            for (&i, v) in idx.iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SourceError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let client = self.client.with_options(&self.options);
        let fut = client.set::<(), _, _>(key, value, Some(Expiration::PX(ttl_ms)), None, false);
        self.bounded(fut).await
    }

    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, SourceError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let client = self.client.with_options(&self.options);
        // `SET NX` answers `OK` when it set the key and nil when the key existed.
        let fut = client.set::<RedisValue, _, _>(key, value, Some(Expiration::PX(ttl_ms)), Some(SetOptions::NX), false);
        Ok(!self.bounded(fut).await?.is_null())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_different_slots_are_grouped_and_hash_tags_share_a_slot() {
        let keys: Vec<String> =
            ["product:A", "review:A", "{u1}:a", "{u1}:b", "product:A"].iter().map(|s| s.to_string()).collect();
        let groups = group_by_slot(&keys);
        let all: usize = groups.values().map(Vec::len).sum();
        assert_eq!(all, keys.len());
        let slot_of = |i: usize| groups.iter().find(|(_, v)| v.contains(&i)).map(|(s, _)| *s);
        assert_eq!(slot_of(2), slot_of(3));
        assert_eq!(slot_of(0), slot_of(4));
        assert_ne!(slot_of(0), slot_of(1));
    }

    #[test]
    fn mget_answers_decode_to_hits_and_misses_in_order() {
        let v = RedisValue::Array(vec![RedisValue::String("a".into()), RedisValue::Null]);
        assert_eq!(decode_values(v, 2).unwrap(), vec![Some("a".to_owned()), None]);
        assert_eq!(decode_values(RedisValue::Null, 1).unwrap(), vec![None]);
        assert!(decode_values(RedisValue::Array(vec![]), 1).is_err());
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            assert!(RedisCache::connect(&RedisConfig::new("http://127.0.0.1:1", false)).is_err());
        });
    }

    #[tokio::test]
    async fn a_tls_url_builds_a_client_without_a_server() {
        let cache = RedisCache::connect(&RedisConfig::new("rediss://127.0.0.1:1", true)).unwrap();
        assert!(!cache.is_connected());
        assert!(matches!(cache.get_many(&["a".to_owned()]).await, Err(SourceError::Unavailable(_))));
    }

    #[test]
    fn outside_a_runtime_the_cache_is_an_error_not_a_panic() {
        assert!(matches!(
            RedisCache::connect(&RedisConfig::new("redis://127.0.0.1:1", false)),
            Err(RedisSetupError::NoRuntime)
        ));
    }
}
