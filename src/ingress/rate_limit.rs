//! Step 4, rate limits, before the body is read: a GCRA limiter (governor) per client IP, with the global
//! quota or the source's own, and optionally a total for all of a source's clients together. IPv6 clients
//! are keyed by their /64 (configurable), since one host may own the whole prefix. A refusal is `429
//! rate_limited` with `Retry-After` from the limiter.
//!
//! Memory stays bounded: IPs whose bucket is full again are purged every 10 s, and past
//! `max_tracked_keys` a new IP takes the place of a tracked one, so that every client always has a bucket
//! of its own and a flood of new addresses cannot starve a sender that keeps to its quota.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use tower::{Layer, Service};

use crate::config::{RateLimitConfig, SourceRateLimit};
use crate::peer::ClientIp;

const PURGE_EVERY: Duration = Duration::from_secs(10);

/// A client's bucket key: an IPv4 address in its IPv4-mapped IPv6 form, or an IPv6 address cut to the
/// configured prefix.
type Key = u128;

/// governor's DashMap store with a cap: past it, a new key evicts the longest tracked one.
#[derive(Debug)]
pub struct BoundedStore {
    map: DashMapStateStore<Key>,
    /// Tracked keys in the order they arrived (with keys the purge has since dropped), at most `cap`.
    order: Mutex<VecDeque<Key>>,
    cap: usize,
    /// Approximate size, so that the hot path does not count every shard; corrected at each purge.
    tracked: AtomicUsize,
}

impl BoundedStore {
    fn new(cap: usize) -> Self {
        BoundedStore {
            map: DashMapStateStore::default(),
            order: Mutex::new(VecDeque::new()),
            cap,
            tracked: AtomicUsize::new(0),
        }
    }
}

impl StateStore for BoundedStore {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if !self.map.contains_key(key) {
            // A new client: remembered in arrival order. Full, the client that arrived first gives up its
            // bucket (if the purge has not taken it already), so that this one gets its own. Never a
            // shared bucket, in which a flood of new addresses would starve a sender within its own quota;
            // and an evicted client only ever comes back to a full bucket.
            let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
            while order.len() >= self.cap {
                let Some(oldest) = order.pop_front() else { break };
                if self.map.remove(&oldest).is_some() {
                    self.tracked.fetch_sub(1, Ordering::Relaxed);
                }
            }
            order.push_back(*key);
            self.tracked.fetch_add(1, Ordering::Relaxed);
        }
        self.map.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<Key> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain_recent(drop_below);
        self.tracked.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

type PerIp<C> = RateLimiter<Key, BoundedStore, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Total<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One source's limits.
pub struct Limiter<C: Clock = DefaultClock> {
    per_ip: PerIp<C>,
    total: Option<Total<C>>,
    ipv6_prefix: u8,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("tracked", &self.per_ip.len())
            .finish_non_exhaustive()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nonzero(per_second)).allow_burst(nonzero(burst))
}

impl Limiter<DefaultClock> {
    /// A limiter on the system clock.
    pub fn new(global: &RateLimitConfig, source: &SourceRateLimit) -> Self {
        Self::with_clock(global, source, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter on `clock` (tests drive it by hand).
    pub fn with_clock(global: &RateLimitConfig, source: &SourceRateLimit, clock: C) -> Self {
        let per_ip = quota(
            source.per_second.unwrap_or(global.per_second),
            source.burst.unwrap_or(global.burst),
        );
        let total = source.total_per_second.map(|rate| {
            let total = quota(rate, source.total_burst.unwrap_or(rate));
            RateLimiter::new(total, InMemoryState::default(), clock.clone())
        });
        Limiter {
            per_ip: RateLimiter::new(per_ip, BoundedStore::new(global.max_tracked_keys), clock.clone()),
            total,
            ipv6_prefix: global.ipv6_prefix,
            clock,
        }
    }

    /// Takes one request from the client's bucket and the source's total; `Err` is how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let wait = |not_until: governor::NotUntil<C::Instant>| not_until.wait_time_from(self.clock.now());
        self.per_ip
            .check_key(&crate::peer::client_key(ip, self.ipv6_prefix))
            .map_err(|n| Refused::PerIp(wait(n)))?;
        if let Some(total) = &self.total {
            total.check().map_err(|n| Refused::Total(wait(n)))?;
        }
        Ok(())
    }

    /// Drops the IPs whose bucket is full again; returns how many remain tracked.
    pub fn purge(&self) -> usize {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_ip.len()
    }

    /// How many client keys have a bucket now.
    pub fn tracked(&self) -> usize {
        self.per_ip.len()
    }
}

/// The refusal of this stage: which limit refused, and how long until the next request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The client's own bucket is spent.
    #[error("rate limit exceeded, retry in {0:?}")]
    PerIp(Duration),
    /// The source's total for all clients is spent.
    #[error("the source's total rate limit is exceeded, retry in {0:?}")]
    Total(Duration),
}

impl Refused {
    /// How long until the next request would pass.
    pub fn retry_after(self) -> Duration {
        match self {
            Refused::PerIp(after) | Refused::Total(after) => after,
        }
    }
}

/// Purges every limiter of a gateway on a timer and reports the number of tracked IPs, until the
/// gateway is dropped.
pub fn spawn_purge(limiters: Vec<Weak<Limiter>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let live: Vec<Arc<Limiter>> = limiters.iter().filter_map(Weak::upgrade).collect();
            if live.is_empty() {
                return;
            }
            let tracked: usize = live.iter().map(|l| l.purge()).sum();
            crate::metrics::ratelimit_tracked_keys(tracked);
        }
    });
}

/// Builds [`RateLimitService`] around one source's limiter.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    /// Takes each request from `limiter`'s buckets.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A spent bucket is a ready refusal with the time to the next token, before the body is read.
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, B> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>>,
    S::Error: From<Refused>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let checked = match req.extensions().get::<ClientIp>() {
            Some(client) => self.limiter.check(client.0),
            // Without a resolved client (a wiring mistake) nothing is let through: fail closed.
            None => Err(Refused::PerIp(Duration::from_secs(1))),
        };
        match checked {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(refused) => Either::Left(ready(Err(refused.into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::peer::client_key as key;

    #[tokio::test]
    async fn the_layer_answers_429_with_the_wait_once_the_bucket_is_spent() {
        use crate::error::{Accepted, Rejection};
        use tower::ServiceExt;
        let global = RateLimitConfig {
            per_second: 1,
            burst: 2,
            ..RateLimitConfig::default()
        };
        let limiter = Arc::new(Limiter::new(&global, &SourceRateLimit::default()));
        let layer = RateLimitLayer::new(limiter);
        let call = |layer: RateLimitLayer| async move {
            let service = layer.layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Rejection>(Accepted::Forwarded)
            }));
            let mut req = Request::new(());
            req.extensions_mut().insert(ClientIp("192.0.2.7".parse().expect("ip")));
            service.oneshot(req).await
        };
        assert!(call(layer.clone()).await.is_ok());
        assert!(call(layer.clone()).await.is_ok());
        let refused = call(layer.clone()).await;
        let Err(Rejection::RateLimited(Refused::PerIp(wait))) = refused else {
            panic!("{refused:?}")
        };
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    }

    fn limiter(
        per_second: u32,
        burst: u32,
        source: SourceRateLimit,
        cap: usize,
    ) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let global = RateLimitConfig {
            per_second,
            burst,
            max_tracked_keys: cap,
            ..RateLimitConfig::default()
        };
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(&global, &source, clock.clone()), clock)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn a_burst_of_five_passes_then_429_with_the_time_to_the_next_token() {
        let (limiter, clock) = limiter(2, 5, SourceRateLimit::default(), 1000);
        for i in 1..=5 {
            assert_eq!(limiter.check(ip("198.51.100.1")), Ok(()), "request {i}");
        }
        // One token every 500 ms at 2 per second.
        assert_eq!(
            limiter.check(ip("198.51.100.1")),
            Err(Refused::PerIp(Duration::from_millis(500)))
        );
        clock.advance(Duration::from_millis(499));
        assert!(limiter.check(ip("198.51.100.1")).is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.check(ip("198.51.100.1")), Ok(()));
        assert!(limiter.check(ip("198.51.100.1")).is_err());
    }

    #[test]
    fn two_clients_have_independent_buckets() {
        let (limiter, _clock) = limiter(1, 2, SourceRateLimit::default(), 1000);
        assert!(limiter.check(ip("198.51.100.1")).is_ok());
        assert!(limiter.check(ip("198.51.100.1")).is_ok());
        assert!(limiter.check(ip("198.51.100.1")).is_err());
        assert!(
            limiter.check(ip("198.51.100.2")).is_ok(),
            "another client is not affected"
        );
    }

    #[test]
    fn ipv6_clients_share_their_64_and_ipv4_mapped_is_ipv4() {
        let (limiter, _clock) = limiter(1, 1, SourceRateLimit::default(), 1000);
        assert!(limiter.check(ip("2001:db8:1:2::1")).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(limiter.check(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert_eq!(key(ip("203.0.113.5"), 64), key(ip("::ffff:203.0.113.5"), 64));
        assert_ne!(key(ip("2001:db8::1"), 128), key(ip("2001:db8::2"), 128));
    }

    #[test]
    fn the_source_total_caps_all_clients_together() {
        let source = SourceRateLimit {
            total_per_second: Some(1),
            total_burst: Some(3),
            ..SourceRateLimit::default()
        };
        let (limiter, _clock) = limiter(100, 100, source, 1000);
        for i in 0..3 {
            assert!(limiter.check(ip(&format!("198.51.100.{i}"))).is_ok());
        }
        assert!(matches!(limiter.check(ip("198.51.100.9")), Err(Refused::Total(_))));
    }

    /// Past `max_tracked_keys`, every new address shared one overflow bucket with the flood, and a real
    /// sender's first requests were all 429. Now it gets a bucket of its own.
    #[test]
    fn a_full_table_gives_a_new_sender_its_own_burst() {
        let (limiter, _clock) = limiter(1, 5, SourceRateLimit::default(), 50);
        for i in 0..300u32 {
            for _ in 0..5 {
                let _ = limiter.check(IpAddr::from(std::net::Ipv4Addr::from(0x7f01_0000 + i)));
            }
        }
        assert_eq!(limiter.tracked(), 50);
        for request in 1..=5 {
            assert_eq!(
                limiter.check(ip("198.51.100.77")),
                Ok(()),
                "request {request} of a burst of 5"
            );
        }
        assert!(
            limiter.check(ip("198.51.100.77")).is_err(),
            "the sixth is over its own quota"
        );
        assert_eq!(limiter.tracked(), 50);
    }

    /// The key bound holds under a million distinct IPs (their memory is measured in
    /// `tests/it/traffic.rs`), and the purge forgets them once their buckets are full again.
    #[test]
    fn a_million_distinct_ips_stay_within_the_key_bound() {
        let cap = 100_000;
        let (limiter, clock) = limiter(10, 10, SourceRateLimit::default(), cap);
        for i in 0..1_000_000u32 {
            let _ = limiter.check(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(limiter.tracked(), cap);
        clock.advance(Duration::from_secs(2));
        assert_eq!(limiter.purge(), 0);
    }
}
