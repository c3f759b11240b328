//! Operability: exact counters, hot reload (in process and by SIGHUP), TLS, and shutdown under load.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hookgate::config::{self, Config, TlsConfig, TlsVersion};
use http::HeaderMap;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::gateway::test_config;
use crate::common::process::{self, Serving};
use crate::common::redis::RedisServer;
use crate::common::{
    FakeDownstream, Reply, Sender, TestGateway, event_body, metric, scrape, sign, temp_dir, temp_file,
};

async fn metrics(gateway: &TestGateway) -> String {
    scrape(&gateway.admin_url("/metrics")).await
}

#[tokio::test]
async fn counters_move_by_exactly_the_number_of_requests_of_each_outcome() {
    let downstream = FakeDownstream::start().await;
    let mut config = test_config(&downstream.url(""));
    // A source name of this test's own: the metrics recorder is shared by every test in the process.
    config
        .sources
        .iter_mut()
        .find(|s| s.name == "github")
        .expect("github")
        .name = "countgh".to_owned();
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    let url = gateway.url("/github");
    let post = |id: &str, tamper: bool| {
        let body = event_body(id);
        let headers = sign(&config, "countgh", &body, id);
        let body = if tamper { event_body("tampered") } else { body };
        let (sender, url) = (sender.clone(), url.clone());
        async move { sender.post(&url, headers, body).await }
    };
    for id in ["c1", "c2", "c3"] {
        post(id, false).await.assert(200, "forwarded");
    }
    post("c1", false).await.assert(200, "duplicate");
    post("c4", true).await.assert(401, "bad_signature");
    post("c5", true).await.assert(401, "bad_signature");
    sender
        .send("GET", &url, HeaderMap::new(), "")
        .await
        .assert(405, "method_not_allowed");

    let text = metrics(&gateway).await;
    let requests = |outcome: &str| {
        metric(
            &text,
            &format!(r#"hookgate_requests_total{{source="countgh",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(requests("forwarded"), 3.0, "{text}");
    assert_eq!(requests("duplicate"), 1.0);
    assert_eq!(requests("bad_signature"), 2.0);
    assert_eq!(requests("method_not_allowed"), 1.0);
    let rejections = metric(
        &text,
        r#"hookgate_rejections_total{source="countgh",reason="bad_signature:mismatch"}"#,
    );
    assert_eq!(rejections, 2.0);
    assert_eq!(
        metric(&text, r#"hookgate_dedup_total{source="countgh",result="claimed"}"#),
        3.0
    );
    assert_eq!(
        metric(&text, r#"hookgate_dedup_total{source="countgh",result="duplicate"}"#),
        1.0
    );
    let forwards = metric(
        &text,
        r#"hookgate_forward_duration_seconds_count{source="countgh",status_class="2xx"}"#,
    );
    assert_eq!(forwards, 3.0);
    let timed = metric(
        &text,
        r#"hookgate_request_duration_seconds_count{source="countgh",outcome="forwarded"}"#,
    );
    assert_eq!(timed, 3.0);
    assert!(text.contains("hookgate_build_info{version=\""), "{text}");
    gateway.stop().await;
}

const ONE_SOURCE: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[source]]
name = "reloadgh"
path = "/github"
scheme = "github"
secrets = ["gh-secret-for-tests-0001"]
forward = { kind = "http", url = "DOWNSTREAM/github", timeout = "2s" }
"#;

const SECOND_SOURCE: &str = r#"
[[source]]
name = "reloadshop"
path = "/shopify"
scheme = "shopify"
secrets = ["shpss_secret_for_tests_01"]
forward = { kind = "http", url = "DOWNSTREAM/shopify", timeout = "2s" }
"#;

async fn send(gateway: &TestGateway, config: &Config, source: &str, path: &str, id: &str) -> Reply {
    let body = event_body(id);
    Sender::default()
        .post(&gateway.url(path), sign(config, source, &body, id), body)
        .await
}

#[tokio::test]
async fn a_reload_adds_a_source_and_a_bad_file_keeps_the_old_config_serving() {
    let downstream = FakeDownstream::start().await;
    let one = ONE_SOURCE.replace("DOWNSTREAM", &downstream.url(""));
    let path = temp_file("reload.toml", &one);
    let first = config::load(&path).expect("valid");
    let gateway = TestGateway::start_from(first.clone(), &path).await;
    send(&gateway, &first, "reloadgh", "/github", "r1")
        .await
        .assert(200, "forwarded");
    let reply = Sender::default()
        .post(&gateway.url("/shopify"), HeaderMap::new(), "{}")
        .await;
    reply.assert(404, "not_found");

    std::fs::write(
        &path,
        format!("{one}{}", SECOND_SOURCE.replace("DOWNSTREAM", &downstream.url(""))),
    )
    .expect("write");
    let second = config::load(&path).expect("valid");
    gateway.reload().await;
    let mut reloaded = false;
    for _ in 0..100 {
        if send(&gateway, &second, "reloadshop", "/shopify", "s1").await.outcome() == "forwarded" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reloaded, "the new source serves after the reload");

    std::fs::write(&path, "[[source]]\nname = \"broken\"\n").expect("write");
    gateway.reload().await;
    let mut counted = false;
    for _ in 0..100 {
        if metric(
            &metrics(&gateway).await,
            r#"hookgate_config_reloads_total{result="error"}"#,
        ) >= 1.0
        {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(counted, "the failed reload is counted");
    send(&gateway, &second, "reloadgh", "/github", "r2")
        .await
        .assert(200, "forwarded");
    send(&gateway, &second, "reloadshop", "/shopify", "s2")
        .await
        .assert(200, "forwarded");
    gateway.stop().await;
}

/// A certificate for 127.0.0.1 written to PEM files, and the trust store of a client that knows it.
fn certificate(dir: &Path) -> (TlsConfig, rustls::RootCertStore) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert_file = dir.join("tls-cert.pem");
    let key_file = dir.join("tls-key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let tls = TlsConfig {
        cert_file,
        key_file,
        min_version: TlsVersion::V1_3,
    };
    (tls, roots)
}

async fn tls_request(
    addr: std::net::SocketAddr,
    roots: rustls::RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(String, rustls::ProtocolVersion), String> {
    hookgate::tls::install_crypto_provider();
    let client = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut stream = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let version = stream.get_ref().1.protocol_version().ok_or("no version")?;
    stream
        .write_all(b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    Ok((answer, version))
}

#[tokio::test]
async fn tls_1_3_is_served_and_a_tls_1_2_only_client_is_refused_when_1_3_is_the_minimum() {
    let downstream = FakeDownstream::start().await;
    let dir = temp_dir("tls");
    let (tls, roots) = certificate(&dir);
    let mut config = test_config(&downstream.url(""));
    config.server.tls = Some(tls);
    let gateway = TestGateway::start(config).await;

    let (answer, version) = tls_request(gateway.addr, roots.clone(), &[&rustls::version::TLS13])
        .await
        .expect("TLS 1.3");
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert!(
        answer.starts_with("HTTP/1.1 404") && answer.contains("x-hookgate-outcome: not_found"),
        "{answer}"
    );

    let refused = tls_request(gateway.addr, roots, &[&rustls::version::TLS12]).await;
    assert!(
        refused.is_err(),
        "a TLS 1.2-only client must not get through: {refused:?}"
    );

    let mut plain = TcpStream::connect(gateway.addr).await.expect("connect");
    plain
        .write_all(b"POST /github HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 "),
        "plain HTTP gets no HTTP answer"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_reload_serves_a_renewed_certificate() {
    let downstream = FakeDownstream::start().await;
    let dir = temp_dir("tls-renew");
    let (tls, old_roots) = certificate(&dir);
    let mut config = test_config(&downstream.url(""));
    config.server.tls = Some(tls.clone());
    let text = tls_config_text(&tls, &downstream, "0", "0");
    let path = temp_file("tls-reload.toml", &text);
    let gateway = TestGateway::start_from(config::load(&path).expect("valid"), &path).await;
    tls_request(gateway.addr, old_roots.clone(), &[&rustls::version::TLS13])
        .await
        .expect("old certificate");

    let (_, new_roots) = certificate(&dir);
    gateway.reload().await;
    let mut renewed = false;
    for _ in 0..100 {
        if tls_request(gateway.addr, new_roots.clone(), &[&rustls::version::TLS13])
            .await
            .is_ok()
        {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(renewed, "the renewed certificate is served after the reload");
    assert!(
        tls_request(gateway.addr, old_roots, &[&rustls::version::TLS13])
            .await
            .is_err()
    );
    gateway.stop().await;
}

#[tokio::test]
async fn sigterm_during_load_completes_in_flight_requests_and_leaves_no_claim_in_flight() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_millis(300));
    let mut config = test_config(&downstream.url(""));
    config.dedup.store = hookgate::config::StoreKind::Redis;
    config.dedup.redis_url = hookgate::config::RedisUrls::One(redis.url());
    let mut gateway = TestGateway::start(config.clone()).await;
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let id = format!("load-{i}");
            let body = event_body(&id);
            let headers = sign(&config, "github", &body, &id);
            let url = gateway.url("/github");
            tokio::spawn(async move { Sender::default().post(&url, headers, body).await })
        })
        .collect();
    while downstream.received().len() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = gateway.begin_shutdown();
    for request in requests {
        request.await.expect("task").assert(200, "forwarded");
    }
    stopping.await.expect("join").expect("clean shutdown");
    // Every claim was committed: 20 done ids and their 20 replay-guard keys, each holding the done marker,
    // none in flight.
    let keys = redis.keys_with_pttl();
    assert_eq!(keys.len(), 40);
    for (key, _) in keys {
        let value: Vec<u8> = redis.command("GET", &[&key]);
        assert_eq!(value, b"1");
    }
}

/// ONE_SOURCE on the ports `process::serve` picks.
fn one_source_on_free_ports(downstream: &FakeDownstream) -> String {
    ONE_SOURCE
        .replace("DOWNSTREAM", &downstream.url(""))
        .replace("admin_listen = \"127.0.0.1:0\"", "admin_listen = \"127.0.0.1:ADMIN\"")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:PUBLIC\"")
}

/// Rewrites the running binary's config with a second source, applies `reload`, and waits until the new
/// source forwards an event.
async fn second_source_serves_after(serving: &Serving, downstream: &FakeDownstream, reload: impl AsyncFnOnce()) {
    let shop = format!("http://127.0.0.1:{}/shopify", serving.public);
    let sender = Sender::default();
    sender
        .post(&shop, HeaderMap::new(), "{}")
        .await
        .assert(404, "not_found");
    let text = std::fs::read_to_string(&serving.path).expect("read");
    std::fs::write(
        &serving.path,
        format!("{text}{}", SECOND_SOURCE.replace("DOWNSTREAM", &downstream.url(""))),
    )
    .expect("write");
    let second = config::load(&serving.path).expect("valid");
    reload().await;
    let body = event_body("second-1");
    let mut outcome = String::new();
    for _ in 0..100 {
        let reply = sender
            .post(&shop, sign(&second, "reloadshop", &body, "second-1"), body.clone())
            .await;
        outcome = reply.outcome().to_owned();
        if outcome != "not_found" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outcome, "forwarded");
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let downstream = FakeDownstream::start().await;
    let mut serving = process::serve("sighup", &one_source_on_free_ports(&downstream), &[]).await;
    second_source_serves_after(&serving, &downstream, async || {
        process::signal(&serving.child, "HUP").await;
    })
    .await;
    assert!(
        serving.child.try_wait().expect("try_wait").is_none(),
        "still running after SIGHUP"
    );
}

/// A config of `ONE_SOURCE`'s source served over TLS 1.3 with `tls`, on the given ports (or placeholders).
fn tls_config_text(tls: &TlsConfig, downstream: &FakeDownstream, public: &str, admin: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nmin_version = \"1.3\"\n{}",
        tls.cert_file,
        tls.key_file,
        ONE_SOURCE
            .split("[[source]]")
            .nth(1)
            .map(|s| format!("[[source]]{s}"))
            .expect("source")
            .replace("DOWNSTREAM", &downstream.url(""))
    )
}

/// `--watch-config` watched the config file only: a certificate renewed in place (by cert-manager, say)
/// was not served until the next SIGHUP or restart.
#[tokio::test]
async fn watch_config_serves_a_certificate_renewed_in_place() {
    let downstream = FakeDownstream::start().await;
    let dir = temp_dir("tls-watch");
    let (tls, old_roots) = certificate(&dir);
    let text = tls_config_text(&tls, &downstream, "PUBLIC", "ADMIN");
    let serving = process::serve("tls-watch", &text, &["--watch-config"]).await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], serving.public).into();
    tls_request(addr, old_roots, &[&rustls::version::TLS13])
        .await
        .expect("old certificate");
    let (_, new_roots) = certificate(&dir);
    // The watcher looks every 2 s; the deadline leaves room for two looks and the reload.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        if tls_request(addr, new_roots.clone(), &[&rustls::version::TLS13])
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn watch_config_reloads_when_the_file_changes() {
    let downstream = FakeDownstream::start().await;
    let serving = process::serve("watched", &one_source_on_free_ports(&downstream), &["--watch-config"]).await;
    // No signal: only the file changes, which the watcher notices within 2 s.
    second_source_serves_after(&serving, &downstream, async || {}).await;
}

/// Posts the signed event `id` of source `reloadgh` on a connection of its own, in a task.
fn post_alone(config: &Config, url: &str, id: &str) -> tokio::task::JoinHandle<Reply> {
    let body = event_body(id);
    let headers = sign(config, "reloadgh", &body, id);
    let url = url.to_owned();
    tokio::spawn(async move { Sender::default().post(&url, headers, body).await })
}

#[tokio::test]
async fn the_binary_spreads_connections_over_its_cores_and_dedups_across_them() {
    let downstream = FakeDownstream::start().await;
    let mut serving = process::serve("cores", &one_source_on_free_ports(&downstream), &["--threads", "3"]).await;
    let pid = serving.child.id().expect("pid");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    for core in ["hookgate-core-0", "hookgate-core-1", "hookgate-core-2"] {
        assert!(threads.iter().any(|t| t == core), "{core} in {threads:?}");
    }
    let config = config::load(&serving.path).expect("valid");
    let url = format!("http://127.0.0.1:{}/github", serving.public);
    // One sender, so one connection, per request: 30 connections, shared out over the 3 cores.
    let send_all = async |offset: usize| {
        let requests: Vec<_> = (0..30)
            .map(|i| post_alone(&config, &url, &format!("core-{}", (i + offset) % 30)))
            .collect();
        let mut replies = Vec::new();
        for request in requests {
            replies.push(request.await.expect("task"));
        }
        replies
    };
    for reply in send_all(0).await {
        reply.assert(200, "forwarded");
    }
    // The same ids again, each on another connection than the first time: every core sees the ids the
    // others committed.
    for reply in send_all(7).await {
        reply.assert(200, "duplicate");
    }
    let mut ids: Vec<String> = downstream
        .received()
        .iter()
        .filter_map(|r| r.header("x-github-delivery").map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(downstream.received().len(), 30);
    assert_eq!(ids.len(), 30, "each event forwarded once");

    process::signal(&serving.child, "TERM").await;
    process::exits_cleanly(&mut serving.child).await;
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_on_every_core_finish() {
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_millis(500));
    let mut serving = process::serve("drain", &one_source_on_free_ports(&downstream), &["--threads", "2"]).await;
    let config = config::load(&serving.path).expect("valid");
    let url = format!("http://127.0.0.1:{}/github", serving.public);
    // Four connections, so both cores hold requests when the signal comes.
    let requests: Vec<_> = (0..4)
        .map(|i| post_alone(&config, &url, &format!("drain-{i}")))
        .collect();
    while downstream.received().len() < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    process::signal(&serving.child, "TERM").await;
    for request in requests {
        request.await.expect("task").assert(200, "forwarded");
    }
    process::exits_cleanly(&mut serving.child).await;
}

/// Every request records a latency sample, which the exporter keeps until it folds it into the buckets.
/// Without a scrape, the gateway's own upkeep does that every 5 s, so memory does not grow with traffic.
#[tokio::test(start_paused = true)]
async fn latency_samples_do_not_pile_up_without_a_scrape() {
    let downstream = FakeDownstream::start().await;
    let gateway = TestGateway::start(test_config(&downstream.url(""))).await;
    let sender = Sender::default();
    let url = gateway.url("/nowhere");
    // Everything runs on this thread, so its allocation count is the gateway's (and the client's).
    let before = crate::alloc::net_on_this_thread();
    let mut grown = Vec::new();
    for _ in 0..6 {
        for _ in 0..2000 {
            sender.post(&url, HeaderMap::new(), "{}").await.assert(404, "not_found");
        }
        // Past the upkeep's 5 s tick.
        tokio::time::sleep(Duration::from_secs(6)).await;
        grown.push(crate::alloc::net_on_this_thread() - before);
    }
    eprintln!("bytes held after each 2000 requests and an upkeep: {grown:?}");
    // Samples held for good would add 2000 x 8 bytes a round, at the very least.
    assert!(
        grown[5] - grown[1] < 4 * 2000 * 8 / 2,
        "memory grows with traffic: {grown:?}"
    );
}

/// During a rotation the operator needs to know when the old secret stopped being used:
/// `hookgate_signature_matches_total{key}` counts each verification under the position of the secret that
/// matched, before and after a reload that puts a new secret first.
#[tokio::test]
async fn the_signature_match_counter_follows_a_rotation() {
    let downstream = FakeDownstream::start().await;
    let text = |secrets: &str| {
        format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            [[source]]
            name = "rotation"
            path = "/rotation"
            scheme = "github"
            secrets = [{secrets}]
            forward = {{ kind = "http", url = "{}/in", timeout = "2s" }}
            "#,
            downstream.url("")
        )
    };
    let path = temp_file("rotation.toml", &text(r#""old-secret-000000001""#));
    let old = config::load(&path).expect("valid");
    let gateway = TestGateway::start_from(old.clone(), &path).await;
    let sender = Sender::default();
    let url = gateway.url("/rotation");
    let post = |config: &Config, id: &str| {
        let body = event_body(id);
        let headers = sign(config, "rotation", &body, id);
        let (sender, url) = (sender.clone(), url.clone());
        async move { sender.post(&url, headers, body).await }
    };
    let matches = |page: &str, key: &str| {
        metric(
            page,
            &format!(r#"hookgate_signature_matches_total{{source="rotation",key="{key}"}}"#),
        )
    };
    post(&old, "r1").await.assert(200, "forwarded");
    assert_eq!(matches(&metrics(&gateway).await, "0"), 1.0);

    std::fs::write(&path, text(r#""new-secret-000000002", "old-secret-000000001""#)).expect("write");
    let rotated = config::load(&path).expect("valid");
    gateway.reload().await;
    let mut reloaded = false;
    for n in 0..100 {
        if post(&rotated, &format!("probe-{n}")).await.outcome() == "forwarded" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reloaded, "the new secret verifies after the reload");
    post(&old, "r2").await.assert(200, "forwarded");
    post(&old, "r3").await.assert(200, "forwarded");
    let page = metrics(&gateway).await;
    assert_eq!(matches(&page, "1"), 2.0, "the old secret, now second, matched twice");
    assert_eq!(
        matches(&page, "0"),
        2.0,
        "the first secret before the reload, and the new one's probe"
    );
}
