//! Typed, strict configuration, plain data: one file per section. `load()` parses TOML (unknown keys are
//! errors that name the key) and checks every rule that spans several keys in one pass, [`Config::validate`].
//! Every default lives beside its key. This module imports no stage of the request path: the stages read
//! it, never the other way round.

pub mod admin;
pub mod client_ip;
pub mod dedup;
pub mod forward;
pub mod ip_ranges;
pub mod rate_limit;
pub mod secrets;
pub mod server;
pub mod source;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

pub use self::admin::AdminConfig;
pub use self::client_ip::{ClientIpConfig, ClientIpHeader};
pub use self::dedup::{DedupConfig, OnStoreError, RedisUrls, StoreKind};
pub use self::forward::{BackoffConfig, DownstreamUrl, ForwardConfig, QueueConfig};
pub use self::rate_limit::{RateLimitConfig, SourceRateLimit};
pub use self::secrets::{Secret, SecretRef};
pub use self::server::{ServerConfig, TlsConfig, TlsVersion};
pub use self::source::{
    AllowIp, EventIdSpec, HmacAlgorithm, HmacConfig, KeyKind, PublicUrl, QuarantineHeaders, SchemeDoc, SchemeKind,
    SignatureEncoding, SourceConfig, SourceMode, Template,
};

/// The embedded default config, the same text as `config/hookgate.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/hookgate.toml");

/// Everything that can go wrong while loading a config. Each message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The text is not TOML, or a key is unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A rule that spans keys is broken, or a part named by the config cannot be set up.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key the rule is about, such as `source[0] ("gh").secrets`.
        key: String,
        /// What is wrong and what to set.
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
    /// Where event ids are remembered, and the Redis server of the dedup store and the queue.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// The admin port's console: whether it may act, and its token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Bounds of the quarantine streams of the sources with `quarantine = true`.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// The webhook sources, one `[[source]]` table each.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
}

/// `[quarantine]`: how much of the refused traffic is kept, per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Most requests kept per source; the oldest go first. Default 10 000.
    #[serde(default = "default_quarantine_entries")]
    pub max_entries: u64,
    /// Requests older than this are dropped. Default `7d`.
    #[serde(default = "default_quarantine_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn default_quarantine_entries() -> u64 {
    10_000
}

fn default_quarantine_age() -> Duration {
    Duration::from_secs(7 * 86_400)
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            max_entries: default_quarantine_entries(),
            max_age: default_quarantine_age(),
        }
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
    load_at(path, SystemTime::now())
}

/// Like [`load`], with the clock that dates the shipped IP lists given.
pub fn load_at(path: &Path, now: SystemTime) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_at(&text, path, now)
}

/// Parses and validates config text; `path` only names the origin in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_at(text, path, SystemTime::now())
}

/// Like [`parse`], with the clock that dates the shipped IP lists given, so that a check does not depend
/// on the day it runs.
pub fn parse_at(text: &str, path: &Path, now: SystemTime) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    config.validate(now).map_err(|(key, message)| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    })?;
    Ok(config)
}

impl Config {
    /// Every rule that spans several keys, checked here and nowhere else. `now` dates the shipped IP
    /// lists. The error names the key it is about.
    pub fn validate(&self, now: SystemTime) -> Result<(), (String, String)> {
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
        if server.max_inflight == 0
            || server.max_connections_per_ip == 0
            || server.max_connections == 0
            || server.max_inflight_per_client == 0
        {
            return Err((
                "server".into(),
                "max_inflight, max_inflight_per_client, max_connections and max_connections_per_ip must be at least 1"
                    .into(),
            ));
        }
        if !(8192..=1024 * 1024).contains(&server.max_header_bytes) {
            return Err((
                "server.max_header_bytes".into(),
                "must be between 8192 and 1048576".into(),
            ));
        }
        if server.max_body_buffer_bytes < server.max_body_bytes {
            return Err((
                "server.max_body_buffer_bytes".into(),
                format!(
                    "must be at least server.max_body_bytes ({}): one body of the largest size must fit",
                    server.max_body_bytes
                ),
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
        if self.quarantine.max_entries == 0 || self.quarantine.max_age.is_zero() {
            return Err((
                "quarantine".into(),
                "max_entries and max_age must be more than zero".into(),
            ));
        }
        for (i, source) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("source[{i}] ({:?}).{field}", source.name);
            source.validate().map_err(|(field, msg)| (key(field), msg))?;
            if source.quarantine && self.dedup.redis_url.urls().iter().all(|u| u.is_empty()) {
                return Err((
                    key("quarantine"),
                    "needs Redis: set dedup.redis_url (the quarantine is a Redis stream)".into(),
                ));
            }
            for entry in &source.allow_ips {
                if let AllowIp::List(list) = entry {
                    list.check_fresh(self.client_ip.ip_ranges_max_age, now)
                        .map_err(|msg| (key("allow_ips"), msg))?;
                }
            }
            if source.signs_timestamp() && source.tolerance() >= self.dedup.ttl {
                return Err((
                    key("tolerance"),
                    format!(
                        "must be shorter than dedup.ttl ({:?}): an event still within its tolerance after \
                         its id has expired could be replayed",
                        self.dedup.ttl
                    ),
                ));
            }
            // A claim must outlive the delivery it guards. The `http` timeout is the source's own setting, so
            // the error names it; the queue append and the stdout write have fixed timeouts, so the lease is
            // what to raise.
            let lease = self.dedup.lease;
            let too_short = |timeout: Duration, what: &str| {
                (
                    "dedup.lease".to_owned(),
                    format!(
                        "must be longer than {timeout:?}, the longest {what} delivery of source {:?}: a claim must \
                         outlive the delivery it guards",
                        source.name
                    ),
                )
            };
            match &source.forward {
                ForwardConfig::Http { timeout, .. } if *timeout >= lease => {
                    return Err((
                        key("forward.timeout"),
                        format!(
                            "must be shorter than dedup.lease ({lease:?}): a claim must outlive the delivery it guards"
                        ),
                    ));
                }
                ForwardConfig::Queue(_) if forward::QUEUE_APPEND_TIMEOUT >= lease => {
                    return Err(too_short(forward::QUEUE_APPEND_TIMEOUT, "queue append"));
                }
                ForwardConfig::Stdout {} if forward::STDOUT_WRITE_TIMEOUT >= lease => {
                    return Err(too_short(forward::STDOUT_WRITE_TIMEOUT, "stdout write"));
                }
                _ => {}
            }
            // An entry is pending from the moment it is read until its settling script has run: at most the
            // delivery's timeout plus one Redis call. Taken over sooner, it would be delivered twice.
            if let ForwardConfig::Queue(queue) = &source.forward {
                let longest = queue.timeout + self.dedup.timeout;
                if queue.reclaim_after <= longest {
                    return Err((
                        key("forward.reclaim_after"),
                        format!(
                            "must be longer than {longest:?}, the longest a delivery can take (forward.timeout \
                             {:?}, then settling it in Redis within dedup.timeout {:?}): a delivery still running \
                             must not be taken over",
                            queue.timeout, self.dedup.timeout
                        ),
                    ));
                }
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
    /// The key rules: a source without a key of its scheme's kind does not start.
    fn validate_keys(&self) -> Result<(), (&'static str, String)> {
        let scheme = self.scheme.as_str();
        match self.scheme.keys() {
            KeyKind::Secret => {
                if self.secrets.is_empty() {
                    return Err((
                        "secrets",
                        "at least one secret is required: hookgate never accepts unsigned events".into(),
                    ));
                }
                if !self.public_keys.is_empty() {
                    return Err((
                        "public_keys",
                        format!("scheme = \"{scheme}\" signs with shared secrets: put its keys in `secrets`"),
                    ));
                }
            }
            KeyKind::PublicKey => {
                if self.public_keys.is_empty() {
                    return Err((
                        "public_keys",
                        format!(
                            "scheme = \"{scheme}\" needs at least one public key (the provider's verification key)"
                        ),
                    ));
                }
                if !self.secrets.is_empty() {
                    return Err((
                        "secrets",
                        format!("scheme = \"{scheme}\" verifies with public keys: put them in `public_keys`"),
                    ));
                }
            }
            KeyKind::Either => {
                if self.secrets.is_empty() && self.public_keys.is_empty() {
                    return Err((
                        "secrets",
                        "at least one `whsec_` secret or `whpk_` public key is required: hookgate never accepts \
                         unsigned events"
                            .into(),
                    ));
                }
            }
        }
        match (self.scheme, &self.token_header) {
            (SchemeKind::Token, None) => {
                return Err((
                    "token_header",
                    "scheme = \"token\" needs the header that carries the token".into(),
                ));
            }
            (SchemeKind::Token, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(("token_header", "applies only to scheme = \"token\"".into())),
        }
        if self.min_secret_bytes == Some(0) {
            return Err((
                "min_secret_bytes",
                "must be at least 1: an empty secret lets anyone sign".into(),
            ));
        }
        if self.public_url.is_some() && !self.scheme.signs_url() {
            return Err((
                "public_url",
                format!("scheme = \"{scheme}\" does not sign the URL; only twilio, square and hubspot do"),
            ));
        }
        Ok(())
    }

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
        self.validate_keys()?;
        match (self.scheme, &self.hmac) {
            (SchemeKind::Hmac, None) => {
                return Err(("hmac", "scheme = \"hmac\" needs a [source.hmac] table".into()));
            }
            (SchemeKind::Hmac, Some(hmac)) => {
                if hmac.signed_content.uses_timestamp() && hmac.timestamp_header.is_none() {
                    return Err((
                        "hmac.signed_content",
                        "`{timestamp}` needs hmac.timestamp_header".into(),
                    ));
                }
                if hmac.timestamp_header.is_some() && !hmac.signed_content.uses_timestamp() {
                    return Err((
                        "hmac.timestamp_header",
                        "is set but hmac.signed_content does not sign `{timestamp}`: a tolerance on a \
                         header the sender can change proves nothing; add `{timestamp}` to \
                         hmac.signed_content, or remove hmac.timestamp_header"
                            .into(),
                    ));
                }
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
        if let ForwardConfig::Http { timeout, .. } = &self.forward
            && timeout.is_zero()
        {
            return Err(("forward.timeout", "must be longer than zero".into()));
        }
        if let ForwardConfig::Queue(queue) = &self.forward {
            if queue.timeout.is_zero() || queue.max_attempts == 0 || queue.concurrency == 0 {
                return Err((
                    "forward",
                    "timeout, max_attempts and concurrency must be at least 1".into(),
                ));
            }
            if queue.wait_replicas > 0
                && (queue.wait_timeout.is_zero() || queue.wait_timeout >= forward::QUEUE_APPEND_TIMEOUT)
            {
                return Err((
                    "forward.wait_timeout",
                    format!(
                        "must be above zero and under {:?}, the longest an append may take",
                        forward::QUEUE_APPEND_TIMEOUT
                    ),
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
        secrets = ["s3cret-s3cret-s3cret"]
        forward = { kind = "stdout" }
    "#;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    const HMAC: &str = r#"
        [[source]]
        name = "h"
        path = "/h"
        scheme = "hmac"
        secrets = ["s3cret-s3cret-s3cret"]
        event_id = "header:x-id"
        hmac = { header = "x-sig", timestamp_header = "x-ts" }
        forward = { kind = "stdout" }
    "#;

    /// A tolerance on a timestamp the signature does not cover proves nothing.
    #[test]
    fn an_unsigned_timestamp_header_is_refused_naming_both_keys() {
        let err = parse_str(HMAC).expect_err("unsigned timestamp").to_string();
        assert!(
            err.contains("hmac.timestamp_header") && err.contains("hmac.signed_content"),
            "{err}"
        );
        let signed = HMAC.replace(
            "timestamp_header = \"x-ts\"",
            "timestamp_header = \"x-ts\", signed_content = \"{timestamp}.{body}\"",
        );
        parse_str(&signed).expect("signed timestamp");
    }

    /// Past the dedup TTL, an event still within its tolerance could be replayed.
    #[test]
    fn a_tolerance_not_shorter_than_the_dedup_ttl_is_refused() {
        let stripe = |tolerance: &str, ttl: &str| {
            format!(
                "[dedup]\nttl = \"{ttl}\"\n[[source]]\nname = \"s\"\npath = \"/s\"\nscheme = \"stripe\"\nsecrets = [\"whsec_s3cret-s3cret\"]\ntolerance = \"{tolerance}\"\nforward = {{ kind = \"stdout\" }}\n"
            )
        };
        let err = parse_str(&stripe("24h", "24h")).expect_err("equal").to_string();
        assert!(err.contains("tolerance") && err.contains("dedup.ttl"), "{err}");
        parse_str(&stripe("23h", "24h")).expect("shorter");
        // GitHub signs no timestamp: its tolerance is unused, and not checked.
        parse_str(&MINIMAL.replace("scheme = \"github\"", "scheme = \"github\"\ntolerance = \"48h\"")).expect("unused");
    }

    #[test]
    fn the_replay_guard_is_on_exactly_where_the_id_is_not_signed() {
        let guard = |text: &str| parse_str(text).expect("valid").sources[0].replay_guard_on();
        assert!(guard(MINIMAL), "github: the delivery id is a header");
        assert!(!guard(&MINIMAL.replace(
            "scheme = \"github\"",
            "scheme = \"github\"\nevent_id = \"json:/id\""
        )));
        assert!(!guard(&MINIMAL.replace(
            "scheme = \"github\"",
            "scheme = \"github\"\nreplay_guard = \"off\""
        )));
        assert!(!guard(&MINIMAL.replace("scheme = \"github\"", "scheme = \"stripe\"")));
        assert!(!guard(
            &MINIMAL
                .replace("scheme = \"github\"", "scheme = \"standard\"")
                .replace("s3cret-s3cret-s3cret", "whsec_c2VjcmV0LWtleS1ieXRlcw==")
        ));
        assert!(guard(&MINIMAL.replace(
            "scheme = \"github\"",
            "scheme = \"stripe\"\nevent_id = \"header:x-id\""
        )));
        let err = parse_str(&MINIMAL.replace("scheme = \"github\"", "scheme = \"github\"\nreplay_guard = \"maybe\""))
            .expect_err("bad value");
        assert!(err.to_string().contains("replay_guard"), "{err}");
    }

    /// The lease was checked against the `http` timeout only; a queue append or a blocked stdout could
    /// outlive the claim that guards it.
    #[test]
    fn the_lease_must_outlive_every_handler_not_only_http() {
        let with_lease = |lease: &str| format!("[dedup]\nlease = \"{lease}\"\n{MINIMAL}");
        let err = parse_str(&with_lease("5s"))
            .expect_err("stdout write can take 5 s")
            .to_string();
        assert!(err.contains("dedup.lease") && err.contains("stdout"), "{err}");
        parse_str(&with_lease("6s")).expect("longer than the stdout write timeout");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse_str(MINIMAL).expect("valid");
        assert_eq!(config.server.max_body_bytes, 1024 * 1024);
        assert_eq!(config.dedup.ttl, std::time::Duration::from_secs(86_400));
        assert_eq!(config.sources[0].tolerance(), std::time::Duration::from_secs(300));
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
        let err = parse_str(&MINIMAL.replace("[\"s3cret-s3cret-s3cret\"]", "[]"))
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

    /// Each scheme takes the kind of key its provider issues, and the keys that only some schemes read are
    /// refused elsewhere, each error naming its key.
    #[test]
    fn keys_token_header_and_public_url_fit_the_scheme() {
        let refused = |text: String, key: &str| {
            let err = parse_str(&text).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        };
        let discord = MINIMAL.replace("\"github\"", "\"discord\"");
        refused(discord.clone(), ".public_keys");
        let key = "public_keys = [\"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"]";
        refused(
            discord.replace("forward =", &format!("{key}\n        forward =")),
            ".secrets",
        );
        parse_str(&discord.replace("secrets = [\"s3cret-s3cret-s3cret\"]", key)).expect("a public key");
        refused(
            MINIMAL.replace("forward =", "public_keys = [\"k\"]\n        forward ="),
            ".public_keys",
        );
        refused(MINIMAL.replace("\"github\"", "\"token\""), ".token_header");
        refused(
            MINIMAL.replace("forward =", "token_header = \"x-t\"\n        forward ="),
            ".token_header",
        );
        let token = MINIMAL.replace("\"github\"", "\"token\"\n        token_header = \"x-t\"");
        parse_str(&token).expect("a token source");
        refused(
            MINIMAL.replace("forward =", "public_url = \"https://h.example/p\"\n        forward ="),
            ".public_url",
        );
        let twilio = MINIMAL.replace("\"github\"", "\"twilio\"");
        for bad in ["ftp://h.example/p", "https://h.example/p?x=1", "/p"] {
            refused(
                twilio.replace("forward =", &format!("public_url = \"{bad}\"\n        forward =")),
                "public_url",
            );
        }
        refused(
            MINIMAL.replace("forward =", "min_secret_bytes = 0\n        forward ="),
            ".min_secret_bytes",
        );
        let paddle = parse_str(&MINIMAL.replace("\"github\"", "\"paddle\"")).expect("paddle");
        assert_eq!(
            paddle.sources[0].tolerance(),
            Duration::from_secs(5),
            "Paddle's own tolerance"
        );
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
        assert!(err.contains("allow_ips") && err.contains("@nope"), "{err}");

        let text = MINIMAL.replace(
            "forward =",
            "allow_ips = [\"@stripe\", \"10.0.0.1\"]\n        forward =",
        );
        // The clock is given, so that this test does not depend on the day it runs.
        let checked = ip_ranges::lookup("stripe").expect("shipped").updated;
        let checked = humantime::parse_rfc3339(&format!("{checked}T00:00:00Z")).expect("date");
        let day = std::time::Duration::from_secs(86_400);
        let path = Path::new("test.toml");
        parse_at(&text, path, checked + day).expect("a fresh list and a single address");
        let err = parse_at(&text, path, checked + 400 * day)
            .expect_err("stale list")
            .to_string();
        assert!(err.contains("source[0] (\"gh\").allow_ips"), "{err}");
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
    fn a_queue_needs_sane_settings_and_works_beside_either_store() {
        let queue = "kind = \"queue\", url = \"http://127.0.0.1:3000/\"";
        let text = MINIMAL.replace("kind = \"stdout\"", queue);
        // The queue has the Redis client of its own need: the dedup store may stay in memory.
        parse_str(&text).expect("queue beside the memory store");
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

    /// `reclaim_after` was checked against the delivery timeout alone: an entry could be taken over while
    /// its first delivery was settling in Redis, or (reading before waiting for a slot) while it waited for
    /// one, and be delivered twice.
    #[test]
    fn reclaim_after_must_exceed_a_delivery_and_its_settling() {
        let text = |reclaim: &str| {
            format!(
                "[dedup]\nstore = \"redis\"\ntimeout = \"2s\"\n{}",
                MINIMAL.replace(
                    "kind = \"stdout\"",
                    &format!("kind = \"queue\", url = \"http://x/\", timeout = \"3s\", reclaim_after = \"{reclaim}\""),
                )
            )
        };
        let err = parse_str(&text("4s")).expect_err("3 s + 2 s > 4 s").to_string();
        assert!(
            err.contains("forward.reclaim_after") && err.contains("5s") && err.contains("dedup.timeout"),
            "{err}"
        );
        parse_str(&text("5100ms")).expect("longer than a delivery and its settling");
    }

    #[test]
    fn http_forward_needs_an_http_url() {
        let text = MINIMAL.replace("kind = \"stdout\"", "kind = \"http\", url = \"ftp://x/\"");
        let err = parse_str(&text).expect_err("ftp").to_string();
        assert!(err.contains("ftp://x/") && err.contains("http://"), "{err}");
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
        assert!(!shown.contains("s3cret-s3cret-s3cret"), "{shown}");
        assert_eq!(format!("{:?}", Secret::new("x")), "[redacted]");
    }
}
