//! The one place the request stack is assembled. Read top to bottom: the first layer is the first to see
//! a request. The order is part of the contract: the allowlist and the rate limit run before the body is read,
//! and verification runs before any dedup-store lookup.

use tower::ServiceBuilder;

use crate::gateway::Gateway;
use crate::ingress::allowlist::AllowlistCheck;
use crate::ingress::client_ip::{ClientIpLayer, ClientIpService};
use crate::ingress::gate::{Gate, GateLayer};
use crate::ingress::rate_limit::RateLimitCheck;
use crate::ingress::route::{RouteLayer, RouteService};
use crate::ingress::shed::{ShedLayer, ShedService};
use crate::pipeline::Pipeline;
use crate::respond::{RespondLayer, RespondService};

/// The assembled stack, named so that it can be stored and swapped whole.
pub type GatewayService =
    RespondService<ClientIpService<RouteService<ShedService<Gate<Gate<Pipeline, RateLimitCheck>, AllowlistCheck>>>>>;

pub fn build(gateway: &Gateway) -> GatewayService {
    ServiceBuilder::new()
        // Outermost, so that every answer, refusal or not, gets its status, outcome header and metric.
        .layer(RespondLayer)
        // The client IP is needed by the allowlist and, later, the rate limiter.
        .layer(ClientIpLayer::new(gateway.client_ip.clone()))
        // The source decides which allowlist and limits apply; 404/405 cost one map lookup. Routing first
        // also labels every later refusal with its source.
        .layer(RouteLayer::new(gateway.routes.clone()))
        // Past the in-flight cap, answer 503 at once rather than queue without bound.
        .layer(ShedLayer::new(gateway.inflight.clone(), gateway.max_inflight))
        // Before the body is read: a refused client costs no memory and no HMAC. The allowlist comes
        // before the rate limit, so that denied addresses cannot use up the allowed ones' quota.
        .layer(GateLayer(AllowlistCheck))
        .layer(GateLayer(RateLimitCheck))
        // Body limit, verification (before any store lookup), event id, dedup claim, forwarding,
        // commit or release.
        .service(Pipeline::new(gateway.body, gateway.dedup.clone()))
}
