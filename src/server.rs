//! `run(config, listeners, shutdown)`: builds the gateway from a config, serves the public and admin
//! listeners, and on shutdown stops accepting, drains in-flight requests within the grace period, and
//! cuts what is left.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::admin::{Admin, Health};
use crate::config::{Config, ConfigError};
use crate::dedup::DedupStore;
use crate::gateway::{Gateway, Shared};
use crate::ingress::client_ip::PeerAddr;
use crate::stack::{self, GatewayService};

/// The two listeners, bound before `run` so that tests can bind port 0 and read the real address.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let public = TcpListener::bind(config.server.listen).await?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        Ok(Listeners { public, admin })
    }
}

/// Serves until `shutdown` completes, then drains. `config_path` only names the file in errors.
pub async fn run(
    config: Config,
    config_path: &Path,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ConfigError> {
    let dedup = DedupStore::new(&config.dedup).map_err(|message| ConfigError::Invalid {
        path: config_path.to_owned(),
        key: "dedup".to_owned(),
        message,
    })?;
    let shared = Shared {
        client: crate::forward::http::client(),
        dedup: dedup.clone(),
        inflight: Arc::new(AtomicUsize::new(0)),
    };
    let gateway = Gateway::build(&config, &shared, config_path)?;
    let stack = Arc::new(ArcSwap::from_pointee(stack::build(&gateway)));
    let health = Arc::new(Health::default());
    let admin = Admin {
        metrics: crate::metrics::install(),
        health: health.clone(),
        dedup: dedup.clone(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let timeouts = Timeouts {
        header_read: config.server.header_read_timeout,
        grace: config.server.shutdown_grace,
    };
    let connections = Arc::new(ConnectionLimit::new(
        config.server.max_connections_per_ip,
        config.client_ip.trusted_proxies.clone(),
    ));
    // The admin port keeps answering while the public one drains, so that /readyz can report it.
    let admin_task = tokio::spawn(serve_admin(listeners.admin, admin));
    let public_task = tokio::spawn(serve_public(listeners.public, stack, connections, timeouts, stop_rx));
    health.set_ready();
    tracing::info!(
        listen = %config.server.listen,
        admin = %config.server.admin_listen,
        sources = config.sources.len(),
        "hookgate is serving"
    );

    shutdown.await;
    tracing::info!(grace = ?timeouts.grace, "shutting down: no new connections, draining in-flight requests");
    health.set_draining();
    let _ = stop_tx.send(true);
    if let Err(e) = public_task.await {
        tracing::error!(error = %e, "the public listener task failed");
    }
    // Requests cut at the end of the grace period released their claims in the background.
    dedup.flush(Duration::from_secs(2)).await;
    admin_task.abort();
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    grace: Duration,
}

async fn serve_public(
    listener: TcpListener,
    stack: Arc<ArcSwap<GatewayService>>,
    limit: Arc<ConnectionLimit>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
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
                let connection = builder.serve_connection(TokioIo::new(stream), public_service(stack.clone(), peer));
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    drop(slot);
                });
                while connections.try_join_next().is_some() {}
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(timeouts.grace) => {
            tracing::warn!(open = connections.len(), "grace period over; cutting the remaining connections");
            connections.abort_all();
        }
    }
}

/// Open connections per client address. Trusted proxies are exempt: every client comes through them.
struct ConnectionLimit {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    exempt: Vec<IpNet>,
}

/// One open connection, counted until it is dropped.
struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
    ip: Option<IpAddr>,
}

impl ConnectionLimit {
    fn new(max: usize, exempt: Vec<IpNet>) -> Self {
        ConnectionLimit {
            open: Mutex::default(),
            max,
            exempt,
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(ConnectionSlot {
                limit: self.clone(),
                ip: None,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limit: self.clone(),
            ip: Some(ip),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.limit.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

fn public_service(
    stack: Arc<ArcSwap<GatewayService>>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        // Each request runs on the stack that was current when it arrived, to its end.
        let service = GatewayService::clone(&stack.load());
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
