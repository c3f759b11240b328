//! Steps 7 and 9, deduplication in two phases. After verification, `claim(source, id)` marks the id in
//! flight with a lease and a unique token. A delivered event's claim is committed (the id is remembered
//! for `ttl`); a failed one is released (the key is deleted), so that the sender's retry is processed and
//! never wrongly dropped as a duplicate. An id already done answers `200 duplicate`; one in flight
//! elsewhere answers `409 in_flight`; an unreachable store answers `503 unavailable` (or, with
//! `on_store_error = "accept"`, the event goes on without dedup).
//!
//! A [`Claim`] is consumed by `commit` or `release`. One that is dropped instead (a cancelled request, a
//! connection cut at shutdown) releases itself, so a key never waits for its lease to run out when that
//! can be avoided.

pub mod layer;
pub mod memory;
pub mod redis;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::config::{DedupConfig, OnStoreError, StoreKind};
use crate::redis_client::RedisClient;
use crate::verify::event_id::EventId;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store did not answer within {0:?}")]
    /// The store did not answer within `store_timeout`.
    Timeout(Duration),
    #[error("redis: {0}")]
    /// Redis answered with an error, or the connection failed.
    Redis(String),
    #[error("the memory store is full of in-flight ids")]
    /// The memory store holds `max_entries` ids and none has expired.
    Full,
}

/// `store = "redis"` without a Redis client to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("dedup.store = \"redis\" needs a Redis client")]
pub struct NoRedis;

/// What a claim found.
#[derive(Debug)]
pub enum ClaimResult {
    /// The id is ours to deliver.
    Claimed(Claim),
    /// The id was delivered already.
    Duplicate,
    /// Another request holds the id now; try again after `retry_after`.
    InFlight {
        /// How long the current claim's lease has left.
        retry_after: Duration,
    },
}

/// What the backend answered to a claim, before it is wrapped in a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Claimed,
    Duplicate,
    /// In flight, with the lease time left when the backend knows it.
    InFlight(Option<Duration>),
}

#[derive(Debug, Clone)]
enum Backend {
    Memory(Arc<memory::MemoryStore>),
    Redis(redis::RedisStore),
}

/// The dedup store of a gateway, shared by every source.
#[derive(Debug)]
pub struct DedupStore {
    backend: Backend,
    ttl: Duration,
    lease: Duration,
    timeout: Duration,
    on_error: OnStoreError,
    /// Releases started by dropped claims, so that shutdown can wait for them.
    releases: TaskTracker,
    /// Deliveries under a claim, which run to the end whether or not their sender waits.
    deliveries: TaskTracker,
    /// Cancelled when shutdown cuts the deliveries still running: their claims are dropped, so released.
    /// Shared by `Arc`: cloning the token itself takes a lock, twice per request.
    cut: Arc<CancellationToken>,
    warn_throttle: Throttle,
}

impl DedupStore {
    /// Builds the configured store: in memory, or in Redis over `redis`, the gateway's one Redis client.
    /// Redis connects lazily and reconnects by itself, so a Redis that is down at start-up makes requests
    /// fail (per `on_store_error`) and `/readyz` report it, not start-up. `None` for `redis` with
    /// `store = "redis"` is refused.
    pub fn new(config: &DedupConfig, redis: Option<&RedisClient>) -> Result<Arc<Self>, NoRedis> {
        let backend = match (config.store, redis) {
            (StoreKind::Memory, _) => Backend::Memory(memory::MemoryStore::start(config.max_keys)),
            (StoreKind::Redis, Some(client)) => {
                Backend::Redis(redis::RedisStore::new(client.clone(), &config.key_prefix))
            }
            (StoreKind::Redis, None) => return Err(NoRedis),
        };
        Ok(Arc::new(DedupStore {
            backend,
            ttl: config.ttl,
            lease: config.lease,
            timeout: config.timeout,
            on_error: config.on_store_error,
            releases: TaskTracker::new(),
            deliveries: TaskTracker::new(),
            cut: Arc::new(CancellationToken::new()),
            warn_throttle: Throttle::default(),
        }))
    }

    /// What a request gets when this store cannot answer.
    pub fn on_error(&self) -> OnStoreError {
        self.on_error
    }

    /// `memory` or `redis`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Marks `id` of `source` in flight, unless it is done or in flight already.
    pub async fn claim(self: &Arc<Self>, source: &str, id: &EventId) -> Result<ClaimResult, StoreError> {
        let token = Token::new();
        let (key, found) = match &self.backend {
            // Synchronous and sub-microsecond: no future, no timer.
            Backend::Memory(m) => {
                let digest = m.digest(source, id.as_str());
                let found = m.claim(digest, token, self.lease);
                if found.is_err() {
                    crate::metrics::store_error("claim");
                }
                (StoreKey::Memory(digest), found?)
            }
            Backend::Redis(r) => {
                let key: Arc<[u8]> = r.key(source, id.as_str()).into();
                let found = self.call("claim", r.claim(&key, token, self.lease)).await?;
                (StoreKey::Redis(key), found)
            }
        };
        Ok(match found {
            Found::Claimed => ClaimResult::Claimed(Claim {
                store: self.clone(),
                key,
                token,
                settled: false,
            }),
            Found::Duplicate => ClaimResult::Duplicate,
            Found::InFlight(left) => ClaimResult::InFlight {
                retry_after: left.unwrap_or(self.lease),
            },
        })
    }

    /// Answers when the store is reachable: a Redis `PING`, or nothing for the memory store.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => self.call("ping", r.ping()).await,
        }
    }

    /// Runs a claimed event's delivery (and its commit or release) to its end whether or not the sender
    /// still waits: in the request's own task while it does (no task to spawn and wake per event), and in a
    /// task of its own from the moment the request is dropped (the sender hung up). Either way it counts
    /// among the deliveries that shutdown waits for. `None` when shutdown cut it.
    pub(crate) fn run_delivery<T: Send + 'static>(
        &self,
        delivery: Pin<Box<dyn Future<Output = T> + Send>>,
    ) -> Delivery<T> {
        let cut = Arc::clone(&self.cut);
        Delivery {
            work: Some(Box::pin(async move {
                // Delivery first: one that has ended is reported rather than cut, and one that ends on its
                // first poll (the memory store, a quick handler) never registers with the token.
                tokio::select! {
                    biased;
                    output = delivery => Some(output),
                    () = cut.cancelled() => None,
                }
            })),
            _running: self.deliveries.token(),
            deliveries: self.deliveries.clone(),
        }
    }

    /// Waits until `deadline` for the deliveries still running (their senders may have gone), then cuts
    /// the rest: their claims are dropped, and so released.
    pub async fn finish_deliveries(&self, deadline: tokio::time::Instant) {
        self.deliveries.close();
        if tokio::time::timeout_at(deadline, self.deliveries.wait()).await.is_err() {
            tracing::warn!(
                running = self.deliveries.len(),
                "grace period over; cutting the deliveries still running"
            );
            self.cut.cancel();
            self.deliveries.wait().await;
        }
    }

    /// Waits, at most `limit`, for the releases of dropped claims to finish.
    pub async fn flush(&self, limit: Duration) {
        self.releases.close();
        let _ = tokio::time::timeout(limit, self.releases.wait()).await;
    }

    /// True at most once every 10 s: store failures are logged, but not once per request.
    pub fn should_warn(&self) -> bool {
        self.warn_throttle.ready(Duration::from_secs(10))
    }

    /// Runs one Redis call, and records its duration and any error. The Redis client bounds every call by
    /// `timeout` (the client's own, the same setting), with one timer per batch of commands rather than one
    /// per call; an error at or past it is the store's timeout. (The memory store's calls are synchronous
    /// and sub-microsecond: a latency sample would cost more than the call.)
    async fn call<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = work.await;
        let took = started.elapsed();
        crate::metrics::store_call(op, took);
        if result.is_err() {
            crate::metrics::store_error(op);
        }
        result.map_err(|error| {
            if took >= self.timeout {
                StoreError::Timeout(self.timeout)
            } else {
                error
            }
        })
    }

    async fn settle(&self, key: &StoreKey, token: Token, commit: bool) -> Result<bool, StoreError> {
        match (&self.backend, key) {
            (Backend::Memory(m), StoreKey::Memory(digest)) if commit => Ok(m.commit(*digest, token, self.ttl)),
            (Backend::Memory(m), StoreKey::Memory(digest)) => Ok(m.release(*digest, token)),
            (Backend::Redis(r), StoreKey::Redis(key)) if commit => {
                self.call("commit", r.commit(key, token, self.ttl)).await
            }
            (Backend::Redis(r), StoreKey::Redis(key)) => self.call("release", r.release(key, token)).await,
            // A claim's key is made by the store that settles it: another kind is not this store's claim.
            _ => Ok(false),
        }
    }
}

/// What a claim holds its id by: the memory store's digest, or the Redis key.
#[derive(Debug, Clone)]
enum StoreKey {
    Memory(memory::Digest),
    Redis(Arc<[u8]>),
}

/// A unique claim token: a release acts only while the stored token is this one, and a commit tells
/// whether it still was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token(u64);

impl Token {
    fn new() -> Self {
        // Zero is never issued, so a token can never be confused with an empty value.
        Token(rand::random::<u64>() | 1)
    }

    /// 16 hex digits: never equal to the done marker `1`.
    pub(crate) fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The right to deliver one event. Consume it with [`Claim::commit`] or [`Claim::release`]; dropping it
/// releases it in the background.
#[derive(Debug)]
#[must_use = "a claim must be committed or released"]
pub struct Claim {
    store: Arc<DedupStore>,
    key: StoreKey,
    token: Token,
    settled: bool,
}

impl Claim {
    /// The event was delivered: remember its id for `ttl`, even when the lease had run out meanwhile (the
    /// event is delivered all the same). `Ok(false)` in that case: another request may have delivered it
    /// too.
    pub async fn commit(mut self) -> Result<bool, StoreError> {
        self.settled = true;
        self.store.settle(&self.key, self.token, true).await
    }

    /// The delivery failed: forget the id, so that the sender's retry is processed.
    pub async fn release(mut self) -> Result<bool, StoreError> {
        self.settled = true;
        self.store.settle(&self.key, self.token, false).await
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        match &self.store.backend {
            // No I/O: release on the spot.
            Backend::Memory(m) => {
                if let StoreKey::Memory(digest) = self.key {
                    m.release(digest, self.token);
                }
            }
            Backend::Redis(_) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let store = self.store.clone();
                let key = self.key.clone();
                let token = self.token;
                let tracker = store.releases.clone();
                tracker.spawn_on(
                    async move {
                        if let Err(error) = store.settle(&key, token, false).await {
                            tracing::warn!(%error, "cannot release the claim of a cancelled request; its lease will free it");
                        }
                    },
                    &runtime,
                );
            }
        }
    }
}

/// Lets an action through at most once per period.
#[derive(Debug)]
struct Throttle {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last action, plus one (0 means never).
    last: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    fn ready(&self, period: Duration) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let period = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= period)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A claimed event's delivery, from [`DedupStore::run_delivery`]: polled by the request that claimed it,
/// and handed to a task of its own if that request is dropped first.
pub(crate) struct Delivery<T: Send + 'static> {
    /// The delivery raced against the shutdown cut; `None` once it has ended, or while it is being polled
    /// (so that a delivery that panics is not handed on).
    work: Option<Pin<Box<dyn Future<Output = Option<T>> + Send>>>,
    /// Counts the delivery among the running ones while it runs in the request's task.
    _running: TaskTrackerToken,
    deliveries: TaskTracker,
}

impl<T: Send + 'static> Future for Delivery<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(mut work) = self.work.take() else {
            return Poll::Ready(None);
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(output),
            Poll::Pending => {
                self.work = Some(work);
                Poll::Pending
            }
        }
    }
}

impl<T: Send + 'static> Drop for Delivery<T> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        // Outside a runtime (it is being torn down) there is nothing to run it on: dropped, its claims
        // release themselves.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.deliveries.spawn(async move {
                let _ = work.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_period() {
        let throttle = Throttle::default();
        assert!(throttle.ready(Duration::from_secs(60)));
        assert!(!throttle.ready(Duration::from_secs(60)));
        assert!(throttle.ready(Duration::ZERO));
    }

    fn store() -> Arc<DedupStore> {
        DedupStore::new(&DedupConfig::default(), None).expect("memory store")
    }

    #[tokio::test]
    async fn a_delivery_whose_request_is_dropped_runs_to_its_end_and_shutdown_waits_for_it() {
        let store = store();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel();
        let mut delivery = store.run_delivery(Box::pin(async move {
            let _ = wait.await;
            let _ = done.send(());
        }));
        // The request polls it once, then its sender hangs up.
        assert!(futures_util::poll!(&mut delivery).is_pending());
        drop(delivery);
        assert_eq!(store.deliveries.len(), 1, "handed to a task of its own");
        go.send(()).expect("the delivery still waits");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        store.finish_deliveries(deadline).await;
        assert_eq!(finished.await, Ok(()), "it ran to its end");
    }

    #[tokio::test]
    async fn a_delivery_counts_among_the_running_until_it_ends_in_its_request() {
        let store = store();
        let delivery = store.run_delivery(Box::pin(async { 7 }));
        assert_eq!(store.deliveries.len(), 1, "shutdown would wait for it");
        assert_eq!(delivery.await, Some(7));
        assert_eq!(store.deliveries.len(), 0, "and nothing is left running");
    }

    #[tokio::test]
    async fn a_delivery_that_panics_does_so_in_its_request_and_is_not_handed_on() {
        use futures_util::FutureExt;
        let store = store();
        let delivery = store.run_delivery(Box::pin(async { panic!("the handler panicked") }));
        let outcome = std::panic::AssertUnwindSafe(delivery).catch_unwind().await;
        assert!(
            outcome.is_err(),
            "the panic reaches the request (and so the catch-panic layer)"
        );
        assert_eq!(
            store.deliveries.len(),
            0,
            "a panicked delivery is not polled again in a task"
        );
    }

    #[tokio::test]
    async fn a_delivery_cut_at_shutdown_ends_with_none() {
        let store = store();
        let delivery = store.run_delivery(Box::pin(std::future::pending::<()>()));
        store.cut.cancel();
        assert_eq!(delivery.await, None);
    }

    #[test]
    fn tokens_are_never_the_done_marker() {
        for _ in 0..1000 {
            let hex = Token::new().to_hex();
            assert_eq!(hex.len(), 16);
            assert_ne!(hex, "1");
        }
    }
}
