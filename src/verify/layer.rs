//! The verification stages of a source's stack: [`VerifyLayer`] reads the body and checks its signature
//! (`401 bad_signature`), and [`EventIdLayer`] takes the event id of what was verified (`400
//! bad_request`). The inner stages take a [`Verified`] request or an [`Event`], nothing else.

use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::Either;
use http::Request;
use hyper::body::Body;
use tower::{Layer, Service};

use super::event_id::{Event, EventIdError, Locator};
use super::{Verified, Verifier, VerifyError};
use crate::body::{self, BodyError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds [`VerifyService`] around one source's verifier.
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifier: Arc<Verifier>,
    clock: Clock,
}

impl VerifyLayer {
    /// Checks each request against `verifier`'s keys, dating timestamps by `clock`.
    pub fn new(verifier: Arc<Verifier>, clock: Clock) -> Self {
        VerifyLayer { verifier, clock }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
            clock: self.clock,
        }
    }
}

/// Reads the body, verifies it, and hands the inner stage a [`Verified`] request.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Arc<Verifier>,
    clock: Clock,
}

impl<S, B> Service<Request<B>> for VerifyService<S>
where
    S: Service<Verified> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: From<BodyError> + From<VerifyError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service goes into the future; its clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let clock = self.clock;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body::collect(body).await?;
            let mut verified = verifier.verify(parts.headers, body, clock.now())?;
            verified.extensions = parts.extensions;
            inner.call(verified).await
        })
    }
}

/// The time that dates signed timestamps: the system's, or one fixed instant, so that a recorded request
/// (a provider's published example, say) can be checked as of the moment it was signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Always this Unix second.
    Fixed(i64),
}

impl Clock {
    /// Now, in Unix seconds.
    pub fn now(self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Clock::Fixed(at) => at,
        }
    }
}

/// Builds [`EventIdService`] around one source's event-id locator.
#[derive(Debug, Clone)]
pub struct EventIdLayer {
    locator: Arc<Locator>,
}

impl EventIdLayer {
    /// Reads each event's id where `locator` says.
    pub fn new(locator: Arc<Locator>) -> Self {
        EventIdLayer { locator }
    }
}

impl<S> Layer<S> for EventIdLayer {
    type Service = EventIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        EventIdService {
            inner,
            locator: self.locator.clone(),
        }
    }
}

/// Takes the id of a verified event, or refuses it with a ready answer.
#[derive(Debug, Clone)]
pub struct EventIdService<S> {
    inner: S,
    locator: Arc<Locator>,
}

impl<S> Service<Verified> for EventIdService<S>
where
    S: Service<Event>,
    S::Error: From<EventIdError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, verified: Verified) -> Self::Future {
        match self.locator.extract(&verified) {
            Ok(id) => Either::Right(self.inner.call(Event { verified, id })),
            Err(error) => Either::Left(ready(Err(error.into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{SchemeKind, Secret};
    use crate::error::{Accepted, Rejection};

    fn verifier() -> Arc<Verifier> {
        let secrets = [Secret::new("It's a Secret to Everybody")];
        Arc::new(Verifier::new(SchemeKind::Github, None, &secrets, std::time::Duration::ZERO).expect("verifier"))
    }

    /// GitHub's documented example: the secret "It's a Secret to Everybody" over "Hello, World!".
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn request(signature: &str, delivery: Option<&str>) -> Request<Full<Bytes>> {
        let mut req = Request::post("/")
            .header("x-hub-signature-256", signature)
            .body(Full::new(Bytes::from_static(b"Hello, World!")))
            .expect("request");
        if let Some(id) = delivery {
            req.headers_mut()
                .insert("x-github-delivery", id.parse().expect("value"));
        }
        req.extensions_mut()
            .insert(crate::peer::ClientIp("192.0.2.9".parse().expect("ip")));
        req
    }

    #[tokio::test]
    async fn a_valid_signature_reaches_the_inner_stage_with_its_extensions_and_a_bad_one_does_not() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let inner = tower::service_fn(move |verified: Verified| {
            seen.fetch_add(1, Ordering::SeqCst);
            let client = verified.extensions().get::<crate::peer::ClientIp>().copied();
            async move {
                assert_eq!(client, Some(crate::peer::ClientIp("192.0.2.9".parse().expect("ip"))));
                assert_eq!(verified.body().as_ref(), b"Hello, World!");
                Ok::<_, Rejection>(Accepted::Forwarded)
            }
        });
        let service = VerifyLayer::new(verifier(), Clock::System).layer(inner);
        let ok = service.clone().oneshot(request(SIGNATURE, None)).await;
        assert!(matches!(ok, Ok(Accepted::Forwarded)), "{ok:?}");
        let tampered = SIGNATURE.replace("e17", "e18");
        let refused = service.oneshot(request(&tampered, None)).await;
        assert!(
            matches!(refused, Err(Rejection::BadSignature(VerifyError::Mismatch))),
            "{refused:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_event_id_layer_hands_on_the_id_or_refuses_without_calling_inner() {
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ids.clone();
        let inner = tower::service_fn(move |event: Event| {
            seen.lock().expect("lock").push(event.id.as_str().to_owned());
            async { Ok::<_, Rejection>(Accepted::Forwarded) }
        });
        let locator = Arc::new(Locator::new(None, SchemeKind::Github).expect("github has a default id"));
        let service = VerifyLayer::new(verifier(), Clock::System).layer(EventIdLayer::new(locator).layer(inner));
        let ok = service.clone().oneshot(request(SIGNATURE, Some("d-1"))).await;
        assert!(ok.is_ok(), "{ok:?}");
        let missing = service.oneshot(request(SIGNATURE, None)).await;
        assert!(
            matches!(missing, Err(Rejection::EventId(EventIdError::Missing(_)))),
            "{missing:?}"
        );
        assert_eq!(*ids.lock().expect("lock"), ["d-1"]);
    }
}
