//! Step 6, the body: its length is checked against `max_body_bytes` from `Content-Length` before a byte
//! is read, and capped while it streams (`413 too_large`; exactly the limit is accepted). Reading it has a
//! deadline for the whole body (tower-http's `RequestBodyDeadlineLayer`, in the stack; `408
//! request_timeout`). The raw bytes are kept unchanged: signatures cover the exact bytes.
//!
//! The streaming cap is `http_body_util::Limited`, the body tower-http's `RequestBodyLimitLayer` uses;
//! that layer is not used itself because it answers its `413` on its own, outside the outcome table (no
//! `x-hookgate-outcome`, no metric).

use std::future::{Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than `max_body_bytes`, by `Content-Length` or while streaming.
    #[error("the body is longer than server.max_body_bytes")]
    TooLarge,
    /// Not all there before the body deadline.
    #[error("the body was not received within server.body_read_timeout")]
    Timeout,
    /// The connection failed while the body was read.
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// Builds [`BodyLimit`].
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    max_bytes: u64,
}

impl BodyLimitLayer {
    /// Bodies of at most `max_bytes` pass.
    pub fn new(max_bytes: u64) -> Self {
        BodyLimitLayer { max_bytes }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// Refuses a body whose `Content-Length` is too large with a ready answer, and caps the others.
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    max_bytes: u64,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<Limited<B>>>,
    S::Error: From<BodyError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // hyper has refused a malformed Content-Length already; an unreadable one is left to the cap.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_bytes) {
            return Either::Left(ready(Err(BodyError::TooLarge.into())));
        }
        let cap = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        Either::Right(self.inner.call(req.map(|body| Limited::new(body, cap))))
    }
}

/// Reads the whole body. Run below [`BodyLimit`] and the body deadline, whose errors it tells apart.
pub async fn collect<B>(body: B) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    let mut chunks: Vec<Bytes> = Vec::with_capacity(1);
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(e.into()))?;
        // Trailers carry nothing that is signed; only data frames count.
        if let Ok(data) = frame.into_data() {
            total += data.len();
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            chunks.iter().for_each(|c| joined.extend_from_slice(c));
            joined.freeze()
        }
    })
}

fn classify(error: BoxError) -> BodyError {
    if error.is::<http_body_util::LengthLimitError>() {
        BodyError::TooLarge
    } else if error.is::<tower_http::timeout::TimeoutError>() {
        BodyError::Timeout
    } else {
        BodyError::Read(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::{Full, StreamBody};
    use tower::ServiceExt;
    use tower_http::timeout::RequestBodyDeadlineLayer;

    use super::*;

    /// The layers under test around a service that reads the body, as the stack has them.
    fn reader(max: u64) -> impl Service<Request<Full<Bytes>>, Response = Bytes, Error = TestError> {
        tower::ServiceBuilder::new().layer(BodyLimitLayer::new(max)).service_fn(
            |req: Request<Limited<Full<Bytes>>>| async move { collect(req.into_body()).await.map_err(TestError) },
        )
    }

    #[derive(Debug)]
    struct TestError(BodyError);
    impl From<BodyError> for TestError {
        fn from(e: BodyError) -> Self {
            TestError(e)
        }
    }

    fn post(body: &'static [u8], declared: Option<u64>) -> Request<Full<Bytes>> {
        let mut req = Request::post("/")
            .body(Full::new(Bytes::from_static(body)))
            .expect("request");
        if let Some(length) = declared {
            req.headers_mut().insert(header::CONTENT_LENGTH, length.into());
        }
        req
    }

    #[tokio::test]
    async fn exactly_the_limit_is_accepted_and_one_more_byte_is_not() {
        let ok = reader(8).oneshot(post(b"12345678", Some(8))).await;
        assert_eq!(ok.expect("8 bytes").as_ref(), b"12345678");
        let over = reader(8).oneshot(post(b"123456789", None)).await;
        assert!(matches!(over, Err(TestError(BodyError::TooLarge))), "{over:?}");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = read.clone();
        let service = tower::ServiceBuilder::new().layer(BodyLimitLayer::new(8)).service_fn(
            move |_: Request<Limited<Full<Bytes>>>| {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                async { Ok::<_, TestError>(Bytes::new()) }
            },
        );
        let refused = service.oneshot(post(b"", Some(9))).await;
        assert!(matches!(refused, Err(TestError(BodyError::TooLarge))));
        assert!(
            !read.load(std::sync::atomic::Ordering::SeqCst),
            "the inner service was called"
        );
    }

    #[tokio::test]
    async fn streamed_chunks_are_joined_and_capped_while_reading() {
        let frames = |parts: &'static [&'static [u8]]| {
            Limited::new(
                StreamBody::new(futures_util::stream::iter(
                    parts
                        .iter()
                        .map(|p| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(p)))),
                )),
                8,
            )
        };
        let joined = collect(frames(&[b"1234", b"5678"])).await;
        assert_eq!(joined.expect("8 bytes").as_ref(), b"12345678");
        let over = collect(frames(&[b"1234", b"5678", b"9"])).await;
        assert!(matches!(over, Err(BodyError::TooLarge)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_meets_the_deadline() {
        let service = tower::ServiceBuilder::new()
            .layer(RequestBodyDeadlineLayer::new(Duration::from_secs(5)))
            .service_fn(|req: Request<_>| async move { collect(req.into_body()).await });
        let endless = StreamBody::new(futures_util::stream::pending::<
            Result<hyper::body::Frame<Bytes>, Infallible>,
        >());
        let err = service.oneshot(Request::new(endless)).await;
        assert!(matches!(err, Err(BodyError::Timeout)), "{err:?}");
    }
}
