//! Steps 5 to 9, after the ingress checks: read the body within its limits (`413 too_large`, `408
//! request_timeout`), verify it (`401`), take its event id (`400`), and hand it to the source's handler
//! (`502`/`504` on failure).

use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::BodyExt;
use hyper::body::Body;
use tower::Service;

use crate::config::OnStoreError;
use crate::dedup::{Claim, ClaimResult, DedupStore};
use crate::error::{Accepted, Rejection};
use crate::forward::{Delivery, ForwardError, REQUEST_ID_HEADER};
use crate::gateway::{BodyLimits, Source};
use crate::ingress::client_ip::ClientIp;
use crate::verify::event_id::EventId;

/// How long a sender is asked to wait when the dedup store is down.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The innermost service of the stack.
#[derive(Debug, Clone)]
pub struct Pipeline {
    limits: BodyLimits,
    dedup: Arc<DedupStore>,
}

impl Pipeline {
    pub fn new(limits: BodyLimits, dedup: Arc<DedupStore>) -> Self {
        Pipeline { limits, dedup }
    }
}

impl<B> Service<Request<B>> for Pipeline
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Accepted;
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<Accepted, Rejection>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Rejection>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(process(req, self.limits, self.dedup.clone()))
    }
}

async fn process<B>(req: Request<B>, limits: BodyLimits, dedup: Arc<DedupStore>) -> Result<Accepted, Rejection>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let source = parts
        .extensions
        .get::<Arc<Source>>()
        .cloned()
        .ok_or(Rejection::NotFound)?;
    let client_ip = parts
        .extensions
        .get::<ClientIp>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);

    let body = read_body(body, limits).await?;
    let verified = source.verifier.verify(parts.headers, body, unix_now())?;
    let event_id = source.event_id.extract(&verified)?;
    let request_id = request_id(verified.headers());
    // Only a verified event reaches the store: an unauthenticated request can neither claim nor probe an id.
    let claim = match admit(&dedup, &source.name, &event_id).await? {
        Admission::Duplicate => return Ok(Accepted::Duplicate),
        Admission::Deliver(claim) => claim,
    };

    let delivery = Delivery {
        source: &source.name,
        event: &verified,
        event_id: &event_id,
        client_ip,
        request_id: &request_id,
    };
    let started = Instant::now();
    let result = source.handler.deliver(&delivery).await;
    crate::metrics::forward(&source.name, status_class(&result), started.elapsed());
    if let Err(error) = &result {
        tracing::warn!(source = %source.name, %client_ip, event_id = %event_id, %error, "delivery failed; the sender will retry");
    }
    if let Some(claim) = claim {
        settle(&dedup, &source.name, claim, result.is_ok()).await;
    }
    Ok(result?)
}

enum Admission {
    /// Deliver, under this claim, or without dedup when the store is down and `on_store_error = "accept"`.
    Deliver(Option<Claim>),
    /// Delivered before: answer `200 duplicate` and forward nothing.
    Duplicate,
}

/// Claims the event id, or says why the event must not be delivered now.
async fn admit(dedup: &Arc<DedupStore>, source: &Arc<str>, id: &EventId) -> Result<Admission, Rejection> {
    match dedup.claim(source, id).await {
        Ok(ClaimResult::Claimed(claim)) => {
            crate::metrics::dedup(source, "claimed");
            Ok(Admission::Deliver(Some(claim)))
        }
        Ok(ClaimResult::Duplicate) => {
            crate::metrics::dedup(source, "duplicate");
            Ok(Admission::Duplicate)
        }
        Ok(ClaimResult::InFlight { retry_after }) => {
            crate::metrics::dedup(source, "in_flight");
            Err(Rejection::InFlight { retry_after })
        }
        Err(error) => {
            let accept = dedup.on_error() == OnStoreError::Accept;
            crate::metrics::dedup(
                source,
                if accept {
                    "store_error_accepted"
                } else {
                    "store_error_rejected"
                },
            );
            if dedup.should_warn() {
                let action = if accept {
                    "forwarding without dedup"
                } else {
                    "answering 503"
                };
                tracing::warn!(%source, store = dedup.kind(), %error, "dedup store unavailable; {action}");
            }
            if accept {
                Ok(Admission::Deliver(None))
            } else {
                Err(Rejection::Unavailable {
                    reason: "unavailable:dedup_store",
                    retry_after: STORE_RETRY_AFTER,
                })
            }
        }
    }
}

/// Commits after a delivery, releases after a failure. A store failure here is logged and counted, and
/// never changes what the sender is told.
async fn settle(dedup: &DedupStore, source: &str, claim: Claim, delivered: bool) {
    let (op, result) = if delivered {
        ("commit", claim.commit().await)
    } else {
        ("release", claim.release().await)
    };
    match result {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            source,
            op,
            "the claim's lease ran out before it was settled; raise dedup.lease"
        ),
        Err(error) => {
            if dedup.should_warn() {
                tracing::warn!(source, op, %error, "dedup store failed after delivery; the lease will free the id");
            }
        }
    }
}

/// Reads the whole body: refused before reading when `Content-Length` is too large, and while reading
/// once more than `max_bytes` arrived (a body of exactly `max_bytes` is accepted). The raw bytes are kept
/// unchanged, since signatures cover the exact bytes.
async fn read_body<B>(body: B, limits: BodyLimits) -> Result<Bytes, Rejection>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || Rejection::TooLarge {
        limit: limits.max_bytes,
    };
    let hint = body.size_hint();
    if hint.lower() > limits.max_bytes {
        return Err(too_large());
    }
    let read = async {
        let mut body = pin!(body);
        let mut chunks: Vec<Bytes> = Vec::with_capacity(1);
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Rejection::BodyRead(e.into().to_string()))?;
            // Trailers carry nothing that is signed; only data frames count.
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                if total > limits.max_bytes {
                    return Err(too_large());
                }
                chunks.push(data);
            }
        }
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(total as usize);
                chunks.iter().for_each(|c| joined.extend_from_slice(c));
                joined.freeze()
            }
        })
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .map_err(|_| Rejection::BodyTimeout(limits.read_timeout))?
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The sender's `x-request-id` when it is a short printable value, else a new random one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            let id = format!("{:032x}", rand::random::<u128>());
            HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
        })
}

fn status_class(result: &Result<Accepted, ForwardError>) -> &'static str {
    match result {
        Ok(Accepted::Queued) | Err(ForwardError::Enqueue(_)) => "queue",
        Ok(_) => "2xx",
        Err(ForwardError::Status(s)) if s.is_client_error() => "4xx",
        Err(ForwardError::Status(s)) if s.is_server_error() => "5xx",
        Err(ForwardError::Status(_)) => "other",
        Err(ForwardError::Timeout(_)) => "timeout",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Full, StreamBody};

    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        max_bytes: 8,
        read_timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn exactly_the_limit_is_accepted_and_one_more_byte_is_not() {
        let ok = read_body(Full::new(Bytes::from_static(b"12345678")), LIMITS).await;
        assert_eq!(ok.expect("8 bytes").as_ref(), b"12345678");
        let err = read_body(Full::new(Bytes::from_static(b"123456789")), LIMITS).await;
        assert!(matches!(err, Err(Rejection::TooLarge { limit: 8 })));
    }

    #[tokio::test]
    async fn streamed_chunks_are_joined_and_capped_while_reading() {
        let frames = |parts: &'static [&'static [u8]]| {
            StreamBody::new(futures_util::stream::iter(parts.iter().map(|p| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(p)))
            })))
        };
        let joined = read_body(frames(&[b"1234", b"5678"]), LIMITS).await;
        assert_eq!(joined.expect("8 bytes").as_ref(), b"12345678");
        let over = read_body(frames(&[b"1234", b"5678", b"9"]), LIMITS).await;
        assert!(matches!(over, Err(Rejection::TooLarge { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out() {
        let endless = StreamBody::new(futures_util::stream::pending::<
            Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
        >());
        let err = read_body(endless, LIMITS).await;
        assert!(matches!(err, Err(Rejection::BodyTimeout(_))));
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id(&headers).len(), 32);
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(&"x".repeat(200)).expect("value"),
        );
        assert_eq!(request_id(&headers).len(), 32);
    }
}
