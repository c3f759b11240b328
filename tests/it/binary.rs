//! The `hookgate` binary itself, as a newcomer uses it: `serve`, `sign`, `check-config`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::process::{self, BIN, free_port, wait_ready};
use crate::common::{Sender, temp_file};

/// The default config, moved to free ports.
fn default_config_on_free_ports() -> (PathBuf, u16, u16) {
    let (public, admin) = (free_port(), free_port());
    let text = std::fs::read_to_string("config/hookgate.toml")
        .expect("default config")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    (temp_file(&format!("default-{public}.toml"), &text), public, admin)
}

/// Runs `hookgate SUBCOMMAND ARGS…` with `body` on its standard input.
async fn run_with_body(subcommand: &str, args: &[&str], body: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg(subcommand)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookgate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .await
        .expect("write body");
    child.wait_with_output().await.expect("hookgate output")
}

async fn run_sign(args: &[&str], body: &[u8]) -> HeaderMap {
    let output = run_with_body("sign", args, body).await;
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf8")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("Name: value");
            (
                HeaderName::try_from(name).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_walkthrough_works_signed_event_on_stdout_tampered_refused() {
    let (config, public, admin) = default_config_on_free_ports();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    wait_ready(admin, &mut child).await;

    let body = br#"{"action":"opened","number":1}"#;
    let headers = run_sign(
        &["--scheme", "github", "--secret", "demo-secret-change-me", "--id", "d-1"],
        body,
    )
    .await;
    let url = format!("http://127.0.0.1:{public}/webhooks/demo");
    let signature = headers["x-hub-signature-256"].to_str().expect("ascii").to_owned();
    let sender = Sender::default();
    sender
        .post(&url, headers.clone(), body.to_vec())
        .await
        .assert(200, "forwarded");
    sender
        .post(&url, headers, br#"{"action":"closed","number":1}"#.to_vec())
        .await
        .assert(401, "bad_signature");

    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(5), stdout.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("one line");
    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(event["source"], "demo");
    assert_eq!(event["event_id"], "d-1");
    assert_eq!(event["body_encoding"], "utf8");
    assert_eq!(event["body"].as_str().map(str::as_bytes), Some(&body[..]));

    process::signal(&child, "TERM").await;
    process::exits_cleanly(&mut child).await;
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().expect("stderr"), &mut rest)
        .await
        .expect("stderr");
    assert!(
        !rest.contains("demo-secret-change-me"),
        "the secret reached the logs: {rest}"
    );
    assert!(!rest.contains(&signature[7..]), "a signature reached the logs: {rest}");
    let lines: Vec<serde_json::Value> = rest
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{rest}");
    assert!(
        lines
            .iter()
            .any(|l| l["reason"] == "bad_signature:mismatch" && l["client_ip"] == "127.0.0.1"),
        "the refusal is logged at debug, with the client: {rest}"
    );
}

#[tokio::test]
async fn sign_prints_the_headers_of_every_scheme() {
    let ed25519_seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    // A P-256 key made for this test with `openssl genpkey` and `openssl pkcs8 -topk8 -nocrypt`.
    let p256 = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4/V7xxXFn3xTDLWUeBwmEzYkhLLSp3jy1YoKbDlbIEShRANCAASucdfoeMp6VlV6wZhNNujWfqoyKndh80WRSnzjElRrwXIa4hVbTfb46JM4MCJ8yLij3YaKBUWKDsjpUhQ1wOr0";
    let cases: [(&[&str], &[&str]); 15] = [
        (
            &["--scheme", "sendgrid", "--private-key", p256],
            &[
                "x-twilio-email-event-webhook-signature",
                "x-twilio-email-event-webhook-timestamp",
            ],
        ),
        (
            &["--scheme", "paddle", "--secret", "pdl_ntfset_sign-test-01"],
            &["paddle-signature"],
        ),
        (
            &[
                "--scheme",
                "twilio",
                "--secret",
                "sign-test-secret-01",
                "--url",
                "https://h.example/t?a=1",
            ],
            &["x-twilio-signature"],
        ),
        (
            &[
                "--scheme",
                "hubspot",
                "--secret",
                "sign-test-secret-01",
                "--url",
                "https://h.example/h",
            ],
            &["x-hubspot-signature-v3", "x-hubspot-request-timestamp"],
        ),
        (
            &["--scheme", "twitch", "--secret", "sign-test-secret-01"],
            &[
                "twitch-eventsub-message-signature",
                "twitch-eventsub-message-id",
                "twitch-eventsub-message-timestamp",
            ],
        ),
        (
            &["--scheme", "gitlab", "--secret", "sign-test-secret-01"],
            &["x-gitlab-token"],
        ),
        (
            &["--scheme", "basic", "--secret", "user:sign-test-pass"],
            &["authorization"],
        ),
        (
            &["--scheme", "discord", "--private-key", ed25519_seed],
            &["x-signature-ed25519", "x-signature-timestamp"],
        ),
        (
            &["--scheme", "mux", "--secret", "sign-test-secret-01"],
            &["mux-signature"],
        ),
        (
            &["--scheme", "stripe", "--secret", "whsec_sign-test-secret-01"],
            &["stripe-signature"],
        ),
        (
            &["--scheme", "github", "--secret", "sign-test-secret-01"],
            &["x-hub-signature-256", "x-github-delivery"],
        ),
        (
            &["--scheme", "shopify", "--secret", "sign-test-secret-01"],
            &["x-shopify-hmac-sha256", "x-shopify-webhook-id"],
        ),
        (
            &["--scheme", "slack", "--secret", "sign-test-secret-01"],
            &["x-slack-signature", "x-slack-request-timestamp"],
        ),
        (
            &["--scheme", "standard", "--secret", "whsec_c2VjcmV0LWtleS1ieXRlcw=="],
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        ),
        (
            &[
                "--scheme",
                "hmac",
                "--secret",
                "sign-test-secret-01",
                "--signature-header",
                "x-sig",
            ],
            &["x-sig"],
        ),
    ];
    for (args, expected) in cases {
        let headers = run_sign(args, b"{}").await;
        for name in expected {
            assert!(headers.contains_key(*name), "{args:?}: no {name} in {headers:?}");
        }
    }
}

#[tokio::test]
async fn check_config_accepts_the_default_and_names_the_key_of_a_bad_file() {
    let ok = Command::new(BIN)
        .args(["check-config", "config/hookgate.toml"])
        .output()
        .await
        .expect("run");
    assert!(ok.status.success());
    let summary = String::from_utf8_lossy(&ok.stdout);
    assert!(summary.contains("ok") && summary.contains("demo"), "{summary}");
    assert_eq!(summary.lines().count(), 1);

    let text = std::fs::read_to_string("config/hookgate.toml")
        .expect("read")
        .replace("max_body_bytes", "max_body_size");
    let bad = temp_file("unknown-key.toml", &text);
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_body_size") && err.contains("unknown-key.toml"),
        "{err}"
    );
}

#[tokio::test]
async fn a_source_whose_secret_cannot_be_read_does_not_start() {
    let (config, _, _) = default_config_on_free_ports();
    let text = std::fs::read_to_string(&config)
        .expect("read")
        .replace("\"demo-secret-change-me\"", "\"env:HOOKGATE_IT_UNSET_SECRET\"");
    let path = temp_file("unset-secret.toml", &text);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("HOOKGATE_IT_UNSET_SECRET")
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HOOKGATE_IT_UNSET_SECRET") && err.contains("secrets"),
        "{err}"
    );
}

#[tokio::test]
async fn hookgate_redis_url_overrides_the_config_file() {
    let redis = crate::common::redis::RedisServer::start();
    let (config, public, admin) = default_config_on_free_ports();
    // The file names a Redis where nothing listens; the environment names the real one.
    let text = std::fs::read_to_string(&config).expect("read").replace(
        "store = \"memory\"",
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"",
    );
    let path = temp_file(&format!("redis-env-{public}.toml"), &text);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("HOOKGATE_REDIS_URL", redis.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    wait_ready(admin, &mut child).await;
    let body = br#"{"n":1}"#;
    let headers = run_sign(
        &[
            "--scheme",
            "github",
            "--secret",
            "demo-secret-change-me",
            "--id",
            "env-1",
        ],
        body,
    )
    .await;
    let url = format!("http://127.0.0.1:{public}/webhooks/demo");
    Sender::default()
        .post(&url, headers.clone(), body.to_vec())
        .await
        .assert(200, "forwarded");
    Sender::default()
        .post(&url, headers, body.to_vec())
        .await
        .assert(200, "duplicate");
    // The delivery id, and the replay guard's key (GitHub signs the body only).
    assert_eq!(redis.cli(&["dbsize"]), "2");
}

#[tokio::test]
async fn echo_counts_what_it_received_and_probe_reports_health() {
    let port = free_port();
    let mut echo = Command::new(BIN)
        .args(["echo", "--listen", &format!("127.0.0.1:{port}"), "--status", "202"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn echo");
    let stats = format!("http://127.0.0.1:{port}/stats");
    let sender = Sender::default();
    let mut up = false;
    for _ in 0..200 {
        if sender.try_send("GET", &stats, HeaderMap::new(), "").await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "echo started");
    let url = format!("http://127.0.0.1:{port}/anything");
    let reply = sender.post(&url, HeaderMap::new(), "twelve bytes").await;
    assert_eq!(reply.status, 202);
    let counted = sender.send("GET", &stats, HeaderMap::new(), "").await;
    assert_eq!(counted.body.as_ref(), b"{\"received\":1,\"bytes\":12}\n");

    let healthy = Command::new(BIN).args(["probe", &stats]).status().await.expect("probe");
    assert!(healthy.success());
    echo.kill().await.expect("kill");
    let _ = echo.wait().await;
    let down = Command::new(BIN)
        .args(["probe", &stats, "--timeout", "1s"])
        .output()
        .await
        .expect("probe");
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains(&port.to_string()));
}

/// Configs that used to load and leave a hole: an `hmac` timestamp that is not signed, a tolerance past
/// the dedup TTL, a key anyone could guess, a lease shorter than a delivery. The binary refuses each,
/// naming the key.
#[tokio::test]
async fn check_config_refuses_configs_that_would_weaken_verification() {
    let source = |extra: &str, scheme: &str, secret: &str| {
        format!(
            "[[source]]\nname = \"s\"\npath = \"/s\"\nscheme = \"{scheme}\"\nsecrets = [\"{secret}\"]\n{extra}forward = {{ kind = \"stdout\" }}\n"
        )
    };
    let cases = [
        (
            source(
                "event_id = \"header:x-id\"\nhmac = { header = \"x-sig\", timestamp_header = \"x-ts\" }\n",
                "hmac",
                "a-secret-of-enough-bytes",
            ),
            "hmac.timestamp_header",
        ),
        (
            format!(
                "[dedup]\nttl = \"1h\"\n{}",
                source("tolerance = \"2h\"\n", "stripe", "whsec_a-secret-of-enough-bytes")
            ),
            "tolerance",
        ),
        (source("", "standard", "whsec_"), "secrets"),
        (source("", "github", "short-secret"), "secrets"),
        (
            format!(
                "[dedup]\nlease = \"2s\"\n{}",
                source("", "github", "a-secret-of-enough-bytes")
            ),
            "dedup.lease",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = temp_file(&format!("weak-{i}.toml"), text);
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .await
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} loaded:\n{text}");
        assert!(err.contains(key), "case {i}: {err}");
    }
}

async fn run_verify(args: &[&str], body: &[u8]) -> (bool, String) {
    let output = run_with_body("verify", args, body).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The Paddle SDK's own vector (PaddleHQ/paddle-python-sdk, tests/Unit/Notification/test_Verifier.py):
/// `verify` names the key that matched; a minute later it explains the stale timestamp; and for a
/// URL-signed scheme it shows the URLs it tried.
#[tokio::test]
async fn verify_explains_what_matched_and_what_did_not() {
    let paddle = [
        "--scheme",
        "paddle",
        "--secret",
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4",
        "--secret",
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh",
        "--header",
        "Paddle-Signature: ts=1696195954;h1=dummy;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02",
    ];
    let (ok, out) = run_verify(&[&paddle[..], &["--at", "1696195955"]].concat(), b"hello-world").await;
    assert!(ok, "{out}");
    assert!(out.contains("result     ok: key #1 matched"), "{out}");
    assert!(out.contains("keys       2 tried") && out.contains("11 bytes"), "{out}");
    assert!(
        !out.contains("d96299976a6eb066f484d7fde011ac56"),
        "a whole signature in the output: {out}"
    );

    let (ok, out) = run_verify(&[&paddle[..], &["--at", "1696196014"]].concat(), b"hello-world").await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("bad_signature:stale_timestamp") && out.contains("hint"),
        "{out}"
    );

    // square/square-nodejs-sdk tests/integration/webhooks.test.ts, with the URL mistyped.
    let body = br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    let square = |url: &'static str| {
        [
            "--scheme",
            "square",
            "--secret",
            "Ibxx_5AKakO-3qeNVR61Dw",
            "--url",
            url,
            "--header",
            "x-square-hmacsha256-signature: GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=",
        ]
    };
    let (ok, out) = run_verify(
        &square("https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"),
        body,
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run_verify(
        &square("https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9"),
        body,
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("url tried  https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9")
            && out.contains("bad_signature:mismatch"),
        "{out}"
    );
}

/// Transparent huge pages are off for the whole process: where the kernel backs every touched 2 MiB region
/// whole, they took the gateway's peak RSS at 4 threads and 100 000 ids from 38 to 61 MiB.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_process_runs_on_small_pages() {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["echo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn echo");
    let pid = child.id().expect("pid");
    // Once its port answers, the process is well past the first line of `main`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "echo did not listen within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("THP_enabled:"))
        .expect("the kernel reports THP_enabled");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
