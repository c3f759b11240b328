//! Load shedding, first after routing: a global cap on requests in flight. Past it the gateway answers
//! `503 unavailable` with `Retry-After` at once, instead of queueing work without bound and answering
//! everyone late.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::Request;
use tower::{Layer, Service};

const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The refusal of this stage: too many requests in flight; retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded: too many requests in flight")]
pub struct Overloaded {
    /// When to come back.
    pub retry_after: Duration,
}

/// Builds [`ShedService`].
#[derive(Debug, Clone)]
pub struct ShedLayer {
    inflight: Arc<AtomicUsize>,
    max: usize,
}

impl ShedLayer {
    /// `inflight` is shared by every stack built while the process runs, so a reload does not reset it.
    pub fn new(inflight: Arc<AtomicUsize>, max: usize) -> Self {
        ShedLayer { inflight, max }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = ShedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ShedService {
            inner,
            inflight: self.inflight.clone(),
            max: self.max,
        }
    }
}

/// Refuses a request at once when `max` are in flight already.
#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    inflight: Arc<AtomicUsize>,
    max: usize,
}

/// Holds one in-flight slot until the request ends, however it ends.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> Service<Request<B>> for ShedService<S>
where
    S: Service<Request<B>>,
    S::Error: From<Overloaded>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, Slotted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Either::Left(ready(Err(Overloaded {
                retry_after: RETRY_AFTER,
            }
            .into())));
        }
        let slot = Slot(self.inflight.clone());
        Either::Right(Slotted {
            future: self.inner.call(req),
            _slot: slot,
        })
    }
}

pin_project_lite::pin_project! {
    /// The inner future, with the slot it holds.
    pub struct Slotted<F> {
        #[pin]
        future: F,
        _slot: Slot,
    }
}

impl<F: Future> Future for Slotted<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    use tower::ServiceExt;

    use super::*;
    use crate::error::{Accepted, Rejection};

    #[tokio::test]
    async fn past_the_cap_requests_are_refused_at_once_and_a_finished_one_frees_its_slot() {
        let inflight = Arc::new(AtomicUsize::new(0));
        let (release, held) = oneshot::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(Some(held)));
        let layer = ShedLayer::new(inflight.clone(), 1);
        let service = layer.layer(tower::service_fn(move |_: Request<()>| {
            let held = held.lock().expect("lock").take();
            async move {
                if let Some(held) = held {
                    let _ = held.await;
                }
                Ok::<_, Rejection>(Accepted::Forwarded)
            }
        }));
        let first = tokio::spawn(service.clone().oneshot(Request::new(())));
        while inflight.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = service.clone().oneshot(Request::new(())).await;
        let Err(Rejection::Overloaded(Overloaded { retry_after })) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(retry_after, RETRY_AFTER);
        release.send(()).expect("first request waiting");
        assert!(first.await.expect("task").is_ok());
        assert_eq!(inflight.load(Ordering::SeqCst), 0, "the slot is freed");
        assert!(service.oneshot(Request::new(())).await.is_ok());
    }
}
