//! Traffic control at the door: client IP behind proxies, allowlists, rate limits, load shedding and
//! connection caps. Every refusal comes before the body is read, and nothing reaches the downstream.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hookgate::config::{AllowIp, Config, RateLimitConfig, SourceRateLimit};
use hookgate::ingress::rate_limit::Limiter;
use http::HeaderMap;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::common::gateway::test_config;
use crate::common::{FakeDownstream, Reply, Sender, TestGateway, event_body, header, sign};

fn allow(config: &mut Config, source: &str, entries: &[&str]) {
    let source = config.sources.iter_mut().find(|s| s.name == source).expect("source");
    source.allow_ips = entries
        .iter()
        .map(|e| AllowIp::try_from(e.to_string()).expect("entry"))
        .collect();
}

async fn deliver_via(gateway: &TestGateway, config: &Config, id: &str, forwarded_for: Option<&str>) -> Reply {
    let body = event_body(id);
    let mut headers = sign(config, "github", &body, id);
    if let Some(chain) = forwarded_for {
        headers.extend([header("x-forwarded-for", chain)]);
    }
    Sender::default().post(&gateway.url("/github"), headers, body).await
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_bypass_the_allowlist() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    allow(&mut config, "github", &["198.51.100.0/24"]);
    let gateway = TestGateway::start(config.clone()).await;
    deliver_via(&gateway, &config, "d1", Some("198.51.100.7"))
        .await
        .assert(403, "ip_denied");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn the_same_header_from_a_trusted_proxy_is_honoured() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    allow(&mut config, "github", &["198.51.100.0/24"]);
    config.client_ip.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    let gateway = TestGateway::start(config.clone()).await;
    deliver_via(&gateway, &config, "d1", Some("198.51.100.7"))
        .await
        .assert(200, "forwarded");
    assert_eq!(downstream.received()[0].header("x-forwarded-for"), Some("198.51.100.7"));
    // Through the trusted proxy, a client outside the list is still refused.
    deliver_via(&gateway, &config, "d2", Some("203.0.113.9"))
        .await
        .assert(403, "ip_denied");
    assert_eq!(downstream.received().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_chain_of_trusted_hops_resolves_to_the_first_untrusted_address() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    allow(&mut config, "github", &["198.51.100.7"]);
    config.client_ip.trusted_proxies = vec![
        "127.0.0.0/8".parse().expect("cidr"),
        "10.0.0.0/8".parse().expect("cidr"),
    ];
    let gateway = TestGateway::start(config.clone()).await;
    // 6.6.6.6 was written by the client itself; 10.x are our load balancers.
    let chain = "6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2";
    deliver_via(&gateway, &config, "d1", Some(chain))
        .await
        .assert(200, "forwarded");
    assert_eq!(downstream.received()[0].header("x-forwarded-for"), Some("198.51.100.7"));
    gateway.stop().await;
}

#[tokio::test]
async fn ipv6_peers_and_ipv4_mapped_peers_are_matched_as_themselves() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    allow(&mut config, "github", &["::1/128"]);
    allow(&mut config, "stripe", &["127.0.0.1/32"]);
    // A dual-stack listener: IPv4 clients appear as ::ffff:127.0.0.1 and must match 127.0.0.1/32.
    config.server.listen = "[::]:0".parse().expect("addr");
    let gateway = TestGateway::start(config.clone()).await;
    let port = gateway.addr.port();
    let sender = Sender::default();

    let body = event_body("v6");
    let url = format!("http://[::1]:{port}/github");
    sender
        .post(&url, sign(&config, "github", &body, "v6"), body.clone())
        .await
        .assert(200, "forwarded");
    let url = format!("http://127.0.0.1:{port}/github");
    sender
        .post(&url, sign(&config, "github", &body, "v4"), body.clone())
        .await
        .assert(403, "ip_denied");

    let url = format!("http://127.0.0.1:{port}/stripe");
    sender
        .post(&url, sign(&config, "stripe", &body, "v6"), body.clone())
        .await
        .assert(200, "forwarded");
    assert_eq!(downstream.received()[1].header("x-forwarded-for"), Some("127.0.0.1"));
    gateway.stop().await;
}

#[tokio::test]
async fn a_shipped_provider_list_is_applied() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    allow(&mut config, "github", &["@github"]);
    config.client_ip.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    let gateway = TestGateway::start(config.clone()).await;
    deliver_via(&gateway, &config, "d1", Some("140.82.115.9"))
        .await
        .assert(200, "forwarded");
    deliver_via(&gateway, &config, "d2", Some("2606:50c0::5"))
        .await
        .assert(200, "forwarded");
    deliver_via(&gateway, &config, "d3", Some("198.51.100.7"))
        .await
        .assert(403, "ip_denied");
    gateway.stop().await;
}

#[tokio::test]
async fn with_a_burst_of_five_the_sixth_request_is_429_with_retry_after() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.rate_limit.per_second = 1;
    config.rate_limit.burst = 5;
    // A source name of this test's own, so that its counters are not shared with other tests.
    config
        .sources
        .iter_mut()
        .find(|s| s.name == "github")
        .expect("github")
        .name = "burst5".to_owned();
    let gateway = TestGateway::start(config.clone()).await;
    let send = |id: &str| {
        let body = event_body(id);
        let headers = sign(&config, "burst5", &body, id);
        let url = gateway.url("/github");
        async move { Sender::default().post(&url, headers, body).await }
    };
    for i in 1..=5 {
        send(&format!("d{i}")).await.assert(200, "forwarded");
    }
    let refused = send("d6").await;
    refused.assert(429, "rate_limited");
    assert_eq!(
        refused.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(downstream.received().len(), 5);
    let metrics = Sender::default()
        .send("GET", &gateway.admin_url("/metrics"), HeaderMap::new(), "")
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"hookgate_rejections_total{source="burst5",reason="rate_limited"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"hookgate_requests_total{source="burst5",outcome="forwarded"} 5"#),
        "{text}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn two_clients_behind_a_proxy_have_independent_buckets_and_a_source_total_caps_both() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.client_ip.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    config.rate_limit.per_second = 1;
    config.rate_limit.burst = 2;
    let github = config.sources.iter_mut().find(|s| s.name == "github").expect("github");
    github.rate_limit = SourceRateLimit {
        total_per_second: Some(1),
        total_burst: Some(3),
        ..SourceRateLimit::default()
    };
    let gateway = TestGateway::start(config.clone()).await;
    deliver_via(&gateway, &config, "a1", Some("198.51.100.1"))
        .await
        .assert(200, "forwarded");
    deliver_via(&gateway, &config, "a2", Some("198.51.100.1"))
        .await
        .assert(200, "forwarded");
    deliver_via(&gateway, &config, "a3", Some("198.51.100.1"))
        .await
        .assert(429, "rate_limited");
    deliver_via(&gateway, &config, "b1", Some("198.51.100.2"))
        .await
        .assert(200, "forwarded");
    // Client B has a token left, but the source's total of 3 is spent.
    deliver_via(&gateway, &config, "b2", Some("198.51.100.2"))
        .await
        .assert(429, "rate_limited");
    let metrics = Sender::default()
        .send("GET", &gateway.admin_url("/metrics"), HeaderMap::new(), "")
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains(r#"reason="rate_limited:total""#), "{text}");
    gateway.stop().await;
}

/// One million distinct IPs through one source's limiter, with the default bound of 100 000 tracked
/// keys: the map holds at most the bound, and its memory is measured here, on this thread. Measured:
/// 4.1 MiB (4 326 552 bytes). The bound written here, 8 MiB, leaves room for one table growth step.
#[test]
fn a_million_distinct_ips_keep_the_limiter_under_12_mib() {
    let before = crate::alloc::net_on_this_thread();
    let limiter = Limiter::with_clock(
        &RateLimitConfig::default(),
        &SourceRateLimit::default(),
        governor::clock::FakeRelativeClock::default(),
    );
    for i in 0..1_000_000u32 {
        let _ = limiter.check(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
    }
    let bytes = crate::alloc::net_on_this_thread() - before;
    assert_eq!(limiter.tracked(), RateLimitConfig::default().max_tracked_keys);
    eprintln!(
        "limiter memory for 1 000 000 IPs: {bytes} bytes ({:.1} MiB)",
        bytes as f64 / 1048576.0
    );
    // The map at its cap, churned by evictions, and the arrival order of the tracked keys.
    assert!(bytes < 12 << 20, "{bytes} bytes");
    assert!(bytes > 1 << 20, "the measurement saw the table: {bytes} bytes");
}

#[tokio::test(start_paused = true)]
async fn past_the_inflight_cap_the_gateway_sheds_with_503_and_recovers() {
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_secs(1));
    let mut config = test_config(&downstream.url(""));
    config.server.max_inflight = 2;
    let gateway = Arc::new(TestGateway::start(config.clone()).await);
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let (gateway, config) = (gateway.clone(), config.clone());
            tokio::spawn(async move { deliver_via(&gateway, &config, &format!("slow{i}"), None).await })
        })
        .collect();
    while downstream.received().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = deliver_via(&gateway, &config, "extra", None).await;
    shed.assert(503, "unavailable");
    assert_eq!(shed.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    for task in slow {
        task.await.expect("task").assert(200, "forwarded");
    }
    downstream.delay(Duration::ZERO);
    deliver_via(&gateway, &config, "extra", None)
        .await
        .assert(200, "forwarded");
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.server.max_connections_per_ip = 2;
    let gateway = TestGateway::start(config.clone()).await;
    let first = TcpStream::connect(gateway.addr).await.expect("connect");
    let second = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut third = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "the third connection is closed: {n:?}");
    drop((first, second));
    // Once the others are gone, the address may connect again.
    let mut served = false;
    for _ in 0..100 {
        let reply = Sender::default()
            .try_send("POST", &gateway.url("/nowhere"), HeaderMap::new(), "")
            .await;
        if reply.is_ok_and(|r| r.status == 404) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served);
    gateway.stop().await;
}
