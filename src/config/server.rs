//! `[server]`: listeners, limits and timeouts of the public and admin ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public ingress address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin address for `/metrics`, `/healthz`, `/readyz`. Never the public one. Default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// Largest accepted body, in bytes; exactly this many is accepted. Default 1 MiB.
    pub max_body_bytes: u64,
    /// How long a client may take to send the request head. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send the body, once the head is in. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM/SIGINT before they are cut. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests processed at once; past it the gateway answers `503 unavailable` at once instead of
    /// queueing without bound. Default 4096.
    pub max_inflight: usize,
    /// Open connections per client address (IPv6 by its `rate_limit.ipv6_prefix`, a /64 by default);
    /// trusted proxies are exempt. Default 256.
    pub max_connections_per_ip: usize,
    /// Open public connections in all. Past it a new connection is closed at once. Default 4096.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; past it the answer is `431`. At least
    /// 8192. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Body bytes held at once by all requests together, reserved from `Content-Length` before reading
    /// (and while a body without one streams); past it `503 unavailable`. Default 64 MiB.
    pub max_body_buffer_bytes: u64,
    /// Requests in flight from one client (keyed like the rate limit); past it `503 unavailable`. Default
    /// 256.
    pub max_inflight_per_client: usize,
    /// Slowest body accepted, in bytes per second on average, once `body_rate_grace` has passed; slower
    /// is `408`. 0 turns it off. Default 1024.
    pub min_body_rate: u64,
    /// How long a body may take before `min_body_rate` applies. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub body_rate_grace: Duration,
    /// TLS on the public listener. Default: none (plain HTTP, for a TLS-terminating proxy in front).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: the public listener speaks HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Read again on every reload.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Oldest protocol accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
/// The oldest TLS version the public listener accepts.
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    /// TLS 1.2 and 1.3.
    V1_2,
    #[serde(rename = "1.3")]
    /// TLS 1.3 only.
    V1_3,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_inflight: 4096,
            max_connections_per_ip: 256,
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
            max_body_buffer_bytes: 64 * 1024 * 1024,
            max_inflight_per_client: 256,
            min_body_rate: 1024,
            body_rate_grace: Duration::from_secs(5),
            tls: None,
        }
    }
}
