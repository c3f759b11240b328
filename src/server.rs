//! `run(config, path, listeners, shutdown, reload)`: builds the gateway from a config and serves the
//! public listener (HTTP, or HTTPS with `[server.tls]`) and the admin listener.
//! - On `reload` the config file is read, checked and built again, then swapped in atomically: requests
//!   already running finish on the config they started with. An invalid file keeps the old config serving.
//! - On `shutdown` it stops accepting, fails `/readyz`, drains in-flight requests within the grace period,
//!   cuts what is left (their claims are released), and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::admin::{Admin, ConsoleAccess, Health};
use crate::config::{self, Config, ConfigError};
use crate::cores::Cores;
use crate::forward::queue::{self, Workers};
use crate::gateway::{Backends, Gateway};
use crate::ingress::connections::{ConnectionLimit, ConnectionSlot};
use crate::peer::PeerAddr;
use crate::stack::{self, GatewayService};
use crate::verify::layer::Clock;

/// The two listeners, bound before `run` so that tests can bind port 0 and read the real address, and
/// where the public connections are served.
pub struct Listeners {
    public: TcpListener,
    admin: TcpListener,
    cores: Option<Arc<Cores>>,
}

impl Listeners {
    /// Listeners already bound (tests bind port 0 themselves).
    pub fn new(public: TcpListener, admin: TcpListener) -> Self {
        Listeners {
            public,
            admin,
            cores: None,
        }
    }

    /// Binds the public and admin addresses of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let public = TcpListener::bind(config.server.listen).await?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        Ok(Listeners::new(public, admin))
    }

    /// Serves the public connections on these per-core runtimes instead of the runtime `run` is on.
    pub fn spread_over(mut self, cores: Cores) -> Self {
        self.cores = Some(Arc::new(cores));
        self
    }
}

/// What a reload swaps: the request stack, and the TLS certificate when there is one.
struct Live {
    stack: ArcSwap<GatewayService>,
    tls: Option<ArcSwap<rustls::ServerConfig>>,
}

/// Serves until `shutdown` completes, then drains. Each message on `reload` reloads the config from
/// `config_path` (or the embedded default, when that is where it came from).
pub async fn run(
    config: Config,
    config_path: &Path,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    reload: mpsc::Receiver<()>,
) -> Result<(), ConfigError> {
    run_with_clock(config, config_path, listeners, shutdown, reload, Clock::System).await
}

/// Like [`run`], with signed timestamps dated by `clock`: a fixed clock checks recorded requests (a
/// provider's published examples) as of the moment they were signed.
pub async fn run_with_clock(
    config: Config,
    config_path: &Path,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    mut reload: mpsc::Receiver<()>,
    clock: Clock,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: config_path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let mut backends = Backends::connect(&config, config_path)?;
    backends.clock = clock;
    let dedup = backends.dedup.clone();
    let gateway = Gateway::build(&config, &backends, config_path)?;
    if let Some(redis) = &backends.redis {
        queue::durability::check(redis, &gateway.queues)
            .await
            .map_err(|m| invalid("forward.allow_volatile", m))?;
    }
    let tls = match &config.server.tls {
        Some(tls) => Some(ArcSwap::new(
            crate::tls::server_config(tls).map_err(|m| invalid("server.tls", m))?,
        )),
        None => None,
    };
    let live = Arc::new(Live {
        stack: ArcSwap::from_pointee(stack::build(&gateway)),
        tls,
    });
    let health = Arc::new(Health::default());
    let queues = Arc::new(ArcSwap::from_pointee(gateway.queues.clone()));
    let gateway = Arc::new(gateway);
    let serving = Arc::new(ArcSwap::new(gateway.clone()));
    let token = match &config.admin.token {
        Some(token) => Some(token.resolve().map_err(|m| invalid("admin.token", m))?),
        None => None,
    };
    let access = Arc::new(ConsoleAccess::new(config.admin.allow_actions, token));
    let metrics = crate::metrics::install();
    let upkeep = tokio::spawn(crate::metrics::upkeep(metrics.clone()));
    let admin = Admin {
        metrics,
        health: health.clone(),
        dedup: dedup.clone(),
        store: Arc::new(crate::admin::StoreHealth::new(config.dedup.unready_after)),
        queues: queues.clone(),
        serving: serving.clone(),
        access,
        history: Arc::default(),
    };
    let consumer = queue::consumer_name();
    let mut workers = Workers::start(&gateway.queues, &consumer);
    watch_quarantines(&gateway);

    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = Settings {
        header_read: config.server.header_read_timeout,
        max_header_bytes: config.server.max_header_bytes,
        grace: config.server.shutdown_grace,
    };
    let limit = Arc::new(ConnectionLimit::new(
        config.server.max_connections_per_ip,
        config.server.max_connections,
        config.rate_limit.ipv6_prefix,
        config.client_ip.trusted_proxies.clone(),
    ));
    // The admin port keeps answering while the public one drains, so that /readyz can report it.
    let admin_task = tokio::spawn(serve_admin(listeners.admin, admin));
    let public_task = tokio::spawn(serve_public(
        listeners.public,
        listeners.cores.clone(),
        live.clone(),
        limit,
        settings,
        stop_rx,
    ));
    health.set_ready();
    tracing::info!(
        listen = %config.server.listen,
        admin = %config.server.admin_listen,
        tls = config.server.tls.is_some(),
        sources = config.sources.len(),
        threads = listeners.cores.as_ref().map_or(1, |cores| cores.len()),
        "hookgate is serving"
    );

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = reload.recv() => {
                if let Some(gateway) = reload_config(&config, config_path, &backends, &live) {
                    // The old workers finish their deliveries in the background; the new ones start now.
                    let old = std::mem::replace(&mut workers, Workers::start(&gateway.queues, &consumer));
                    tokio::spawn(old.stop(settings.grace));
                    queues.store(Arc::new(gateway.queues.clone()));
                    serving.store(Arc::new(gateway));
                }
            }
        }
    }
    tracing::info!(grace = ?settings.grace, "shutting down: no new connections, draining in-flight requests");
    let deadline = tokio::time::Instant::now() + settings.grace;
    health.set_draining();
    let _ = stop_tx.send(true);
    // Queue workers stop taking entries and finish what they hold, alongside the public drain.
    let workers_done = tokio::spawn(workers.stop(settings.grace));
    if let Err(e) = public_task.await {
        tracing::error!(error = %e, "the public listener task failed");
    }
    let _ = workers_done.await;
    // Deliveries whose senders hung up are not connections, and are waited for apart.
    dedup.finish_deliveries(deadline).await;
    // Requests cut at the end of the grace period released their claims in the background.
    dedup.flush(Duration::from_secs(2)).await;
    // Only now: the releases above may run on the cores. Stopping them joins their threads.
    if let Some(cores) = listeners.cores {
        let _ = tokio::task::spawn_blocking(move || drop(cores)).await;
    }
    admin_task.abort();
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Reads, checks and builds the config again, then swaps it in; on any error the running config stays.
/// `[server]` and `[dedup]` hold listeners and connections: changes there need a restart, and say so.
/// Returns the new gateway, whose queues' workers the caller starts.
fn reload_config(started: &Config, path: &Path, backends: &Backends, live: &Live) -> Option<Gateway> {
    let built = config::load_or_embedded(path).and_then(|new| {
        let gateway = Gateway::build(&new, backends, path)?;
        let tls = match (&new.server.tls, &live.tls) {
            (Some(tls), Some(_)) => Some(crate::tls::server_config(tls).map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                key: "server.tls".to_owned(),
                message,
            })?),
            _ => None,
        };
        Ok((new, gateway, tls))
    });
    match built {
        Ok((new, gateway, tls)) => {
            live.stack.store(Arc::new(stack::build(&gateway)));
            watch_quarantines(&gateway);
            if let (Some(slot), Some(tls)) = (&live.tls, tls) {
                slot.store(tls);
            }
            if new.server != started.server || new.dedup != started.dedup || !new.admin.same_as(&started.admin) {
                tracing::warn!("[server], [dedup] and [admin] changes take effect at the next restart");
            }
            crate::metrics::config_reload("ok");
            tracing::info!(sources = new.sources.len(), "config reloaded");
            Some(gateway)
        }
        Err(error) => {
            crate::metrics::config_reload("error");
            tracing::error!(%error, "config reload failed; the previous config keeps serving");
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    header_read: Duration,
    max_header_bytes: usize,
    grace: Duration,
}

async fn serve_public(
    listener: TcpListener,
    cores: Option<Arc<Cores>>,
    live: Arc<Live>,
    limit: Arc<ConnectionLimit>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read)
        // A request head past this is answered `431` by hyper; without it, each connection could buffer
        // about 400 KB of unfinished head before routing.
        .max_buf_size(settings.max_header_bytes)
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = limit.acquire(peer.ip()) else {
                    tracing::debug!(%peer, "too many connections from this address; closed");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    live: live.clone(),
                    peer,
                    handshake_timeout: settings.header_read,
                };
                connections.spawn_on(connection.serve_with(stream, slot), &where_to(&cores));
                while connections.try_join_next().is_some() {}
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.grace) => {
            tracing::warn!(open = connections.len(), "grace period over; cutting the remaining connections");
            connections.abort_all();
        }
    }
    // Let the aborted connections drop their requests (and so release their claims) before returning.
    while connections.join_next().await.is_some() {}
}

/// The runtime that serves the next connection: the next core, or the one the accept loop is on.
fn where_to(cores: &Option<Arc<Cores>>) -> tokio::runtime::Handle {
    match cores {
        Some(cores) => cores.next().clone(),
        None => tokio::runtime::Handle::current(),
    }
}

/// One accepted connection, served on its own task.
struct Connection {
    builder: http1::Builder,
    watcher: Watcher,
    live: Arc<Live>,
    peer: SocketAddr,
    handshake_timeout: Duration,
}

impl Connection {
    /// Serves `stream` on the runtime this future runs on (the stream moves to that runtime's reactor),
    /// and frees the connection's slot at the end.
    async fn serve_with(self, stream: TcpStream, slot: ConnectionSlot) {
        match stream.into_std().and_then(TcpStream::from_std) {
            Ok(stream) => self.serve(stream).await,
            Err(error) => tracing::warn!(%error, peer = %self.peer, "cannot hand the connection to its thread"),
        }
        drop(slot);
    }

    async fn serve(self, stream: TcpStream) {
        let Some(tls) = self.live.tls.as_ref().map(|tls| tls.load_full()) else {
            return self.serve_io(stream, false).await;
        };
        // The TLS handshake counts against the header-read timeout: a client that stalls it is cut off.
        let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => self.serve_io(stream, true).await,
            Ok(Err(error)) => tracing::debug!(peer = %self.peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn serve_io<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I, tls: bool) {
        let service = public_service(self.live.clone(), self.peer, tls);
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(error = %e, peer = %self.peer, "connection ended with an error");
        }
    }
}

fn public_service(
    live: Arc<Live>,
    peer: SocketAddr,
    tls: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::Response<tower_http::body::UnsyncBoxBody<bytes::Bytes, crate::BoxError>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        if tls {
            req.extensions_mut().insert(crate::peer::OverTls);
        }
        // Each request runs on the stack that was current when it arrived, to its end.
        let service = GatewayService::clone(&live.stack.load());
        service.oneshot(req)
    })
}

async fn serve_admin(listener: TcpListener, admin: Admin) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            }),
        );
        tokio::spawn(connection);
    }
}

/// Keeps the quarantine gauges of `gateway`'s sources current, for as long as each quarantine is in use.
fn watch_quarantines(gateway: &Gateway) {
    for quarantine in gateway.sources.iter().filter_map(|s| s.quarantine.as_ref()) {
        crate::quarantine::Quarantine::watch(quarantine);
    }
}
