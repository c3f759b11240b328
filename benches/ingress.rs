//! The ingress checks that run on every request before its body is read: client IP behind a trusted
//! proxy, an allowlist of 1 000 CIDRs, and the rate-limit check. Target: under 1 µs together.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use hookgate::config::{ClientIpHeader, RateLimitConfig, SourceRateLimit};
use hookgate::ingress::allowlist::Allowlist;
use hookgate::ingress::client_ip::Resolver;
use hookgate::ingress::rate_limit::Limiter;
use http::{HeaderMap, HeaderValue};
use ipnet::{IpNet, Ipv4Net};

/// 1 000 distinct /24s spread over the IPv4 space, the same every run.
fn thousand_cidrs() -> Vec<IpNet> {
    (0..1000u32)
        .map(|i| {
            let base = i.wrapping_mul(2_654_435_761) & 0xffff_ff00;
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base), 24).expect("prefix"))
        })
        .collect()
}

fn ingress(c: &mut Criterion) {
    let resolver = Resolver::new(vec!["10.0.0.0/8".parse().expect("cidr")], ClientIpHeader::XForwardedFor);
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("6.6.6.6, 198.51.100.7, 10.1.1.1"),
    );
    let peer: IpAddr = "10.0.0.5".parse().expect("ip");
    let cidrs = thousand_cidrs();
    let allowlist = Allowlist::new(cidrs.clone());
    let inside = match cidrs[500] {
        IpNet::V4(net) => IpAddr::from(net.network()),
        IpNet::V6(_) => unreachable!(),
    };
    let limiter = Limiter::new(&RateLimitConfig::default(), &SourceRateLimit::default());
    // 10 000 clients in turn, so the limiter works on a realistic map rather than one hot key.
    let clients: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::from(Ipv4Addr::from(0xc633_0000 + i)))
        .collect();
    let mut next = 0usize;

    let mut group = c.benchmark_group("ingress");
    group.bench_function("client_ip_xff_trusted_proxy", |b| {
        b.iter(|| resolver.resolve(black_box(peer), black_box(&headers)))
    });
    group.bench_function("allowlist_1000_cidrs", |b| {
        b.iter(|| allowlist.allows(black_box(inside)))
    });
    group.bench_function("rate_limit_check", |b| {
        b.iter(|| {
            next = (next + 1) % clients.len();
            limiter.check(black_box(clients[next]))
        })
    });
    group.bench_function("all_three", |b| {
        b.iter(|| {
            next = (next + 1) % clients.len();
            let client = resolver.resolve(black_box(peer), black_box(&headers));
            let allowed = allowlist.allows(client);
            (allowed, limiter.check(clients[next]))
        })
    });
    group.finish();
}

criterion_group!(benches, ingress);
criterion_main!(benches);
