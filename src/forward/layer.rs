//! The innermost service of a source's stack: hands the event to the source's handler and times it. A
//! handler failure is `502 downstream_error`, a handler timeout `504 downstream_timeout`.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderValue;
use tower::Service;

use super::{Delivered, Delivery, ForwardError, Handler, REQUEST_ID_HEADER};
use crate::peer::ClientIp;
use crate::verify::Unverified;
use crate::verify::event_id::{Event, EventId};

/// Delivers each event to one source's handler. `R` and `E` are the stack's answer and refusal types,
/// which the handler's own results convert into.
#[derive(Debug)]
pub struct ForwardService<R, E> {
    handler: Arc<Handler>,
    source: Arc<str>,
    /// `Some("pass")` for a shadow source: its verified events carry their verdict too.
    verdict: Option<&'static str>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<R, E> Clone for ForwardService<R, E> {
    fn clone(&self) -> Self {
        ForwardService {
            handler: self.handler.clone(),
            source: self.source.clone(),
            verdict: self.verdict,
            _types: PhantomData,
        }
    }
}

impl<R, E> ForwardService<R, E> {
    /// Delivers `source`'s events to `handler`.
    pub fn new(handler: Arc<Handler>, source: Arc<str>) -> Self {
        ForwardService {
            handler,
            source,
            verdict: None,
            _types: PhantomData,
        }
    }

    /// For a shadow source: each event goes on with `x-hookgate-verdict: pass`.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.verdict = shadow.then_some("pass");
        self
    }
}

/// What one delivery needs, whether the event was verified or is a shadow source's refused request.
struct Parcel<'a> {
    headers: &'a http::HeaderMap,
    body: &'a bytes::Bytes,
    extensions: &'a http::Extensions,
    id: &'a EventId,
    verdict: Option<&'static str>,
}

/// Hands one parcel to `handler`, times it, and logs a failure.
async fn deliver(handler: &Handler, source: &Arc<str>, parcel: Parcel<'_>) -> Result<Delivered, ForwardError> {
    let client_ip = parcel
        .extensions
        .get::<ClientIp>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    // Set at the door by the request-id layer; a fresh one only if the stack was built without it.
    let request_id = parcel
        .headers
        .get(REQUEST_ID_HEADER)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("-"));
    let delivery = Delivery {
        source,
        headers: parcel.headers,
        body: parcel.body,
        event_id: parcel.id,
        verdict: parcel.verdict,
        client_ip,
        request_id: &request_id,
    };
    let started = Instant::now();
    let result = handler.deliver(&delivery).await;
    crate::metrics::forward(source, status_class(&result), started.elapsed());
    if let Err(error) = &result {
        tracing::warn!(%source, %client_ip, event_id = %parcel.id, %error, "delivery failed; the sender will retry");
    }
    result
}

impl<R, E> Service<Event> for ForwardService<R, E>
where
    R: From<Delivered> + Send + 'static,
    E: From<ForwardError> + Send + 'static,
{
    type Response = R;
    type Error = E;
    type Future = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: Event) -> Self::Future {
        let handler = self.handler.clone();
        let source = self.source.clone();
        let verdict = self.verdict;
        Box::pin(async move {
            let parcel = Parcel {
                headers: event.verified.headers(),
                body: event.verified.body(),
                extensions: event.verified.extensions(),
                id: &event.id,
                verdict,
            };
            deliver(&handler, &source, parcel).await.map(R::from).map_err(E::from)
        })
    }
}

/// A shadow source's way around verification, event id and dedup: a request that enforce mode would have
/// refused is delivered with its verdict, and counted.
impl<R, E> Service<Unverified> for ForwardService<R, E>
where
    R: From<Delivered> + Send + 'static,
    E: From<ForwardError> + Send + 'static,
{
    type Response = R;
    type Error = E;
    type Future = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Unverified) -> Self::Future {
        let handler = self.handler.clone();
        let source = self.source.clone();
        Box::pin(async move {
            crate::metrics::shadow_verdict(&source, request.verdict(), request.reason());
            let client_ip = request.extensions().get::<ClientIp>().map(|c| c.0);
            tracing::info!(
                %source,
                client_ip = ?client_ip,
                verdict = request.verdict(),
                reason = request.reason(),
                "shadow mode: forwarding a request that enforce mode would refuse"
            );
            let parcel = Parcel {
                headers: request.headers(),
                body: request.body(),
                extensions: request.extensions(),
                id: request.id(),
                verdict: Some(request.verdict()),
            };
            deliver(&handler, &source, parcel).await.map(R::from).map_err(E::from)
        })
    }
}

fn status_class(result: &Result<Delivered, ForwardError>) -> &'static str {
    match result {
        Ok(Delivered::Queued) => "queue",
        Err(e) if e.is_queue_refusal() => "queue",
        Ok(Delivered::Forwarded) => "2xx",
        Err(ForwardError::Status(s)) if s.is_client_error() => "4xx",
        Err(ForwardError::Status(s)) if s.is_server_error() => "5xx",
        Err(ForwardError::Status(_)) => "other",
        Err(ForwardError::Timeout(_)) => "timeout",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::error::{Accepted, Rejection};
    use crate::verify::test_support::github_event;

    #[tokio::test]
    async fn the_handler_answer_becomes_the_stack_answer() {
        let service = ForwardService::<Accepted, Rejection>::new(Arc::new(Handler::Discard), Arc::from("src"));
        let answer = service.oneshot(github_event("e")).await;
        assert!(matches!(answer, Ok(Accepted::Forwarded)), "{answer:?}");
    }
}
