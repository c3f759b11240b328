//! The http handler: failures are 502/504 and tell the sender to retry; headers are passed on cleanly.

use std::time::Duration;

use crate::common::gateway::test_config;
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, header, sign};

/// Any answer but 2xx is a failed delivery, so that the sender retries: a 5xx, and a 4xx too.
#[tokio::test]
async fn a_downstream_answering_anything_but_2xx_is_a_502() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    for (i, status) in [500, 503, 404, 400].into_iter().enumerate() {
        downstream.answer(&[status]);
        let id = format!("evt_{status}");
        let body = event_body(&id);
        let reply = Sender::default()
            .post(&gateway.url("/stripe"), sign(&config, "stripe", &body, &id), body)
            .await;
        reply.assert(502, "downstream_error");
        assert_eq!(
            downstream.received().len(),
            i + 1,
            "{status}: delivered once, then refused"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_downstream_is_a_502() {
    // Bind and drop a listener: nothing listens on that port any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let config = test_config(&url);
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_1");
    let reply = Sender::default()
        .post(&gateway.url("/github"), sign(&config, "github", &body, "evt_1"), body)
        .await;
    reply.assert(502, "downstream_error");
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_downstream_is_a_504() {
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_secs(60));
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_1");
    let started = tokio::time::Instant::now();
    let reply = Sender::default()
        .post(&gateway.url("/github"), sign(&config, "github", &body, "evt_1"), body)
        .await;
    reply.assert(504, "downstream_timeout");
    // The source's timeout is 2 s; the downstream would have taken 60 s.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_and_forged_gateway_headers_are_not_passed_on() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_1");
    let mut headers = sign(&config, "github", &body, "evt_1");
    headers.extend([
        header("x-hookgate-source", "forged"),
        header("x-hookgate-event-id", "forged"),
        header("x-forwarded-for", "6.6.6.6"),
        header("x-request-id", "req-42"),
        header("proxy-authorization", "Basic c2VjcmV0"),
        header("x-custom", "kept"),
    ]);
    let reply = Sender::default().post(&gateway.url("/github"), headers, body).await;
    reply.assert(200, "forwarded");
    let got = &downstream.received()[0];
    assert_eq!(got.header("x-hookgate-source"), Some("github"));
    assert_eq!(got.header("x-hookgate-event-id"), Some("evt_1"));
    // The peer is not a trusted proxy, so the sender's X-Forwarded-For means nothing.
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("x-request-id"), Some("req-42"));
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert_eq!(got.header("proxy-authorization"), None);
    gateway.stop().await;
}

#[tokio::test]
async fn connections_to_the_downstream_are_reused() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    for i in 0..20 {
        let id = format!("evt_{i}");
        let body = event_body(&id);
        sender
            .post(&gateway.url("/github"), sign(&config, "github", &body, &id), body)
            .await
            .assert(200, "forwarded");
    }
    assert_eq!(downstream.received().len(), 20);
    assert!(
        downstream.connections() <= 2,
        "{} connections for 20 sequential requests",
        downstream.connections()
    );
    gateway.stop().await;
}

/// A downstream that answers each request on a connection of its own and closes it: once with a keep-alive
/// answer it does not honour, once with an HTTP/1.0 answer whose body runs to the close. Neither closed
/// connection may fail the next event: the gateway sees that a pooled connection was closed and opens
/// another, and each event is delivered once.
#[tokio::test]
async fn a_downstream_that_closes_every_connection_still_gets_each_event_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let answers: [&'static [u8]; 4] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nno length: the body ends with the connection",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ];
    let downstream = tokio::spawn(async move {
        let mut requests = 0;
        for answer in answers {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // The request is complete once its body (the event, which ends with `}`) has arrived.
            while !request.ends_with(b"}") {
                let n = socket.read(&mut buffer).await.expect("read");
                assert!(n > 0, "the gateway closed the connection mid-request");
                request.extend_from_slice(&buffer[..n]);
            }
            requests += 1;
            socket.write_all(answer).await.expect("write");
        }
        requests
    });
    let config = test_config(&url);
    let gateway = TestGateway::start(config.clone()).await;
    for i in 0..answers.len() {
        let id = format!("evt_{i}");
        let body = event_body(&id);
        Sender::default()
            .post(&gateway.url("/github"), sign(&config, "github", &body, &id), body)
            .await
            .assert(200, "forwarded");
    }
    let requests = tokio::time::timeout(Duration::from_secs(10), downstream)
        .await
        .expect("the downstream saw every event")
        .expect("downstream");
    assert_eq!(requests, answers.len());
    gateway.stop().await;
}
