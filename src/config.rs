//! Typed, strict configuration: `load()` parses TOML (unknown keys are errors that name the key) and
//! `validate()` checks the rules that span several keys. Every default lives in this file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

/// The embedded default config, the same text as `config/hookgate.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/hookgate.toml");

/// Everything that can go wrong while loading a config. Each message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, limits and timeouts.
    #[serde(default)]
    pub server: ServerConfig,
    /// How the client IP is found behind proxies.
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Per client IP rate limit; each source may override it.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Where event ids are remembered.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// The webhook sources, one `[[source]]` table each.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public ingress address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin address for `/metrics`, `/healthz`, `/readyz`. Never the public one. Default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// Largest accepted body, in bytes; exactly this many is accepted. Default 1 MiB.
    pub max_body_bytes: u64,
    /// How long a client may take to send the request head. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send the body, once the head is in. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM/SIGINT before they are cut. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests processed at once; past it the gateway answers `503 unavailable` at once instead of
    /// queueing without bound. Default 4096.
    pub max_inflight: usize,
    /// Open connections per client address; trusted proxies are exempt. Default 256.
    pub max_connections_per_ip: usize,
    /// TLS on the public listener. Default: none (plain HTTP, for a TLS-terminating proxy in front).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: the public listener speaks HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Read again on every reload.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Oldest protocol accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_inflight: 4096,
            max_connections_per_ip: 256,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    /// CIDRs whose forwarding header is believed. Default empty: the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// The header a trusted proxy sets: `x-forwarded-for` (default), `x-real-ip` or `forwarded` (RFC 7239).
    pub header: ClientIpHeader,
    /// How old a shipped `@provider` IP list may be before a config that uses it is refused. Default `365d`.
    #[serde(with = "humantime_serde")]
    pub ip_ranges_max_age: Duration,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ClientIpHeader::XForwardedFor,
            ip_ranges_max_age: Duration::from_secs(365 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    XForwardedFor,
    XRealIp,
    Forwarded,
}

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

/// An `allow_ips` entry: a CIDR, a single address, or `@provider` for a shipped list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AllowIp {
    Net(IpNet),
    List(String),
}

impl TryFrom<String> for AllowIp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Some(name) = s.strip_prefix('@') {
            return Ok(AllowIp::List(name.to_owned()));
        }
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(AllowIp::Net)
            .map_err(|_| format!("`{s}` is neither a CIDR, an IP address nor an `@provider` list"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    Reject,
    Accept,
}

/// `redis_url`: one URL for a single node, or a list of node URLs for Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisUrls {
    One(String),
    Cluster(Vec<String>),
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

    pub fn urls(&self) -> Vec<&str> {
        match self {
            RedisUrls::One(url) => vec![url.as_str()],
            RedisUrls::Cluster(urls) => urls.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    /// Longest wait for one store call: a hung store must not hang requests. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory store only: the most ids kept. Past it the oldest delivered ids are forgotten first; in-flight
    /// ones never are. Default 100000.
    pub max_keys: usize,
    /// What to do when the store cannot be reached: `reject` (503, the default) or `accept` (no dedup).
    pub on_store_error: OnStoreError,
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
        }
    }
}

/// The signature scheme a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeKind {
    Stripe,
    Github,
    Shopify,
    Slack,
    /// Standard Webhooks, which Svix also speaks.
    Standard,
    /// Generic HMAC, configured by `[source.hmac]`.
    Hmac,
}

impl SchemeKind {
    pub const ALL: [SchemeKind; 6] = [
        SchemeKind::Stripe,
        SchemeKind::Github,
        SchemeKind::Shopify,
        SchemeKind::Slack,
        SchemeKind::Standard,
        SchemeKind::Hmac,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemeKind::Stripe => "stripe",
            SchemeKind::Github => "github",
            SchemeKind::Shopify => "shopify",
            SchemeKind::Slack => "slack",
            SchemeKind::Standard => "standard",
            SchemeKind::Hmac => "hmac",
        }
    }
}

impl std::str::FromStr for SchemeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown scheme `{s}`; expected stripe, github, shopify, slack, standard or hmac"))
    }
}

/// One webhook sender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name, used in metric labels and store keys: `[a-z0-9_-]`, at most 64 characters.
    pub name: String,
    /// The public path that selects this source, such as `/webhooks/stripe`.
    pub path: String,
    /// The signature scheme.
    pub scheme: SchemeKind,
    /// Secrets, all tried (rotation): `env:NAME`, `file:/path` or a literal. At least one.
    pub secrets: Vec<SecretRef>,
    /// Largest accepted clock difference for timestamped schemes. Default `5m`, no cap.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// Addresses allowed to send: CIDRs, single addresses, or `@stripe`-style shipped lists (see
    /// `config/ip-ranges/`). Empty allows any address.
    #[serde(default)]
    pub allow_ips: Vec<AllowIp>,
    /// This source's own rate limits.
    #[serde(default)]
    pub rate_limit: SourceRateLimit,
    /// Where the event id is: `header:NAME` or `json:/pointer`. Default: the scheme's own.
    #[serde(default)]
    pub event_id: Option<EventIdSpec>,
    /// Settings of the generic `hmac` scheme; required with `scheme = "hmac"`, refused otherwise.
    #[serde(default)]
    pub hmac: Option<HmacConfig>,
    /// Where accepted events go.
    pub forward: ForwardConfig,
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

/// Settings of the generic HMAC scheme.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The header carrying the signature.
    #[serde(with = "header_name")]
    pub header: HeaderName,
    /// `sha256` (default), `sha1` or `sha512`.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// Text before the signature in the header, such as `sha256=`. Default none.
    #[serde(default)]
    pub prefix: String,
    /// What is signed. `{body}` is the raw body and `{timestamp}` the timestamp header. Default `{body}`.
    #[serde(default = "default_signed_content")]
    pub signed_content: String,
    /// Header with a Unix timestamp in seconds; when set, the source's tolerance applies.
    #[serde(default, with = "opt_header_name")]
    pub timestamp_header: Option<HeaderName>,
}

fn default_signed_content() -> String {
    "{body}".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha1,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// Where accepted events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ForwardConfig {
    /// POST to `url` and wait for its answer.
    Http {
        /// Downstream URL, `http://` only.
        url: String,
        /// Whole-request timeout towards the downstream. Default `10s`.
        #[serde(default = "default_forward_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
    /// Write each event as one JSON line on stdout.
    Stdout {},
    /// Accept and drop every event (`200 forwarded`): for measuring the gateway alone, never for real sources.
    Discard {},
    /// Durable hand-off: append to a Redis Stream, answer `202` at once, and let delivery workers POST to
    /// `url`, retrying with backoff, then dead-lettering. Needs `dedup.store = "redis"`.
    Queue(QueueConfig),
}

/// `forward.kind = "queue"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Downstream URL, `http://` only.
    pub url: String,
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
    /// Cap on the stream's length (approximate trimming). Default: no cap. A cap drops the oldest
    /// undelivered events when it is reached: set it only as a guard against unbounded growth.
    #[serde(default)]
    pub maxlen: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

fn default_concurrency() -> usize {
    16
}

fn default_forward_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `header:NAME` or `json:/pointer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EventIdSpec {
    Header(HeaderName),
    /// An RFC 6901 JSON pointer, such as `/id` or `/event/id`.
    Json(String),
}

impl TryFrom<String> for EventIdSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Some(name) = s.strip_prefix("header:") {
            HeaderName::try_from(name)
                .map(EventIdSpec::Header)
                .map_err(|_| format!("`{name}` is not a valid header name"))
        } else if let Some(pointer) = s.strip_prefix("json:") {
            if pointer.starts_with('/') {
                Ok(EventIdSpec::Json(pointer.to_owned()))
            } else {
                Err(format!("JSON pointer `{pointer}` must start with `/`"))
            }
        } else {
            Err(format!("`{s}` must be `header:NAME` or `json:/pointer`"))
        }
    }
}

impl fmt::Display for EventIdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventIdSpec::Header(name) => write!(f, "header:{name}"),
            EventIdSpec::Json(pointer) => write!(f, "json:{pointer}"),
        }
    }
}

/// Where a secret comes from. Resolved once at load; its value never appears in `Debug`.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
    Literal(Secret),
}

impl From<String> for SecretRef {
    fn from(s: String) -> Self {
        if let Some(name) = s.strip_prefix("env:") {
            SecretRef::Env(name.to_owned())
        } else if let Some(path) = s.strip_prefix("file:") {
            SecretRef::File(PathBuf::from(path))
        } else {
            SecretRef::Literal(Secret(s))
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Literal(_) => f.write_str("[redacted literal]"),
        }
    }
}

impl SecretRef {
    /// Reads the secret's value. A trailing newline of a file is dropped.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set or not UTF-8"))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            SecretRef::Literal(secret) => secret.0.clone(),
        };
        if value.is_empty() {
            return Err(format!("secret {self:?} is empty"));
        }
        Ok(Secret(value))
    }
}

/// A secret value. `Debug` prints `[redacted]` so that it cannot reach a log by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

mod header_name {
    use http::HeaderName;
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
        let s = String::deserialize(d)?;
        HeaderName::try_from(s.as_str())
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a valid header name")))
    }
}

mod opt_header_name {
    use http::HeaderName;
    use serde::Deserializer;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
        super::header_name::deserialize(d).map(Some)
    }
}

/// How the embedded default is named where a path is expected.
pub const EMBEDDED_PATH: &str = "<embedded default>";

/// Like [`load`], but [`EMBEDDED_PATH`] names the embedded default.
pub fn load_or_embedded(path: &Path) -> Result<Config, ConfigError> {
    if path == Path::new(EMBEDDED_PATH) {
        parse(EMBEDDED_DEFAULT, path)
    } else {
        load(path)
    }
}

/// Reads, parses and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` only names the origin in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    config.validate().map_err(|(key, message)| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    })?;
    Ok(config)
}

impl Config {
    /// Cross-field rules. The error names the key it is about.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let server = &self.server;
        if server.listen == server.admin_listen && server.listen.port() != 0 {
            return Err((
                "server.admin_listen".into(),
                "must differ from server.listen: the admin endpoints never share the public port".into(),
            ));
        }
        if server.max_body_bytes == 0 {
            return Err(("server.max_body_bytes".into(), "must be at least 1".into()));
        }
        let limits = &self.rate_limit;
        if limits.per_second == 0 || limits.burst == 0 || limits.max_tracked_keys == 0 {
            return Err((
                "rate_limit".into(),
                "per_second, burst and max_tracked_keys must be at least 1".into(),
            ));
        }
        if !(1..=128).contains(&limits.ipv6_prefix) {
            return Err(("rate_limit.ipv6_prefix".into(), "must be between 1 and 128".into()));
        }
        if server.max_inflight == 0 || server.max_connections_per_ip == 0 {
            return Err((
                "server".into(),
                "max_inflight and max_connections_per_ip must be at least 1".into(),
            ));
        }
        let dedup = &self.dedup;
        if dedup.lease.is_zero() || dedup.ttl.is_zero() || dedup.timeout.is_zero() {
            return Err(("dedup".into(), "ttl, lease and timeout must be longer than zero".into()));
        }
        if dedup.max_keys == 0 {
            return Err(("dedup.max_keys".into(), "must be at least 1".into()));
        }
        if dedup.key_prefix.is_empty() || dedup.key_prefix.contains(char::is_whitespace) {
            return Err(("dedup.key_prefix".into(), "must be non-empty, without spaces".into()));
        }
        if dedup.store == StoreKind::Redis && dedup.redis_url.urls().iter().any(|u| u.is_empty()) {
            return Err(("dedup.redis_url".into(), "must name a Redis server".into()));
        }
        if self.sources.is_empty() {
            return Err((
                "source".into(),
                "no [[source]] is configured: hookgate would refuse every request".into(),
            ));
        }
        for (i, source) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("source[{i}] ({:?}).{field}", source.name);
            source.validate().map_err(|(field, msg)| (key(field), msg))?;
            for entry in &source.allow_ips {
                if let AllowIp::List(name) = entry {
                    let max_age = self.client_ip.ip_ranges_max_age;
                    crate::ingress::ip_ranges::resolve(name, max_age, std::time::SystemTime::now())
                        .map_err(|msg| (key("allow_ips"), msg))?;
                }
            }
            if matches!(source.forward, ForwardConfig::Queue(_)) && self.dedup.store != StoreKind::Redis {
                return Err((
                    key("forward.kind"),
                    "\"queue\" keeps events in Redis Streams: it needs dedup.store = \"redis\" (and its redis_url)"
                        .into(),
                ));
            }
            if let ForwardConfig::Http { timeout, .. } = &source.forward
                && *timeout >= self.dedup.lease
            {
                return Err((
                    key("forward.timeout"),
                    format!(
                        "must be shorter than dedup.lease ({:?}): a claim must outlive the delivery it guards",
                        self.dedup.lease
                    ),
                ));
            }
            if let Some(j) = self.sources[..i].iter().position(|s| s.name == source.name) {
                return Err((key("name"), format!("repeats the name of source[{j}]")));
            }
            if let Some(j) = self.sources[..i].iter().position(|s| s.path == source.path) {
                return Err((key("path"), format!("repeats the path of source[{j}]")));
            }
        }
        Ok(())
    }
}

impl SourceConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(("name", "must be 1 to 64 characters of a-z, 0-9, `_` and `-`".into()));
        }
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            return Err(("path", "must start with `/` and hold no `?`, `#` or space".into()));
        }
        if self.secrets.is_empty() {
            return Err((
                "secrets",
                "at least one secret is required: hookgate never accepts unsigned events".into(),
            ));
        }
        match (self.scheme, &self.hmac) {
            (SchemeKind::Hmac, None) => {
                return Err(("hmac", "scheme = \"hmac\" needs a [source.hmac] table".into()));
            }
            (SchemeKind::Hmac, Some(hmac)) => {
                crate::verify::hmac::Template::parse(&hmac.signed_content, hmac.timestamp_header.is_some())
                    .map_err(|msg| ("hmac.signed_content", msg))?;
                if self.event_id.is_none() {
                    return Err((
                        "event_id",
                        "scheme = \"hmac\" has no default event id: set `header:NAME` or `json:/pointer`".into(),
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(("hmac", "[source.hmac] applies only to scheme = \"hmac\"".into()));
            }
            (_, None) => {}
        }
        let limits = &self.rate_limit;
        let zero = [
            limits.per_second,
            limits.burst,
            limits.total_per_second,
            limits.total_burst,
        ]
        .contains(&Some(0));
        if zero {
            return Err(("rate_limit", "limits must be at least 1".into()));
        }
        if limits.total_burst.is_some() && limits.total_per_second.is_none() {
            return Err(("rate_limit.total_burst", "needs rate_limit.total_per_second".into()));
        }
        if let ForwardConfig::Http { url, timeout } = &self.forward {
            crate::forward::http::parse_url(url).map_err(|msg| ("forward.url", msg))?;
            if timeout.is_zero() {
                return Err(("forward.timeout", "must be longer than zero".into()));
            }
        }
        if let ForwardConfig::Queue(queue) = &self.forward {
            crate::forward::http::parse_url(&queue.url).map_err(|msg| ("forward.url", msg))?;
            if queue.timeout.is_zero() || queue.max_attempts == 0 || queue.concurrency == 0 {
                return Err((
                    "forward",
                    "timeout, max_attempts and concurrency must be at least 1".into(),
                ));
            }
            if queue.reclaim_after <= queue.timeout {
                return Err((
                    "forward.reclaim_after",
                    "must be longer than forward.timeout: a delivery still running must not be taken over".into(),
                ));
            }
            let backoff = &queue.backoff;
            let multiplier_ok = !backoff.multiplier.is_nan() && backoff.multiplier >= 1.0;
            if backoff.initial.is_zero() || backoff.max < backoff.initial || !multiplier_ok {
                return Err((
                    "forward.backoff",
                    "initial must be above zero, max at least initial, multiplier at least 1.0".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[source]]
        name = "gh"
        path = "/gh"
        scheme = "github"
        secrets = ["s3cret"]
        forward = { kind = "stdout" }
    "#;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse_str(MINIMAL).expect("valid");
        assert_eq!(config.server.max_body_bytes, 1024 * 1024);
        assert_eq!(config.dedup.ttl, Duration::from_secs(86_400));
        assert_eq!(config.sources[0].tolerance, Duration::from_secs(300));
        assert!(config.client_ip.trusted_proxies.is_empty());
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = MINIMAL.replace("scheme =", "colour = \"red\"\n        scheme =");
        let err = parse_str(&text).expect_err("unknown key").to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn unknown_key_in_forward_is_an_error() {
        let text = MINIMAL.replace("kind = \"stdout\"", "kind = \"stdout\", url = \"http://x\"");
        let err = parse_str(&text).expect_err("unknown key").to_string();
        assert!(err.contains("url"), "{err}");
    }

    #[test]
    fn source_without_secret_does_not_load() {
        let err = parse_str(&MINIMAL.replace("[\"s3cret\"]", "[]"))
            .expect_err("no secret")
            .to_string();
        assert!(err.contains("source[0] (\"gh\").secrets"), "{err}");
    }

    #[test]
    fn duplicate_paths_are_refused() {
        let twice = format!("{MINIMAL}{}", MINIMAL.replace("name = \"gh\"", "name = \"gh2\""));
        let err = parse_str(&twice).expect_err("same path").to_string();
        assert!(err.contains("source[1] (\"gh2\").path"), "{err}");
    }

    #[test]
    fn hmac_scheme_needs_its_table_and_an_event_id() {
        let text = MINIMAL.replace("\"github\"", "\"hmac\"");
        assert!(parse_str(&text).expect_err("no table").to_string().contains(".hmac"));
        let text = text.replace("forward =", "hmac = { header = \"x-sig\" }\n        forward =");
        assert!(parse_str(&text).expect_err("no id").to_string().contains(".event_id"));
        let text = text.replace("forward =", "event_id = \"header:x-id\"\n        forward =");
        parse_str(&text).expect("complete hmac source");
    }

    #[test]
    fn bad_durations_and_event_ids_are_errors() {
        let text = MINIMAL.replace("forward =", "tolerance = \"five minutes\"\n        forward =");
        assert!(
            parse_str(&text)
                .expect_err("bad duration")
                .to_string()
                .contains("tolerance")
        );
        let text = MINIMAL.replace("forward =", "event_id = \"body:/id\"\n        forward =");
        assert!(
            parse_str(&text)
                .expect_err("bad id")
                .to_string()
                .contains("header:NAME")
        );
    }

    #[test]
    fn a_forward_timeout_must_be_shorter_than_the_lease() {
        let http = "kind = \"http\", url = \"http://127.0.0.1:1/\", timeout = \"30s\"";
        let text = MINIMAL.replace("kind = \"stdout\"", http);
        let err = parse_str(&text).expect_err("timeout = lease").to_string();
        assert!(err.contains("forward.timeout") && err.contains("dedup.lease"), "{err}");
    }

    #[test]
    fn redis_url_is_one_url_or_a_cluster_list() {
        let one = format!("[dedup]\nstore = \"redis\"\nredis_url = \"redis://a:1\"\n{MINIMAL}");
        let one = parse_str(&one).expect("one");
        assert_eq!(one.dedup.redis_url, RedisUrls::One("redis://a:1".into()));
        let list = "[\"redis://a:1\", \"redis://b:2\"]";
        let text = format!("[dedup]\nstore = \"redis\"\nredis_url = {list}\n{MINIMAL}");
        let cluster = parse_str(&text).expect("cluster");
        assert_eq!(cluster.dedup.redis_url.urls(), vec!["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn an_unknown_or_stale_ip_list_reference_is_a_config_error() {
        let text = MINIMAL.replace("forward =", "allow_ips = [\"@nope\"]\n        forward =");
        let err = parse_str(&text).expect_err("unknown list").to_string();
        assert!(
            err.contains("source[0] (\"gh\").allow_ips") && err.contains("@nope"),
            "{err}"
        );

        let text = MINIMAL.replace(
            "forward =",
            "allow_ips = [\"@stripe\", \"10.0.0.1\"]\n        forward =",
        );
        parse_str(&text).expect("a fresh list and a single address");
        let stale = format!("[client_ip]\nip_ranges_max_age = \"1s\"\n{text}");
        let err = parse_str(&stale).expect_err("stale list").to_string();
        assert!(err.contains("last checked") && err.contains("stripe.com"), "{err}");
    }

    #[test]
    fn allow_ips_entries_must_be_addresses_cidrs_or_lists() {
        let text = MINIMAL.replace("forward =", "allow_ips = [\"10.0.0.0/33\"]\n        forward =");
        assert!(
            parse_str(&text)
                .expect_err("bad cidr")
                .to_string()
                .contains("10.0.0.0/33")
        );
    }

    #[test]
    fn a_queue_needs_redis_and_sane_settings() {
        let queue = "kind = \"queue\", url = \"http://127.0.0.1:3000/\"";
        let text = MINIMAL.replace("kind = \"stdout\"", queue);
        let err = parse_str(&text).expect_err("memory store").to_string();
        assert!(
            err.contains("forward.kind") && err.contains("dedup.store = \"redis\""),
            "{err}"
        );
        let on_redis = format!("[dedup]\nstore = \"redis\"\n{text}");
        let config = parse_str(&on_redis).expect("queue on redis");
        let ForwardConfig::Queue(queue) = &config.sources[0].forward else {
            panic!("queue")
        };
        assert_eq!((queue.max_attempts, queue.concurrency), (8, 16));
        assert_eq!(queue.backoff, BackoffConfig::default());
        let short = on_redis.replace(
            "url = \"http://127.0.0.1:3000/\"",
            "url = \"http://x/\", reclaim_after = \"5s\"",
        );
        assert!(
            parse_str(&short)
                .expect_err("reclaim")
                .to_string()
                .contains("reclaim_after")
        );
    }

    #[test]
    fn http_forward_needs_an_http_url() {
        let text = MINIMAL.replace("kind = \"stdout\"", "kind = \"http\", url = \"ftp://x/\"");
        let err = parse_str(&text).expect_err("ftp").to_string();
        assert!(err.contains("forward.url"), "{err}");
    }

    #[test]
    fn secrets_resolve_from_env_file_and_literal() {
        let dir = std::env::temp_dir().join(format!("hookgate-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").expect("write");
        let file = SecretRef::from(format!("file:{}", dir.display()));
        assert_eq!(file.resolve().expect("file").expose(), "from-file");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(
            SecretRef::from("lit".to_owned()).resolve().expect("lit").expose(),
            "lit"
        );
        let missing = SecretRef::from("env:HOOKGATE_TEST_SURELY_UNSET".to_owned());
        assert!(
            missing
                .resolve()
                .expect_err("unset")
                .contains("HOOKGATE_TEST_SURELY_UNSET")
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let config = parse_str(MINIMAL).expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(format!("{:?}", Secret::new("x")), "[redacted]");
    }
}
