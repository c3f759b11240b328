//! Step 6, signature verification: rejects a missing, malformed, wrong or stale signature with `401
//! bad_signature`. Every active secret is tried (rotation) and every comparison is constant time
//! (`Mac::verify_slice`). Only [`Verifier::verify`] can build a [`Verified`] event, and the later stages
//! take nothing else.

pub mod event_id;
pub mod github;
pub mod handshake;
pub mod hmac;
pub mod layer;
pub mod shopify;
pub mod slack;
pub mod standard;
pub mod stripe;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use crate::config::{HmacAlgorithm, HmacConfig, SchemeKind, Secret, SourceConfig};

/// Every built-in scheme's signature headers, and the credentials a sender may send: marked sensitive
/// before any tracing layer, so that a logged header map never shows them.
pub const SIGNATURE_HEADERS: [HeaderName; 11] = [
    stripe::SIGNATURE,
    github::SIGNATURE,
    HeaderName::from_static("x-hub-signature"),
    shopify::SIGNATURE,
    shopify::EVENTS_SIGNATURE,
    slack::SIGNATURE,
    standard::SIGNATURE,
    HeaderName::from_static("svix-signature"),
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
];

/// The headers to mark sensitive for `sources`: [`SIGNATURE_HEADERS`] and each `hmac` source's own
/// signature header.
pub fn sensitive_headers(sources: &[SourceConfig]) -> std::sync::Arc<[HeaderName]> {
    let configured = sources.iter().filter_map(|s| s.hmac.as_ref()).map(|h| h.header.clone());
    SIGNATURE_HEADERS.iter().cloned().chain(configured).collect()
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
        }
    }
}

/// Why a source's keys cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `scheme = "hmac"` without its `[source.hmac]` table.
    #[error("scheme = \"hmac\" needs a [source.hmac] table")]
    NoHmacTable,
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
}

impl Verified {
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

/// A source's scheme, with the scheme-specific settings it needs.
#[derive(Debug, Clone)]
enum Scheme {
    Stripe,
    Github,
    Shopify,
    Slack,
    Standard,
    Hmac(hmac::Generic),
}

/// Checks the signatures of one source against all of its secrets.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<MacKey>,
    tolerance: Duration,
    replay_guard: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    /// Sets up the keys of every secret. The error says which secret (by position) is unusable.
    pub fn new(
        kind: SchemeKind,
        hmac_config: Option<&HmacConfig>,
        secrets: &[Secret],
        tolerance: Duration,
    ) -> Result<Self, KeyError> {
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
        };
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                let bytes = match scheme {
                    Scheme::Standard => standard::decode_secret(secret.expose()),
                    _ => Ok(secret.expose().as_bytes().to_vec()),
                };
                bytes
                    .and_then(|b| {
                        if b.len() < MIN_KEY_BYTES {
                            Err("shorter than 16 bytes: too easy to guess (every supported provider issues longer ones)")
                        } else {
                            Ok(b)
                        }
                    })
                    .and_then(|b| MacKey::new(algorithm, &b))
                    .map_err(|reason| KeyError::Unusable { index: i, reason })
            })
            .collect::<Result<_, _>>()?;
        Ok(Verifier {
            scheme,
            keys,
            tolerance,
            replay_guard: false,
        })
    }

    /// With `on`, each verified request carries its [`Verified::replay_key`].
    pub fn with_replay_guard(mut self, on: bool) -> Self {
        self.replay_guard = on;
        self
    }

    /// Checks the request against every secret. `now` is the current Unix time in seconds.
    pub fn verify(&self, headers: HeaderMap, body: Bytes, now: i64) -> Result<Verified, VerifyError> {
        let check = Check {
            keys: &self.keys,
            headers: &headers,
            body: &body,
            now,
            tolerance: self.tolerance,
            replay_guard: self.replay_guard,
            signed_digest: std::cell::Cell::new(None),
        };
        match &self.scheme {
            Scheme::Stripe => stripe::verify(&check),
            Scheme::Github => github::verify(&check),
            Scheme::Shopify => shopify::verify(&check),
            Scheme::Slack => slack::verify(&check),
            Scheme::Standard => standard::verify(&check),
            Scheme::Hmac(generic) => generic.verify(&check),
        }?;
        let replay_key = check.signed_digest.get();
        Ok(Verified {
            headers,
            body,
            extensions: http::Extensions::new(),
            replay_key,
        })
    }

    /// The headers a sender would send for `body`, signed with the first secret. `id` is used by the
    /// schemes whose event id travels in a header; `timestamp` by the timestamped ones.
    pub fn sign(&self, body: &[u8], id: &str, timestamp: i64) -> Vec<(HeaderName, String)> {
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        match &self.scheme {
            Scheme::Stripe => stripe::sign(key, body, timestamp),
            Scheme::Github => github::sign(key, body, id),
            Scheme::Shopify => shopify::sign(key, body, id),
            Scheme::Slack => slack::sign(key, body, timestamp),
            Scheme::Standard => standard::sign(key, body, id, timestamp),
            Scheme::Hmac(generic) => generic.sign(key, body, timestamp),
        }
    }
}

/// What one scheme needs to check one request.
pub(crate) struct Check<'a> {
    keys: &'a [MacKey],
    headers: &'a HeaderMap,
    body: &'a [u8],
    now: i64,
    tolerance: Duration,
    replay_guard: bool,
    /// Set by a successful [`Check::matches`] when the replay guard is on.
    signed_digest: std::cell::Cell<Option<[u8; 32]>>,
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
        Ok(ts)
    }

    /// Succeeds when any secret's MAC over `parts` equals any candidate signature.
    fn matches(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), VerifyError> {
        if self.keys.iter().any(|key| key.matches_any(parts, candidates)) {
            if self.replay_guard {
                use sha2::Digest;
                let mut hash = sha2::Sha256::new();
                for part in parts {
                    hash.update(part);
                }
                self.signed_digest.set(Some(hash.finalize().into()));
            }
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

fn decode_hex(name: &HeaderName, s: &str) -> Result<Vec<u8>, VerifyError> {
    // Into a buffer of the right size at once; an odd length does not fit it and fails like a bad digit.
    let mut bytes = vec![0; s.len() / 2];
    hex::decode_to_slice(s, &mut bytes).map_err(|_| VerifyError::BadEncoding(name.clone(), "hex"))?;
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

    /// Sign-then-verify holds for every scheme; a tampered body and a wrong secret fail for every scheme.
    #[test]
    fn every_scheme_round_trips_and_rejects_tampering() {
        for kind in SchemeKind::ALL.into_iter().filter(|k| *k != SchemeKind::Hmac) {
            let secret = if kind == SchemeKind::Standard {
                "whsec_c2VjcmV0LWtleS1ieXRlcw=="
            } else {
                "s3cret-s3cret-s3cret"
            };
            let v = verifier(kind, &[secret]);
            let body = br#"{"id":"evt_1","event_id":"ev1"}"#;
            let headers = signed(&v, body, "msg_1", NOW);
            v.verify(headers.clone(), Bytes::from_static(body), NOW)
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let tampered = v.verify(headers.clone(), Bytes::from_static(b"{\"id\":\"evt_2\"}"), NOW);
            assert_eq!(tampered.expect_err("tampered").reason(), "mismatch", "{kind:?}");
            let other = if kind == SchemeKind::Standard {
                "whsec_b3RoZXItb3RoZXItb3RoZXI="
            } else {
                "other-other-other-other"
            };
            let wrong = verifier(kind, &[other]).verify(headers, Bytes::from_static(body), NOW);
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

    proptest! {
        /// Arbitrary header text and bodies never panic any scheme's parser.
        #[test]
        fn parsers_never_panic(value in "\\PC{0,200}", ts in any::<i64>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let value = http::HeaderValue::from_bytes(value.as_bytes())
                .unwrap_or_else(|_| http::HeaderValue::from_static("x"));
            for kind in SchemeKind::ALL.into_iter().filter(|k| *k != SchemeKind::Hmac) {
                let secret = if kind == SchemeKind::Standard { "whsec_c2VjcmV0LWtleS1ieXRlcw==" } else { "proptest-secret-0001" };
                let v = verifier(kind, &[secret]);
                let mut headers = HeaderMap::new();
                for name in ["stripe-signature", "x-hub-signature-256", "x-shopify-hmac-sha256",
                             "x-slack-signature", "webhook-signature", "svix-signature", "webhook-id"] {
                    headers.insert(HeaderName::from_static(name), value.clone());
                }
                let ts = ts.to_string();
                for name in ["x-slack-request-timestamp", "webhook-timestamp"] {
                    headers.insert(HeaderName::from_static(name), http::HeaderValue::from_str(&ts).expect("digits"));
                }
                prop_assert!(v.verify(headers, Bytes::from(body.clone()), NOW).is_err());
            }
        }
    }
}
