//! Every scheme end to end: a valid event is forwarded byte for byte; every refusal has its status and
//! outcome, and nothing reaches the downstream.

use http::HeaderMap;

use crate::common::gateway::{SCHEMES, test_config};
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, header, sign, sign_at, unix_now};

#[tokio::test]
async fn every_scheme_forwards_the_exact_bytes_and_headers() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();

    for (i, scheme) in SCHEMES.iter().enumerate() {
        let id = format!("evt_{scheme}_{i}");
        // Odd whitespace and non-ASCII: any re-encoding would break the byte comparison.
        let mut body = event_body(&id);
        body.extend_from_slice(b"  \n");
        let headers = sign(&config, scheme, &body, &id);
        let reply = sender
            .post(&gateway.url(&format!("/{scheme}")), headers.clone(), body.clone())
            .await;
        reply.assert(200, "forwarded");

        let received = downstream.received();
        assert_eq!(received.len(), i + 1, "{scheme}");
        let got = &received[i];
        assert_eq!(got.path, format!("/{scheme}"));
        assert_eq!(got.body.as_ref(), body.as_slice(), "{scheme}: body changed on the way");
        assert_eq!(got.header("x-hookgate-source"), Some(*scheme));
        assert_eq!(got.header("x-hookgate-event-id"), Some(id.as_str()), "{scheme}");
        assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
        assert!(got.header("x-request-id").is_some_and(|v| !v.is_empty()));
        for (name, value) in &headers {
            assert_eq!(
                got.headers.get(name),
                Some(value),
                "{scheme}: header {name} not passed on"
            );
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn tampered_bodies_are_refused_for_every_scheme() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    for scheme in SCHEMES {
        let body = event_body("evt_1");
        let headers = sign(&config, scheme, &body, "evt_1");
        let mut tampered = body.clone();
        tampered[2] ^= 0x20;
        let reply = sender
            .post(&gateway.url(&format!("/{scheme}")), headers, tampered)
            .await;
        reply.assert(401, "bad_signature");
        assert_eq!(
            reply.body.as_ref(),
            b"{\"outcome\":\"bad_signature\"}\n",
            "{scheme}: no detail in the body"
        );
    }
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn unsigned_requests_are_refused_for_every_scheme() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let sender = Sender::default();
    for scheme in SCHEMES {
        let reply = sender
            .post(
                &gateway.url(&format!("/{scheme}")),
                HeaderMap::new(),
                event_body("evt_1"),
            )
            .await;
        reply.assert(401, "bad_signature");
    }
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    for scheme in ["stripe", "slack", "standard", "hmac"] {
        for offset in [-301 - 5, 301 + 5] {
            let body = event_body("evt_1");
            let headers = sign_at(&config, scheme, &body, "evt_1", unix_now() + offset);
            let reply = sender.post(&gateway.url(&format!("/{scheme}")), headers, body).await;
            reply.assert(401, "bad_signature");
        }
    }
    assert!(downstream.received().is_empty());
    let metrics = sender
        .send("GET", &gateway.admin_url("/metrics"), HeaderMap::new(), "")
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains(r#"reason="bad_signature:stale_timestamp""#), "{text}");
    assert!(text.contains(r#"reason="bad_signature:future_timestamp""#), "{text}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_verified_event_without_an_id_is_a_bad_request() {
    let downstream = FakeDownstream::start().await;
    let config = test_config(&downstream.url(""));
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();

    let no_id = br#"{"object":"event"}"#;
    let reply = sender
        .post(
            &gateway.url("/stripe"),
            sign(&config, "stripe", no_id, "x"),
            no_id.to_vec(),
        )
        .await;
    reply.assert(400, "bad_request");

    let form = b"token=abc&team_id=T1";
    let reply = sender
        .post(&gateway.url("/slack"), sign(&config, "slack", form, "x"), form.to_vec())
        .await;
    reply.assert(400, "bad_request");

    let body = event_body("evt_1");
    let mut headers = sign(&config, "github", &body, "evt_1");
    headers.remove("x-github-delivery");
    let reply = sender.post(&gateway.url("/github"), headers, body).await;
    reply.assert(400, "bad_request");

    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn an_unsigned_request_is_refused_before_its_event_id_is_read() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let reply = Sender::default()
        .post(
            &gateway.url("/stripe"),
            HeaderMap::from_iter([header("stripe-signature", "t=1,v1=00")]),
            "not json",
        )
        .await;
    reply.assert(401, "bad_signature");
    gateway.stop().await;
}
