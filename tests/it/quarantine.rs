//! The quarantine, black-box: a request refused for a wrong secret is kept in Redis with its reason;
//! `hookgate quarantine list` shows it; after the secret is fixed, `hookgate quarantine replay` delivers it
//! exactly once, however often it is run, and the sender's own retry is then a duplicate.

use hookgate::config::{self, Config};

use crate::common::redis::RedisServer;
use crate::common::{FakeDownstream, Sender, TestGateway, event_body, metric, scrape, sign, temp_file};

fn config_text(redis: &str, downstream: &str, secret: &str) -> String {
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [dedup]
        store = "redis"
        redis_url = "{redis}"
        [[source]]
        name = "qgh"
        path = "/gh"
        scheme = "github"
        secrets = ["{secret}"]
        quarantine = true
        forward = {{ kind = "http", url = "{downstream}/gh", timeout = "2s" }}
        [[source]]
        name = "qip"
        path = "/ip"
        scheme = "github"
        secrets = ["{secret}"]
        allow_ips = ["192.0.2.0/24"]
        quarantine = true
        quarantine_headers = "redacted"
        forward = {{ kind = "http", url = "{downstream}/ip", timeout = "2s" }}
        "#
    )
}

async fn cli(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .output()
        .await
        .expect("run hookgate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_refused_request_is_quarantined_and_after_the_fix_replayed_exactly_once() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let path = temp_file(
        "quarantine.toml",
        &config_text(&redis.url(), &downstream.url(""), "stale-secret-00000001"),
    );
    let stale = config::load(&path).expect("valid");
    let right: Config = config::parse(
        &config_text(&redis.url(), &downstream.url(""), "fresh-secret-00000002"),
        &path,
    )
    .expect("valid");
    let gateway = TestGateway::start_from(stale, &path).await;
    let sender = Sender::default();

    // The sender signs with the new secret; hookgate still has the old one.
    let body = event_body("q1");
    let headers = sign(&right, "qgh", &body, "q1");
    sender
        .post(&gateway.url("/gh"), headers.clone(), body.clone())
        .await
        .assert(401, "bad_signature");
    // Outside the allowlist: refused before verification, kept all the same (its body is read past the
    // rate and body limits), with its signature blanked.
    sender
        .post(&gateway.url("/ip"), sign(&right, "qip", &body, "q2"), body.clone())
        .await
        .assert(403, "ip_denied");
    let page = scrape(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        metric(
            &page,
            r#"hookgate_quarantine_kept_total{source="qgh",verdict="bad_signature"}"#
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            r#"hookgate_quarantine_kept_total{source="qip",verdict="ip_denied"}"#
        ),
        1.0
    );

    let config_arg = path.to_str().expect("utf8");
    let (ok, listed) = cli(&["quarantine", "list", "qgh", "--config", config_arg]).await;
    assert!(ok, "{listed}");
    let lines: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert_eq!(lines[0]["verdict"], "bad_signature");
    assert_eq!(lines[0]["reason"], "mismatch");
    assert_eq!(lines[0]["event_id"], "q1");
    assert_eq!(lines[0]["client_ip"], "127.0.0.1");
    assert_eq!(lines[0]["size"], body.len());
    let (ok, listed) = cli(&["quarantine", "list", "qip", "--config", config_arg]).await;
    assert!(
        ok && listed.contains(r#""verdict":"ip_denied""#) && listed.contains(r#""redacted":true"#),
        "{listed}"
    );

    // Before the fix a replay is refused again, and the request stays.
    let (ok, replayed) = cli(&["quarantine", "replay", "qgh", "--all", "--config", config_arg]).await;
    assert!(
        ok && replayed.contains("refused (bad_signature:mismatch); kept"),
        "{replayed}"
    );
    assert!(downstream.received().is_empty());

    // The fix: the new secret, in the file and in the running gateway.
    std::fs::write(
        &path,
        config_text(&redis.url(), &downstream.url(""), "fresh-secret-00000002"),
    )
    .expect("write");
    gateway.reload().await;
    for _ in 0..2 {
        let (ok, replayed) = cli(&["quarantine", "replay", "qgh", "--all", "--config", config_arg]).await;
        assert!(ok, "{replayed}");
    }
    let received = downstream.received();
    assert_eq!(received.len(), 1, "delivered exactly once over two replays");
    assert_eq!(received[0].body.as_ref(), body.as_slice());
    assert_eq!(received[0].header("x-hookgate-event-id"), Some("q1"));
    let (_, listed) = cli(&["quarantine", "list", "qgh", "--config", config_arg]).await;
    assert!(
        listed.trim().is_empty(),
        "the delivered request left the quarantine: {listed}"
    );

    // The sender's own retry, signed with the new secret, is a duplicate: the replay committed its id.
    let mut reloaded = false;
    for _ in 0..100 {
        let reply = sender.post(&gateway.url("/gh"), headers.clone(), body.clone()).await;
        if reply.outcome() == "duplicate" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(reloaded, "the retry after the reload is a duplicate");
    assert_eq!(downstream.received().len(), 1);
}

/// The console at `/` on the admin port: the figures `/metrics` counts, per source, and the quarantined
/// request with its reason; read with no JavaScript, as plain HTML.
#[tokio::test]
async fn the_console_shows_what_metrics_count_and_what_is_quarantined() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let text = config_text(&redis.url(), &downstream.url(""), "console-secret-000001")
        .replace("\"qgh\"", "\"consolegh\"")
        .replace("\"qip\"", "\"consoleip\"");
    let config: Config = config::parse(&text, std::path::Path::new("console.toml")).expect("valid");
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    for id in ["c1", "c2", "c3"] {
        let body = event_body(id);
        sender
            .post(&gateway.url("/gh"), sign(&config, "consolegh", &body, id), body)
            .await
            .assert(200, "forwarded");
    }
    let body = event_body("c1");
    sender
        .post(
            &gateway.url("/gh"),
            sign(&config, "consolegh", &body, "c1"),
            body.clone(),
        )
        .await
        .assert(200, "duplicate");
    let mut wrong = sign(&config, "consolegh", &body, "c4");
    wrong.insert("x-hub-signature-256", http::HeaderValue::from_static("sha256=00"));
    sender
        .post(&gateway.url("/gh"), wrong, body)
        .await
        .assert(401, "bad_signature");

    let reply = sender
        .send("GET", &gateway.admin_url("/"), http::HeaderMap::new(), "")
        .await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        reply.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8_lossy(&reply.body).into_owned();
    let page = scrape(&gateway.admin_url("/metrics")).await;
    let counted = |series: &str| metric(&page, series);
    for (outcome, series) in [
        (
            "forwarded",
            r#"hookgate_requests_total{source="consolegh",outcome="forwarded"}"#,
        ),
        (
            "duplicate",
            r#"hookgate_requests_total{source="consolegh",outcome="duplicate"}"#,
        ),
        (
            "bad_signature",
            r#"hookgate_requests_total{source="consolegh",outcome="bad_signature"}"#,
        ),
    ] {
        let shown = format!("data-requests=\"{outcome}\">{}<", counted(series));
        assert!(html.contains(&shown), "{shown} not in the page: {html}");
    }
    assert!(html.contains("data-refusals=\"bad_signature:mismatch\">1<"), "{html}");
    assert!(html.contains("25.0 %"), "one duplicate in four claims: {html}");
    assert!(
        html.contains("<td>bad_signature</td><td>mismatch</td>"),
        "the quarantined request and its reason: {html}"
    );
    assert!(!html.contains("<script"), "readable without JavaScript");
}
