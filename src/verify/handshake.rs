//! Step 8, handshakes: some providers check an endpoint before they send it events, with a signed request
//! that expects a particular answer. A verified handshake is answered here, with the body the provider
//! expects (`200`, outcome `handshake`); it is neither deduplicated nor forwarded. Slack's
//! `url_verification`, Zoom's `endpoint.url_validation`, Twitch's `webhook_callback_verification` and
//! Discord's PING: without them, an endpoint can never be registered with these providers.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::HeaderValue;
use tower::{Layer, Service};

use super::event_id::find_in_json;
use super::{Verified, Verifier};
use crate::config::SchemeKind;

/// What hookgate answers a provider's handshake with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    /// The `Content-Type` of the answer.
    pub content_type: HeaderValue,
    /// The answer's body, as the provider expects it.
    pub body: Bytes,
}

/// The handshake a scheme's provider performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Slack's Events API: `{"type":"url_verification","challenge":C}`, answered with `C` as text.
    Slack,
    /// Zoom: `{"event":"endpoint.url_validation","payload":{"plainToken":P}}`, answered with `P` and its
    /// hex HMAC-SHA256 under the secret token that verified the request.
    Zoom,
    /// Twitch EventSub: `Twitch-Eventsub-Message-Type: webhook_callback_verification`, answered with the
    /// body's `challenge` as text.
    Twitch,
    /// Discord interactions: a PING, `{"type":1}`, answered with a PONG, `{"type":1}`.
    Discord,
}

fn field(body: &[u8], path: &[&str]) -> Option<String> {
    let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
    find_in_json(body, &path).ok().flatten()
}

fn text(body: String) -> HandshakeReply {
    HandshakeReply {
        content_type: HeaderValue::from_static("text/plain"),
        body: Bytes::from(body),
    }
}

fn json(body: &serde_json::Value) -> HandshakeReply {
    HandshakeReply {
        content_type: HeaderValue::from_static("application/json"),
        body: Bytes::from(body.to_string()),
    }
}

impl Handshake {
    /// The handshake of `scheme`'s provider, if it has one.
    pub fn of(scheme: SchemeKind) -> Option<Self> {
        match scheme {
            SchemeKind::Slack => Some(Handshake::Slack),
            SchemeKind::Zoom => Some(Handshake::Zoom),
            SchemeKind::Twitch => Some(Handshake::Twitch),
            SchemeKind::Discord => Some(Handshake::Discord),
            _ => None,
        }
    }

    /// The answer, when `event` is this provider's handshake. `verifier` verified it.
    pub fn answer(self, event: &Verified, verifier: &Verifier) -> Option<HandshakeReply> {
        let body = event.body();
        match self {
            Handshake::Slack => {
                // A quick look first: ordinary events are not parsed a second time.
                if !contains(body, b"url_verification") || field(body, &["type"])? != "url_verification" {
                    return None;
                }
                Some(text(field(body, &["challenge"])?))
            }
            Handshake::Zoom => {
                if !contains(body, b"endpoint.url_validation") || field(body, &["event"])? != "endpoint.url_validation"
                {
                    return None;
                }
                let plain = field(body, &["payload", "plainToken"])?;
                let encrypted = verifier.mac_hex(event.key_index(), plain.as_bytes())?;
                Some(json(
                    &serde_json::json!({ "plainToken": plain, "encryptedToken": encrypted }),
                ))
            }
            Handshake::Twitch => {
                let kind = event.headers().get(super::twitch::MESSAGE_TYPE)?;
                if kind.as_bytes() != b"webhook_callback_verification" {
                    return None;
                }
                Some(text(field(body, &["challenge"])?))
            }
            Handshake::Discord => {
                // Only a PING is answered here; every other interaction goes to the application.
                if body.len() > 4096 || field(body, &["type"])? != "1" {
                    return None;
                }
                Some(json(&serde_json::json!({ "type": 1 })))
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Builds [`HandshakeService`] for one source's scheme.
#[derive(Debug, Clone)]
pub struct HandshakeLayer {
    handshake: Option<Handshake>,
    verifier: Arc<Verifier>,
}

impl HandshakeLayer {
    /// Answers the handshakes of `scheme`'s provider (none, for most schemes), with `verifier`'s keys.
    pub fn new(scheme: SchemeKind, verifier: Arc<Verifier>) -> Self {
        HandshakeLayer {
            handshake: Handshake::of(scheme),
            verifier,
        }
    }
}

impl<S> Layer<S> for HandshakeLayer {
    type Service = HandshakeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HandshakeService {
            inner,
            handshake: self.handshake,
            verifier: self.verifier.clone(),
        }
    }
}

/// Answers a verified handshake itself; passes every other verified request on.
#[derive(Debug, Clone)]
pub struct HandshakeService<S> {
    inner: S,
    handshake: Option<Handshake>,
    verifier: Arc<Verifier>,
}

impl<S> Service<Verified> for HandshakeService<S>
where
    S: Service<Verified>,
    S::Response: From<HandshakeReply>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, verified: Verified) -> Self::Future {
        match self.handshake.and_then(|h| h.answer(&verified, &self.verifier)) {
            Some(reply) => Either::Left(ready(Ok(reply.into()))),
            None => Either::Right(self.inner.call(verified)),
        }
    }
}
