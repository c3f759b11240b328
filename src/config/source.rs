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

/// The signature scheme a source uses. The README's scheme table says, for each, its headers, what is
/// signed, the key's form, the tolerance and the default event id.
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
    /// Standard Webhooks, which Svix also speaks: `v1` HMAC with `whsec_` secrets, `v1a` Ed25519 with
    /// `whpk_` public keys.
    Standard,
    /// Generic HMAC, configured by `[source.hmac]`.
    Hmac,
    /// `Paddle-Signature`: `ts=…;h1=…`, HMAC-SHA256 of `{ts}:{body}`.
    Paddle,
    /// `X-Twilio-Signature`: base64 HMAC-SHA1 of the public URL and the sorted form parameters.
    Twilio,
    /// `X-Square-Hmacsha256-Signature`: base64 HMAC-SHA256 of the notification URL and the body.
    Square,
    /// `X-HubSpot-Signature-v3`: base64 HMAC-SHA256 of method, URL, body and timestamp (ms).
    Hubspot,
    /// `Linear-Signature`: hex HMAC-SHA256 of the body; freshness from the body's `webhookTimestamp`.
    Linear,
    /// `x-zm-signature`: `v0=` HMAC-SHA256 of `v0:{x-zm-request-timestamp}:{body}`.
    Zoom,
    /// `X-Gitlab-Token`: the secret itself, compared in constant time.
    Gitlab,
    /// A shared token in the header `token_header`, compared in constant time.
    Token,
    /// HTTP basic authentication; each secret is `user:password`.
    Basic,
    /// `Twitch-Eventsub-Message-Signature`: `sha256=` HMAC of message id, timestamp and body.
    Twitch,
    /// Mailgun: the body's `signature` object, HMAC-SHA256 of timestamp and token.
    Mailgun,
    /// `X-Hub-Signature`: `sha1=` hex HMAC-SHA1 of the body.
    Intercom,
    /// `Typeform-Signature`: `sha256=` base64 HMAC-SHA256 of the body.
    Typeform,
    /// `X-WC-Webhook-Signature`: base64 HMAC-SHA256 of the body.
    Woocommerce,
    /// `x-vercel-signature`: hex HMAC-SHA1 of the body.
    Vercel,
    /// `X-Razorpay-Signature`: hex HMAC-SHA256 of the body.
    Razorpay,
    /// `Calendly-Webhook-Signature`: `t=…,v1=…`, HMAC-SHA256 of `{t}.{body}`.
    Calendly,
    /// `Mux-Signature`: `t=…,v1=…`, HMAC-SHA256 of `{t}.{body}`.
    Mux,
    /// `X-Signature-Ed25519`: Ed25519 over `{X-Signature-Timestamp}{body}`, hex public key.
    Discord,
    /// `telnyx-signature-ed25519`: Ed25519 over `{telnyx-timestamp}|{body}`, base64 public key.
    Telnyx,
    /// `X-Twilio-Email-Event-Webhook-Signature`: ECDSA P-256 / SHA-256 over `{timestamp}{body}`.
    Sendgrid,
}

/// What a scheme's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Shared secrets, in `secrets`.
    Secret,
    /// Public keys, in `public_keys`.
    PublicKey,
    /// Either (Standard Webhooks: `whsec_` secrets or `whpk_` public keys).
    Either,
}

impl SchemeKind {
    /// Every scheme, in the order the README lists them.
    pub const ALL: [SchemeKind; 27] = [
        SchemeKind::Stripe,
        SchemeKind::Github,
        SchemeKind::Shopify,
        SchemeKind::Slack,
        SchemeKind::Standard,
        SchemeKind::Hmac,
        SchemeKind::Paddle,
        SchemeKind::Twilio,
        SchemeKind::Square,
        SchemeKind::Hubspot,
        SchemeKind::Linear,
        SchemeKind::Zoom,
        SchemeKind::Gitlab,
        SchemeKind::Token,
        SchemeKind::Basic,
        SchemeKind::Twitch,
        SchemeKind::Mailgun,
        SchemeKind::Intercom,
        SchemeKind::Typeform,
        SchemeKind::Woocommerce,
        SchemeKind::Vercel,
        SchemeKind::Razorpay,
        SchemeKind::Calendly,
        SchemeKind::Mux,
        SchemeKind::Discord,
        SchemeKind::Telnyx,
        SchemeKind::Sendgrid,
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
            SchemeKind::Paddle => "paddle",
            SchemeKind::Twilio => "twilio",
            SchemeKind::Square => "square",
            SchemeKind::Hubspot => "hubspot",
            SchemeKind::Linear => "linear",
            SchemeKind::Zoom => "zoom",
            SchemeKind::Gitlab => "gitlab",
            SchemeKind::Token => "token",
            SchemeKind::Basic => "basic",
            SchemeKind::Twitch => "twitch",
            SchemeKind::Mailgun => "mailgun",
            SchemeKind::Intercom => "intercom",
            SchemeKind::Typeform => "typeform",
            SchemeKind::Woocommerce => "woocommerce",
            SchemeKind::Vercel => "vercel",
            SchemeKind::Razorpay => "razorpay",
            SchemeKind::Calendly => "calendly",
            SchemeKind::Mux => "mux",
            SchemeKind::Discord => "discord",
            SchemeKind::Telnyx => "telnyx",
            SchemeKind::Sendgrid => "sendgrid",
        }
    }

    /// The event id used when `event_id` is not set: the provider's delivery or event id, or, where
    /// the provider sends none, `body:sha256` (the hash of the exact body; a retry resends it unchanged).
    /// `None` for `hmac`, which must name one.
    pub fn default_event_id(self) -> Option<EventIdSpec> {
        let header = |name: &'static str| Some(EventIdSpec::Header(HeaderName::from_static(name)));
        let json = |pointer: &str| Some(EventIdSpec::Json(pointer.to_owned()));
        match self {
            SchemeKind::Stripe | SchemeKind::Intercom | SchemeKind::Vercel | SchemeKind::Mux => json("/id"),
            SchemeKind::Github => header("x-github-delivery"),
            SchemeKind::Shopify => header("x-shopify-webhook-id"),
            SchemeKind::Slack | SchemeKind::Paddle | SchemeKind::Square | SchemeKind::Typeform => json("/event_id"),
            SchemeKind::Standard => header("webhook-id"),
            SchemeKind::Hmac => None,
            SchemeKind::Twilio => header("i-twilio-idempotency-token"),
            SchemeKind::Hubspot => json("/0/eventId"),
            SchemeKind::Linear => header("linear-delivery"),
            SchemeKind::Gitlab => header("x-gitlab-event-uuid"),
            SchemeKind::Twitch => header("twitch-eventsub-message-id"),
            SchemeKind::Mailgun => json("/signature/token"),
            SchemeKind::Woocommerce => header("x-wc-webhook-delivery-id"),
            SchemeKind::Razorpay => header("x-razorpay-event-id"),
            SchemeKind::Discord => json("/id"),
            SchemeKind::Telnyx => json("/data/id"),
            SchemeKind::Sendgrid => json("/0/sg_event_id"),
            SchemeKind::Zoom | SchemeKind::Token | SchemeKind::Basic | SchemeKind::Calendly => {
                Some(EventIdSpec::BodyHash)
            }
        }
    }

    /// The provider's own tolerance for its signed timestamp, used when `tolerance` is not set.
    pub fn default_tolerance(self) -> Duration {
        match self {
            SchemeKind::Paddle => Duration::from_secs(5),
            SchemeKind::Linear => Duration::from_secs(60),
            SchemeKind::Twitch => Duration::from_secs(600),
            SchemeKind::Calendly => Duration::from_secs(180),
            _ => default_tolerance(),
        }
    }

    /// What the scheme's keys are.
    pub fn keys(self) -> KeyKind {
        match self {
            SchemeKind::Discord | SchemeKind::Telnyx | SchemeKind::Sendgrid => KeyKind::PublicKey,
            SchemeKind::Standard => KeyKind::Either,
            _ => KeyKind::Secret,
        }
    }

    /// Whether the scheme signs a timestamp (`hmac`: only with a `timestamp_header`, which this cannot see).
    pub fn timestamped(self) -> bool {
        !matches!(
            self,
            SchemeKind::Hmac
                | SchemeKind::Github
                | SchemeKind::Shopify
                | SchemeKind::Twilio
                | SchemeKind::Square
                | SchemeKind::Gitlab
                | SchemeKind::Token
                | SchemeKind::Basic
                | SchemeKind::Intercom
                | SchemeKind::Typeform
                | SchemeKind::Woocommerce
                | SchemeKind::Vercel
                | SchemeKind::Razorpay
        )
    }

    /// Whether the signature covers the request's URL, so that `public_url` matters.
    pub fn signs_url(self) -> bool {
        matches!(self, SchemeKind::Twilio | SchemeKind::Square | SchemeKind::Hubspot)
    }
}

/// What a scheme reads and signs, as the README's table and `hookgate verify` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemeDoc {
    /// The headers (or body fields) the signature travels in.
    pub headers: &'static str,
    /// What is signed.
    pub signed: &'static str,
    /// The key's form.
    pub key: &'static str,
}

impl SchemeKind {
    /// What the scheme reads and signs.
    pub fn doc(self) -> SchemeDoc {
        let (headers, signed, key) = match self {
            SchemeKind::Stripe => (
                "Stripe-Signature: t=…,v1=<hex>",
                "{t}.{body}, HMAC-SHA256",
                "whsec_… (whole string)",
            ),
            SchemeKind::Github => (
                "X-Hub-Signature-256: sha256=<hex>",
                "{body}, HMAC-SHA256",
                "the webhook secret",
            ),
            SchemeKind::Shopify => (
                "X-Shopify-Hmac-Sha256: <base64>",
                "{body}, HMAC-SHA256",
                "the app's client secret",
            ),
            SchemeKind::Slack => (
                "X-Slack-Signature: v0=<hex>, X-Slack-Request-Timestamp",
                "v0:{timestamp}:{body}, HMAC-SHA256",
                "the signing secret",
            ),
            SchemeKind::Standard => (
                "webhook-id, webhook-timestamp, webhook-signature: v1,<base64> or v1a,<base64> (or svix-*)",
                "{id}.{timestamp}.{body}, HMAC-SHA256 (v1) or Ed25519 (v1a)",
                "whsec_<base64> secret, or whpk_<base64> public key",
            ),
            SchemeKind::Hmac => ("[source.hmac] header", "[source.hmac] signed_content", "any secret"),
            SchemeKind::Paddle => (
                "Paddle-Signature: ts=…;h1=<hex>",
                "{ts}:{body}, HMAC-SHA256",
                "pdl_ntfset_… (whole string)",
            ),
            SchemeKind::Twilio => (
                "X-Twilio-Signature: <base64>",
                "{url}{sorted form params}, or {url} with ?bodySHA256 for JSON; HMAC-SHA1 (SHA-256 if 32 bytes)",
                "the account's auth token",
            ),
            SchemeKind::Square => (
                "X-Square-Hmacsha256-Signature: <base64>",
                "{notification url}{body}, HMAC-SHA256",
                "the subscription's signature key",
            ),
            SchemeKind::Hubspot => (
                "X-HubSpot-Signature-v3: <base64>, X-HubSpot-Request-Timestamp (ms)",
                "{method}{url}{body}{timestamp}, HMAC-SHA256",
                "the app's client secret",
            ),
            SchemeKind::Linear => (
                "Linear-Signature: <hex>; body webhookTimestamp (ms)",
                "{body}, HMAC-SHA256",
                "the webhook's signing secret",
            ),
            SchemeKind::Zoom => (
                "x-zm-signature: v0=<hex>, x-zm-request-timestamp",
                "v0:{timestamp}:{body}, HMAC-SHA256",
                "the app's secret token",
            ),
            SchemeKind::Gitlab => ("X-Gitlab-Token", "nothing: the token itself", "the secret token"),
            SchemeKind::Token => ("token_header", "nothing: the token itself", "the token"),
            SchemeKind::Basic => ("Authorization: Basic", "nothing: user:password", "user:password"),
            SchemeKind::Twitch => (
                "Twitch-Eventsub-Message-Signature: sha256=<hex>, -Id, -Timestamp (RFC 3339)",
                "{id}{timestamp}{body}, HMAC-SHA256",
                "the subscription's secret",
            ),
            SchemeKind::Mailgun => (
                "body: signature.timestamp, .token, .signature (hex)",
                "{timestamp}{token}, HMAC-SHA256 (the body is not signed)",
                "the webhook signing key",
            ),
            SchemeKind::Intercom => (
                "X-Hub-Signature: sha1=<hex>",
                "{body}, HMAC-SHA1",
                "the app's client secret",
            ),
            SchemeKind::Typeform => (
                "Typeform-Signature: sha256=<base64>",
                "{body}, HMAC-SHA256",
                "the webhook secret",
            ),
            SchemeKind::Woocommerce => (
                "X-WC-Webhook-Signature: <base64>",
                "{body}, HMAC-SHA256",
                "the webhook secret",
            ),
            SchemeKind::Vercel => (
                "x-vercel-signature: <hex>",
                "{body}, HMAC-SHA1",
                "the integration secret",
            ),
            SchemeKind::Razorpay => (
                "X-Razorpay-Signature: <hex>",
                "{body}, HMAC-SHA256",
                "the webhook secret",
            ),
            SchemeKind::Calendly => (
                "Calendly-Webhook-Signature: t=…,v1=<hex>",
                "{t}.{body}, HMAC-SHA256",
                "the signing key",
            ),
            SchemeKind::Mux => (
                "Mux-Signature: t=…,v1=<hex>",
                "{t}.{body}, HMAC-SHA256",
                "the signing secret",
            ),
            SchemeKind::Discord => (
                "X-Signature-Ed25519: <hex>, X-Signature-Timestamp",
                "{timestamp}{body}, Ed25519",
                "public key, hex",
            ),
            SchemeKind::Telnyx => (
                "telnyx-signature-ed25519: <base64>, telnyx-timestamp",
                "{timestamp}|{body}, Ed25519",
                "public key, base64",
            ),
            SchemeKind::Sendgrid => (
                "X-Twilio-Email-Event-Webhook-Signature: <base64 DER>, -Timestamp",
                "{timestamp}{body}, ECDSA P-256 / SHA-256",
                "verification key, base64 DER",
            ),
        };
        SchemeDoc { headers, signed, key }
    }
}

impl std::str::FromStr for SchemeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown scheme `{s}`; expected one of {}", names.join(", "))
        })
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
    /// Secrets, all tried (rotation): `env:NAME`, `file:/path` or a literal. At least one, except for
    /// the public-key schemes.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Public keys of the public-key schemes (`discord`, `telnyx`, `sendgrid`, `standard` with `whpk_`),
    /// all tried (rotation), in the form the provider shows them. Read like secrets.
    #[serde(default)]
    pub public_keys: Vec<SecretRef>,
    /// Largest accepted clock difference for timestamped schemes. Default: the provider's own (`paddle`
    /// 5 s, `linear` 60 s, `calendly` 3 min, `twitch` 10 min, every other 5 min), no cap.
    #[serde(default, with = "humantime_serde")]
    pub tolerance: Option<Duration>,
    /// URL-signed schemes (`twilio`, `square`, `hubspot`): the URL the provider was given, scheme, host
    /// and path. Without it the URL is rebuilt from `X-Forwarded-Proto` / `X-Forwarded-Host` of a
    /// trusted proxy, else from `Host`. The query string always comes from the request.
    #[serde(default)]
    pub public_url: Option<PublicUrl>,
    /// The shortest secret accepted, in bytes. Default 16; lower it only for a secret that a provider (or
    /// an earlier setup) made shorter and that cannot be changed. At least 1.
    #[serde(default)]
    pub min_secret_bytes: Option<usize>,
    /// `scheme = "token"`: the header that carries the token.
    #[serde(default, with = "opt_header_name")]
    pub token_header: Option<HeaderName>,
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
    /// `enforce` (default) refuses what fails a check; `shadow` runs and counts every check the same way but
    /// forwards whatever the verdict, with `x-hookgate-verdict`, deduplicating only verified events: for
    /// putting hookgate in front of a live application and watching before enforcing.
    #[serde(default)]
    pub mode: SourceMode,
    /// Keep requests refused as `bad_signature`, `ip_denied` or `bad_request` (after the rate limit and the
    /// body limit) in a bounded Redis stream, for `hookgate quarantine list|replay`. Needs Redis.
    #[serde(default)]
    pub quarantine: bool,
    /// What of a quarantined request's headers is kept: `all` (default; a replay can verify it again) or
    /// `redacted` (signature and credential headers blanked: for inspection only, a replay cannot verify).
    #[serde(default)]
    pub quarantine_headers: QuarantineHeaders,
    /// Where accepted events go.
    pub forward: ForwardConfig,
}

/// `quarantine_headers`: what of a quarantined request's headers is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineHeaders {
    /// Every header, signatures included: the operator's own data, in the operator's own Redis.
    #[default]
    All,
    /// Signature and credential headers replaced by `[redacted]`.
    Redacted,
}

/// `mode`: whether a source's checks refuse, or only report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// A failed check is refused (`403`, `401`, `400`).
    #[default]
    Enforce,
    /// Every request is forwarded, with the verdict enforce mode would give.
    Shadow,
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
    /// The event id's place: `event_id`, else the scheme's default.
    pub fn event_id_spec(&self) -> Option<EventIdSpec> {
        self.event_id.clone().or_else(|| self.scheme.default_event_id())
    }

    /// The tolerance: `tolerance`, else the provider's own.
    pub fn tolerance(&self) -> Duration {
        self.tolerance.unwrap_or_else(|| self.scheme.default_tolerance())
    }

    /// Whether the event id is covered by the signature, so that a new id cannot be put on an old request.
    pub fn id_is_signed(&self) -> bool {
        // Token and basic schemes sign nothing: a body-hash id is only as good as the body.
        let body_signed = !matches!(self.scheme, SchemeKind::Gitlab | SchemeKind::Token | SchemeKind::Basic);
        match (self.event_id_spec(), self.scheme) {
            // Mailgun signs only its timestamp and token; the token is its id.
            (Some(EventIdSpec::Json(pointer)), SchemeKind::Mailgun) => pointer == "/signature/token",
            (Some(EventIdSpec::Json(_) | EventIdSpec::Form(_) | EventIdSpec::BodyHash), _) => body_signed,
            (Some(EventIdSpec::Header(name)), SchemeKind::Standard) => {
                name.as_str() == "webhook-id" || name.as_str() == "svix-id"
            }
            (Some(EventIdSpec::Header(name)), SchemeKind::Twitch) => name.as_str() == "twitch-eventsub-message-id",
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
            SchemeKind::Hmac => self.hmac.as_ref().is_some_and(|h| h.signed_content.uses_timestamp()),
            other => other.timestamped(),
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
    Template::body()
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
    /// `{body}` alone.
    pub fn body() -> Self {
        Template(vec![Part::Body])
    }

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

/// `public_url`: an absolute `http`/`https` URL without query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl(String);

impl PublicUrl {
    /// The URL, as written, without a trailing `?`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let uri: http::Uri = s.parse().map_err(|_| format!("`{s}` is not a URL"))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none() {
            return Err(format!("`{s}` must be an absolute http:// or https:// URL"));
        }
        if s.contains(['?', '#']) {
            return Err(format!(
                "`{s}` must hold no query or fragment: the query is always the request's own"
            ));
        }
        Ok(PublicUrl(s))
    }
}

/// `header:NAME`, `json:/pointer`, `form:FIELD` or `body:sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EventIdSpec {
    /// A request header.
    Header(HeaderName),
    /// An RFC 6901 JSON pointer, such as `/id` or `/event/id`.
    Json(String),
    /// A field of an `application/x-www-form-urlencoded` body (Slack commands, Twilio), decoded.
    Form(String),
    /// The hex SHA-256 of the exact body, for senders with no id of their own: a retry resends the same
    /// bytes, and two different events differ somewhere.
    BodyHash,
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
        } else if s == "body:sha256" {
            Ok(EventIdSpec::BodyHash)
        } else if let Some(field) = s.strip_prefix("form:") {
            if field.is_empty() {
                Err("`form:` needs a field name".to_owned())
            } else {
                Ok(EventIdSpec::Form(field.to_owned()))
            }
        } else {
            Err(format!(
                "`{s}` must be `header:NAME`, `json:/pointer`, `form:FIELD` or `body:sha256`"
            ))
        }
    }
}

impl fmt::Display for EventIdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventIdSpec::Header(name) => write!(f, "header:{name}"),
            EventIdSpec::Json(pointer) => write!(f, "json:{pointer}"),
            EventIdSpec::Form(field) => write!(f, "form:{field}"),
            EventIdSpec::BodyHash => f.write_str("body:sha256"),
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
