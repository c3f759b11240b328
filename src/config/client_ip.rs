//! `[client_ip]`: how the client address is found behind proxies.

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// `[client_ip]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    /// CIDRs whose forwarding header is believed. Default empty: the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// The header a trusted proxy sets: `x-forwarded-for` (default), `x-real-ip` or `forwarded` (RFC 7239).
    pub header: ClientIpHeader,
    /// How old a shipped `@provider` IP list may be before a config that uses it is refused. Default `365d`.
    #[serde(with = "humantime_serde")]
    pub ip_ranges_max_age: Duration,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ClientIpHeader::XForwardedFor,
            ip_ranges_max_age: Duration::from_secs(365 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
/// Which header a trusted proxy names the client in.
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: the rightmost entry that is not a trusted proxy.
    XForwardedFor,
    /// `X-Real-IP`: one address, set by the proxy.
    XRealIp,
    /// `Forwarded` (RFC 7239): the `for=` parameters, read like `X-Forwarded-For`.
    Forwarded,
}
