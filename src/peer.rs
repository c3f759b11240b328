//! Who sent a request, as request extensions that travel from the door to the handler: the TCP peer
//! ([`PeerAddr`], set by the server) and the resolved client ([`ClientIp`], set by the client-IP stage).
//! A leaf: every stage may read these, none has to import another stage for them.

use std::net::{IpAddr, SocketAddr};

use http::HeaderName;

/// The TCP peer, put in the request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Present when the request came over TLS, put in the request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Present when the TCP peer is a trusted proxy, put in the request extensions by the client-IP stage:
/// its `X-Forwarded-Proto` and `X-Forwarded-Host` may then be believed.
#[derive(Debug, Clone, Copy)]
pub struct FromTrustedProxy;

/// A request that a stage before verification refused, but let on so that its body can be read: put in
/// the request extensions by that stage (the allowlist) for a shadow source (which forwards it with this
/// verdict) or a quarantining one (which keeps it, then refuses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowRefusal {
    /// The outcome enforce mode would answer, such as `ip_denied`.
    pub verdict: &'static str,
}

/// The allowlist's refusal: the client is not in the source's allowlist (`403 ip_denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client IP is not in the source's allowlist")]
pub struct IpDenied;

/// The resolved client, put in the request extensions by the client-IP stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client of a request whose forwarding header, from a trusted proxy, could not be read where the
/// client should be (and of a request with no resolved client at all): the unspecified address `::`. No
/// allowlist of real ranges contains it, and all such requests share one rate-limit bucket.
pub const UNKNOWN_CLIENT: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// The key a client is counted under, by the rate limit, the per-client in-flight cap and the per-client
/// connection cap alike: an IPv4 address as it is, an IPv6 address by its first `ipv6_prefix` bits (one
/// host may own a whole /64).
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let shift = 128 - u32::from(ipv6_prefix.clamp(1, 128));
            bits.checked_shr(shift).and_then(|b| b.checked_shl(shift)).unwrap_or(0)
        }
    }
}

/// `X-Forwarded-For`: read from trusted proxies, and set anew towards the downstream.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `X-Request-Id`: set at the door when the sender sent none, answered back, and forwarded.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
