//! Load shedding, first after routing: a cap on the requests in flight of each client, and a global one.
//! Past either the gateway answers
//! `503 unavailable` with `Retry-After` at once, instead of queueing work without bound and answering
//! everyone late.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use futures_util::future::Either;
use http::Request;
use tower::{Layer, Service};

use crate::peer::{ClientIp, UNKNOWN_CLIENT, client_key};

const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The refusal of this stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded: too many requests in flight")]
pub struct Overloaded {
    /// When to come back.
    pub retry_after: Duration,
    /// True when the client's own cap was reached, false for the global one.
    pub per_client: bool,
}

/// Requests in flight per client, against one cap: so that one client (trickling bodies, say) cannot hold
/// the global in-flight slots every other sender needs.
#[derive(Debug)]
pub struct ClientSlots {
    open: Mutex<HashMap<u128, usize, foldhash::fast::RandomState>>,
    max: usize,
    ipv6_prefix: u8,
}

impl ClientSlots {
    /// At most `max` requests in flight per client, IPv6 clients keyed by their first `ipv6_prefix` bits.
    pub fn new(max: usize, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(ClientSlots {
            open: Mutex::default(),
            max,
            ipv6_prefix,
        })
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = client_key(ip, self.ipv6_prefix);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            key,
        })
    }
}

/// One request of one client, counted until dropped.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: u128,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Builds [`ShedService`] over the shared in-flight counters.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    inflight: Arc<AtomicUsize>,
    max: usize,
    clients: Arc<ClientSlots>,
}

impl ShedLayer {
    /// At most `max` requests in flight in all (counted in `inflight`), and the per-client cap of `clients`.
    pub fn new(inflight: Arc<AtomicUsize>, max: usize, clients: Arc<ClientSlots>) -> Self {
        ShedLayer { inflight, max, clients }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = ShedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ShedService {
            inner,
            inflight: self.inflight.clone(),
            max: self.max,
            clients: self.clients.clone(),
        }
    }
}

/// Answers `503` past either cap; otherwise holds a slot of each until the inner future ends.
#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    inflight: Arc<AtomicUsize>,
    max: usize,
    clients: Arc<ClientSlots>,
}

/// One in-flight slot, given back when dropped.
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
        let refuse = |per_client| {
            Either::Left(ready(Err(Overloaded {
                retry_after: RETRY_AFTER,
                per_client,
            }
            .into())))
        };
        let client = req.extensions().get::<ClientIp>().map_or(UNKNOWN_CLIENT, |c| c.0);
        let Some(client_slot) = self.clients.acquire(client) else {
            return refuse(true);
        };
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return refuse(false);
        }
        let slot = Slot(self.inflight.clone());
        Either::Right(Slotted {
            future: self.inner.call(req),
            _slot: (slot, client_slot),
        })
    }
}

pin_project_lite::pin_project! {
    /// The inner future, with the slots it holds.
    pub struct Slotted<F> {
        #[pin]
        future: F,
        _slot: (Slot, ClientSlot),
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
        let layer = ShedLayer::new(inflight.clone(), 1, ClientSlots::new(1000, 64));
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
        let Err(Rejection::Overloaded(Overloaded { retry_after, .. })) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(retry_after, RETRY_AFTER);
        release.send(()).expect("first request waiting");
        assert!(first.await.expect("task").is_ok());
        assert_eq!(inflight.load(Ordering::SeqCst), 0, "the slot is freed");
        assert!(service.oneshot(Request::new(())).await.is_ok());
    }
}
