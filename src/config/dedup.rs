//! `[dedup]`: where event ids are remembered, and the Redis server hookgate uses.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// Where claimed and committed event ids are kept.
pub enum StoreKind {
    /// In this process only: right for one replica.
    Memory,
    /// In Redis: shared by every replica.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// What a request gets when the dedup store cannot answer.
pub enum OnStoreError {
    /// `503 unavailable`: the sender retries later (the default).
    Reject,
    /// Forward without dedup: availability before exactly-once.
    Accept,
}

/// `redis_url`: one URL for a single node, or a list of node URLs for Redis Cluster. Its `Debug` hides any
/// password in the URLs, so that a logged config never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisUrls {
    /// One Redis node.
    One(String),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl fmt::Debug for RedisUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls().into_iter().map(redact).collect();
        match self {
            RedisUrls::One(_) => f.debug_tuple("One").field(&urls[0]).finish(),
            RedisUrls::Cluster(_) => f.debug_tuple("Cluster").field(&urls).finish(),
        }
    }
}

/// The URL with the user-info part (`user:password@`) replaced, when there is one.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl RedisUrls {
    /// `HOOKGATE_REDIS_URL`, when set, overrides the file: one URL, or several separated by commas for a
    /// cluster.
    pub fn or_env(self) -> Self {
        match std::env::var("HOOKGATE_REDIS_URL") {
            Ok(value) if value.contains(',') => {
                RedisUrls::Cluster(value.split(',').map(|u| u.trim().to_owned()).collect())
            }
            Ok(value) if !value.trim().is_empty() => RedisUrls::One(value.trim().to_owned()),
            _ => self,
        }
    }

    /// Every URL, one for a single node.
    pub fn urls(&self) -> Vec<&str> {
        match self {
            RedisUrls::One(url) => vec![url.as_str()],
            RedisUrls::Cluster(urls) => urls.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
/// The `[dedup]` section: where event ids are kept, for how long, and what a store error means.
pub struct DedupConfig {
    /// `memory` (one process, the default) or `redis` (shared by replicas).
    pub store: StoreKind,
    /// Redis for `store = "redis"`: a URL (`redis://`, or `rediss://` for TLS; a password goes in the URL),
    /// or a list of node URLs for Redis Cluster. `HOOKGATE_REDIS_URL` overrides it. Default
    /// `redis://127.0.0.1:6379`. Needs Redis 7.0 or later.
    pub redis_url: RedisUrls,
    /// For `rediss://` with a private CA: the PEM file of the CA that signed the Redis server's
    /// certificate. Default: none, the public web roots are trusted. Certificates are always verified.
    pub redis_ca_file: Option<PathBuf>,
    /// First part of every Redis key: `{key_prefix}:dedup:{source}:{hash}`. Default `hg`.
    pub key_prefix: String,
    /// How long a delivered event id is remembered. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a claim may stay in flight before it frees itself (after a crash). Must exceed every
    /// source's forward timeout. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Longest wait for any Redis call (the store's and the queue's), from the moment it is made, queueing
    /// and a resend after a dropped connection included: a hung store must not hang requests. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory store only: the most ids kept. Past it the oldest delivered ids are forgotten first; in-flight
    /// ones never are. Default 100000.
    pub max_keys: usize,
    /// What to do when the store cannot be reached: `reject` (503, the default) or `accept` (no dedup).
    pub on_store_error: OnStoreError,
    /// How long the store must have been unreachable before `/readyz` fails on it. A blip must not take
    /// every replica out of the load balancer at once (a total outage instead of 503s), and with
    /// `on_store_error = "accept"` readiness never fails on the store. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub unready_after: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            redis_url: RedisUrls::One("redis://127.0.0.1:6379".to_owned()),
            redis_ca_file: None,
            key_prefix: "hg".to_owned(),
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            max_keys: 100_000,
            on_store_error: OnStoreError::Reject,
            unready_after: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_password() {
        let one = RedisUrls::One("rediss://default:hunter2-secret@redis.internal:6380/0".into());
        let text = format!("{one:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis.internal:6380/0"), "{text}");
        let cluster = RedisUrls::Cluster(vec!["redis://:pw-one@a:7000".into(), "redis://b:7001".into()]);
        let text = format!("{cluster:?}");
        assert!(!text.contains("pw-one") && text.contains("redis://b:7001"), "{text}");
    }
}
