//! The one builder: turns a config into the running gateway. `serve`, the CLI subcommands and the tests
//! all go through it; nothing else assembles the parts.
//! - [`Backends::connect`] sets up what outlives a config: the one Redis client (shared by the dedup
//!   store and every queue), the dedup store, the downstream HTTP client and the in-flight counter. A
//!   reload keeps them.
//! - [`Gateway::build`] reads the secrets, sets up the keys and builds each source's parts; the stack is
//!   assembled from them in `stack.rs`. Config validation has already checked every rule; what can still
//!   fail here is what only a build can find (a secret that is not set, a key that does not decode).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::body::{BodyBudget, BodyLimits, MinRate};
use crate::config::{Config, ConfigError, ForwardConfig, SchemeKind, SourceConfig, SourceMode, StoreKind};
use crate::dedup::DedupStore;
use crate::forward::Handler;
use crate::forward::http::{HttpClient, HttpHandler};
use crate::forward::queue::Queue;
use crate::forward::stdout::StdoutHandler;
use crate::ingress::allowlist::Allowlist;
use crate::ingress::client_ip::Resolver;
use crate::ingress::rate_limit::{self, Limiter};
use crate::ingress::shed::ClientSlots;
use crate::quarantine::Quarantine;
use crate::redis_client::RedisClient;
use crate::verify::event_id::Locator;
use crate::verify::layer::Clock;
use crate::verify::{KeyError, Keys, Verifier};

/// What outlives one config: a reload builds a new [`Gateway`] around the same backends.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The one Redis client, when the dedup store or a queue needs Redis.
    pub redis: Option<RedisClient>,
    /// The dedup store every source shares.
    pub dedup: Arc<DedupStore>,
    /// The downstream client every `http` handler and queue worker shares, so connections are pooled.
    pub http: HttpClient,
    /// Requests in flight, for load shedding; kept across reloads.
    pub inflight: Arc<AtomicUsize>,
    /// Requests in flight per client, for load shedding; kept across reloads.
    pub clients: Arc<ClientSlots>,
    /// Body bytes held at once by all requests; kept across reloads (with the cap set at start).
    pub body_budget: Arc<BodyBudget>,
    /// What dates signed timestamps: the system clock, or a fixed instant in tests.
    pub clock: Clock,
}

impl Backends {
    /// Sets up the backends of `config` without contacting any: Redis connects on first use and
    /// reconnects by itself, so a config check needs no Redis, and a Redis that is down at start-up shows
    /// in `/readyz` and in answers, not as a failed start.
    pub fn connect(config: &Config, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let needs_redis = config.dedup.store == StoreKind::Redis
            || config
                .sources
                .iter()
                .any(|s| s.quarantine || matches!(s.forward, ForwardConfig::Queue(_)));
        let redis = if needs_redis {
            let dedup = &config.dedup;
            let urls = dedup.redis_url.clone().or_env();
            let client = RedisClient::new(&urls, dedup.redis_ca_file.as_deref(), dedup.timeout)
                .map_err(|message| invalid("dedup.redis_url", message))?;
            Some(client)
        } else {
            None
        };
        let dedup =
            DedupStore::new(&config.dedup, redis.as_ref()).map_err(|e| invalid("dedup.store", e.to_string()))?;
        Ok(Backends {
            redis,
            dedup,
            http: HttpClient::default(),
            inflight: Arc::new(AtomicUsize::new(0)),
            clients: ClientSlots::new(config.server.max_inflight_per_client, config.rate_limit.ipv6_prefix),
            body_budget: BodyBudget::new(config.server.max_body_buffer_bytes),
            clock: Clock::System,
        })
    }
}

/// One webhook sender's parts, ready to serve.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name, the `source` label.
    pub name: Arc<str>,
    /// The path that selects it.
    pub path: String,
    /// Its signature check, with every active key.
    pub verifier: Arc<Verifier>,
    /// Its scheme, which says which handshake its provider performs.
    pub scheme: SchemeKind,
    /// The URL its provider was given, for URL-signed schemes.
    pub public_url: Option<String>,
    /// In shadow mode: every check runs and is counted, and every request is forwarded with its verdict.
    pub shadow: bool,
    /// Where its refused requests are kept, with `quarantine = true`.
    pub quarantine: Option<Arc<Quarantine>>,
    /// Where its event ids are.
    pub event_id: Arc<Locator>,
    /// Who may send.
    pub allowlist: Arc<Allowlist>,
    /// Its rate limits.
    pub limiter: Arc<Limiter>,
    /// Where its events go.
    pub handler: Arc<Handler>,
}

/// Everything the request stack needs, built from one config.
#[derive(Debug)]
pub struct Gateway {
    /// The sources, in config order.
    pub sources: Vec<Source>,
    /// How the client address is found.
    pub client_ip: Resolver,
    /// The body's size cap, the shared budget, and the minimum rate.
    pub body_limits: BodyLimits,
    /// Deadline for reading a whole body.
    pub body_read_timeout: Duration,
    /// Header values never to show in a log line: every signature header and credential.
    pub sensitive_headers: Arc<[http::HeaderName]>,
    /// The backends this gateway was built around.
    pub backends: Backends,
    /// Past this many requests in flight, refuse at once.
    pub max_inflight: usize,
    /// The sources with a `queue` handler, whose delivery workers the server runs.
    pub queues: Vec<Arc<Queue>>,
}

impl Gateway {
    /// Builds the runtime form of `config` around `backends` (a reload keeps them). `path` only names the
    /// file in errors.
    pub fn build(config: &Config, backends: &Backends, path: &Path) -> Result<Gateway, ConfigError> {
        let sources = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                build_source(config, source, backends).map_err(|(field, message)| ConfigError::Invalid {
                    path: path.to_owned(),
                    key: format!("source[{i}] ({:?}).{field}", source.name),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rate_limit::spawn_purge(sources.iter().map(|s| Arc::downgrade(&s.limiter)).collect());
        let queues = sources
            .iter()
            .filter_map(|s| match s.handler.as_ref() {
                Handler::Queue(queue) => Some(queue.clone()),
                _ => None,
            })
            .collect();
        Ok(Gateway {
            sources,
            client_ip: Resolver::new(config.client_ip.trusted_proxies.clone(), config.client_ip.header),
            body_limits: BodyLimits {
                max_bytes: config.server.max_body_bytes,
                budget: backends.body_budget.clone(),
                min_rate: (config.server.min_body_rate > 0).then_some(MinRate {
                    bytes_per_second: config.server.min_body_rate,
                    grace: config.server.body_rate_grace,
                }),
            },
            body_read_timeout: config.server.body_read_timeout,
            sensitive_headers: crate::verify::sensitive_headers(&config.sources),
            backends: backends.clone(),
            max_inflight: config.server.max_inflight,
            queues,
        })
    }

    /// The queue of the source named `name`.
    pub fn queue(&self, name: &str) -> Option<&Arc<Queue>> {
        self.queues.iter().find(|q| q.source() == name)
    }
}

fn build_source(global: &Config, config: &SourceConfig, backends: &Backends) -> Result<Source, (&'static str, String)> {
    let secrets = config
        .secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| secret.resolve().map_err(|e| format!("secrets[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("secrets", e))?;
    let public_keys = config
        .public_keys
        .iter()
        .enumerate()
        .map(|(i, key)| key.resolve().map_err(|e| format!("public_keys[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("public_keys", e))?;
    let keys = Keys {
        secrets: &secrets,
        public_keys: &public_keys,
        token_header: config.token_header.as_ref(),
        min_secret_bytes: config.min_secret_bytes,
    };
    let verifier = Verifier::with_keys(config.scheme, config.hmac.as_ref(), &keys, config.tolerance())
        .map_err(|e| match e {
            KeyError::UnusablePublicKey { .. } => ("public_keys", e.to_string()),
            _ => ("secrets", e.to_string()),
        })?
        .with_replay_guard(config.replay_guard_on());
    // `None` only for `hmac` without `event_id`, which validation refuses.
    let event_id = Locator::new(config.event_id.as_ref(), config.scheme)
        .ok_or(("event_id", "this scheme has no default event id; set one".to_owned()))?;
    let handler = match &config.forward {
        ForwardConfig::Http { url, timeout } => {
            Handler::Http(HttpHandler::new(backends.http.clone(), url, *timeout).map_err(|e| ("forward.url", e))?)
        }
        ForwardConfig::Stdout {} => Handler::Stdout(StdoutHandler),
        ForwardConfig::Discard {} => {
            tracing::warn!(source = %config.name, "forward.kind = \"discard\": this source's events are dropped");
            Handler::Discard
        }
        ForwardConfig::Queue(queue) => {
            // `connect` opens the Redis client whenever a source is queued.
            let redis = backends
                .redis
                .clone()
                .ok_or(("forward.kind", "a queue needs a Redis client".to_owned()))?;
            let queue = Queue::new(&config.name, redis, &global.dedup, queue.clone(), backends.http.clone())
                .map_err(|e| ("forward.url", e))?;
            Handler::Queue(Arc::new(queue))
        }
    };
    let allowed = config.allow_ips.iter().flat_map(|entry| entry.nets()).collect();
    let quarantine = if config.quarantine {
        // `connect` opens the Redis client whenever a source quarantines.
        let redis = backends
            .redis
            .clone()
            .ok_or(("quarantine", "a quarantine needs a Redis client".to_owned()))?;
        Some(Arc::new(Quarantine::new(
            Arc::from(config.name.as_str()),
            redis,
            &global.dedup.key_prefix,
            &global.quarantine,
            config.quarantine_headers,
            crate::verify::sensitive_headers(std::slice::from_ref(config)),
        )))
    } else {
        None
    };
    if config.mode == SourceMode::Shadow {
        tracing::warn!(
            source = %config.name,
            "mode = \"shadow\": this source forwards every request, including those that fail the allowlist, \
             the signature or the event id; watch hookgate_shadow_verdicts_total, then switch to enforce"
        );
    }
    Ok(Source {
        name: Arc::from(config.name.as_str()),
        path: config.path.clone(),
        verifier: Arc::new(verifier),
        scheme: config.scheme,
        public_url: config.public_url.as_ref().map(|u| u.as_str().to_owned()),
        shadow: config.mode == SourceMode::Shadow,
        quarantine,
        event_id: Arc::new(event_id),
        allowlist: Arc::new(Allowlist::new(allowed)),
        limiter: Arc::new(Limiter::new(&global.rate_limit, &config.rate_limit)),
        handler: Arc::new(handler),
    })
}
