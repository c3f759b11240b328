//! `[[source]]`: one webhook sender, its scheme, keys, allowlist, event id and handler.

use std::fmt;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

use super::forward::ForwardConfig;
use super::ip_ranges::{self, IpList};
use super::rate_limit::SourceRateLimit;
use super::secrets::SecretRef;

/// The signature scheme a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeKind {
    /// `Stripe-Signature`: `t=…,v1=…`, HMAC-SHA256 of `{t}.{body}`.
    Stripe,
    /// `X-Hub-Signature-256`: `sha256=` HMAC-SHA256 of the body.
    Github,
    /// `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body.
    Shopify,
    /// `X-Slack-Signature`: `v0=` HMAC-SHA256 of `v0:{timestamp}:{body}`.
    Slack,
    /// Standard Webhooks, which Svix also speaks.
    Standard,
    /// Generic HMAC, configured by `[source.hmac]`.
    Hmac,
}

impl SchemeKind {
    /// Every scheme, in the order the README lists them.
    pub const ALL: [SchemeKind; 6] = [
        SchemeKind::Stripe,
        SchemeKind::Github,
        SchemeKind::Shopify,
        SchemeKind::Slack,
        SchemeKind::Standard,
        SchemeKind::Hmac,
    ];

    /// The scheme's name as written in the config file.
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
    /// `signature`: also claim a key derived from the signed material, so that a signed request resent
    /// under a fresh, unsigned event id is a `duplicate`. `off`: the id alone. Default: `signature` when the
    /// event id is not covered by the signature (a header, except Standard Webhooks' signed `webhook-id`).
    #[serde(default)]
    pub replay_guard: Option<ReplayGuard>,
    /// Settings of the generic `hmac` scheme; required with `scheme = "hmac"`, refused otherwise.
    #[serde(default)]
    pub hmac: Option<HmacConfig>,
    /// Where accepted events go.
    pub forward: ForwardConfig,
}

/// `replay_guard`: what besides the event id is claimed in the dedup store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayGuard {
    /// A hash of the signed material, claimed, committed and released with the id.
    Signature,
    /// The event id only.
    Off,
}

impl SourceConfig {
    /// Whether the event id is covered by the signature, so that a new id cannot be put on an old request.
    pub fn id_is_signed(&self) -> bool {
        match (&self.event_id, self.scheme) {
            (Some(EventIdSpec::Json(_)), _) => true,
            (None, SchemeKind::Stripe | SchemeKind::Slack | SchemeKind::Standard) => true,
            (Some(EventIdSpec::Header(name)), SchemeKind::Standard) => {
                name.as_str() == "webhook-id" || name.as_str() == "svix-id"
            }
            _ => false,
        }
    }

    /// Whether the replay guard is on: as configured, else on exactly when the id is not signed.
    pub fn replay_guard_on(&self) -> bool {
        match self.replay_guard {
            Some(guard) => guard == ReplayGuard::Signature,
            None => !self.id_is_signed(),
        }
    }

    /// Whether the scheme signs a timestamp, so that `tolerance` applies.
    pub fn signs_timestamp(&self) -> bool {
        match self.scheme {
            SchemeKind::Stripe | SchemeKind::Slack | SchemeKind::Standard => true,
            SchemeKind::Github | SchemeKind::Shopify => false,
            SchemeKind::Hmac => self.hmac.as_ref().is_some_and(|h| h.signed_content.uses_timestamp()),
        }
    }
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
    pub signed_content: Template,
    /// Header with a Unix timestamp in seconds; when set, the source's tolerance applies.
    #[serde(default, with = "opt_header_name")]
    pub timestamp_header: Option<HeaderName>,
}

fn default_signed_content() -> Template {
    Template(vec![Part::Body])
}

/// One piece of a signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text signed as it is.
    Literal(Vec<u8>),
    /// The raw body.
    Body,
    /// The timestamp header's value.
    Timestamp,
}

/// A parsed `signed_content` template: literal text, `{body}` and `{timestamp}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `{body}` and `{timestamp}` placeholders; anything else in braces is an error, and so is a
    /// template without `{body}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest.as_bytes()[..open].to_vec()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            let part = match &rest[open + 1..open + close] {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}`; use {{body}} or {{timestamp}}"
                    ));
                }
            };
            parts.push(part);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.as_bytes().to_vec()));
        }
        if !parts.contains(&Part::Body) {
            return Err("must contain `{body}`: a signature that does not cover the body proves nothing".to_owned());
        }
        Ok(Template(parts))
    }

    /// Whether `{timestamp}` is signed.
    pub fn uses_timestamp(&self) -> bool {
        self.0.contains(&Part::Timestamp)
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.0
    }
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Template::parse(&text)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// The hash of an `hmac` source's MAC.
pub enum HmacAlgorithm {
    #[default]
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA1, for senders that still use it.
    Sha1,
    /// HMAC-SHA512.
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// How an `hmac` source's signature is written in its header.
pub enum SignatureEncoding {
    #[default]
    /// Lower- or upper-case hex.
    Hex,
    /// Standard base64, with padding.
    Base64,
}

/// An `allow_ips` entry: a CIDR, a single address, or `@provider` for a shipped list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AllowIp {
    /// A CIDR, or one address.
    Net(IpNet),
    /// A shipped provider list, read when the config is parsed.
    List(IpList),
}

impl AllowIp {
    /// The networks this entry allows.
    pub fn nets(&self) -> Vec<IpNet> {
        match self {
            AllowIp::Net(net) => vec![*net],
            AllowIp::List(list) => list.ranges.clone(),
        }
    }
}

impl TryFrom<String> for AllowIp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Some(name) = s.strip_prefix('@') {
            return ip_ranges::lookup(name).map(AllowIp::List);
        }
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(AllowIp::Net)
            .map_err(|_| format!("`{s}` is neither a CIDR, an IP address nor an `@provider` list"))
    }
}

/// `header:NAME` or `json:/pointer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EventIdSpec {
    /// A request header.
    Header(HeaderName),
    /// An RFC 6901 JSON pointer, such as `/id` or `/event/id`.
    Json(String),
    /// A field of an `application/x-www-form-urlencoded` body (Slack commands, Twilio), decoded.
    Form(String),
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
        } else if let Some(field) = s.strip_prefix("form:") {
            if field.is_empty() {
                Err("`form:` needs a field name".to_owned())
            } else {
                Ok(EventIdSpec::Form(field.to_owned()))
            }
        } else {
            Err(format!("`{s}` must be `header:NAME`, `json:/pointer` or `form:FIELD`"))
        }
    }
}

impl fmt::Display for EventIdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventIdSpec::Header(name) => write!(f, "header:{name}"),
            EventIdSpec::Json(pointer) => write!(f, "json:{pointer}"),
            EventIdSpec::Form(field) => write!(f, "form:{field}"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked() {
        assert!(Template::parse("{body").is_err());
        assert!(Template::parse("{nonce}{body}").is_err());
        assert!(Template::parse("static").is_err());
        let parsed = Template::parse("v0:{timestamp}:{body}").expect("ok");
        assert!(parsed.uses_timestamp());
        assert_eq!(
            parsed.parts(),
            [
                Part::Literal(b"v0:".to_vec()),
                Part::Timestamp,
                Part::Literal(b":".to_vec()),
                Part::Body
            ]
        );
    }
}
