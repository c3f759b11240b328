//! Attacks on the real server over loopback: each plays what an attacker (or an unlucky network) does, and
//! checks what reaches the downstream and what the process holds.

use std::time::Duration;

use http::HeaderValue;

use crate::common::gateway::test_config;
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, sign};

/// Waits, at most `deadline`, until `ready` holds.
async fn until(deadline: Duration, mut ready: impl FnMut() -> bool) {
    tokio::time::timeout(deadline, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the condition held before its deadline");
}

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
    until(Duration::from_secs(5), || downstream.received().len() == 1).await;
    first.abort();
    let _ = first.await;

    // The retry, on a new connection, while the first delivery still runs: in flight.
    let sender = Sender::default();
    let reply = sender
        .post(&gateway.url("/stripe"), headers.clone(), body.clone())
        .await;
    reply.assert(409, "in_flight");
    // Once the first delivery has finished and committed, the retry is a duplicate.
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
