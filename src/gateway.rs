//! The runtime form of a config: secrets read, keys set up, URLs parsed, routes built. Building it is the
//! last check of a config, so `check-config` and start-up refuse exactly the same files.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use crate::config::{AllowIp, Config, ConfigError, ForwardConfig, SourceConfig};
use crate::dedup::DedupStore;
use crate::forward::Handler;
use crate::forward::http::{HttpClient, HttpHandler};
use crate::forward::queue::Queue;
use crate::forward::stdout::StdoutHandler;
use crate::ingress::allowlist::Allowlist;
use crate::ingress::client_ip::Resolver;
use crate::ingress::ip_ranges;
use crate::ingress::rate_limit::{self, Limiter};
use crate::ingress::route::Routes;
use crate::verify::Verifier;
use crate::verify::event_id::Locator;

/// One webhook sender, ready to serve.
#[derive(Debug)]
pub struct Source {
    pub name: Arc<str>,
    pub path: String,
    pub verifier: Verifier,
    pub event_id: Locator,
    pub allowlist: Allowlist,
    pub limiter: Arc<Limiter>,
    pub handler: Handler,
}

/// What outlives one config: a reload builds a new [`Gateway`] around the same shared parts.
#[derive(Debug, Clone)]
pub struct Shared {
    pub client: HttpClient,
    pub dedup: Arc<DedupStore>,
    /// Requests in flight, for load shedding.
    pub inflight: Arc<AtomicUsize>,
}

/// Limits on reading a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub read_timeout: Duration,
}

/// Everything the request stack needs, built from one config.
#[derive(Debug)]
pub struct Gateway {
    pub routes: Arc<Routes>,
    pub client_ip: Resolver,
    pub body: BodyLimits,
    pub dedup: Arc<DedupStore>,
    pub inflight: Arc<AtomicUsize>,
    pub max_inflight: usize,
    /// The sources with a `queue` handler, whose delivery workers the server runs.
    pub queues: Vec<Arc<Queue>>,
}

impl Gateway {
    /// Builds the runtime form of `config` around a dedup store that outlives it (a reload keeps the
    /// store). `path` only names the file in errors.
    pub fn build(config: &Config, shared: &Shared, path: &Path) -> Result<Gateway, ConfigError> {
        let sources = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                build_source(config, source, shared).map_err(|(field, message)| ConfigError::Invalid {
                    path: path.to_owned(),
                    key: format!("source[{i}] ({:?}).{field}", source.name),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rate_limit::spawn_purge(sources.iter().map(|s| Arc::downgrade(&s.limiter)).collect());
        let queues = sources
            .iter()
            .filter_map(|s| match &s.handler {
                Handler::Queue(queue) => Some(queue.clone()),
                _ => None,
            })
            .collect();
        Ok(Gateway {
            routes: Arc::new(Routes::new(sources)),
            client_ip: Resolver::new(config.client_ip.trusted_proxies.clone(), config.client_ip.header),
            body: BodyLimits {
                max_bytes: config.server.max_body_bytes,
                read_timeout: config.server.body_read_timeout,
            },
            dedup: shared.dedup.clone(),
            inflight: shared.inflight.clone(),
            max_inflight: config.server.max_inflight,
            queues,
        })
    }
}

fn build_source(
    global: &Config,
    config: &SourceConfig,
    shared: &Shared,
) -> Result<Arc<Source>, (&'static str, String)> {
    let client = &shared.client;
    let mut allowed = Vec::new();
    for entry in &config.allow_ips {
        match entry {
            AllowIp::Net(net) => allowed.push(*net),
            AllowIp::List(name) => allowed.extend(
                ip_ranges::resolve(name, global.client_ip.ip_ranges_max_age, SystemTime::now())
                    .map_err(|e| ("allow_ips", e))?,
            ),
        }
    }
    let secrets = config
        .secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| secret.resolve().map_err(|e| format!("secrets[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("secrets", e))?;
    let verifier =
        Verifier::new(config.scheme, config.hmac.as_ref(), &secrets, config.tolerance).map_err(|e| ("secrets", e))?;
    let event_id = Locator::new(config.event_id.as_ref(), config.scheme)
        .ok_or(("event_id", "this scheme has no default event id; set one".to_owned()))?;
    let handler = match &config.forward {
        ForwardConfig::Http { url, timeout } => {
            Handler::Http(HttpHandler::new(client.clone(), url, *timeout).map_err(|e| ("forward.url", e))?)
        }
        ForwardConfig::Stdout {} => Handler::Stdout(StdoutHandler),
        ForwardConfig::Discard {} => {
            tracing::warn!(source = %config.name, "forward.kind = \"discard\": this source's events are dropped");
            Handler::Discard
        }
        ForwardConfig::Queue(queue) => {
            let redis = shared
                .dedup
                .redis()
                .cloned()
                .ok_or(("forward.kind", "\"queue\" needs dedup.store = \"redis\"".to_owned()))?;
            let queue = Queue::new(
                &config.name,
                redis,
                &global.dedup.key_prefix,
                queue.clone(),
                shared.client.clone(),
            )
            .map_err(|e| ("forward.url", e))?;
            Handler::Queue(Arc::new(queue))
        }
    };
    Ok(Arc::new(Source {
        name: Arc::from(config.name.as_str()),
        path: config.path.clone(),
        verifier,
        event_id,
        allowlist: Allowlist::new(allowed),
        limiter: Arc::new(Limiter::new(&global.rate_limit, &config.rate_limit)),
        handler,
    }))
}
