//! Shutdown: stop accepting, let in-flight requests finish within the grace period, cut the rest.

use std::time::Duration;

use http::HeaderMap;

use crate::common::gateway::test_config;
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, sign};

#[tokio::test(start_paused = true)]
async fn shutdown_lets_an_in_flight_request_finish() {
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_secs(1));
    let config = test_config(&downstream.url(""));
    let mut gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_1");
    let url = gateway.url("/github");
    let sender = Sender::default();
    let in_flight = tokio::spawn({
        let sender = sender.clone();
        let headers = sign(&config, "github", &body, "evt_1");
        async move { sender.post(&url, headers, body).await }
    });
    // Wait until the downstream holds the request, then shut down.
    while downstream.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = gateway.begin_shutdown();
    let reply = in_flight.await.expect("request task");
    reply.assert(200, "forwarded");
    stopped.await.expect("join").expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn requests_still_running_after_the_grace_period_are_cut() {
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_secs(3600));
    let mut config = test_config(&downstream.url(""));
    config.server.shutdown_grace = Duration::from_secs(2);
    for source in &mut config.sources {
        if let hookgate::config::ForwardConfig::Http { timeout, .. } = &mut source.forward {
            *timeout = Duration::from_secs(7200);
        }
    }
    let mut gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_1");
    let url = gateway.url("/github");
    let headers = sign(&config, "github", &body, "evt_1");
    let in_flight = tokio::spawn(async move { Sender::default().try_post(&url, headers, body).await });
    while downstream.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    gateway.begin_shutdown().await.expect("join").expect("clean shutdown");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(in_flight.await.expect("task").is_err(), "the cut request got no answer");
}

#[tokio::test]
async fn readiness_fails_while_draining_and_new_connections_are_refused_after() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let sender = Sender::default();
    let ready = sender
        .send("GET", &gateway.admin_url("/readyz"), HeaderMap::new(), "")
        .await;
    assert_eq!(ready.status, 200);
    let health = sender
        .send("GET", &gateway.admin_url("/healthz"), HeaderMap::new(), "")
        .await;
    assert_eq!(health.status, 200);
    let addr = gateway.addr;
    gateway.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener closed");
}
