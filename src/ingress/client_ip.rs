//! Step 1, the client IP. Never rejects. The TCP peer is the client unless it is a trusted proxy; only
//! then is the forwarding header read: `X-Forwarded-For` (the default) or RFC 7239 `Forwarded`, right to
//! left, skipping trusted hops, the first untrusted address being the client; or `X-Real-IP`, a single
//! address set by the proxy. An entry that cannot be read where the client should be is
//! [`UNKNOWN_CLIENT`]: never the proxy's own address.

use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use ipnet::IpNet;
use tower::{Layer, Service};

use crate::config::ClientIpHeader;
use crate::peer::FORWARDED_FOR;
pub use crate::peer::{ClientIp, PeerAddr, UNKNOWN_CLIENT};

#[derive(Debug, Clone)]
/// Resolves the client IP from the peer address and, from trusted proxies only, one header.
pub struct Resolver {
    trusted_proxies: Vec<IpNet>,
    header: ClientIpHeader,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(Vec::new(), ClientIpHeader::XForwardedFor)
    }
}

const REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

impl Resolver {
    /// A resolver that reads `header` only when the peer is in `trusted_proxies`.
    pub fn new(trusted_proxies: Vec<IpNet>, header: ClientIpHeader) -> Self {
        Resolver {
            trusted_proxies,
            header,
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client IP of a request from `peer` with these headers. From a trusted proxy, an entry that
    /// cannot be read where the client should be resolves to [`UNKNOWN_CLIENT`], never to the proxy: a
    /// sender must not be able to become the proxy by spoiling the header.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let mut client = peer;
        match self.header {
            ClientIpHeader::XRealIp => {
                let mut values = headers.get_all(REAL_IP).iter();
                return match (values.next(), values.next()) {
                    (None, _) => peer,
                    (Some(value), None) => parse_entry(value.as_bytes()).map_or(UNKNOWN_CLIENT, |ip| ip.to_canonical()),
                    // Two lines: one of them was not set by the proxy.
                    (Some(_), Some(_)) => UNKNOWN_CLIENT,
                };
            }
            ClientIpHeader::XForwardedFor | ClientIpHeader::Forwarded => {
                let (name, read): (HeaderName, ReadEntry) = match self.header {
                    ClientIpHeader::Forwarded => (header::FORWARDED, forwarded_for),
                    _ => (FORWARDED_FOR, parse_entry),
                };
                // Header lines are concatenated in order, so the rightmost entry is the nearest hop. Each
                // entry is read on its own, from raw bytes: a bad byte spoils only its own entry.
                let lines: Vec<&[u8]> = headers.get_all(name).iter().map(HeaderValue::as_bytes).collect();
                for line in lines.iter().rev() {
                    for entry in line.rsplit(|b| *b == b',') {
                        let Some(ip) = read(entry) else {
                            return UNKNOWN_CLIENT;
                        };
                        client = ip.to_canonical();
                        if !self.trusted(client) {
                            return client;
                        }
                    }
                }
            }
        }
        // Every hop was trusted (or there was none): the leftmost is the best we know.
        client
    }
}

/// Reads one entry of a forwarding header.
type ReadEntry = fn(&[u8]) -> Option<IpAddr>;

/// An address, optionally with a port or in brackets, with spaces around: `1.2.3.4`, `1.2.3.4:80`,
/// `[::1]`, `[::1]:80`. Anything that is not ASCII is not an address.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// The `for=` address of one RFC 7239 element, such as `for="[2001:db8::17]:4711";proto=https`.
/// Obfuscated (`_hidden`) and `unknown` nodes are not addresses.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let element = std::str::from_utf8(element).ok()?;
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.eq_ignore_ascii_case("for")
            .then(|| parse_entry(value.trim().trim_matches('"').as_bytes()))?
    })
}

#[derive(Debug, Clone)]
/// Puts the resolved [`ClientIp`] in each request's extensions and sets `X-Forwarded-For`.
pub struct ClientIpLayer {
    resolver: Resolver,
}

impl ClientIpLayer {
    /// A layer with this resolver.
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
/// The service of [`ClientIpLayer`].
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
        if self.resolver.trusted(peer) {
            req.extensions_mut().insert(crate::peer::FromTrustedProxy);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(kind: ClientIpHeader, name: HeaderName, trusted: &[&str], peer: &str, values: &[&str]) -> String {
        let resolver = Resolver::new(trusted.iter().map(|n| n.parse().expect("cidr")).collect(), kind);
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(name.clone(), HeaderValue::from_str(v).expect("value"));
        }
        resolver.resolve(peer.parse().expect("ip"), &headers).to_string()
    }

    fn resolve(trusted: &[&str], peer: &str, xff: &[&str]) -> String {
        resolve_with(ClientIpHeader::XForwardedFor, FORWARDED_FOR, trusted, peer, xff)
    }

    #[test]
    fn forwarded_header_is_walked_like_x_forwarded_for() {
        let fwd = |peer: &str, values: &[&str]| {
            resolve_with(
                ClientIpHeader::Forwarded,
                header::FORWARDED,
                &["10.0.0.0/8"],
                peer,
                values,
            )
        };
        assert_eq!(fwd("10.0.0.1", &["for=198.51.100.7;proto=https"]), "198.51.100.7");
        assert_eq!(
            fwd("10.0.0.1", &[r#"for="[2001:db8:cafe::17]:4711", for=10.2.2.2"#]),
            "2001:db8:cafe::17"
        );
        assert_eq!(
            fwd("10.0.0.1", &["For=192.0.2.43, for=10.9.9.9;by=10.0.0.1"]),
            "192.0.2.43"
        );
        assert_eq!(
            fwd("10.0.0.1", &["for=_hidden"]),
            "::",
            "obfuscated: unknown, never the proxy"
        );
        assert_eq!(
            fwd("10.0.0.1", &["proto=https"]),
            "::",
            "no for=: unknown, never the proxy"
        );
        assert_eq!(
            fwd("203.0.113.9", &["for=198.51.100.7"]),
            "203.0.113.9",
            "untrusted peer"
        );
    }

    #[test]
    fn x_real_ip_is_one_address_from_a_trusted_proxy() {
        let real =
            |peer: &str, values: &[&str]| resolve_with(ClientIpHeader::XRealIp, REAL_IP, &["10.0.0.0/8"], peer, values);
        assert_eq!(real("10.0.0.1", &["198.51.100.7"]), "198.51.100.7");
        assert_eq!(real("203.0.113.9", &["198.51.100.7"]), "203.0.113.9", "untrusted peer");
        assert_eq!(real("10.0.0.1", &["1.2.3.4, 5.6.7.8"]), "::", "a list is malformed");
        assert_eq!(
            real("10.0.0.1", &["1.2.3.4", "5.6.7.8"]),
            "::",
            "two headers are malformed"
        );
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
    fn a_malformed_entry_where_the_client_should_be_is_unknown_never_the_proxy() {
        assert_eq!(resolve(&["10.0.0.0/8"], "10.1.1.1", &["not-an-ip"]), "::");
        assert_eq!(resolve(&["10.0.0.0/8"], "10.1.1.1", &["1.2.3.4, , 10.2.2.2"]), "::");
    }

    /// One byte that is not text, from the sender's part of the header, spoiled the whole header and the
    /// client became the proxy: now each entry is read alone.
    #[test]
    fn a_bad_byte_spoils_only_its_own_entry() {
        let resolver = Resolver::new(vec!["10.0.0.0/8".parse().expect("cidr")], ClientIpHeader::XForwardedFor);
        let with = |raw: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                FORWARDED_FOR,
                HeaderValue::from_bytes(raw).expect("obs-text is a valid value"),
            );
            resolver.resolve("10.0.0.1".parse().expect("ip"), &headers).to_string()
        };
        assert_eq!(
            with(b"6.6.6.6\xff, 198.51.100.7"),
            "198.51.100.7",
            "left of the client: never read"
        );
        assert_eq!(
            with(b"198.51.100.7\xff, 10.2.2.2"),
            "::",
            "the client's own entry: unknown"
        );
    }

    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        assert_eq!(resolve(&["::1/128"], "::1", &["[2001:db8::2]"]), "2001:db8::2");
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

    proptest::proptest! {
        /// Arbitrary header text never panics, and the answer is always the peer or an address in the header.
        #[test]
        fn arbitrary_headers_never_panic(value in "[ -~]{0,80}") {
            for (kind, name) in [
                (ClientIpHeader::XForwardedFor, FORWARDED_FOR),
                (ClientIpHeader::Forwarded, header::FORWARDED),
                (ClientIpHeader::XRealIp, REAL_IP),
            ] {
                let got = resolve_with(kind, name, &["10.0.0.0/8"], "10.0.0.1", &[value.as_str()]);
                proptest::prop_assert!(got == "10.0.0.1" || got == "::" || value.contains(got.as_str()) || got.parse::<IpAddr>().is_ok());
            }
        }
    }
}
