//! `[rate_limit]` and a source's own `rate_limit` table.

use serde::Deserialize;

/// `[rate_limit]`: the per client IP quota every source starts from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client IP. Default 100.
    pub per_second: u32,
    /// Requests a client may send at once above the sustained rate. Default 200.
    pub burst: u32,
    /// IPv6 clients are keyed by this prefix length, since one host may own a whole /64. Default 64.
    pub ipv6_prefix: u8,
    /// Most client IPs tracked per source; past it, new IPs share one overflow bucket. Stale IPs are
    /// purged every 10 s. Default 100000.
    pub max_tracked_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
            ipv6_prefix: 64,
            max_tracked_keys: 100_000,
        }
    }
}

/// A source's own limits; unset keys take the global `[rate_limit]` values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceRateLimit {
    /// Per client IP, per second.
    pub per_second: Option<u32>,
    /// Per client IP, burst.
    pub burst: Option<u32>,
    /// All client IPs of this source together, per second. Default: no total limit.
    pub total_per_second: Option<u32>,
    /// All client IPs together, burst. Default: `total_per_second`.
    pub total_burst: Option<u32>,
}
