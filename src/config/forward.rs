//! `[source.forward]`: where a source's accepted events go.

use std::time::Duration;

use http::Uri;
use serde::Deserialize;

/// A downstream URL: `http://host[:port]/…`. TLS towards the downstream is not built in: the downstream
/// sits beside the gateway, and a sidecar or service mesh adds TLS where it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DownstreamUrl(Uri);

impl DownstreamUrl {
    /// The parsed URL.
    pub fn uri(&self) -> &Uri {
        &self.0
    }
}

impl TryFrom<String> for DownstreamUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, Self::Error> {
        url.parse()
    }
}

impl std::str::FromStr for DownstreamUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("`{url}` must be an http:// URL with a host"));
        }
        Ok(DownstreamUrl(uri))
    }
}

impl std::fmt::Display for DownstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where accepted events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ForwardConfig {
    /// POST to `url` and wait for its answer.
    Http {
        /// Downstream URL, `http://` only.
        url: DownstreamUrl,
        /// Whole-request timeout towards the downstream. Default `10s`.
        #[serde(default = "default_forward_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
    /// Write each event as one JSON line on stdout.
    Stdout {},
    /// Accept and drop every event (`200 forwarded`): for measuring the gateway alone, never for real sources.
    Discard {},
    /// Durable hand-off: append to a Redis Stream, answer `202` at once, and let delivery workers POST to
    /// `url`, retrying with backoff, then dead-lettering. Uses the Redis server of `dedup.redis_url`.
    Queue(QueueConfig),
}

/// `forward.kind = "queue"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Downstream URL, `http://` only.
    pub url: DownstreamUrl,
    /// Timeout of one delivery attempt. Default `10s`.
    #[serde(default = "default_forward_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Delivery attempts in all, the first included; then the event goes to the dead-letter stream.
    /// Default 8.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before each retry: `initial`, times `multiplier` per attempt, at most `max`, with full jitter.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// An event a crashed replica was delivering is taken over after this long. Must exceed `timeout`.
    /// Default `60s`.
    #[serde(default = "default_reclaim_after", with = "humantime_serde")]
    pub reclaim_after: Duration,
    /// Deliveries in flight at once, per source, per replica. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most undelivered events the queue holds (in the stream and waiting for a retry). At the cap an
    /// append is refused with `503 unavailable` (reason `queue_full`), so the sender retries later; an
    /// acknowledged event is never trimmed away. Default: no cap.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// Start even though Redis would not keep an acknowledged event across a restart (AOF off). Off by
    /// default: the gateway refuses to start, and says what to set.
    #[serde(default)]
    pub allow_volatile: bool,
    /// Replicas that must have an appended event before the sender gets `202` (`WAIT`). When fewer
    /// acknowledge within `wait_timeout`, the sender gets `503 unavailable` (reason `replication`) and
    /// retries; the retry does not append the event again. Default 0.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long to wait for `wait_replicas`. Default `1s`; under the append's own 5 s limit.
    #[serde(default = "default_wait_timeout", with = "humantime_serde")]
    pub wait_timeout: Duration,
}

/// The longest an append to a queue's stream may take before the event is refused (`503`); the claim that
/// guards it must outlive it.
pub const QUEUE_APPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one `stdout` line may take to be written before the event is refused (`504`); the claim
/// that guards it must outlive it.
pub const STDOUT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
/// Retry delays of a queue's workers: exponential from `initial` to `max`, with jitter.
pub struct BackoffConfig {
    /// First retry delay. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Growth per attempt. Default 2.0.
    pub multiplier: f64,
    /// Longest delay. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(300),
        }
    }
}

fn default_max_attempts() -> u32 {
    8
}

fn default_reclaim_after() -> Duration {
    Duration::from_secs(60)
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_concurrency() -> usize {
    16
}

fn default_forward_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!("http://127.0.0.1:3000/hook".parse::<DownstreamUrl>().is_ok());
        assert!("https://example.test/hook".parse::<DownstreamUrl>().is_err());
        assert!("/relative".parse::<DownstreamUrl>().is_err());
        assert!("not a url".parse::<DownstreamUrl>().is_err());
    }
}
