//! The outermost layer: the one place a request's fate becomes a response. It sets the status from the
//! table in `error.rs`, the `x-hookgate-outcome` header, `Retry-After` and the JSON body, counts the
//! outcome, and logs refusals without a secret or a header value.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, header};
use http_body_util::Full;
use tower::{Layer, Service};

use crate::error::{Accepted, Outcome, Rejection};
use crate::ingress::route::Routed;

/// A request's fate as the router hands it up.
pub type Handled = Routed<Result<Accepted, Rejection>>;

/// The header that names a request's outcome on every answer.
pub const OUTCOME_HEADER: HeaderName = HeaderName::from_static("x-hookgate-outcome");

/// Builds [`RespondService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RespondLayer;

impl<S> Layer<S> for RespondLayer {
    type Service = RespondService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RespondService { inner }
    }
}

/// Turns each request's fate into its answer, and counts and logs it.
#[derive(Debug, Clone)]
pub struct RespondService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RespondService<S>
where
    S: Service<Request<B>, Response = Handled, Error = Infallible>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = RespondFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        RespondFuture {
            inner: self.inner.call(req),
            started: Instant::now(),
            _inflight: Inflight::new(),
        }
    }
}

/// Counts a request in `hookgate_inflight_requests` for as long as it lives, even when it is cancelled.
struct Inflight;

impl Inflight {
    fn new() -> Self {
        crate::metrics::inflight(1.0);
        Inflight
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        crate::metrics::inflight(-1.0);
    }
}

pin_project_lite::pin_project! {
    /// The inner stages' future, answered when it completes.
    pub struct RespondFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        _inflight: Inflight,
    }
}

impl<F> Future for RespondFuture<F>
where
    F: Future<Output = Result<Handled, Infallible>>,
{
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let handled = match ready!(this.inner.poll(cx)) {
            Ok(handled) => handled,
            Err(never) => match never {},
        };
        Poll::Ready(Ok(respond(handled, this.started.elapsed())))
    }
}

fn respond(handled: Handled, elapsed: Duration) -> Response<Full<Bytes>> {
    let (outcome, rejection) = match &handled.result {
        Ok(accepted) => (accepted.outcome(), None),
        Err(rejection) => (rejection.outcome(), Some(rejection)),
    };
    crate::metrics::request(
        &handled.source,
        outcome.as_str(),
        rejection.map(Rejection::reason),
        elapsed,
    );
    if let Some(rejection) = rejection {
        log(&handled.source, handled.client_ip, outcome, rejection);
    }

    let mut response = answer(outcome);
    if let Ok(Accepted::Handshake(reply)) = &handled.result {
        // The provider's own answer, in place of the usual JSON.
        *response.body_mut() = Full::new(reply.body.clone());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, reply.content_type.clone());
    }
    let headers = response.headers_mut();
    if let Some(after) = rejection.and_then(Rejection::retry_after) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
    }
    if outcome == Outcome::MethodNotAllowed {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// The bare answer of `outcome`: its status, `x-hookgate-outcome` and its JSON body.
pub fn answer(outcome: Outcome) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(outcome.body().as_bytes())));
    *response.status_mut() = outcome.status();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(OUTCOME_HEADER, HeaderValue::from_static(outcome.as_str()));
    response
}

/// Whole seconds, rounded up and at least 1: `Retry-After: 0` would invite an immediate retry.
fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

fn log(source: &str, client_ip: Option<std::net::IpAddr>, outcome: Outcome, rejection: &Rejection) {
    let client_ip = client_ip.map(tracing::field::display);
    let reason = rejection.reason();
    match outcome {
        // A sender-side problem is normal traffic at an ingress: debug, counted in metrics.
        Outcome::BadSignature
        | Outcome::IpDenied
        | Outcome::RateLimited
        | Outcome::NotFound
        | Outcome::MethodNotAllowed
        | Outcome::TooLarge
        | Outcome::BadRequest
        | Outcome::RequestTimeout => {
            tracing::debug!(source, client_ip, outcome = outcome.as_str(), reason, error = %rejection, "refused");
        }
        _ => {
            tracing::info!(source, client_ip, outcome = outcome.as_str(), reason, error = %rejection, "not delivered")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower::ServiceExt;

    use super::*;
    use crate::ingress::rate_limit::Refused;

    async fn answer_of(result: Result<Accepted, Rejection>) -> Response<Full<Bytes>> {
        let inner = tower::service_fn(move |_: Request<()>| {
            let result = match &result {
                Ok(accepted) => Ok(accepted.clone()),
                Err(Rejection::RateLimited(refused)) => Err(Rejection::RateLimited(*refused)),
                Err(_) => unreachable!("only these two are used here"),
            };
            async move {
                Ok::<_, Infallible>(Handled {
                    source: Arc::from("src"),
                    client_ip: None,
                    result,
                })
            }
        });
        RespondLayer
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn every_answer_carries_its_status_outcome_header_and_json_body() {
        let ok = answer_of(Ok(Accepted::Queued)).await;
        assert_eq!(ok.status(), http::StatusCode::ACCEPTED);
        assert_eq!(ok.headers()[OUTCOME_HEADER], "queued");
        let refused = answer_of(Err(Rejection::RateLimited(Refused::PerIp(Duration::from_millis(1500))))).await;
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[OUTCOME_HEADER], "rate_limited");
        assert_eq!(refused.headers()[header::RETRY_AFTER], "2");
        let body = http_body_util::BodyExt::collect(refused.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.as_ref(), Outcome::RateLimited.body().as_bytes());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
