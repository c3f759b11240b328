//! Step 6, signature verification: rejects a missing, malformed, wrong or stale signature with `401
//! bad_signature`. Every active secret is tried (rotation) and every comparison is constant time
//! (`Mac::verify_slice`). Only [`Verifier::verify`] can build a [`Verified`] event, and the later stages
//! take nothing else.

pub mod event_id;
pub mod github;
pub mod handshake;
pub mod hmac;
pub mod hubspot;
pub mod layer;
pub mod linear;
pub mod mailgun;
pub mod paddle;
pub mod public_key;
pub mod shopify;
pub mod slack;
pub mod square;
pub mod standard;
pub mod stripe;
pub mod token;
pub mod twilio;
pub mod twitch;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use self::public_key::PublicKey;
use crate::config::{HmacAlgorithm, HmacConfig, SchemeKind, Secret, SourceConfig};

/// Every built-in scheme's signature headers and tokens, and the credentials a sender may send: marked
/// sensitive before any tracing layer, so that a logged header map never shows them.
pub const SIGNATURE_HEADERS: [HeaderName; 27] = [
    stripe::SIGNATURE,
    github::SIGNATURE,
    HeaderName::from_static("x-hub-signature"),
    shopify::SIGNATURE,
    shopify::EVENTS_SIGNATURE,
    slack::SIGNATURE,
    standard::SIGNATURE,
    HeaderName::from_static("svix-signature"),
    paddle::SIGNATURE,
    twilio::SIGNATURE,
    square::SIGNATURE,
    hubspot::SIGNATURE,
    linear::SIGNATURE,
    slack::ZOOM_SIGNATURE,
    token::GITLAB_TOKEN,
    twitch::SIGNATURE,
    HeaderName::from_static("typeform-signature"),
    HeaderName::from_static("x-wc-webhook-signature"),
    HeaderName::from_static("x-vercel-signature"),
    HeaderName::from_static("x-razorpay-signature"),
    stripe::CALENDLY_SIGNATURE,
    stripe::MUX_SIGNATURE,
    public_key::DISCORD_SIGNATURE,
    public_key::TELNYX_SIGNATURE,
    public_key::SENDGRID_SIGNATURE,
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
];

/// The headers to mark sensitive for `sources`: [`SIGNATURE_HEADERS`], cookies, and each source's own
/// signature or token header.
pub fn sensitive_headers(sources: &[SourceConfig]) -> std::sync::Arc<[HeaderName]> {
    let configured = sources.iter().flat_map(|s| {
        let hmac = s.hmac.as_ref().map(|h| h.header.clone());
        hmac.into_iter().chain(s.token_header.clone())
    });
    SIGNATURE_HEADERS
        .iter()
        .cloned()
        .chain([http::header::COOKIE])
        .chain(configured)
        .collect()
}

/// The most signature candidates one request may offer: more is `malformed_header`. Senders send one per
/// active secret (two during a rotation); the cap bounds what one request costs to `keys x 8` MACs.
pub const MAX_CANDIDATES: usize = 8;

/// The longest signature, timestamp or id header a scheme reads: longer is `malformed_header`, before
/// any decoding or MAC.
pub const MAX_HEADER_BYTES: usize = 1024;

/// The shortest key accepted, after decoding (a `whsec_` Standard Webhooks secret is base64). Stripe,
/// Shopify, Slack and Standard Webhooks issue 24 to 32 random bytes or more; GitHub and `hmac` secrets are
/// the operator's choice, and 16 bytes is the floor for those too.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a signature was refused. Each variant is a `reason` label in metrics and a debug log line; the
/// sender only ever sees `bad_signature`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("header {0} is missing")]
    /// A header the scheme needs is absent.
    MissingHeader(HeaderName),
    #[error("header {0} is malformed")]
    /// The header is present but cannot be read.
    MalformedHeader(HeaderName),
    #[error("header {0} is not valid {1}")]
    /// The header's signature is not valid in this encoding.
    BadEncoding(HeaderName, &'static str),
    #[error("timestamp is {age}s old, tolerance is {tolerance}s")]
    /// The timestamp is older than the tolerance.
    StaleTimestamp {
        /// Seconds since the timestamp.
        age: u128,
        /// The source's tolerance, in seconds.
        tolerance: u64,
    },
    #[error("timestamp is {ahead}s in the future, tolerance is {tolerance}s")]
    /// The timestamp is further in the future than the tolerance.
    FutureTimestamp {
        /// Seconds the timestamp is ahead of the clock.
        ahead: u128,
        /// The source's tolerance, in seconds.
        tolerance: u64,
    },
    #[error("no signature matches any active secret")]
    /// No active key produced a matching signature.
    Mismatch,
    #[error("the scheme signs the request URL, and none could be rebuilt (no Host, no public_url)")]
    /// A URL-signed scheme without a URL to check.
    NoUrl,
    #[error("the body is not what the scheme expects: {0}")]
    /// A scheme that reads its signature or timestamp from the body found none there.
    MalformedBody(&'static str),
}

impl VerifyError {
    /// The bounded metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::BadEncoding(..) => "bad_encoding",
            VerifyError::StaleTimestamp { .. } => "stale_timestamp",
            VerifyError::FutureTimestamp { .. } => "future_timestamp",
            VerifyError::Mismatch => "mismatch",
            VerifyError::NoUrl => "no_url",
            VerifyError::MalformedBody(_) => "malformed_body",
        }
    }
}

/// Why a source's keys cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `scheme = "hmac"` without its `[source.hmac]` table.
    #[error("scheme = \"hmac\" needs a [source.hmac] table")]
    NoHmacTable,
    /// `scheme = "token"` without its `token_header`.
    #[error("scheme = \"token\" needs token_header")]
    NoTokenHeader,
    /// A public key that does not decode into a key of this scheme.
    #[error("public_keys[{index}]: {reason}")]
    UnusablePublicKey {
        /// Its position in `public_keys`.
        index: usize,
        /// Why.
        reason: &'static str,
    },
    /// A secret that does not decode into a key of this scheme.
    #[error("secrets[{index}]: {reason}")]
    Unusable {
        /// Its position in `secrets`.
        index: usize,
        /// Why, without the secret.
        reason: &'static str,
    },
}

/// An event whose signature was checked. Its fields are private and this module is the only one that
/// builds it, so holding a `Verified` is proof of authenticity.
#[derive(Debug)]
pub struct Verified {
    headers: HeaderMap,
    body: Bytes,
    /// What the stages before verification learned (the client's address, say); never signed.
    extensions: http::Extensions,
    replay_key: Option<[u8; 32]>,
    key_index: usize,
}

impl Verified {
    /// Which key matched: its position among the source's secrets (or public keys).
    pub fn key_index(&self) -> usize {
        self.key_index
    }

    /// The request's headers, as received.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request's extensions, carried over from before verification.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// The exact bytes that were signed.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// With the replay guard on: the SHA-256 of exactly what the matching signature covered. A resend of
    /// this request, whatever unsigned headers it changes, has the same key.
    pub fn replay_key(&self) -> Option<&[u8; 32]> {
        self.replay_key.as_ref()
    }
}

/// A request of a shadow source that enforce mode would have refused (`ip_denied`, `bad_signature`,
/// `bad_request`). It is forwarded all the same, with its verdict, and never deduplicated: it is not proof
/// of anything, and no stage that needs a [`Verified`] event takes it.
#[derive(Debug)]
pub struct Unverified {
    headers: HeaderMap,
    body: Bytes,
    extensions: http::Extensions,
    verdict: &'static str,
    reason: &'static str,
    id: event_id::EventId,
}

impl Unverified {
    /// `verdict` is the outcome enforce mode would answer, `reason` its refined reason.
    pub(crate) fn new(
        headers: HeaderMap,
        body: Bytes,
        extensions: http::Extensions,
        verdict: &'static str,
        reason: &'static str,
    ) -> Self {
        let id = event_id::EventId::body_hash(&body);
        Unverified {
            headers,
            body,
            extensions,
            verdict,
            reason,
            id,
        }
    }

    /// A verified event whose id could not be read (`bad_request`).
    pub(crate) fn from_verified(verified: Verified, reason: &'static str) -> Self {
        Unverified::new(
            verified.headers,
            verified.body,
            verified.extensions,
            "bad_request",
            reason,
        )
    }

    /// The request's headers, as received.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body, as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request's extensions, from the stages before.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// What enforce mode would have answered: `ip_denied`, `bad_signature` or `bad_request`.
    pub fn verdict(&self) -> &'static str {
        self.verdict
    }

    /// The refined reason, such as `mismatch` or `stale_timestamp`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The id it is forwarded under: the hex SHA-256 of its body (not claimed in the dedup store).
    pub fn id(&self) -> &event_id::EventId {
        &self.id
    }
}

/// Where a source's refused requests are kept (its quarantine), if it keeps them. The refusal stands; the
/// request is kept beside it.
pub trait Keep: Send + Sync + std::fmt::Debug {
    /// Keeps `request`; a failure to keep is the keeper's to log, never the sender's answer.
    fn keep(self: std::sync::Arc<Self>, request: Unverified) -> futures_util::future::BoxFuture<'static, ()>;
}

/// A keyed HMAC, ready to take data. Keys are set up once at load, not per request.
#[derive(Clone)]
pub(crate) enum MacKey {
    Sha1(::hmac::Hmac<sha1::Sha1>),
    Sha256(::hmac::Hmac<sha2::Sha256>),
    Sha512(::hmac::Hmac<sha2::Sha512>),
}

impl MacKey {
    fn new(algorithm: HmacAlgorithm, key: &[u8]) -> Result<Self, &'static str> {
        use ::hmac::KeyInit;
        let invalid = |_| "the secret is not a usable HMAC key";
        Ok(match algorithm {
            HmacAlgorithm::Sha1 => MacKey::Sha1(KeyInit::new_from_slice(key).map_err(invalid)?),
            HmacAlgorithm::Sha256 => MacKey::Sha256(KeyInit::new_from_slice(key).map_err(invalid)?),
            HmacAlgorithm::Sha512 => MacKey::Sha512(KeyInit::new_from_slice(key).map_err(invalid)?),
        })
    }

    /// True when the MAC of the concatenated `parts` equals any of `candidates`, compared in constant time.
    fn matches_any(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
        fn check<M: ::hmac::Mac + Clone>(mut mac: M, parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
            for part in parts {
                mac.update(part);
            }
            candidates.iter().any(|c| mac.clone().verify_slice(c).is_ok())
        }
        match self {
            MacKey::Sha1(m) => check(m.clone(), parts, candidates),
            MacKey::Sha256(m) => check(m.clone(), parts, candidates),
            MacKey::Sha512(m) => check(m.clone(), parts, candidates),
        }
    }

    /// The MAC of the concatenated `parts`: what a sender puts in its header.
    fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
        fn tag<M: ::hmac::Mac + Clone>(mut mac: M, parts: &[&[u8]]) -> Vec<u8> {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            MacKey::Sha1(m) => tag(m.clone(), parts),
            MacKey::Sha256(m) => tag(m.clone(), parts),
            MacKey::Sha512(m) => tag(m.clone(), parts),
        }
    }
}

/// A source's keys, as read from its config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keys<'a> {
    /// `secrets`, resolved.
    pub secrets: &'a [Secret],
    /// `public_keys`, resolved.
    pub public_keys: &'a [Secret],
    /// `token_header`, for `scheme = "token"`.
    pub token_header: Option<&'a HeaderName>,
    /// `min_secret_bytes`; 16 when unset.
    pub min_secret_bytes: Option<usize>,
}

/// A source's scheme, with the scheme-specific settings it needs.
#[derive(Debug, Clone)]
enum Scheme {
    Stripe,
    Github,
    Shopify,
    Slack,
    Standard,
    /// The generic HMAC, and the providers that are presets of it.
    Hmac(hmac::Generic),
    Paddle,
    Twilio,
    Square,
    Hubspot,
    Linear,
    Zoom,
    Gitlab,
    Token(HeaderName),
    Basic,
    Twitch,
    Mailgun,
    /// `t=…,v1=…` over `{t}.{body}` in this header (Calendly, Mux).
    TimestampedV1(HeaderName),
    Discord,
    Telnyx,
    Sendgrid,
}

/// The request line a URL-signed scheme (`twilio`, `square`, `hubspot`) signs: the method, and the public
/// URLs the provider may have signed, the first being the likeliest (the same URL with and without its
/// port, say).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The request's method.
    pub method: http::Method,
    /// Candidate public URLs, with the request's query string.
    pub urls: Vec<String>,
}

/// Checks the signatures of one source against all of its keys.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<MacKey>,
    /// Twilio only: the same secrets as HMAC-SHA256 keys, for requests signed that way.
    keys_sha256: Vec<MacKey>,
    /// SHA-256 of each secret, for the schemes that send the secret itself (`gitlab`, `token`, `basic`).
    tokens: Vec<[u8; 32]>,
    public_keys: Vec<PublicKey>,
    tolerance: Duration,
    replay_guard: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("public_keys", &self.public_keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// The generic HMAC settings of a provider that is a preset of it.
fn preset(kind: SchemeKind) -> Option<HmacConfig> {
    use crate::config::SignatureEncoding::{Base64, Hex};
    let (header, algorithm, encoding, prefix) = match kind {
        SchemeKind::Intercom => ("x-hub-signature", HmacAlgorithm::Sha1, Hex, "sha1="),
        SchemeKind::Typeform => ("typeform-signature", HmacAlgorithm::Sha256, Base64, "sha256="),
        SchemeKind::Woocommerce => ("x-wc-webhook-signature", HmacAlgorithm::Sha256, Base64, ""),
        SchemeKind::Vercel => ("x-vercel-signature", HmacAlgorithm::Sha1, Hex, ""),
        SchemeKind::Razorpay => ("x-razorpay-signature", HmacAlgorithm::Sha256, Hex, ""),
        _ => return None,
    };
    Some(HmacConfig {
        header: HeaderName::from_static(header),
        algorithm,
        encoding,
        prefix: prefix.to_owned(),
        signed_content: crate::config::Template::body(),
        timestamp_header: None,
    })
}

impl Verifier {
    /// Sets up the keys of every secret. The error says which secret (by position) is unusable.
    pub fn new(
        kind: SchemeKind,
        hmac_config: Option<&HmacConfig>,
        secrets: &[Secret],
        tolerance: Duration,
    ) -> Result<Self, KeyError> {
        let keys = Keys {
            secrets,
            ..Keys::default()
        };
        Self::with_keys(kind, hmac_config, &keys, tolerance)
    }

    /// Sets up every secret and public key of `keys`.
    pub fn with_keys(
        kind: SchemeKind,
        hmac_config: Option<&HmacConfig>,
        keys: &Keys<'_>,
        tolerance: Duration,
    ) -> Result<Self, KeyError> {
        let Keys {
            secrets,
            public_keys,
            token_header,
            min_secret_bytes,
        } = *keys;
        let (scheme, algorithm) = match kind {
            SchemeKind::Stripe => (Scheme::Stripe, HmacAlgorithm::Sha256),
            SchemeKind::Github => (Scheme::Github, HmacAlgorithm::Sha256),
            SchemeKind::Shopify => (Scheme::Shopify, HmacAlgorithm::Sha256),
            SchemeKind::Slack => (Scheme::Slack, HmacAlgorithm::Sha256),
            SchemeKind::Standard => (Scheme::Standard, HmacAlgorithm::Sha256),
            SchemeKind::Hmac => {
                // Config validation refuses a source like this; the type cannot say so.
                let config = hmac_config.ok_or(KeyError::NoHmacTable)?;
                (Scheme::Hmac(hmac::Generic::new(config)), config.algorithm)
            }
            SchemeKind::Intercom
            | SchemeKind::Typeform
            | SchemeKind::Woocommerce
            | SchemeKind::Vercel
            | SchemeKind::Razorpay => {
                let config = preset(kind).ok_or(KeyError::NoHmacTable)?;
                (Scheme::Hmac(hmac::Generic::new(&config)), config.algorithm)
            }
            SchemeKind::Paddle => (Scheme::Paddle, HmacAlgorithm::Sha256),
            SchemeKind::Twilio => (Scheme::Twilio, HmacAlgorithm::Sha1),
            SchemeKind::Square => (Scheme::Square, HmacAlgorithm::Sha256),
            SchemeKind::Hubspot => (Scheme::Hubspot, HmacAlgorithm::Sha256),
            SchemeKind::Linear => (Scheme::Linear, HmacAlgorithm::Sha256),
            SchemeKind::Zoom => (Scheme::Zoom, HmacAlgorithm::Sha256),
            SchemeKind::Gitlab => (Scheme::Gitlab, HmacAlgorithm::Sha256),
            SchemeKind::Token => (
                Scheme::Token(token_header.cloned().ok_or(KeyError::NoTokenHeader)?),
                HmacAlgorithm::Sha256,
            ),
            SchemeKind::Basic => (Scheme::Basic, HmacAlgorithm::Sha256),
            SchemeKind::Twitch => (Scheme::Twitch, HmacAlgorithm::Sha256),
            SchemeKind::Mailgun => (Scheme::Mailgun, HmacAlgorithm::Sha256),
            SchemeKind::Calendly => (Scheme::TimestampedV1(stripe::CALENDLY_SIGNATURE), HmacAlgorithm::Sha256),
            SchemeKind::Mux => (Scheme::TimestampedV1(stripe::MUX_SIGNATURE), HmacAlgorithm::Sha256),
            SchemeKind::Discord => (Scheme::Discord, HmacAlgorithm::Sha256),
            SchemeKind::Telnyx => (Scheme::Telnyx, HmacAlgorithm::Sha256),
            SchemeKind::Sendgrid => (Scheme::Sendgrid, HmacAlgorithm::Sha256),
        };
        let mut keys = Vec::with_capacity(secrets.len());
        let mut keys_sha256 = Vec::new();
        let mut tokens = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let unusable = |reason| KeyError::Unusable { index, reason };
            let bytes = match scheme {
                Scheme::Standard => standard::decode_secret(secret.expose()).map_err(unusable)?,
                _ => secret.expose().as_bytes().to_vec(),
            };
            if bytes.len() < min_secret_bytes.unwrap_or(MIN_KEY_BYTES).max(1) {
                return Err(unusable(
                    "shorter than min_secret_bytes (16 unless set): too easy to guess",
                ));
            }
            tokens.push(token::digest(&bytes));
            keys.push(MacKey::new(algorithm, &bytes).map_err(unusable)?);
            if matches!(scheme, Scheme::Twilio) {
                keys_sha256.push(MacKey::new(HmacAlgorithm::Sha256, &bytes).map_err(unusable)?);
            }
        }
        let public_keys = public_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                PublicKey::parse(kind, key.expose()).map_err(|reason| KeyError::UnusablePublicKey { index, reason })
            })
            .collect::<Result<_, _>>()?;
        Ok(Verifier {
            scheme,
            keys,
            keys_sha256,
            tokens,
            public_keys,
            tolerance,
            replay_guard: false,
        })
    }

    /// With `on`, each verified request carries its [`Verified::replay_key`].
    pub fn with_replay_guard(mut self, on: bool) -> Self {
        self.replay_guard = on;
        self
    }

    /// Whether this scheme signs the request's URL, so that [`Verifier::verify_request`] needs a [`Target`].
    pub fn signs_url(&self) -> bool {
        matches!(self.scheme, Scheme::Twilio | Scheme::Square | Scheme::Hubspot)
    }

    /// Checks the request against every key. `now` is the current Unix time in seconds.
    pub fn verify(&self, headers: HeaderMap, body: Bytes, now: i64) -> Result<Verified, VerifyError> {
        self.verify_request(None, headers, body, now)
    }

    /// Checks the request against every key; a URL-signed scheme checks `target` too.
    pub fn verify_request(
        &self,
        target: Option<&Target>,
        headers: HeaderMap,
        body: Bytes,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let check = Check {
            keys: &self.keys,
            keys_sha256: &self.keys_sha256,
            tokens: &self.tokens,
            public_keys: &self.public_keys,
            headers: &headers,
            body: &body,
            target,
            now,
            tolerance: self.tolerance,
            replay_guard: self.replay_guard,
            signed_digest: std::cell::Cell::new(None),
            matched: std::cell::Cell::new(0),
        };
        match &self.scheme {
            Scheme::Stripe => stripe::verify(&check, &stripe::SIGNATURE),
            Scheme::TimestampedV1(header) => stripe::verify(&check, header),
            Scheme::Github => github::verify(&check),
            Scheme::Shopify => shopify::verify(&check),
            Scheme::Slack => slack::verify(&check, &slack::TIMESTAMP, &slack::SIGNATURE),
            Scheme::Zoom => slack::verify(&check, &slack::ZOOM_TIMESTAMP, &slack::ZOOM_SIGNATURE),
            Scheme::Standard => standard::verify(&check),
            Scheme::Hmac(generic) => generic.verify(&check),
            Scheme::Paddle => paddle::verify(&check),
            Scheme::Twilio => twilio::verify(&check),
            Scheme::Square => square::verify(&check),
            Scheme::Hubspot => hubspot::verify(&check),
            Scheme::Linear => linear::verify(&check),
            Scheme::Gitlab => token::verify(&check, &token::GITLAB_TOKEN),
            Scheme::Token(header) => token::verify(&check, header),
            Scheme::Basic => token::verify_basic(&check),
            Scheme::Twitch => twitch::verify(&check),
            Scheme::Mailgun => mailgun::verify(&check),
            Scheme::Discord => public_key::verify_discord(&check),
            Scheme::Telnyx => public_key::verify_telnyx(&check),
            Scheme::Sendgrid => public_key::verify_sendgrid(&check),
        }?;
        let replay_key = check.signed_digest.get();
        let key_index = check.matched.get();
        Ok(Verified {
            headers,
            body,
            extensions: http::Extensions::new(),
            replay_key,
            key_index,
        })
    }

    /// The hex HMAC-SHA256 of `data` under the key at `index` (Zoom's handshake answer).
    pub fn mac_hex(&self, index: usize, data: &[u8]) -> Option<String> {
        self.keys.get(index).map(|key| hex::encode(key.sign(&[data])))
    }

    /// The headers a sender would send for `body`, signed with the first secret. `id` is used by the
    /// schemes whose event id travels in a header; `timestamp` by the timestamped ones.
    pub fn sign(&self, body: &[u8], id: &str, timestamp: i64) -> Vec<(HeaderName, String)> {
        self.sign_request(body, id, timestamp, &http::Method::POST, "")
    }

    /// As [`Verifier::sign`]; the URL-signed schemes sign `method` and `url` too. Empty for the public-key
    /// schemes, which have no private key here.
    pub fn sign_request(
        &self,
        body: &[u8],
        id: &str,
        timestamp: i64,
        method: &http::Method,
        url: &str,
    ) -> Vec<(HeaderName, String)> {
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        match &self.scheme {
            Scheme::Stripe => stripe::sign(key, &stripe::SIGNATURE, body, timestamp),
            Scheme::TimestampedV1(header) => stripe::sign(key, header, body, timestamp),
            Scheme::Github => github::sign(key, body, id),
            Scheme::Shopify => shopify::sign(key, body, id),
            Scheme::Slack => slack::sign(key, &slack::TIMESTAMP, &slack::SIGNATURE, body, timestamp),
            Scheme::Zoom => slack::sign(key, &slack::ZOOM_TIMESTAMP, &slack::ZOOM_SIGNATURE, body, timestamp),
            Scheme::Standard => standard::sign(key, body, id, timestamp),
            Scheme::Hmac(generic) => generic.sign(key, body, timestamp),
            Scheme::Paddle => paddle::sign(key, body, timestamp),
            Scheme::Twilio => twilio::sign(key, body, url),
            Scheme::Square => square::sign(key, body, url),
            Scheme::Hubspot => hubspot::sign(key, body, method, url, timestamp),
            Scheme::Linear => linear::sign(key, body, id),
            Scheme::Gitlab | Scheme::Token(_) | Scheme::Basic => Vec::new(),
            Scheme::Twitch => twitch::sign(key, body, id, timestamp),
            Scheme::Mailgun => Vec::new(),
            Scheme::Discord | Scheme::Telnyx | Scheme::Sendgrid => Vec::new(),
        }
    }
}

/// What one scheme needs to check one request.
pub(crate) struct Check<'a> {
    keys: &'a [MacKey],
    keys_sha256: &'a [MacKey],
    tokens: &'a [[u8; 32]],
    public_keys: &'a [PublicKey],
    headers: &'a HeaderMap,
    body: &'a [u8],
    target: Option<&'a Target>,
    now: i64,
    tolerance: Duration,
    replay_guard: bool,
    /// Set by a successful match when the replay guard is on.
    signed_digest: std::cell::Cell<Option<[u8; 32]>>,
    /// The position of the key that matched.
    matched: std::cell::Cell<usize>,
}

impl Check<'_> {
    /// The header's value as text; absent is `MissingHeader`, non-ASCII is `MalformedHeader`.
    fn header(&self, name: &HeaderName) -> Result<&str, VerifyError> {
        let value = self
            .headers
            .get(name)
            .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?;
        if value.len() > MAX_HEADER_BYTES {
            return Err(VerifyError::MalformedHeader(name.clone()));
        }
        value
            .to_str()
            .map(str::trim)
            .map_err(|_| VerifyError::MalformedHeader(name.clone()))
    }

    /// Parses a Unix-seconds timestamp header value and checks it against the tolerance, both ways.
    fn timestamp(&self, name: &HeaderName, value: &str) -> Result<i64, VerifyError> {
        let ts: i64 = value.parse().map_err(|_| VerifyError::MalformedHeader(name.clone()))?;
        self.fresh(ts)?;
        Ok(ts)
    }

    /// Checks a Unix time in seconds against the tolerance, both ways.
    fn fresh(&self, ts: i64) -> Result<(), VerifyError> {
        let tolerance = self.tolerance.as_secs();
        let diff = i128::from(self.now) - i128::from(ts);
        if diff > i128::from(tolerance) {
            return Err(VerifyError::StaleTimestamp {
                age: diff.unsigned_abs(),
                tolerance,
            });
        }
        if -diff > i128::from(tolerance) {
            return Err(VerifyError::FutureTimestamp {
                ahead: diff.unsigned_abs(),
                tolerance,
            });
        }
        Ok(())
    }

    /// Succeeds when any secret's MAC over `parts` equals any candidate signature.
    fn matches(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), VerifyError> {
        self.matches_with(self.keys, parts, candidates)
    }

    /// [`Check::matches`] with `keys` instead of the scheme's own.
    fn matches_with(&self, keys: &[MacKey], parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), VerifyError> {
        let found = keys.iter().position(|key| key.matches_any(parts, candidates));
        self.matched_at(found, parts)
    }

    /// Records the key at `found` as the match, and the digest of `signed` for the replay guard.
    fn matched_at(&self, found: Option<usize>, signed: &[&[u8]]) -> Result<(), VerifyError> {
        let index = found.ok_or(VerifyError::Mismatch)?;
        self.matched.set(index);
        if self.replay_guard {
            use sha2::Digest;
            let mut hash = sha2::Sha256::new();
            for part in signed {
                hash.update(part);
            }
            self.signed_digest.set(Some(hash.finalize().into()));
        }
        Ok(())
    }

    /// The request line of a URL-signed scheme.
    fn target(&self) -> Result<&Target, VerifyError> {
        self.target.filter(|t| !t.urls.is_empty()).ok_or(VerifyError::NoUrl)
    }
}

/// The value of each hex digit (either case), and `0xff` for every other byte.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        table[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Hex, either case, into bytes. A table lookup per digit with no branch on its value: the `hex` crate's
/// decoder branches on each digit's range, and random digits made it mispredict about once per digit, a
/// third of a microsecond per signature.
fn decode_hex(name: &HeaderName, s: &str) -> Result<Vec<u8>, VerifyError> {
    let digits = s.as_bytes();
    let bad = || VerifyError::BadEncoding(name.clone(), "hex");
    if !digits.len().is_multiple_of(2) {
        return Err(bad());
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    // A digit's value fits in the low four bits; `0xff` sets the high ones, which stay set in `seen`.
    let mut seen = 0u8;
    for pair in digits.chunks_exact(2) {
        let (high, low) = (HEX_DIGITS[usize::from(pair[0])], HEX_DIGITS[usize::from(pair[1])]);
        seen |= high | low;
        bytes.push((high << 4) | (low & 0x0f));
    }
    if seen & 0xf0 != 0 {
        return Err(bad());
    }
    Ok(bytes)
}

fn decode_base64(name: &HeaderName, s: &str) -> Result<Vec<u8>, VerifyError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| VerifyError::BadEncoding(name.clone(), "base64"))
}

fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn verifier(kind: SchemeKind, secrets: &[&str]) -> Verifier {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Verifier::new(kind, None, &secrets, Duration::from_secs(300)).expect("verifier")
    }

    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::try_from(*k).expect("name"),
                    http::HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    /// A verified event with id `id`: GitHub's documented example (secret "It's a Secret to Everybody",
    /// body "Hello, World!"), verified for real.
    pub(crate) fn github_event(id: &str) -> super::event_id::Event {
        let v = verifier(SchemeKind::Github, &["It's a Secret to Everybody"]);
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let verified = v
            .verify(
                headers(&[("x-hub-signature-256", signature)]),
                Bytes::from_static(b"Hello, World!"),
                0,
            )
            .expect("the documented vector verifies");
        super::event_id::Event {
            verified,
            id: super::event_id::EventId::new(id.to_owned()).expect("id"),
        }
    }

    pub(crate) fn signed(v: &Verifier, body: &[u8], id: &str, ts: i64) -> HeaderMap {
        v.sign(body, id, ts)
            .into_iter()
            .map(|(k, v)| (k, http::HeaderValue::from_str(&v).expect("value")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;

    /// The schemes whose senders hookgate can sign for with a secret: all but the generic one, the token
    /// schemes (the secret is sent as it is) and Mailgun (signed inside the body).
    fn signable() -> impl Iterator<Item = SchemeKind> {
        use crate::config::KeyKind;
        SchemeKind::ALL.into_iter().filter(|k| {
            k.keys() != KeyKind::PublicKey
                && !matches!(
                    k,
                    SchemeKind::Hmac | SchemeKind::Gitlab | SchemeKind::Token | SchemeKind::Basic | SchemeKind::Mailgun
                )
        })
    }

    /// Sign-then-verify holds for every scheme; a tampered body and a wrong secret fail for every scheme.
    #[test]
    fn every_scheme_round_trips_and_rejects_tampering() {
        let url = "https://hooks.example/in?x=1";
        let target = Target {
            method: http::Method::POST,
            urls: vec![url.to_owned()],
        };
        for kind in signable() {
            let secret = if kind == SchemeKind::Standard {
                "whsec_c2VjcmV0LWtleS1ieXRlcw=="
            } else {
                "s3cret-s3cret-s3cret"
            };
            let v = verifier(kind, &[secret]);
            let body = br#"{"id":"evt_1","event_id":"ev1","webhookTimestamp":1700000000000}"#;
            let headers: HeaderMap = v
                .sign_request(body, "msg_1", NOW, &http::Method::POST, url)
                .into_iter()
                .map(|(k, v)| (k, http::HeaderValue::from_str(&v).expect("value")))
                .collect();
            let check = |headers: HeaderMap, body: &'static [u8], v: &Verifier| {
                v.verify_request(Some(&target), headers, Bytes::from_static(body), NOW)
            };
            check(headers.clone(), body, &v).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let tampered = check(headers.clone(), b"{\"id\":\"evt_2\"}", &v);
            assert_eq!(tampered.expect_err("tampered").reason(), "mismatch", "{kind:?}");
            let other = if kind == SchemeKind::Standard {
                "whsec_b3RoZXItb3RoZXItb3RoZXI="
            } else {
                "other-other-other-other"
            };
            let wrong = check(headers, body, &verifier(kind, &[other]));
            assert_eq!(wrong.expect_err("wrong secret").reason(), "mismatch", "{kind:?}");
        }
    }

    /// `whsec_` alone decoded to an empty key, with which anyone could sign.
    #[test]
    fn keys_shorter_than_16_bytes_are_refused() {
        for (kind, secret) in [
            (SchemeKind::Standard, "whsec_"),
            (SchemeKind::Standard, "whsec_c2hvcnQ="),
            (SchemeKind::Github, ""),
            (SchemeKind::Github, "fifteen-bytes!!"),
        ] {
            let err = Verifier::new(kind, None, &[Secret::new(secret)], Duration::ZERO).expect_err(secret);
            assert!(matches!(err, KeyError::Unusable { index: 0, .. }), "{secret:?}: {err}");
        }
        Verifier::new(
            SchemeKind::Github,
            None,
            &[Secret::new("sixteen-bytes!!!")],
            Duration::ZERO,
        )
        .expect("16 bytes is enough");
    }

    #[test]
    fn rotation_accepts_any_active_secret() {
        let old = verifier(SchemeKind::Github, &["old-secret-0000000"]);
        let rotated = verifier(SchemeKind::Github, &["new-secret-0000000", "old-secret-0000000"]);
        let headers = signed(&old, b"{}", "d1", NOW);
        rotated
            .verify(headers, Bytes::from_static(b"{}"), NOW)
            .expect("old secret still active");
    }

    #[test]
    fn timestamps_are_checked_at_the_boundaries_both_ways() {
        let v = verifier(SchemeKind::Slack, &["slack-test-secret-1"]);
        let body = b"x";
        let at = |ts: i64| v.verify(signed(&v, body, "", ts), Bytes::from_static(body), NOW);
        at(NOW - 300).expect("exactly the tolerance old");
        at(NOW + 300).expect("exactly the tolerance ahead");
        assert_eq!(at(NOW - 301).expect_err("stale").reason(), "stale_timestamp");
        assert_eq!(at(NOW + 301).expect_err("future").reason(), "future_timestamp");
    }

    #[test]
    fn tolerance_has_no_cap() {
        let secrets = [Secret::new("stripe-test-secret-1")];
        let week = Duration::from_secs(7 * 86_400);
        let v = Verifier::new(SchemeKind::Stripe, None, &secrets, week).expect("verifier");
        let old = NOW - 6 * 86_400;
        v.verify(signed(&v, b"{}", "", old), Bytes::from_static(b"{}"), NOW)
            .expect("within a week");
        let huge = Verifier::new(SchemeKind::Stripe, None, &secrets, Duration::MAX).expect("verifier");
        huge.verify(signed(&huge, b"{}", "", i64::MIN), Bytes::from_static(b"{}"), NOW)
            .expect("no overflow");
    }

    #[test]
    fn hex_decodes_either_case_and_refuses_odd_lengths_and_other_bytes() {
        let name = HeaderName::from_static("x-sig");
        assert_eq!(decode_hex(&name, "00ff7Fa0").ok(), Some(vec![0x00, 0xff, 0x7f, 0xa0]));
        assert_eq!(decode_hex(&name, "").ok(), Some(vec![]));
        for bad in ["0", "abc", "0g", "g0", "zz", " 0", "0x", "é0"] {
            assert!(
                matches!(decode_hex(&name, bad), Err(VerifyError::BadEncoding(_, "hex"))),
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// The table decoder agrees with the `hex` crate on every string: the same bytes, or an error.
        #[test]
        fn hex_decodes_as_the_hex_crate_does(text in "[0-9a-fA-F]{0,70}|\\PC{0,8}") {
            let name = HeaderName::from_static("x-sig");
            prop_assert_eq!(decode_hex(&name, &text).ok(), hex::decode(&text).ok());
        }

        /// Arbitrary header text and bodies never panic any scheme's parser.
        #[test]
        fn parsers_never_panic(value in "\\PC{0,200}", ts in any::<i64>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let value = http::HeaderValue::from_bytes(value.as_bytes())
                .unwrap_or_else(|_| http::HeaderValue::from_static("x"));
            for kind in SchemeKind::ALL.into_iter().filter(|k| !matches!(k, SchemeKind::Hmac | SchemeKind::Token)) {
                let secret = if kind == SchemeKind::Standard { "whsec_c2VjcmV0LWtleS1ieXRlcw==" } else { "proptest-secret-0001" };
                let v = verifier(kind, &[secret]);
                let mut headers = HeaderMap::new();
                for name in SIGNATURE_HEADERS.iter().chain([&standard::ID, &twitch::ID]) {
                    headers.insert(name.clone(), value.clone());
                }
                let ts = ts.to_string();
                for name in [slack::TIMESTAMP, standard::TIMESTAMP, slack::ZOOM_TIMESTAMP, hubspot::TIMESTAMP,
                             public_key::DISCORD_TIMESTAMP, public_key::TELNYX_TIMESTAMP, public_key::SENDGRID_TIMESTAMP] {
                    headers.insert(name, http::HeaderValue::from_str(&ts).expect("digits"));
                }
                headers.insert(twitch::TIMESTAMP, value.clone());
                let target = Target { method: http::Method::POST, urls: vec!["https://h.example/p?bodySHA256=00".to_owned()] };
                prop_assert!(v.verify_request(Some(&target), headers, Bytes::from(body.clone()), NOW).is_err());
            }
        }
    }
}
