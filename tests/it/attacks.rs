//! Attacks on the real server over loopback: each plays what an attacker (or an unlucky network) does, and
//! checks what reaches the downstream and what the process holds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hookgate::config::{AllowIp, Config};
use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::gateway::test_config;
use crate::common::process;
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, sign, until};

/// GitHub signs the body only: a seen request resent with a fresh `X-GitHub-Delivery` is the same event.
#[tokio::test]
async fn a_signed_request_resent_under_a_fresh_id_is_a_duplicate() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    let body = event_body("evt_replayed");
    let headers = sign(&config, "github", &body, "delivery-1");
    sender
        .post(&gateway.url("/github"), headers.clone(), body.clone())
        .await
        .assert(200, "forwarded");

    for fresh in ["delivery-2", "delivery-3"] {
        let mut replay = headers.clone();
        replay.insert("x-github-delivery", HeaderValue::from_static(fresh));
        sender
            .post(&gateway.url("/github"), replay, body.clone())
            .await
            .assert(200, "duplicate");
    }
    // Shopify, the same way, under either header family.
    let headers = sign(&config, "shopify", &body, "wh-1");
    sender
        .post(&gateway.url("/shopify"), headers.clone(), body.clone())
        .await
        .assert(200, "forwarded");
    let mut replay = headers.clone();
    replay.remove("x-shopify-webhook-id");
    replay.insert("shopify-webhook-id", HeaderValue::from_static("wh-2"));
    sender
        .post(&gateway.url("/shopify"), replay, body.clone())
        .await
        .assert(200, "duplicate");

    assert_eq!(downstream.received().len(), 2, "each event once");
    gateway.stop().await;
}

/// A failed delivery releases both keys, so the sender's own retry (same id) goes through.
#[tokio::test]
async fn after_a_failed_delivery_the_retry_is_forwarded() {
    let downstream = FakeDownstream::start().await;
    downstream.answer(&[500, 200]);
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    let body = event_body("evt_retry");
    let headers = sign(&config, "github", &body, "delivery-r");
    sender
        .post(&gateway.url("/github"), headers.clone(), body.clone())
        .await
        .assert(502, "downstream_error");
    sender
        .post(&gateway.url("/github"), headers, body)
        .await
        .assert(200, "forwarded");
    assert_eq!(downstream.received().len(), 2);
    gateway.stop().await;
}

/// A sender that hangs up while the downstream works must not get the event delivered twice on retry.
#[tokio::test]
async fn a_sender_hanging_up_mid_delivery_does_not_make_its_retry_a_second_delivery() {
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_millis(600));
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_hangup");
    let headers = sign(&config, "stripe", &body, "evt_hangup");

    // The first attempt: the downstream has it, then the sender gives up and closes its connection.
    let impatient = Sender::default();
    let url = gateway.url("/stripe");
    let first = tokio::spawn({
        let (headers, body) = (headers.clone(), body.clone());
        async move { impatient.try_post(&url, headers, body).await }
    });
    assert!(
        until(Duration::from_secs(5), || downstream.received().len() == 1).await,
        "the downstream got the first delivery"
    );
    first.abort();
    let _ = first.await;

    // The retries, on a new connection: in flight while the first delivery still runs, then a duplicate
    // once it has committed; never a second delivery.
    let sender = Sender::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = sender
            .post(&gateway.url("/stripe"), headers.clone(), body.clone())
            .await;
        if reply.outcome() == "duplicate" {
            break;
        }
        reply.assert(409, "in_flight");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first delivery never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(downstream.received().len(), 1, "delivered once");
    gateway.stop().await;
}

/// Writes a raw request from `from` (a loopback address) and reads the answer's status and outcome, or
/// `None` when the connection closed without one. Every read has a deadline.
async fn raw_request(from: IpAddr, to: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind a loopback source");
    let mut stream = socket.connect(to).await.expect("connect");
    stream.write_all(request).await.ok()?;
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Option<(u16, String)> {
    read_answer_within(stream, Duration::from_secs(5))
        .await
        .expect("an answer or a close within 5 s")
}

/// The answer's status and outcome (`Some(None)` when the connection closed without one), or `None` when
/// nothing came within `limit`.
async fn read_answer_within(stream: &mut TcpStream, limit: Duration) -> Option<Option<(u16, String)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    })
    .await
    .ok()?;
    if read.is_none() {
        return Some(None);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let outcome = head
        .lines()
        .find_map(|l| l.strip_prefix("x-hookgate-outcome: "))
        .unwrap_or("")
        .trim()
        .to_owned();
    Some(status.map(|status| (status, outcome)))
}

/// A signed GitHub event as raw HTTP/1.1 bytes.
fn signed_request(config: &Config, id: &str) -> Vec<u8> {
    let body = event_body(id);
    let headers = sign(config, "github", &body, id);
    let mut request = format!(
        "POST /github HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in &headers {
        request.extend_from_slice(format!("{name}: ").as_bytes());
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&body);
    request
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A 40 KB request head was read and processed; now past `max_header_bytes` (16 KiB) it is `431`.
#[tokio::test]
async fn a_request_head_past_the_limit_is_431() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let mut request = b"POST /github HTTP/1.1\r\nhost: gw\r\n".to_vec();
    for i in 0..40 {
        request.extend_from_slice(format!("x-pad-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"content-length: 0\r\n\r\n");
    let answer = raw_request(LOCAL, gateway.addr, &request).await;
    assert_eq!(answer.map(|a| a.0), Some(431));
    gateway.stop().await;
}

/// Bodies held at once have one budget: a declared length that does not fit is refused before reading,
/// with `503` and `Retry-After`, while the bodies already held wait for their bytes.
#[tokio::test]
async fn promised_bodies_past_the_budget_are_refused_before_reading() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.server.max_body_buffer_bytes = 2 << 20;
    let gateway = TestGateway::start(config).await;
    let promise = b"POST /github HTTP/1.1\r\nhost: gw\r\ncontent-length: 1048576\r\n\r\n0123456789";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
        stream.write_all(promise).await.expect("write");
        held.push(stream);
    }
    // The two reservations are made when their heads are read; wait for them, with a deadline.
    // Until the two heads have been read, a third promise may still fit and is held too (which only fills
    // the budget sooner); each try waits a short while for an answer, and the tries are bounded.
    let mut refused = None;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
        stream.write_all(promise).await.expect("write");
        let answer = read_answer_within(&mut stream, Duration::from_millis(200))
            .await
            .flatten();
        held.push(stream);
        if answer.as_ref().is_some_and(|a| a.0 == 503) {
            refused = answer;
            break;
        }
    }
    assert_eq!(refused, Some((503, "unavailable".to_owned())));
    drop(held);
    gateway.stop().await;
}

/// Trickled bodies from one client took every in-flight slot, and another client's signed event got
/// `503`. Now one client holds at most its own share.
#[tokio::test]
async fn trickled_bodies_from_one_client_do_not_lock_out_another() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.server.max_inflight = 64;
    config.server.max_inflight_per_client = 16;
    let gateway = TestGateway::start(config.clone()).await;
    let trickler: IpAddr = "127.0.0.3".parse().expect("ip");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..120 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(trickler, 0)).expect("bind");
        let mut stream = socket.connect(gateway.addr).await.expect("connect");
        stream
            .write_all(b"POST /github HTTP/1.1\r\nhost: gw\r\ncontent-length: 1000\r\n\r\nx")
            .await
            .expect("write");
        held.push(stream);
    }
    // Those past the client's cap are answered at once; the others wait for their bytes. All are watched
    // together, for one generous second.
    let answered = futures_util::future::join_all(held.iter().map(|stream| async move {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(1), stream.peek(&mut byte))
            .await
            .is_ok()
    }))
    .await;
    refused += answered.iter().filter(|a| **a).count();
    assert_eq!(refused, 120 - 16, "all but the client's 16 are refused at once");
    let other: IpAddr = "127.0.0.4".parse().expect("ip");
    let answer = raw_request(other, gateway.addr, &signed_request(&config, "d-other")).await;
    assert_eq!(answer, Some((200, "forwarded".to_owned())));
    drop(held);
    gateway.stop().await;
}

/// A header of many well-formed signatures cost one HMAC per entry per secret; now more than eight is
/// malformed before any MAC is computed.
#[tokio::test]
async fn a_flood_of_signature_candidates_is_refused_unverified() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let body = event_body("evt_amplified");
    let entries: Vec<String> = (0..100).map(|i| format!("v1={:064x}", i)).collect();
    let header_value = format!("t={},{}", crate::common::unix_now(), entries.join(","));
    let mut headers = http::HeaderMap::new();
    headers.insert("stripe-signature", HeaderValue::from_str(&header_value).expect("value"));
    let reply = Sender::default().post(&gateway.url("/stripe"), headers, body).await;
    reply.assert(401, "bad_signature");
    let metrics = Sender::default()
        .send("GET", &gateway.admin_url("/metrics"), http::HeaderMap::new(), "")
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l.starts_with("hookgate_rejections_total")
            && l.contains("bad_signature:malformed_header")
            && l.contains("source=\"stripe\"")),
        "refused as malformed, not after 100 MACs"
    );
    gateway.stop().await;
}

/// From a trusted proxy, one bad byte in the client's entry made the client the proxy itself, which an
/// allowlist of the proxy's range lets in.
#[tokio::test]
async fn a_poisoned_forwarded_for_does_not_make_the_client_the_proxy() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.client_ip.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    let github = config.sources.iter_mut().find(|s| s.name == "github").expect("github");
    github.allow_ips = vec![AllowIp::try_from("127.0.0.0/8".to_owned()).expect("cidr")];
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("d-poison");
    let mut headers = sign(&config, "github", &body, "d-poison");
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"203.0.113.5\xff").expect("obs-text"),
    );
    Sender::default()
        .post(&gateway.url("/github"), headers, body)
        .await
        .assert(403, "ip_denied");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

/// `Forwarded`, `X-Real-IP` and `X-Forwarded-Host/Proto` from the sender passed through to the
/// application; now they are dropped, and set from the client the gateway resolved.
#[tokio::test]
async fn forged_client_headers_never_reach_the_application() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("d-forged");
    let mut headers = sign(&config, "github", &body, "d-forged");
    for (name, value) in [
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "bank.example"),
        ("x-forwarded-proto", "https"),
    ] {
        headers.insert(http::HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    Sender::default()
        .post(&gateway.url("/github"), headers, body)
        .await
        .assert(200, "forwarded");
    let got = &downstream.received()[0];
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(got.header("forwarded"), Some("for=127.0.0.1"));
    assert_eq!(got.header("x-forwarded-host"), None);
    assert_eq!(got.header("x-forwarded-proto"), None);
    gateway.stop().await;
}

/// stripe-python `test_header_contains_valid_signature`, stripe-node "at least one valid signature": a
/// `v1` entry that is not hex, before or after the valid one, did get 401.
#[tokio::test]
async fn stripe_accepts_a_header_with_a_malformed_v1_beside_the_valid_one() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let arrangements: [fn(&str) -> String; 2] = [
        |valid| format!("{valid},v1=bad_signature"),
        |valid| {
            let (t, v1) = valid.split_once(',').expect("t and v1");
            format!("{t},v1=bad_signature,{v1}")
        },
    ];
    for (i, arrange) in arrangements.iter().enumerate() {
        let id = format!("evt_malformed_{i}");
        let body = event_body(&id);
        let mut headers = sign(&config, "stripe", &body, &id);
        let valid = headers["stripe-signature"].to_str().expect("text").to_owned();
        headers.insert(
            "stripe-signature",
            HeaderValue::from_str(&arrange(&valid)).expect("value"),
        );
        Sender::default()
            .post(&gateway.url("/stripe"), headers, body)
            .await
            .assert(200, "forwarded");
    }
    gateway.stop().await;
}

/// Shopify's newer deliveries name their headers without `X-` (`@shopify/shopify-api`,
/// `WEBHOOK_HEADER_NAMES`); they got 401.
#[tokio::test]
async fn shopify_events_headers_without_the_x_prefix_are_accepted() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("shop-evt-1");
    let signed = sign(&config, "shopify", &body, "wh-new-1");
    let mut headers = http::HeaderMap::new();
    headers.insert("shopify-hmac-sha256", signed["x-shopify-hmac-sha256"].clone());
    headers.insert("shopify-webhook-id", signed["x-shopify-webhook-id"].clone());
    headers.insert("shopify-topic", HeaderValue::from_static("orders/create"));
    Sender::default()
        .post(&gateway.url("/shopify"), headers, body)
        .await
        .assert(200, "forwarded");
    let got = &downstream.received()[0];
    assert_eq!(got.header("x-hookgate-event-id"), Some("wh-new-1"));
    gateway.stop().await;
}

/// With `max_tracked_keys = 50`, after requests from 300 loopback addresses, a new address's first
/// requests all got 429 from the shared overflow bucket.
#[tokio::test]
async fn a_flood_of_addresses_does_not_starve_a_new_sender() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.rate_limit.max_tracked_keys = 50;
    config.rate_limit.per_second = 1;
    config.rate_limit.burst = 5;
    let gateway = TestGateway::start(config.clone()).await;
    let unsigned = b"POST /github HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n\r\n{}";
    for i in 0..300u32 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
        let answer = raw_request(from, gateway.addr, unsigned).await;
        assert_eq!(
            answer.map(|a| a.0),
            Some(401),
            "the flood's requests are counted, then refused unsigned"
        );
    }
    let newcomer = IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1));
    for request in 1..=5 {
        let answer = raw_request(
            newcomer,
            gateway.addr,
            &signed_request(&config, &format!("d-new-{request}")),
        )
        .await;
        assert_eq!(
            answer,
            Some((200, "forwarded".to_owned())),
            "request {request} of a burst of 5"
        );
    }
    gateway.stop().await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("VmRSS")
}

/// 250 connections from one address, each sending 120 KB of a request head that never ends, grew the
/// release build by 86 MiB. Now each head is cut at `max_header_bytes`, and the growth of the real binary
/// is measured and bounded.
#[tokio::test]
async fn a_header_flood_from_many_connections_holds_little_memory() {
    let downstream = FakeDownstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:PUBLIC\"\nadmin_listen = \"127.0.0.1:ADMIN\"\n[[source]]\nname = \"gh\"\npath = \"/gh\"\nscheme = \"github\"\nsecrets = [\"flood-test-secret-0001\"]\nforward = {{ kind = \"http\", url = \"{}/gh\" }}\n",
        downstream.url("")
    );
    let serving = process::serve("head-flood", &text, &[]).await;
    let pid = serving.child.id().expect("pid");
    let before = rss_kib(pid);
    let line = format!("x-pad: {}\r\n", "a".repeat(1000));
    let mut held = Vec::new();
    let mut cut = 0;
    for _ in 0..250 {
        let mut stream = TcpStream::connect(("127.0.0.1", serving.public))
            .await
            .expect("connect");
        let flood = async {
            stream.write_all(b"POST /gh HTTP/1.1\r\nhost: gw\r\n").await?;
            for _ in 0..120 {
                stream.write_all(line.as_bytes()).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        // A write that blocks means the gateway stopped reading: the head is cut.
        match tokio::time::timeout(Duration::from_secs(2), flood).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => cut += 1,
        }
        held.push(stream);
    }
    let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("head flood: {cut} of 250 cut; RSS grew by {grown_mib} MiB");
    assert!(grown_mib < 16, "RSS grew by {grown_mib} MiB");
    drop(held);
}
