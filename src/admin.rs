//! The admin listener: `/` (the console, an HTML page), `/metrics` (Prometheus text), `/healthz` (the
//! process is alive), `/readyz` (listeners bound, config loaded, not draining, and the dedup store answers)
//! and `/admin/queues`. It is never served on the public port.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::OnStoreError;
use crate::console::{History, Page, QuarantineView, QueueView};
use crate::dedup::DedupStore;
use crate::forward::queue::Queue;
use crate::quarantine::Quarantine;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// 0 while starting, then [`READY`], then [`DRAINING`].
    state: AtomicU8,
}

const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    /// Marks the gateway ready: `/readyz` answers 200 from now on (while the store is reachable).
    pub fn set_ready(&self) {
        self.state.store(READY, Ordering::Release);
    }

    /// From now on `/readyz` fails, so that load balancers stop routing here before connections close.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// `Ok` when ready, else the short reason `/readyz` gives.
    pub fn readiness(&self) -> Result<(), &'static str> {
        match self.state.load(Ordering::Acquire) {
            READY => Ok(()),
            DRAINING => Err("draining"),
            _ => Err("starting"),
        }
    }
}

/// The store's side of readiness: unready only once the store has been unreachable for `unready_after`
/// on end, and never when its errors are accepted.
#[derive(Debug)]
pub struct StoreHealth {
    down_since: Mutex<Option<Instant>>,
    unready_after: Duration,
}

impl StoreHealth {
    /// Fails readiness after `unready_after` of failed checks.
    pub fn new(unready_after: Duration) -> Self {
        StoreHealth {
            down_since: Mutex::new(None),
            unready_after,
        }
    }

    /// Records one check's result at `now`; the readiness it makes.
    pub fn observe(&self, up: bool, accepting: bool, now: Instant) -> Result<(), &'static str> {
        let mut down_since = self.down_since.lock().unwrap_or_else(PoisonError::into_inner);
        if up {
            *down_since = None;
            return Ok(());
        }
        let since = *down_since.get_or_insert(now);
        if accepting || now.duration_since(since) < self.unready_after {
            Ok(())
        } else {
            Err("dedup store unreachable")
        }
    }
}

#[derive(Clone)]
/// The admin listener's service: `/metrics`, `/healthz`, `/readyz`.
pub struct Admin {
    /// Renders the Prometheus exposition for `/metrics`.
    pub metrics: PrometheusHandle,
    /// Liveness and readiness as the server sets them.
    pub health: Arc<Health>,
    /// The dedup store, pinged by `/readyz`.
    pub dedup: Arc<DedupStore>,
    /// How long the store has been down, for readiness.
    pub store: Arc<StoreHealth>,
    /// The queues of the config now serving.
    pub queues: Arc<ArcSwap<Vec<Arc<Queue>>>>,
    /// The sources and quarantines of the config now serving, for the console.
    pub console: Arc<ArcSwap<ConsoleSources>>,
    /// The request counts of the last hour, for the console.
    pub history: Arc<History>,
}

/// What the console shows of the config now serving.
#[derive(Debug, Default)]
pub struct ConsoleSources {
    /// Source names, in config order.
    pub names: Vec<String>,
    /// The quarantines of the sources that keep one.
    pub quarantines: Vec<Arc<Quarantine>>,
}

impl ConsoleSources {
    /// The sources of `gateway`.
    pub fn of(gateway: &crate::gateway::Gateway) -> Self {
        ConsoleSources {
            names: gateway.sources.iter().map(|s| s.name.to_string()).collect(),
            quarantines: gateway.sources.iter().filter_map(|s| s.quarantine.clone()).collect(),
        }
    }
}

impl Admin {
    /// `{"source": {"depth": …, "pending": …, "delayed": …, "dead": …, "oldest_age_seconds": …}}`, or
    /// `{"source": {"error": "…"}}` for a queue whose Redis does not answer.
    async fn queue_stats(&self) -> Bytes {
        let mut all = serde_json::Map::new();
        for queue in self.queues.load().iter() {
            let value = match queue.stats().await {
                Ok(stats) => serde_json::to_value(stats).unwrap_or_default(),
                Err(error) => serde_json::json!({ "error": error }),
            };
            all.insert(queue.source().to_owned(), value);
        }
        Bytes::from(serde_json::Value::Object(all).to_string())
    }

    /// The console page: the figures of `/metrics`, the queues' dead letters and the quarantines.
    async fn console(&self) -> Bytes {
        let sources = self.console.load_full();
        let mut page = Page {
            sources: sources.names.clone(),
            ..Page::default()
        };
        for queue in self.queues.load().iter() {
            let depth = queue.stats().await.map_or(0, |s| s.depth);
            let view = QueueView {
                depth,
                dead: queue.dead_letters().await,
            };
            page.queues.insert(queue.source().to_owned(), view);
        }
        for quarantine in &sources.quarantines {
            let view = QuarantineView {
                entries: quarantine.list().await,
            };
            page.quarantines.insert(quarantine.source().to_owned(), view);
        }
        Bytes::from(page.render(&self.metrics.render(), &self.history, Instant::now()))
    }

    /// Ready when serving, not draining, and the dedup store answers (a Redis `PING`).
    async fn readiness(&self) -> Result<(), &'static str> {
        self.health.readiness()?;
        let up = self.dedup.ping().await.is_ok();
        crate::metrics::store_up(up);
        let accepting = self.dedup.on_error() == OnStoreError::Accept;
        self.store.observe(up, accepting, Instant::now())
    }

    /// Answers one admin request; unknown paths get 404.
    pub async fn handle<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (status, content_type, body) = match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(self.metrics.render()),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            "/readyz" => match self.readiness().await {
                Ok(()) => (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n")),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    Bytes::from(format!("not ready: {reason}\n")),
                ),
            },
            "/admin/queues" => (StatusCode::OK, "application/json", self.queue_stats().await),
            "/" => (StatusCode::OK, "text/html; charset=utf-8", self.console().await),
            _ => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_fails_on_the_store_only_after_a_sustained_outage_and_never_when_accepting() {
        let health = StoreHealth::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(health.observe(false, false, t0), Ok(()), "one failed ping");
        assert_eq!(health.observe(false, false, t0 + Duration::from_secs(9)), Ok(()));
        assert!(
            health.observe(false, false, t0 + Duration::from_secs(10)).is_err(),
            "10 s down"
        );
        assert_eq!(
            health.observe(false, true, t0 + Duration::from_secs(60)),
            Ok(()),
            "accept mode"
        );
        assert_eq!(
            health.observe(true, false, t0 + Duration::from_secs(61)),
            Ok(()),
            "back"
        );
        assert_eq!(
            health.observe(false, false, t0 + Duration::from_secs(62)),
            Ok(()),
            "a new outage starts"
        );
    }
}
