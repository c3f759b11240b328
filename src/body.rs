//! Step 6, the body: its length is checked against `max_body_bytes` from `Content-Length` before a byte
//! is read, and capped while it streams (`413 too_large`; exactly the limit is accepted). Every body held
//! counts against one budget for the whole process (`max_body_buffer_bytes`): a declared length is
//! reserved before reading, a body without one while it streams, and past the budget the answer is `503
//! unavailable`. A body must keep coming at `min_body_rate` once `body_rate_grace` has passed (`408`), and
//! reading it has a deadline for the whole body (tower-http's `RequestBodyDeadlineLayer`, in the stack;
//! `408 request_timeout`). The raw bytes are kept unchanged: signatures cover the exact bytes.
//!
//! tower-http's `RequestBodyLimitLayer` is not used because it answers its `413` on its own, outside the
//! outcome table (no `x-hookgate-outcome`, no metric), and knows no budget.

use std::future::{Ready, ready};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::{Request, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a sender refused for the budget is asked to wait.
pub const BUDGET_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a body could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// Longer than `server.max_body_bytes`.
    #[error("the body is longer than server.max_body_bytes")]
    TooLarge,
    /// Not received within `server.body_read_timeout`.
    #[error("the body was not received within server.body_read_timeout")]
    Timeout,
    /// Arriving slower than `server.min_body_rate`, after the grace.
    #[error("the body arrives slower than server.min_body_rate")]
    TooSlow,
    /// Holding it would take the bodies held at once past `server.max_body_buffer_bytes`.
    #[error("the bodies held at once would exceed server.max_body_buffer_bytes")]
    OverBudget,
    /// The connection failed or the framing was invalid.
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// The bytes of body all requests hold together, against one cap.
#[derive(Debug)]
pub struct BodyBudget {
    held: AtomicU64,
    max: u64,
}

impl BodyBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(BodyBudget {
            held: AtomicU64::new(0),
            max,
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    fn reserve(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }
}

/// One request's share of the budget, given back when the last holder drops it: it travels in the
/// request's extensions, so that it lasts as long as the body it accounts for.
#[derive(Debug)]
pub struct Hold {
    budget: Arc<BodyBudget>,
    reserved: AtomicU64,
}

impl Hold {
    fn new(budget: Arc<BodyBudget>) -> Arc<Self> {
        Arc::new(Hold {
            budget,
            reserved: AtomicU64::new(0),
        })
    }

    /// Makes sure `total` bytes are reserved; false when the budget has not that much left.
    fn cover(&self, total: u64) -> bool {
        let reserved = self.reserved.load(Ordering::Acquire);
        if total <= reserved {
            return true;
        }
        if !self.budget.reserve(total - reserved) {
            return false;
        }
        self.reserved.store(total, Ordering::Release);
        true
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(*self.reserved.get_mut(), Ordering::AcqRel);
    }
}

/// The least a body must keep up: `bytes_per_second` on average, once `grace` has passed.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    /// Average bytes per second since the head arrived.
    pub bytes_per_second: u64,
    /// Time before the rate applies.
    pub grace: Duration,
}

/// The body stage's settings.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: u64,
    /// The process's budget.
    pub budget: Arc<BodyBudget>,
    /// The slowest body accepted; `None` for no floor.
    pub min_rate: Option<MinRate>,
}

/// Builds [`BodyLimit`].
#[derive(Debug, Clone)]
pub struct BodyLimitLayer {
    limits: BodyLimits,
}

impl BodyLimitLayer {
    /// Applies `limits` to every body.
    pub fn new(limits: BodyLimits) -> Self {
        BodyLimitLayer { limits }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// Refuses a declared length over the limit or the budget before reading, and hands the inner stage a
/// [`Guarded`] body.
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<Guarded<B>>>,
    S::Error: From<BodyError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limits.max_bytes) {
            return Either::Left(ready(Err(BodyError::TooLarge.into())));
        }
        let hold = Hold::new(self.limits.budget.clone());
        if let Some(length) = declared
            && !hold.cover(length)
        {
            return Either::Left(ready(Err(BodyError::OverBudget.into())));
        }
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(hold.clone());
        let body = Guarded {
            inner: body,
            max_bytes: self.limits.max_bytes,
            received: 0,
            hold,
            min_rate: self.limits.min_rate,
            started: Instant::now(),
            sleep: None,
        };
        Either::Right(self.inner.call(Request::from_parts(parts, body)))
    }
}

pin_project_lite::pin_project! {
    /// A body capped at `max_bytes`, accounted against the budget, and held to the minimum rate.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        max_bytes: u64,
        received: u64,
        hold: Arc<Hold>,
        min_rate: Option<MinRate>,
        started: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                    if *this.received > *this.max_bytes {
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge))));
                    }
                    if !this.hold.cover(*this.received) {
                        return Poll::Ready(Some(Err(Box::new(BodyError::OverBudget))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(rate) = this.min_rate else {
                    return Poll::Pending;
                };
                // By then, the bytes received so far plus one more would be on time.
                let due = rate.grace
                    + Duration::from_secs_f64((*this.received + 1) as f64 / rate.bytes_per_second.max(1) as f64);
                let deadline = *this.started + due;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyError::TooSlow)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
    if let Some(error) = error.downcast_ref::<BodyError>() {
        error.clone()
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
    fn limits(max_bytes: u64, budget: u64) -> BodyLimits {
        BodyLimits {
            max_bytes,
            budget: BodyBudget::new(budget),
            min_rate: None,
        }
    }

    fn reader(max: u64) -> impl Service<Request<Full<Bytes>>, Response = Bytes, Error = TestError> {
        tower::ServiceBuilder::new()
            .layer(BodyLimitLayer::new(limits(max, 1 << 20)))
            .service_fn(|req: Request<Guarded<Full<Bytes>>>| async move {
                collect(req.into_body()).await.map_err(TestError)
            })
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
        let service = tower::ServiceBuilder::new()
            .layer(BodyLimitLayer::new(limits(8, 1 << 20)))
            .service_fn(move |_: Request<Guarded<Full<Bytes>>>| {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                async { Ok::<_, TestError>(Bytes::new()) }
            });
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
            let body = StreamBody::new(futures_util::stream::iter(
                parts
                    .iter()
                    .map(|p| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(p)))),
            ));
            guarded(body, limits(8, 1 << 20))
        };
        let joined = collect(frames(&[b"1234", b"5678"])).await;
        assert_eq!(joined.expect("8 bytes").as_ref(), b"12345678");
        let over = collect(frames(&[b"1234", b"5678", b"9"])).await;
        assert!(matches!(over, Err(BodyError::TooLarge)));
    }

    /// The body a [`BodyLimit`] would hand on, without the service around it.
    fn guarded<B>(body: B, limits: BodyLimits) -> Guarded<B> {
        Guarded {
            inner: body,
            max_bytes: limits.max_bytes,
            received: 0,
            hold: Hold::new(limits.budget),
            min_rate: limits.min_rate,
            started: Instant::now(),
            sleep: None,
        }
    }

    /// Bodies held at once are capped for the whole process: a declared length is reserved before a byte
    /// is read, a streamed body as it comes, and all of it is given back when the request is done.
    #[tokio::test]
    async fn the_budget_is_shared_reserved_up_front_and_given_back() {
        let budget = BodyBudget::new(10);
        let limits = BodyLimits {
            max_bytes: 8,
            budget: budget.clone(),
            min_rate: None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
        let service = tower::ServiceBuilder::new()
            .layer(BodyLimitLayer::new(limits.clone()))
            .service_fn(move |req: Request<Guarded<Full<Bytes>>>| {
                let rx = rx.lock().expect("lock").take();
                async move {
                    // Held as a request is: the extensions (with the hold) live until the request ends.
                    let (parts, body) = req.into_parts();
                    let bytes = collect(body).await.map_err(TestError)?;
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    drop(parts);
                    Ok::<_, TestError>(bytes)
                }
            });
        let first = tokio::spawn(service.clone().oneshot(post(b"12345678", Some(8))));
        while budget.held() < 8 {
            tokio::task::yield_now().await;
        }
        let refused = service.clone().oneshot(post(b"123", Some(3))).await;
        assert!(matches!(refused, Err(TestError(BodyError::OverBudget))), "{refused:?}");
        let streamed = service.clone().oneshot(post(b"123", None)).await;
        assert!(
            matches!(streamed, Err(TestError(BodyError::OverBudget))),
            "{streamed:?}"
        );
        assert_eq!(
            service
                .clone()
                .oneshot(post(b"12", Some(2)))
                .await
                .expect("fits")
                .as_ref(),
            b"12"
        );
        tx.send(()).expect("first still waits");
        first.await.expect("task").expect("first");
        assert_eq!(budget.held(), 0, "everything given back");
    }

    /// A body that trickles: after the grace, it must average the minimum rate.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut_once_it_falls_below_the_minimum_rate() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(1);
        let limits = BodyLimits {
            max_bytes: 1 << 20,
            budget: BodyBudget::new(1 << 20),
            min_rate: Some(MinRate {
                bytes_per_second: 100,
                grace: Duration::from_secs(5),
            }),
        };
        let body = guarded(StreamBody::new(tokio_stream_from(rx)), limits);
        let started = Instant::now();
        let trickle = tokio::spawn(async move {
            // 10 bytes a second: fine during the grace, too slow after it.
            for _ in 0..100 {
                if tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"0123456789"))))
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let err = collect(body).await;
        assert!(matches!(err, Err(BodyError::TooSlow)), "{err:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(7),
            "{took:?}"
        );
        trickle.abort();
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
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
