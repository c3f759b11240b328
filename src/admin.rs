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

use crate::config::{OnStoreError, Secret};
use crate::console::{History, Page, QuarantineView, QueueView};
use crate::dedup::DedupStore;
use crate::forward::queue::{Queue, Replay};
use crate::gateway::Gateway;

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
    /// The gateway now serving, for the console (its sources, quarantines and replays).
    pub serving: Arc<ArcSwap<Gateway>>,
    /// What the console may do.
    pub access: Arc<ConsoleAccess>,
    /// The request counts of the last hour, for the console.
    pub history: Arc<History>,
}

/// What the console may do, fixed at start.
#[derive(Debug, Clone)]
pub struct ConsoleAccess {
    /// `admin.allow_actions`: the replay buttons work.
    pub allow_actions: bool,
    /// `admin.token`: required on every path but `/healthz` and `/readyz`.
    pub token: Option<Secret>,
    /// The token every action form carries, random per process: another site cannot read it from the
    /// page, so it cannot make a browser post an action.
    pub csrf: String,
}

impl ConsoleAccess {
    /// `allow_actions` and `token`, with a fresh CSRF token.
    pub fn new(allow_actions: bool, token: Option<Secret>) -> Self {
        ConsoleAccess {
            allow_actions,
            token,
            csrf: hex::encode(rand::random::<[u8; 16]>()),
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
        let serving = self.serving.load_full();
        let mut page = Page {
            sources: serving.sources.iter().map(|s| s.name.to_string()).collect(),
            actions: self.access.allow_actions.then(|| self.access.csrf.clone()),
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
        for quarantine in serving.sources.iter().filter_map(|s| s.quarantine.as_ref()) {
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

    /// Whether `req` carries the admin token (as a bearer token or the console's cookie), when one is set.
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.access.token else {
            return true;
        };
        let expected = token.expose().as_bytes();
        let header = |name| req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok());
        let bearer = header(header::AUTHORIZATION).any(|v| {
            v.strip_prefix("Bearer ")
                .is_some_and(|t| crate::verify::token::same_secret(t.trim().as_bytes(), expected))
        });
        let cookie = header(header::COOKIE).flat_map(|v| v.split(';')).any(|c| {
            c.trim()
                .strip_prefix(TOKEN_COOKIE)
                .and_then(|rest| rest.strip_prefix('='))
                .is_some_and(|t| crate::verify::token::same_secret(t.as_bytes(), expected))
        });
        bearer || cookie
    }

    /// Runs one console action (`POST /actions/…` with a form of `source`, `id` and `csrf`), then sends
    /// the browser back to the page.
    async fn act(&self, path: &str, form: &[u8]) -> (StatusCode, &'static str, Bytes) {
        if !self.access.allow_actions {
            return refused(StatusCode::FORBIDDEN, "actions are off (admin.allow_actions = false)");
        }
        let field = |name: &str| {
            form_urlencoded::parse(form)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let csrf_ok =
            field("csrf").is_some_and(|t| crate::verify::token::same_secret(t.as_bytes(), self.access.csrf.as_bytes()));
        if !csrf_ok {
            return refused(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or stale; reload the page",
            );
        }
        let (Some(source), Some(id)) = (field("source"), field("id")) else {
            return refused(StatusCode::BAD_REQUEST, "the form needs source and id");
        };
        let done = match path {
            "/actions/dead/replay" => match self.queues.load().iter().find(|q| q.source() == source) {
                Some(queue) => queue
                    .replay(&Replay::One(id))
                    .await
                    .map(|n| format!("{n} dead letter(s) replayed")),
                None => Err(format!("no queue for source `{source}`")),
            },
            "/actions/quarantine/replay" => {
                let serving = self.serving.load_full();
                match crate::replay::quarantining(&serving, &source) {
                    Some(found) => crate::replay::quarantined(&serving, found, Some(&id)).await.map(|r| {
                        r.iter()
                            .map(|r| format!("{}: {}", r.id, r.result))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }),
                    None => Err(format!("no quarantine for source `{source}`")),
                }
            }
            _ => return refused(StatusCode::NOT_FOUND, "no such action"),
        };
        match done {
            Ok(summary) => {
                tracing::info!(%source, action = path, %summary, "console action");
                (StatusCode::SEE_OTHER, "text/plain", Bytes::from(summary))
            }
            Err(error) => refused(StatusCode::CONFLICT, &error),
        }
    }

    /// Answers one admin request; unknown paths get 404.
    pub async fn handle<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_owned();
        let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/login");
        if !open && !self.authorized(&req) {
            let (status, content_type, body) = if path == "/" {
                (
                    StatusCode::UNAUTHORIZED,
                    "text/html; charset=utf-8",
                    Bytes::from_static(LOGIN_PAGE.as_bytes()),
                )
            } else {
                refused(StatusCode::UNAUTHORIZED, "the admin token is required")
            };
            return Ok(answer(status, content_type, body));
        }
        let (status, content_type, body) = match (req.method() == http::Method::POST, path.as_str()) {
            (false, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(self.metrics.render()),
            ),
            (false, "/healthz") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            (false, "/readyz") => match self.readiness().await {
                Ok(()) => (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n")),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    Bytes::from(format!("not ready: {reason}\n")),
                ),
            },
            (false, "/admin/queues") => (StatusCode::OK, "application/json", self.queue_stats().await),
            (false, "/") => (StatusCode::OK, "text/html; charset=utf-8", self.console().await),
            (true, "/login") => {
                let form = read_form(req).await;
                let token = form_urlencoded::parse(&form)
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let valid = self
                    .access
                    .token
                    .as_ref()
                    .is_some_and(|t| crate::verify::token::same_secret(token.as_bytes(), t.expose().as_bytes()));
                if !valid {
                    return Ok(answer(
                        StatusCode::UNAUTHORIZED,
                        "text/html; charset=utf-8",
                        Bytes::from_static(LOGIN_PAGE.as_bytes()),
                    ));
                }
                let mut response = answer(StatusCode::SEE_OTHER, "text/plain", Bytes::new());
                response
                    .headers_mut()
                    .insert(header::LOCATION, header::HeaderValue::from_static("/"));
                if let Ok(cookie) =
                    header::HeaderValue::from_str(&format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"))
                {
                    response.headers_mut().insert(header::SET_COOKIE, cookie);
                }
                return Ok(response);
            }
            (true, action) if action.starts_with("/actions/") => {
                let form = read_form(req).await;
                self.act(action, &form).await
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
        };
        let mut response = answer(status, content_type, body);
        if status == StatusCode::SEE_OTHER {
            response
                .headers_mut()
                .insert(header::LOCATION, header::HeaderValue::from_static("/"));
        }
        Ok(response)
    }
}

/// The cookie `/login` sets, holding the admin token.
const TOKEN_COOKIE: &str = "hookgate_admin";

const LOGIN_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hookgate console</title>\
    </head><body><h1>hookgate console</h1><form method=\"post\" action=\"/login\"><label>Admin token \
    <input type=\"password\" name=\"token\" autocomplete=\"current-password\"></label> \
    <button type=\"submit\">Sign in</button></form></body></html>\n";

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

fn refused(status: StatusCode, message: &str) -> (StatusCode, &'static str, Bytes) {
    (status, "text/plain", Bytes::from(format!("{message}\n")))
}

/// A form body of at most 4 KiB (empty if longer, or unreadable).
async fn read_form<B>(req: Request<B>) -> Bytes
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    http_body_util::Limited::new(req.into_body(), 4096)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
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
