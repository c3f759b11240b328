//! Step 1, the client IP. Never rejects. The TCP peer is the client unless it is a trusted proxy; only
//! then is `X-Forwarded-For` read, right to left, skipping trusted hops. The first untrusted address is
//! the client. A malformed header falls back to the peer: anyone can send one.

use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use http::{HeaderMap, Request};
use ipnet::IpNet;
use tower::{Layer, Service};

use crate::forward::FORWARDED_FOR;

/// The TCP peer, put in the request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The resolved client, put in the request extensions by [`ClientIpService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    trusted_proxies: Vec<IpNet>,
}

impl Resolver {
    pub fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Resolver { trusted_proxies }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        // Header lines are concatenated in order, so the rightmost entry is the nearest hop.
        let mut entries = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").rsplit(','));
        let mut client = peer;
        for entry in &mut entries {
            let Some(ip) = parse_entry(entry.trim()) else {
                return peer;
            };
            client = ip.to_canonical();
            if !self.trusted(client) {
                return client;
            }
        }
        // Every hop was trusted: the leftmost is the best we know.
        client
    }
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[derive(Debug, Clone)]
pub struct ClientIpLayer {
    resolver: Resolver,
}

impl ClientIpLayer {
    pub fn new(resolver: Resolver) -> Self {
        ClientIpLayer { resolver }
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIpService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientIpService<S> {
    inner: S,
    resolver: Resolver,
}

impl<S, B> Service<Request<B>> for ClientIpService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<PeerAddr>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
        let client = self.resolver.resolve(peer, req.headers());
        req.extensions_mut().insert(ClientIp(client));
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn resolve(trusted: &[&str], peer: &str, xff: &[&str]) -> String {
        let resolver = Resolver::new(trusted.iter().map(|n| n.parse().expect("cidr")).collect());
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(v).expect("value"));
        }
        resolver.resolve(peer.parse().expect("ip"), &headers).to_string()
    }

    #[test]
    fn header_is_ignored_from_an_untrusted_peer() {
        assert_eq!(resolve(&[], "203.0.113.9", &["10.0.0.1"]), "203.0.113.9");
        assert_eq!(resolve(&["10.0.0.0/8"], "203.0.113.9", &["10.0.0.1"]), "203.0.113.9");
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let trusted = ["10.0.0.0/8", "192.168.1.1/32"];
        assert_eq!(resolve(&trusted, "10.1.1.1", &["198.51.100.7"]), "198.51.100.7");
        assert_eq!(
            resolve(&trusted, "10.1.1.1", &["6.6.6.6, 198.51.100.7, 192.168.1.1, 10.2.2.2"]),
            "198.51.100.7"
        );
        assert_eq!(
            resolve(&trusted, "10.1.1.1", &["6.6.6.6, 198.51.100.7", "10.2.2.2"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn all_trusted_resolves_to_the_leftmost_and_no_header_to_the_peer() {
        assert_eq!(
            resolve(&["10.0.0.0/8"], "10.1.1.1", &["10.9.9.9, 10.2.2.2"]),
            "10.9.9.9"
        );
        assert_eq!(resolve(&["10.0.0.0/8"], "10.1.1.1", &[]), "10.1.1.1");
    }

    #[test]
    fn malformed_entries_fall_back_to_the_peer() {
        assert_eq!(resolve(&["10.0.0.0/8"], "10.1.1.1", &["not-an-ip"]), "10.1.1.1");
        assert_eq!(
            resolve(&["10.0.0.0/8"], "10.1.1.1", &["1.2.3.4, , 10.2.2.2"]),
            "10.1.1.1"
        );
    }

    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        assert_eq!(resolve(&[], "::ffff:203.0.113.9", &[]), "203.0.113.9");
        assert_eq!(resolve(&["::1/128"], "::1", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(
            resolve(&["10.0.0.0/8"], "::ffff:10.0.0.1", &["::ffff:198.51.100.7"]),
            "198.51.100.7"
        );
        assert_eq!(
            resolve(&["10.0.0.0/8"], "10.0.0.1", &["198.51.100.7:8443"]),
            "198.51.100.7"
        );
    }
}
