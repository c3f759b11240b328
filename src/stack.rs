//! The one place the request stack is assembled. Read top to bottom: the first layer is the first to see
//! a request. The order is part of the contract: the allowlist and the rate limit run before the body is
//! read, and verification runs before any dedup-store lookup.
//!
//! Two parts: the door, shared by every request ([`build`]), and each source's own stack
//! ([`source_stack`]), which the router picks by path. Each source's stack is built with that source's
//! allowlist, limiter, verifier and handler in its layers, so no stage looks a source up per request.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer};
use tower_http::timeout::{RequestBodyDeadline, RequestBodyDeadlineLayer};
use tower_http::trace::{MakeSpan, Trace, TraceLayer};
use tracing::Span;

use crate::body::{BodyLimit, BodyLimitLayer};
use crate::dedup::layer::{DedupLayer, DedupService};
use crate::error::{Accepted, Outcome, Rejection};
use crate::forward::layer::ForwardService;
use crate::gateway::{Gateway, Source};
use crate::ingress::allowlist::{AllowlistLayer, AllowlistService};
use crate::ingress::client_ip::{ClientIpLayer, ClientIpService};
use crate::ingress::rate_limit::{RateLimitLayer, RateLimitService};
use crate::ingress::route::Router;
use crate::ingress::shed::{ShedLayer, ShedService};
use crate::peer::REQUEST_ID_HEADER;
use crate::request_id::{MakeId, SaneId, SaneIdLayer};
use crate::respond::{RespondLayer, RespondService};
use crate::sensitive::{MarkSensitive, MarkSensitiveLayer};
use crate::verify::Keep;
use crate::verify::handshake::{HandshakeLayer, HandshakeService};
use crate::verify::layer::{EventIdLayer, EventIdService, VerifyLayer, VerifyService};

/// One source's stack, below the router.
pub type SourceService = ShedService<
    AllowlistService<
        RateLimitService<
            BodyLimit<
                RequestBodyDeadline<
                    VerifyService<HandshakeService<EventIdService<DedupService<ForwardService<Accepted, Rejection>>>>>,
                >,
            >,
        >,
    >,
>;

/// The whole stack, named so that it can be stored and swapped whole on a reload.
pub type GatewayService = CatchPanic<
    MarkSensitive<
        SaneId<
            SetRequestId<
                PropagateRequestId<
                    Trace<
                        RespondService<ClientIpService<Router<SourceService>>>,
                        SharedClassifier<ServerErrorsAsFailures>,
                        RequestSpan,
                        (),
                        (),
                        (),
                        (),
                        (),
                    >,
                >,
                MakeId,
            >,
        >,
    >,
    PanicAnswer,
>;

/// The door, shared by every request, then the router.
pub fn build(gateway: &Gateway) -> GatewayService {
    let routes = gateway
        .sources
        .iter()
        .map(|source| (source.path.clone(), source.name.clone(), source_stack(gateway, source)));
    ServiceBuilder::new()
        // Outermost: a panic anywhere below answers 500 (`internal_error`), is counted, and the process
        // keeps serving.
        .layer(CatchPanicLayer::custom(PanicAnswer))
        // Before anything that could log a header: signature and credential headers print as `Sensitive`.
        // (Hand-written: one set lookup per header the request has, not one map lookup per listed name.)
        .layer(MarkSensitiveLayer::new(&gateway.sensitive_headers))
        // The request id is set at the door, so that every refusal is logged with it, answered back, and
        // forwarded.
        .layer(SaneIdLayer)
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeId))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        // One span per request, carrying the request id; the outcome is logged by the respond layer.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        // Every answer, refusal or not, gets its status, outcome header, metric and log line here.
        .layer(RespondLayer)
        // The client IP is needed by the allowlist and the rate limiter.
        .layer(ClientIpLayer::new(gateway.client_ip.clone()))
        // The source decides which allowlist and limits apply; 404/405 cost one map lookup.
        .service(Router::new(routes))
}

/// One source's stack, in request order.
pub fn source_stack(gateway: &Gateway, source: &Source) -> SourceService {
    source_stack_at(gateway, source, gateway.backends.clock)
}

/// [`source_stack`], dating signed timestamps by `clock` (a quarantined request's replay is judged as of
/// the moment it was received).
pub fn source_stack_at(gateway: &Gateway, source: &Source, clock: crate::verify::layer::Clock) -> SourceService {
    // Shadow mode: what a check would refuse goes around the later stages to the handler, with its verdict.
    let bypass = source.shadow.then(|| {
        BoxCloneSyncService::new(ForwardService::<Accepted, Rejection>::new(
            source.handler.clone(),
            source.name.clone(),
        ))
    });
    let keep = source.quarantine.clone().map(|q| q as Arc<dyn Keep>);
    ServiceBuilder::new()
        // Past the in-flight cap, answer 503 at once rather than queue without bound.
        .layer(ShedLayer::new(
            gateway.backends.inflight.clone(),
            gateway.max_inflight,
            gateway.backends.clients.clone(),
        ))
        // Before the body is read: a refused client costs no memory and no HMAC. The allowlist comes
        // before the rate limit, so that denied addresses cannot use up the allowed ones' quota.
        // A shadow or quarantining source reads a denied client's body, past the rate and body limits.
        .layer(AllowlistLayer::new(source.allowlist.clone()).defer(source.shadow || source.quarantine.is_some()))
        .layer(RateLimitLayer::new(source.limiter.clone()))
        // A declared length over the limit (or the process's body budget) is refused before reading; the
        // rest is capped and accounted while it streams, must keep a minimum rate, and must arrive whole
        // before its deadline.
        .layer(BodyLimitLayer::new(gateway.body_limits.clone()))
        .layer(RequestBodyDeadlineLayer::new(gateway.body_read_timeout))
        // Verification before any store lookup: an unauthenticated request can neither claim nor probe an id.
        .layer(
            VerifyLayer::new(source.name.clone(), source.verifier.clone(), clock)
                .with_public_url(source.public_url.as_deref())
                .shadow(bypass.clone())
                .quarantine(keep.clone()),
        )
        // A provider's handshake is answered here: it has no event id, and is never forwarded.
        .layer(HandshakeLayer::new(source.scheme, source.verifier.clone()))
        .layer(
            EventIdLayer::new(source.event_id.clone())
                .shadow(source.name.clone(), bypass)
                .quarantine(keep),
        )
        .layer(DedupLayer::new(gateway.backends.dedup.clone(), source.name.clone()))
        .service(ForwardService::new(source.handler.clone(), source.name.clone()).shadow(source.shadow))
}

/// The span of one request: its request id (set just above) and path. Never a header value.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let id = request.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
        tracing::info_span!("request", request_id = id.unwrap_or(""), path = request.uri().path())
    }
}

/// The answer to a request whose handling panicked: `500 internal_error`, counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct PanicAnswer;

impl ResponseForPanic for PanicAnswer {
    type ResponseBody = Full<Bytes>;

    fn response_for_panic(&mut self, error: Box<dyn Any + Send + 'static>) -> Response<Full<Bytes>> {
        let message = error
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| error.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %message, "a request's handling panicked; answered 500");
        crate::metrics::panic();
        crate::respond::answer(Outcome::InternalError)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;
    use crate::respond::OUTCOME_HEADER;

    #[tokio::test]
    async fn a_panic_below_answers_500_internal_error_and_the_service_keeps_answering() {
        let service = ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(PanicAnswer))
            .service(tower::service_fn(|req: Request<()>| async move {
                if req.uri().path() == "/panic" {
                    panic!("a bug");
                }
                Ok::<_, Infallible>(crate::respond::answer(Outcome::Forwarded))
            }));
        let get = |path: &'static str| async move {
            let req = Request::get(path).body(()).expect("request");
            service.oneshot(req).await.expect("infallible")
        };
        let answer = get("/panic").await;
        assert_eq!(answer.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.headers()[OUTCOME_HEADER], "internal_error");
        let next = get("/ok").await;
        assert_eq!(next.status(), http::StatusCode::OK);
    }
}
