//! Step 8, handshakes: some providers check an endpoint before they send it events, with a signed request
//! that expects a particular answer. A verified handshake is answered here, with the body the provider
//! expects (`200`, outcome `handshake`); it is neither deduplicated nor forwarded. Slack's
//! `url_verification` is the first: without it a Slack Events API endpoint can never be registered.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::HeaderValue;
use tower::{Layer, Service};

use super::Verified;
use super::event_id::find_in_json;
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
}

impl Handshake {
    /// The handshake of `scheme`'s provider, if it has one.
    pub fn of(scheme: SchemeKind) -> Option<Self> {
        match scheme {
            SchemeKind::Slack => Some(Handshake::Slack),
            _ => None,
        }
    }

    /// The answer, when `event` is this provider's handshake.
    pub fn answer(self, event: &Verified) -> Option<HandshakeReply> {
        match self {
            Handshake::Slack => {
                let body = event.body();
                // A quick look first: ordinary events are not parsed a second time.
                if !contains(body, b"url_verification") {
                    return None;
                }
                let field = |name: &str| find_in_json(body, &[name.to_owned()]).ok().flatten();
                if field("type").as_deref() != Some("url_verification") {
                    return None;
                }
                let challenge = field("challenge")?;
                Some(HandshakeReply {
                    content_type: HeaderValue::from_static("text/plain"),
                    body: Bytes::from(challenge),
                })
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Builds [`HandshakeService`] for one source's scheme.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLayer {
    handshake: Option<Handshake>,
}

impl HandshakeLayer {
    /// Answers the handshakes of `scheme`'s provider (none, for most schemes).
    pub fn new(scheme: SchemeKind) -> Self {
        HandshakeLayer {
            handshake: Handshake::of(scheme),
        }
    }
}

impl<S> Layer<S> for HandshakeLayer {
    type Service = HandshakeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HandshakeService {
            inner,
            handshake: self.handshake,
        }
    }
}

/// Answers a verified handshake itself; passes every other verified request on.
#[derive(Debug, Clone)]
pub struct HandshakeService<S> {
    inner: S,
    handshake: Option<Handshake>,
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
        match self.handshake.and_then(|h| h.answer(&verified)) {
            Some(reply) => Either::Left(ready(Ok(reply.into()))),
            None => Either::Right(self.inner.call(verified)),
        }
    }
}
