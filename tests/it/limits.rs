//! Body limit, routing and the header-read timeout.

use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::gateway::test_config;
use crate::common::{FakeDownstream, Sender, TestGateway, sign};

#[tokio::test]
async fn a_body_of_exactly_the_limit_passes_and_one_byte_more_is_413() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.server.max_body_bytes = 64;
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();

    let exact = vec![b'a'; 64];
    let reply = sender
        .post(&gateway.url("/github"), sign(&config, "github", &exact, "d1"), exact)
        .await;
    reply.assert(200, "forwarded");

    let over = vec![b'a'; 65];
    let reply = sender
        .post(&gateway.url("/github"), sign(&config, "github", &over, "d2"), over)
        .await;
    reply.assert(413, "too_large");
    assert_eq!(downstream.received().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_large_content_length_is_refused_before_the_body_is_sent() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    // Announce 100 MB and send none of it: the answer must come from the header alone.
    stream
        .write_all(b"POST /github HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n")
        .await
        .expect("write");
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("x-hookgate-outcome: too_large"), "{text}");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

/// Sends `body` with chunked encoding in two chunks (no Content-Length), signed for `github`.
async fn post_chunked(gateway: &TestGateway, config: &hookgate::config::Config, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut request = b"POST /github HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n".to_vec();
    for (name, value) in &sign(config, "github", body, "chunked-1") {
        request.extend_from_slice(format!("{name}: {}\r\n", value.to_str().expect("ascii")).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let (a, b) = body.split_at(body.len() / 2);
    for chunk in [a, b] {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let mut answer = vec![0; 1024];
    let n = stream.read(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn a_chunked_body_is_capped_while_it_streams() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.server.max_body_bytes = 100;
    let gateway = TestGateway::start(config.clone()).await;

    let answer = post_chunked(&gateway, &config, &[b'b'; 101]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(downstream.received().is_empty());

    let answer = post_chunked(&gateway, &config, &[b'b'; 100]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(downstream.received()[0].body.as_ref(), &[b'b'; 100][..]);
    gateway.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let sender = Sender::default();
    sender
        .post(&gateway.url("/nowhere"), HeaderMap::new(), "{}")
        .await
        .assert(404, "not_found");
    sender
        .post(&gateway.url("/github/"), HeaderMap::new(), "{}")
        .await
        .assert(404, "not_found");
    let reply = sender.send("GET", &gateway.url("/github"), HeaderMap::new(), "").await;
    reply.assert(405, "method_not_allowed");
    assert_eq!(reply.headers.get("allow").map(|v| v.as_bytes()), Some(&b"POST"[..]));
    sender
        .send("PUT", &gateway.url("/github"), HeaderMap::new(), "{}")
        .await
        .assert(405, "method_not_allowed");
    // The admin endpoints are not on the public port.
    sender
        .send("GET", &gateway.url("/metrics"), HeaderMap::new(), "")
        .await
        .assert(404, "not_found");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_its_head_slowly_is_cut_off() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    config.server.header_read_timeout = Duration::from_secs(5);
    let gateway = TestGateway::start(config).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let head = b"POST /github HTTP/1.1\r\nhost: x\r\n";
    let mut cut_after = None;
    for (i, byte) in head.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_after = Some(i);
            break;
        }
        // One byte a second, in paused time: the whole head would take 33 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut probe = [0u8; 256];
        // Any answer (a 408, a close, a reset) before the head is complete means we were cut off.
        if tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe))
            .await
            .is_ok()
        {
            cut_after = Some(i);
            break;
        }
    }
    let cut_after = cut_after.expect("the connection was cut before the head was complete");
    assert!(
        (3..=7).contains(&cut_after),
        "cut after {cut_after} bytes (about 5 s at 1 byte/s)"
    );
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}
