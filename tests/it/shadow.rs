//! Shadow mode, black-box: every check runs and is counted as in enforce mode, and every request is
//! forwarded with its verdict in `x-hookgate-verdict`; only verified events with an id are deduplicated.

use hookgate::config::{self, Config};
use http::HeaderValue;
use tokio::process::Command;

use crate::common::{FakeDownstream, Sender, TestGateway, event_body, metric, scrape, sign, temp_file};

fn shadow_config(downstream: &str) -> String {
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [[source]]
        name = "shadowgh"
        path = "/gh"
        scheme = "github"
        secrets = ["shadow-secret-000001"]
        mode = "shadow"
        forward = {{ kind = "http", url = "{downstream}/gh", timeout = "2s" }}
        [[source]]
        name = "shadowip"
        path = "/ip"
        scheme = "github"
        secrets = ["shadow-secret-000001"]
        allow_ips = ["192.0.2.0/24"]
        mode = "shadow"
        forward = {{ kind = "http", url = "{downstream}/ip", timeout = "2s" }}
        "#
    )
}

#[tokio::test]
async fn a_shadow_source_forwards_every_request_with_its_verdict_and_counts_it() {
    let downstream = FakeDownstream::start().await;
    let text = shadow_config(&downstream.url(""));
    let config: Config = config::parse(&text, std::path::Path::new("shadow.toml")).expect("valid");
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    let url = gateway.url("/gh");

    // Signed with another secret: enforce mode would answer 401; shadow mode forwards it, twice (it is
    // not verified, so it is not deduplicated).
    let body = event_body("s1");
    let mut wrong = sign(&config, "shadowgh", &body, "s1");
    wrong.insert(
        "x-hub-signature-256",
        HeaderValue::from_static("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
    );
    for _ in 0..2 {
        sender
            .post(&url, wrong.clone(), body.clone())
            .await
            .assert(200, "forwarded");
    }
    // Correctly signed: forwarded once with the verdict `pass`, then a duplicate.
    let good = sign(&config, "shadowgh", &body, "s2");
    sender
        .post(&url, good.clone(), body.clone())
        .await
        .assert(200, "forwarded");
    sender
        .post(&url, good.clone(), body.clone())
        .await
        .assert(200, "duplicate");
    // Verified, but without its event id: `bad_request`, forwarded.
    let mut no_id = good.clone();
    no_id.remove("x-github-delivery");
    sender.post(&url, no_id, body.clone()).await.assert(200, "forwarded");
    // From an address outside the allowlist, correctly signed: `ip_denied`, forwarded.
    sender
        .post(
            &gateway.url("/ip"),
            sign(&config, "shadowip", &body, "s3"),
            body.clone(),
        )
        .await
        .assert(200, "forwarded");

    let verdicts: Vec<(String, Option<String>)> = downstream
        .received()
        .iter()
        .map(|r| (r.path.clone(), r.header("x-hookgate-verdict").map(str::to_owned)))
        .collect();
    let expected = [
        ("/gh", "bad_signature"),
        ("/gh", "bad_signature"),
        ("/gh", "pass"),
        ("/gh", "bad_request"),
        ("/ip", "ip_denied"),
    ];
    assert_eq!(
        verdicts,
        expected.map(|(p, v)| (p.to_owned(), Some(v.to_owned()))).to_vec()
    );
    assert!(
        downstream.received().iter().all(|r| r.body.as_ref() == body.as_slice()),
        "the bodies, byte for byte"
    );

    let page = scrape(&gateway.admin_url("/metrics")).await;
    let count = |source: &str, verdict: &str, reason: &str| {
        metric(
            &page,
            &format!(r#"hookgate_shadow_verdicts_total{{source="{source}",verdict="{verdict}",reason="{reason}"}}"#),
        )
    };
    assert_eq!(count("shadowgh", "bad_signature", "mismatch"), 2.0, "{page}");
    assert_eq!(
        count("shadowgh", "pass", "none"),
        2.0,
        "the first good request and its duplicate"
    );
    assert_eq!(count("shadowgh", "bad_request", "missing_event_id"), 1.0);
    assert_eq!(count("shadowip", "ip_denied", "none"), 1.0);
}

#[tokio::test]
async fn check_config_names_the_sources_in_shadow_mode() {
    let path = temp_file("shadow.toml", &shadow_config("http://127.0.0.1:9"));
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"source "shadowgh" is in shadow mode"#)
            && stdout.contains(r#"source "shadowip" is in shadow mode"#),
        "{stdout}"
    );
}

#[test]
fn an_unknown_mode_is_a_config_error() {
    let text = shadow_config("http://127.0.0.1:9").replacen("mode = \"shadow\"", "mode = \"watch\"", 1);
    let err = config::parse(&text, std::path::Path::new("shadow.toml")).expect_err("bad mode");
    assert!(err.to_string().contains("mode"), "{err}");
}
