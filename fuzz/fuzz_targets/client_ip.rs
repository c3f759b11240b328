//! The forwarding-header parsers (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`) on arbitrary bytes, one or
//! several header lines: never a panic. (That a spoiled entry never makes the proxy the client is a unit
//! test of `ingress::client_ip`: as a property it would need a second parser to say which inputs name
//! the proxy in one of its many spellings.)
#![no_main]

use std::net::IpAddr;

use hookgate::config::ClientIpHeader;
use hookgate::ingress::client_ip::Resolver;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
    for (kind, name) in [
        (ClientIpHeader::XForwardedFor, "x-forwarded-for"),
        (ClientIpHeader::Forwarded, "forwarded"),
        (ClientIpHeader::XRealIp, "x-real-ip"),
    ] {
        let resolver = Resolver::new(vec!["10.0.0.0/8".parse().expect("cidr")], kind);
        let mut headers = HeaderMap::new();
        for line in data.split(|b| *b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        let _ = resolver.resolve(proxy, &headers);
    }
});
