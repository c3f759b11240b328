//! Slack end to end, black-box through the server: the example request of Slack's own documentation,
//! checked as of the second it was signed, and the Events API's `url_verification` handshake.

use hookgate::config::{self, Config};
use hookgate::verify::layer::Clock;
use http::HeaderMap;

use crate::common::{FakeDownstream, Sender, TestGateway, header, metric, scrape};

/// From "Verifying requests from Slack", https://api.slack.com/authentication/verifying-requests-from-slack
/// (also the vector of goalert's `notification/slack/signature_test.go`): a slash command, form-encoded.
const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DOC_TIMESTAMP: i64 = 1_531_420_618;
const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const DOC_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

fn slack_config(downstream: &str, name: &str, secret: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [[source]]
        name = "{name}"
        path = "/slack"
        scheme = "slack"
        secrets = ["{secret}"]
        event_id = "form:trigger_id"
        forward = {{ kind = "http", url = "{downstream}/slack", timeout = "2s" }}
        "#
    );
    config::parse(&text, std::path::Path::new("slack.toml")).expect("valid")
}

fn doc_headers(timestamp: &str, signature: &str) -> HeaderMap {
    HeaderMap::from_iter([
        header("x-slack-request-timestamp", timestamp),
        header("x-slack-signature", signature),
        header("content-type", "application/x-www-form-urlencoded"),
    ])
}

#[tokio::test]
async fn slacks_documented_example_is_forwarded_byte_for_byte_and_its_variants_are_refused() {
    let downstream = FakeDownstream::start().await;
    let config = slack_config(&downstream.url(""), "slackdoc", DOC_SECRET);
    // Ten seconds after it was signed.
    let gateway = TestGateway::start_at(config, Clock::Fixed(DOC_TIMESTAMP + 10)).await;
    let url = gateway.url("/slack");
    let sender = Sender::default();
    let ts = DOC_TIMESTAMP.to_string();

    let reply = sender.post(&url, doc_headers(&ts, DOC_SIGNATURE), DOC_BODY).await;
    reply.assert(200, "forwarded");
    let received = downstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body.as_ref(),
        DOC_BODY.as_bytes(),
        "the form body, byte for byte"
    );
    assert_eq!(
        received[0].header("x-hookgate-event-id"),
        Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"),
        "form:trigger_id, decoded"
    );

    // One byte of the body changed; the signature's last digit changed; another timestamp.
    let tampered = DOC_BODY.replace("roadrunner", "roadrunnes");
    let mut wrong_digit = DOC_SIGNATURE.to_owned();
    wrong_digit.pop();
    wrong_digit.push('4');
    for (headers, body) in [
        (doc_headers(&ts, DOC_SIGNATURE), tampered.as_str()),
        (doc_headers(&ts, &wrong_digit), DOC_BODY),
        (doc_headers(&(DOC_TIMESTAMP + 1).to_string(), DOC_SIGNATURE), DOC_BODY),
    ] {
        sender
            .post(&url, headers, body.to_owned())
            .await
            .assert(401, "bad_signature");
    }
    assert_eq!(downstream.received().len(), 1);
    gateway.stop().await;

    // The same request, judged 6 minutes after it was signed: stale under the 5-minute tolerance.
    let config = slack_config(&downstream.url(""), "slackdoc", DOC_SECRET);
    let late = TestGateway::start_at(config, Clock::Fixed(DOC_TIMESTAMP + 360)).await;
    sender
        .post(&late.url("/slack"), doc_headers(&ts, DOC_SIGNATURE), DOC_BODY)
        .await
        .assert(401, "bad_signature");
    late.stop().await;

    // And under another signing secret it is not Slack's.
    let config = slack_config(&downstream.url(""), "slackdoc", "another-secret-of-32-bytes-0000");
    let other = TestGateway::start_at(config, Clock::Fixed(DOC_TIMESTAMP + 10)).await;
    sender
        .post(&other.url("/slack"), doc_headers(&ts, DOC_SIGNATURE), DOC_BODY)
        .await
        .assert(401, "bad_signature");
    other.stop().await;
    assert_eq!(downstream.received().len(), 1);
}

/// Slack's `v0` signature, computed here with the `hmac` crate, apart from hookgate's own signing code.
fn slack_signature(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Before: a correctly signed `url_verification` had no `event_id`, and got `400 bad_request`, so a Slack
/// Events API endpoint could never be registered. Now hookgate answers it with the challenge, as Slack
/// expects, and neither forwards nor deduplicates it. Unsigned, it is refused like any other request.
#[tokio::test]
async fn slacks_url_verification_is_answered_with_its_challenge_and_not_forwarded() {
    let downstream = FakeDownstream::start().await;
    let secret = "slack-signing-secret-for-tests-01";
    let config = slack_config(&downstream.url(""), "slackhs", secret);
    let now = 1_800_000_000;
    let gateway = TestGateway::start_at(config, Clock::Fixed(now)).await;
    let url = gateway.url("/slack");
    let sender = Sender::default();
    // The shape of Slack's documented example (https://api.slack.com/events/url_verification).
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let signed = |body: &str| {
        HeaderMap::from_iter([
            header("x-slack-request-timestamp", &now.to_string()),
            header("x-slack-signature", &slack_signature(secret, now, body)),
            header("content-type", "application/json"),
        ])
    };

    for _ in 0..2 {
        let reply = sender.post(&url, signed(body), body).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.outcome(), "handshake");
        assert_eq!(
            reply.body.as_ref(),
            b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        );
        assert_eq!(
            reply.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/plain"[..])
        );
    }
    assert!(downstream.received().is_empty(), "a handshake is not forwarded");

    // A forged handshake (wrong signature) is refused before anything answers it.
    let mut forged = signed(body);
    forged.insert(
        "x-slack-signature",
        slack_signature("not-the-secret-at-all-000", now, body)
            .parse()
            .expect("value"),
    );
    sender.post(&url, forged, body).await.assert(401, "bad_signature");

    // An event that merely mentions the word is an event, not a handshake.
    let event = r#"{"type":"event_callback","event_id":"Ev01","event":{"text":"url_verification"}}"#;
    let mut headers = signed(event);
    headers.insert("content-type", "application/json".parse().expect("value"));
    let config_with_json_id = sender.post(&url, headers, event).await;
    // This source reads its id from a form field, which a JSON event lacks.
    config_with_json_id.assert(400, "bad_request");

    let page = scrape(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        metric(
            &page,
            "hookgate_requests_total{source=\"slackhs\",outcome=\"handshake\"}"
        ),
        2.0,
        "{page}"
    );
    gateway.stop().await;
}
