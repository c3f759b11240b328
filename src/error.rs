//! The one table from a request's fate to its HTTP status, `x-hookgate-outcome` header and metric labels.
//! Each stage refuses with its own typed error; [`Rejection`] holds one variant per stage, and only
//! [`Rejection::outcome`], [`Rejection::reason`] and [`Outcome::status`] decide, by variant, what a sender
//! sees and what is counted. The stages never import this table: their services convert into it through
//! `From`, so the arrows point from here down to them.

use std::time::Duration;

use http::StatusCode;

use crate::body::BodyError;
use crate::dedup::layer::{DedupError, Duplicate};
use crate::forward::{Delivered, ForwardError};
use crate::ingress::allowlist::IpDenied;
use crate::ingress::rate_limit::Refused;
use crate::ingress::route::RouteError;
use crate::ingress::shed::Overloaded;
use crate::verify::VerifyError;
use crate::verify::event_id::EventIdError;
use crate::verify::handshake::HandshakeReply;

/// What happened to a request: the value of `x-hookgate-outcome` and the `outcome` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 200: delivered to the `http` or `stdout` handler.
    Forwarded,
    /// 200: a verified provider handshake, answered by the gateway with the body the provider expects.
    Handshake,
    /// 202: appended to the durable queue.
    Queued,
    /// 200: already processed; not forwarded again.
    Duplicate,
    /// 409: another request holds this event's claim.
    InFlight,
    /// 401: the signature did not verify.
    BadSignature,
    /// 403: the client IP is not allowed.
    IpDenied,
    /// 429: the client is over its rate limit.
    RateLimited,
    /// 404: no source has this path.
    NotFound,
    /// 405: the method is not POST.
    MethodNotAllowed,
    /// 413: the body is larger than the limit.
    TooLarge,
    /// 400: no usable event id, or an unreadable body.
    BadRequest,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 502: the downstream failed or answered an error.
    DownstreamError,
    /// 504: the downstream did not answer in time.
    DownstreamTimeout,
    /// 503: the gateway cannot take the event now (store, queue, or load).
    Unavailable,
    /// 500: a bug; the panic is caught and counted.
    InternalError,
}

impl Outcome {
    /// The name used in `x-hookgate-outcome`, the `outcome` label and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Handshake => "handshake",
            Outcome::Queued => "queued",
            Outcome::Duplicate => "duplicate",
            Outcome::InFlight => "in_flight",
            Outcome::BadSignature => "bad_signature",
            Outcome::IpDenied => "ip_denied",
            Outcome::RateLimited => "rate_limited",
            Outcome::NotFound => "not_found",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::TooLarge => "too_large",
            Outcome::BadRequest => "bad_request",
            Outcome::RequestTimeout => "request_timeout",
            Outcome::DownstreamError => "downstream_error",
            Outcome::DownstreamTimeout => "downstream_timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::InternalError => "internal_error",
        }
    }

    /// The HTTP status the sender gets.
    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Forwarded | Outcome::Handshake | Outcome::Duplicate => StatusCode::OK,
            Outcome::Queued => StatusCode::ACCEPTED,
            Outcome::InFlight => StatusCode::CONFLICT,
            Outcome::BadSignature => StatusCode::UNAUTHORIZED,
            Outcome::IpDenied => StatusCode::FORBIDDEN,
            Outcome::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Outcome::NotFound => StatusCode::NOT_FOUND,
            Outcome::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadRequest => StatusCode::BAD_REQUEST,
            Outcome::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Outcome::DownstreamError => StatusCode::BAD_GATEWAY,
            Outcome::DownstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The whole response body: `{"outcome":"…"}`, built at compile time so a response costs no formatting.
    pub fn body(self) -> &'static str {
        macro_rules! bodies {
            ($($variant:ident => $text:literal),* $(,)?) => {
                match self { $(Outcome::$variant => concat!("{\"outcome\":\"", $text, "\"}\n"),)* }
            };
        }
        bodies! {
            Forwarded => "forwarded", Handshake => "handshake", Queued => "queued", Duplicate => "duplicate", InFlight => "in_flight",
            BadSignature => "bad_signature", IpDenied => "ip_denied", RateLimited => "rate_limited",
            NotFound => "not_found", MethodNotAllowed => "method_not_allowed", TooLarge => "too_large",
            BadRequest => "bad_request", RequestTimeout => "request_timeout",
            DownstreamError => "downstream_error", DownstreamTimeout => "downstream_timeout",
            Unavailable => "unavailable", InternalError => "internal_error",
        }
    }
}

/// A request that got through: the sender is told it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Delivered downstream.
    Forwarded,
    /// A provider's handshake, answered with this.
    Handshake(HandshakeReply),
    /// Durably enqueued.
    Queued,
    /// Delivered before; not forwarded again.
    Duplicate,
}

impl Accepted {
    /// The outcome the sender is told.
    pub fn outcome(&self) -> Outcome {
        match self {
            Accepted::Forwarded => Outcome::Forwarded,
            Accepted::Handshake(_) => Outcome::Handshake,
            Accepted::Queued => Outcome::Queued,
            Accepted::Duplicate => Outcome::Duplicate,
        }
    }
}

impl From<Delivered> for Accepted {
    fn from(delivered: Delivered) -> Self {
        match delivered {
            Delivered::Forwarded => Accepted::Forwarded,
            Delivered::Queued => Accepted::Queued,
        }
    }
}

impl From<HandshakeReply> for Accepted {
    fn from(reply: HandshakeReply) -> Self {
        Accepted::Handshake(reply)
    }
}

impl From<Duplicate> for Accepted {
    fn from(_: Duplicate) -> Self {
        Accepted::Duplicate
    }
}

/// Why a request was refused: one variant per stage, each carrying that stage's own typed error.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Routing: no source for the path, or not POST.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Load shedding: too many requests in flight.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The allowlist.
    #[error(transparent)]
    IpDenied(#[from] IpDenied),
    /// The rate limit.
    #[error(transparent)]
    RateLimited(#[from] Refused),
    /// Reading the body.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The signature.
    #[error("bad signature: {0}")]
    BadSignature(#[from] VerifyError),
    /// The event id.
    #[error("bad request: {0}")]
    EventId(#[from] EventIdError),
    /// The dedup claim.
    #[error(transparent)]
    Dedup(#[from] DedupError),
    /// The handler.
    #[error("downstream: {0}")]
    Forward(#[from] ForwardError),
}

impl Rejection {
    /// The outcome the sender is told.
    pub fn outcome(&self) -> Outcome {
        match self {
            Rejection::Route(RouteError::NotFound) => Outcome::NotFound,
            Rejection::Route(RouteError::MethodNotAllowed) => Outcome::MethodNotAllowed,
            Rejection::Overloaded(_) => Outcome::Unavailable,
            Rejection::IpDenied(_) => Outcome::IpDenied,
            Rejection::RateLimited(_) => Outcome::RateLimited,
            Rejection::Body(BodyError::TooLarge) => Outcome::TooLarge,
            Rejection::Body(BodyError::Timeout | BodyError::TooSlow) => Outcome::RequestTimeout,
            Rejection::Body(BodyError::OverBudget) => Outcome::Unavailable,
            Rejection::Body(BodyError::Read(_)) => Outcome::BadRequest,
            Rejection::BadSignature(_) => Outcome::BadSignature,
            Rejection::EventId(_) => Outcome::BadRequest,
            Rejection::Dedup(DedupError::InFlight { .. }) => Outcome::InFlight,
            Rejection::Dedup(DedupError::StoreUnavailable { .. }) => Outcome::Unavailable,
            Rejection::Forward(ForwardError::Timeout(_)) => Outcome::DownstreamTimeout,
            // The queue could not take the event: nothing failed downstream, the sender should come back.
            Rejection::Forward(e) if e.is_queue_refusal() => Outcome::Unavailable,
            Rejection::Forward(_) => Outcome::DownstreamError,
        }
    }

    /// The bounded `reason` label: the outcome, refined where the outcome alone would hide the cause
    /// (`bad_signature:stale_timestamp`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadSignature(e) => match e {
                VerifyError::MissingHeader(_) => "bad_signature:missing_header",
                VerifyError::MalformedHeader(_) => "bad_signature:malformed_header",
                VerifyError::BadEncoding(..) => "bad_signature:bad_encoding",
                VerifyError::StaleTimestamp { .. } => "bad_signature:stale_timestamp",
                VerifyError::FutureTimestamp { .. } => "bad_signature:future_timestamp",
                VerifyError::Mismatch => "bad_signature:mismatch",
                VerifyError::NoUrl => "bad_signature:no_url",
                VerifyError::MalformedBody(_) => "bad_signature:malformed_body",
            },
            Rejection::EventId(e) => match e {
                EventIdError::Missing(_) => "bad_request:missing_event_id",
                EventIdError::BodyNotJson(_) => "bad_request:body_not_json",
                EventIdError::Invalid => "bad_request:invalid_event_id",
            },
            Rejection::Body(BodyError::Read(_)) => "bad_request:body_read",
            Rejection::Body(BodyError::TooSlow) => "request_timeout:too_slow",
            Rejection::Body(BodyError::OverBudget) => "unavailable:body_budget",
            Rejection::Overloaded(Overloaded { per_client: true, .. }) => "unavailable:client_inflight",
            Rejection::Forward(e) => match e {
                ForwardError::Timeout(_) => "downstream_timeout",
                ForwardError::Connect(_) => "downstream_error:connect",
                ForwardError::Status(s) if s.is_server_error() => "downstream_error:status_5xx",
                ForwardError::Status(_) => "downstream_error:status_other",
                ForwardError::Io(_) => "downstream_error:io",
                ForwardError::Enqueue(_) => "unavailable:queue",
                ForwardError::QueueFull => "unavailable:queue_full",
                ForwardError::Unreplicated { .. } => "unavailable:replication",
            },
            Rejection::Overloaded(_) => "unavailable:overloaded",
            Rejection::Dedup(DedupError::StoreUnavailable { .. }) => "unavailable:dedup_store",
            Rejection::RateLimited(Refused::Total(_)) => "rate_limited:total",
            other => other.outcome().as_str(),
        }
    }

    /// `Retry-After` for the refusals a sender should retry later.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::RateLimited(refused) => Some(refused.retry_after()),
            Rejection::Overloaded(Overloaded { retry_after, .. })
            | Rejection::Dedup(DedupError::InFlight { retry_after })
            | Rejection::Dedup(DedupError::StoreUnavailable { retry_after }) => Some(*retry_after),
            Rejection::Forward(e) if e.is_queue_refusal() => Some(Duration::from_secs(5)),
            Rejection::Body(BodyError::OverBudget) => Some(crate::body::BUDGET_RETRY_AFTER),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_naming_the_outcome() {
        for outcome in [
            Outcome::Forwarded,
            Outcome::InFlight,
            Outcome::DownstreamTimeout,
            Outcome::Unavailable,
        ] {
            let parsed: serde_json::Value = serde_json::from_str(outcome.body()).expect("json");
            assert_eq!(parsed["outcome"], outcome.as_str());
        }
    }

    #[test]
    fn forward_timeouts_are_504_and_other_failures_502() {
        let timeout = Rejection::Forward(ForwardError::Timeout(Duration::from_secs(1)));
        assert_eq!(timeout.outcome().status(), StatusCode::GATEWAY_TIMEOUT);
        let status = Rejection::Forward(ForwardError::Status(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(status.outcome().status(), StatusCode::BAD_GATEWAY);
    }
}
