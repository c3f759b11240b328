//! The request id, set at the door: the sender's `x-request-id` when it is a short printable value, else
//! a new random one. tower-http's `SetRequestIdLayer` sets it (with [`MakeId`]) and
//! `PropagateRequestIdLayer` answers it back; [`SaneIdLayer`] first drops a sender's value that is empty,
//! longer than 128 bytes or not printable, so that such a value is replaced rather than logged and
//! forwarded.

use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::peer::REQUEST_ID_HEADER;

/// Longest sender-chosen request id that is kept.
const MAX_LEN: usize = 128;

/// Makes a new request id: 32 hex digits from the thread's random generator (no system call).
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut id = [0u8; 32];
        // Cannot fail: the buffer is exactly twice the length of the bytes. (`format!` of a `u128` in hex
        // cost three times as much.)
        let _ = hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut id);
        HeaderValue::from_bytes(&id).ok().map(RequestId::new)
    }
}

/// Builds [`SaneId`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SaneIdLayer;

impl<S> Layer<S> for SaneIdLayer {
    type Service = SaneId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SaneId { inner }
    }
}

/// Drops an unusable `x-request-id` from the sender, so that a new one is made.
#[derive(Debug, Clone)]
pub struct SaneId<S> {
    inner: S,
}

fn usable(value: &HeaderValue) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.to_str().is_ok()
}

impl<S, B> Service<Request<B>> for SaneId<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let unusable = req.headers().get_all(REQUEST_ID_HEADER).iter().count() > 1
            || req.headers().get(REQUEST_ID_HEADER).is_some_and(|v| !usable(v));
        if unusable {
            req.headers_mut().remove(REQUEST_ID_HEADER);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;
    use tower_http::request_id::SetRequestIdLayer;

    use super::*;

    /// The id the inner service sees for a sender's `x-request-id` header.
    async fn id_seen(sent: Option<&str>) -> String {
        let service = tower::ServiceBuilder::new()
            .layer(SaneIdLayer)
            .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeId))
            .service_fn(|req: Request<()>| async move {
                let id = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
                Ok::<_, Infallible>(http::Response::new(id.unwrap_or_default().to_owned()))
            });
        let mut req = Request::new(());
        if let Some(sent) = sent {
            req.headers_mut()
                .insert(REQUEST_ID_HEADER, HeaderValue::from_str(sent).expect("value"));
        }
        service.oneshot(req).await.expect("infallible").into_body()
    }

    #[tokio::test]
    async fn request_ids_are_kept_when_sane_and_made_otherwise() {
        assert_eq!(id_seen(Some("abc-123")).await, "abc-123");
        let made = id_seen(None).await;
        assert_eq!(made.len(), 32);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        assert_ne!(made, id_seen(None).await, "each request gets its own");
        assert_eq!(id_seen(Some(&"x".repeat(200))).await.len(), 32);
        assert_eq!(id_seen(Some("")).await.len(), 32);
    }
}
