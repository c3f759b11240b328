//! Step 8, forwarding: hands a verified event to its source's handler. A handler failure is `502
//! downstream_error`, a handler timeout `504 downstream_timeout`; either way the sender is told to retry.

pub mod http;
pub mod layer;
pub(crate) mod pool;
pub mod queue;
pub mod stdout;
pub mod wire;

use std::net::IpAddr;
use std::time::Duration;

use ::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::verify::event_id::EventId;
use bytes::Bytes;

/// What a handler did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The downstream answered 2xx, or the event was written.
    Forwarded,
    /// Durably enqueued; the delivery workers take it from there.
    Queued,
}

/// Why a handler could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no answer within {0:?}")]
    /// The handler did not finish within its timeout.
    Timeout(Duration),
    #[error("cannot reach the downstream: {0}")]
    /// The downstream could not be reached.
    Connect(String),
    #[error("the downstream answered {0}")]
    /// The downstream answered with this non-2xx status.
    Status(StatusCode),
    #[error("cannot write the event: {0}")]
    /// Reading or writing failed midway.
    Io(String),
    #[error("cannot append the event to the queue: {0}")]
    /// The queue could not take the event.
    Enqueue(String),
    /// The queue holds `maxlen` undelivered events: refused, never trimmed.
    #[error("the queue is full (maxlen undelivered events)")]
    QueueFull,
    /// Fewer replicas than `wait_replicas` confirmed the append in time: the event is in the queue, but a
    /// failover could lose it, so it is not acknowledged. The sender's retry does not append it again.
    #[error("{acknowledged} of {wanted} replicas confirmed the append in time")]
    Unreplicated {
        /// Replicas that confirmed.
        acknowledged: u32,
        /// `wait_replicas`.
        wanted: u32,
    },
}

impl ForwardError {
    /// The queue could not take the event (Redis, `maxlen`, or replicas): nothing failed downstream, and
    /// the sender should come back later.
    pub fn is_queue_refusal(&self) -> bool {
        matches!(
            self,
            ForwardError::Enqueue(_) | ForwardError::QueueFull | ForwardError::Unreplicated { .. }
        )
    }
}

/// One accepted event on its way to a handler, with what the gateway learned about it.
pub struct Delivery<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The request's headers, as received.
    pub headers: &'a HeaderMap,
    /// The exact body.
    pub body: &'a Bytes,
    /// The event id, claimed in the dedup store (for a shadow source's refused request, the body's hash,
    /// not claimed).
    pub event_id: &'a EventId,
    /// A shadow source's verdict (`pass`, or what enforce mode would have refused), sent on as
    /// `x-hookgate-verdict`; `None` for an enforcing source.
    pub verdict: Option<&'static str>,
    /// The resolved client IP.
    pub client_ip: IpAddr,
    /// The request id set at the door.
    pub request_id: &'a HeaderValue,
}

/// A source's downstream handler.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per source, built once and kept behind an Arc"
)]
pub enum Handler {
    /// POST to a downstream URL.
    Http(http::HttpHandler),
    /// One JSON line per event on standard output.
    Stdout(stdout::StdoutHandler),
    /// Append to a durable Redis stream; workers deliver it.
    Queue(std::sync::Arc<queue::Queue>),
    /// Drops the event: for benchmarks of the gateway alone.
    Discard,
}

impl Handler {
    /// Delivers one event; the caller commits or releases its claim on the result.
    pub async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, ForwardError> {
        match self {
            Handler::Http(h) => h.deliver(delivery).await,
            Handler::Stdout(h) => h.deliver(delivery).await,
            Handler::Queue(q) => q.enqueue(delivery).await,
            Handler::Discard => Ok(Delivered::Forwarded),
        }
    }
}

/// A shadow source's verdict on a forwarded request: `pass`, `ip_denied`, `bad_signature` or `bad_request`.
pub const VERDICT_HEADER: HeaderName = HeaderName::from_static("x-hookgate-verdict");

/// Names the source on a forwarded request.
pub const SOURCE_HEADER: HeaderName = HeaderName::from_static("x-hookgate-source");
/// Carries the event id on a forwarded request.
pub const EVENT_ID_HEADER: HeaderName = HeaderName::from_static("x-hookgate-event-id");
pub use crate::peer::{FORWARDED_FOR, REQUEST_ID_HEADER};

/// Hop-by-hop headers (RFC 9110 §7.6.1) concern one connection and are never passed on. `host` and
/// `content-length` are set anew for the downstream request.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Headers about the client and the request's way here: a sender could forge each, so none passes on as
/// sent. The gateway sets `X-Forwarded-For`, `X-Real-IP` and `Forwarded` from the client IP it resolved.
pub(crate) const FORWARDING_HEADERS: [HeaderName; 6] = [
    FORWARDED_FOR,
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-port"),
];

/// The end-to-end headers of the original request, without hop-by-hop ones nor those the `Connection`
/// header names, nor the gateway's own headers (which a sender must not be able to forge).
pub(crate) fn end_to_end_headers(original: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let listed: Vec<String> = original
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect();
    original.iter().filter(move |(name, _)| {
        !is_hop_by_hop(name)
            && !name.as_str().starts_with("x-hookgate-")
            && !FORWARDING_HEADERS.contains(name)
            && *name != REQUEST_ID_HEADER
            && !listed.iter().any(|token| token == name.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-hookgate-source", HeaderValue::from_static("forged"));
        h.insert("stripe-signature", HeaderValue::from_static("t=1,v1=00"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let kept: Vec<_> = end_to_end_headers(&h)
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("")))
            .collect();
        assert_eq!(
            kept,
            vec![("stripe-signature", "t=1,v1=00"), ("x-multi", "a"), ("x-multi", "b")]
        );
    }
}
