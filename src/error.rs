//! The one table from a request's fate to its HTTP status, `x-hookgate-outcome` header and metric labels.
//! Stages return typed errors; only [`Rejection::outcome`] and [`Outcome::status`] decide what a sender sees.

use std::time::Duration;

use http::StatusCode;

use crate::forward::ForwardError;
use crate::verify::VerifyError;
use crate::verify::event_id::EventIdError;

/// What happened to a request: the value of `x-hookgate-outcome` and the `outcome` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Forwarded,
    Queued,
    Duplicate,
    InFlight,
    BadSignature,
    IpDenied,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    BadRequest,
    RequestTimeout,
    DownstreamError,
    DownstreamTimeout,
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
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
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Forwarded | Outcome::Duplicate => StatusCode::OK,
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
            Forwarded => "forwarded", Queued => "queued", Duplicate => "duplicate", InFlight => "in_flight",
            BadSignature => "bad_signature", IpDenied => "ip_denied", RateLimited => "rate_limited",
            NotFound => "not_found", MethodNotAllowed => "method_not_allowed", TooLarge => "too_large",
            BadRequest => "bad_request", RequestTimeout => "request_timeout",
            DownstreamError => "downstream_error", DownstreamTimeout => "downstream_timeout",
            Unavailable => "unavailable",
        }
    }
}

/// A request that got through: the sender is told it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Forwarded,
    Queued,
    Duplicate,
}

impl Accepted {
    pub fn outcome(self) -> Outcome {
        match self {
            Accepted::Forwarded => Outcome::Forwarded,
            Accepted::Queued => Outcome::Queued,
            Accepted::Duplicate => Outcome::Duplicate,
        }
    }
}

/// Why a request was refused, with the data each stage knows.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("no source serves this path")]
    NotFound,
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error("client IP is not in the source's allowlist")]
    IpDenied,
    #[error("rate limit exceeded, retry in {retry_after:?}")]
    RateLimited {
        retry_after: Duration,
        /// The source's total for all clients, rather than this client's own limit.
        total: bool,
    },
    #[error("body is longer than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the body was not received within {0:?}")]
    BodyTimeout(Duration),
    #[error("the body could not be read: {0}")]
    BodyRead(String),
    #[error("bad signature: {0}")]
    BadSignature(#[from] VerifyError),
    #[error("bad request: {0}")]
    EventId(#[from] EventIdError),
    #[error("downstream: {0}")]
    Forward(#[from] ForwardError),
    #[error("the event is being processed by another request; retry in {retry_after:?}")]
    InFlight { retry_after: Duration },
    #[error("unavailable: {reason}")]
    Unavailable {
        reason: &'static str,
        retry_after: Duration,
    },
}

impl Rejection {
    pub fn outcome(&self) -> Outcome {
        match self {
            Rejection::NotFound => Outcome::NotFound,
            Rejection::MethodNotAllowed => Outcome::MethodNotAllowed,
            Rejection::IpDenied => Outcome::IpDenied,
            Rejection::RateLimited { .. } => Outcome::RateLimited,
            Rejection::TooLarge { .. } => Outcome::TooLarge,
            Rejection::BodyTimeout(_) => Outcome::RequestTimeout,
            Rejection::BodyRead(_) => Outcome::BadRequest,
            Rejection::BadSignature(_) => Outcome::BadSignature,
            Rejection::EventId(_) => Outcome::BadRequest,
            Rejection::Forward(ForwardError::Timeout(_)) => Outcome::DownstreamTimeout,
            // The queue could not take the event: nothing failed downstream, the sender should come back.
            Rejection::Forward(ForwardError::Enqueue(_)) => Outcome::Unavailable,
            Rejection::Forward(_) => Outcome::DownstreamError,
            Rejection::InFlight { .. } => Outcome::InFlight,
            Rejection::Unavailable { .. } => Outcome::Unavailable,
        }
    }

    /// The bounded `reason` label: the outcome, refined where the outcome alone would hide the cause
    /// (`bad_signature:stale_timestamp`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadSignature(e) => match e.reason() {
                "missing_header" => "bad_signature:missing_header",
                "malformed_header" => "bad_signature:malformed_header",
                "bad_encoding" => "bad_signature:bad_encoding",
                "stale_timestamp" => "bad_signature:stale_timestamp",
                "future_timestamp" => "bad_signature:future_timestamp",
                _ => "bad_signature:mismatch",
            },
            Rejection::EventId(e) => match e.reason() {
                "missing_event_id" => "bad_request:missing_event_id",
                "body_not_json" => "bad_request:body_not_json",
                _ => "bad_request:invalid_event_id",
            },
            Rejection::BodyRead(_) => "bad_request:body_read",
            Rejection::Forward(e) => e.reason(),
            Rejection::Unavailable { reason, .. } => reason,
            Rejection::RateLimited { total: true, .. } => "rate_limited:total",
            other => other.outcome().as_str(),
        }
    }

    /// `Retry-After` for the refusals a sender should retry later.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::RateLimited { retry_after, .. }
            | Rejection::InFlight { retry_after }
            | Rejection::Unavailable { retry_after, .. } => Some(*retry_after),
            Rejection::Forward(ForwardError::Enqueue(_)) => Some(Duration::from_secs(5)),
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
