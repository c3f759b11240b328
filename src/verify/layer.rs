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
}

impl VerifyLayer {
    /// Checks each request against `verifier`'s keys.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        VerifyLayer { verifier }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// Reads the body, verifies it, and hands the inner stage a [`Verified`] request.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Arc<Verifier>,
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
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body::collect(body).await?;
            let mut verified = verifier.verify(parts.headers, body, unix_now())?;
            verified.extensions = parts.extensions;
            inner.call(verified).await
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
