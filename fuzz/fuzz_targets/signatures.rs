//! Every scheme's signature-header parser and verifier, on arbitrary header values and bodies: never a
//! panic, and never a success without the key.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use hookgate::config::{HmacAlgorithm, HmacConfig, SchemeKind, Secret, SignatureEncoding, Template};
use hookgate::verify::{Keys, Target, Verifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const HEADERS: [&str; 39] = [
    "paddle-signature",
    "x-twilio-signature",
    "x-square-hmacsha256-signature",
    "x-hubspot-signature-v3",
    "x-hubspot-request-timestamp",
    "linear-signature",
    "x-zm-signature",
    "x-zm-request-timestamp",
    "x-gitlab-token",
    "x-token",
    "authorization",
    "twitch-eventsub-message-signature",
    "twitch-eventsub-message-id",
    "twitch-eventsub-message-timestamp",
    "x-hub-signature",
    "typeform-signature",
    "x-wc-webhook-signature",
    "x-vercel-signature",
    "x-razorpay-signature",
    "calendly-webhook-signature",
    "mux-signature",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "telnyx-signature-ed25519",
    "telnyx-timestamp",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "stripe-signature",
    "x-hub-signature-256",
    "x-shopify-hmac-sha256",
    "shopify-hmac-sha256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-signature",
    "x-signature",
    "x-timestamp",
];

/// A public key for each public-key scheme: RFC 8032's TEST 1 key, and sendgrid-python's test key.
fn public_key(kind: SchemeKind) -> Option<&'static str> {
    match kind {
        SchemeKind::Discord => Some("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
        SchemeKind::Telnyx => Some("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="),
        SchemeKind::Standard => Some("whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="),
        SchemeKind::Sendgrid => Some(
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==",
        ),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // The input: a scheme selector, then header values separated by 0xFF, then the body after 0xFE.
    let Some((&selector, rest)) = data.split_first() else { return };
    let (values, body) = match rest.iter().position(|b| *b == 0xFE) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in HEADERS.iter().zip(values.split(|b| *b == 0xFF)) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let kind = SchemeKind::ALL[usize::from(selector) % SchemeKind::ALL.len()];
    let secret = if kind == SchemeKind::Standard {
        "whsec_ZnV6ei1zZWNyZXQtMDEyMzQ1Njc4OQ=="
    } else {
        "fuzz-secret-0123456789"
    };
    let hmac = HmacConfig {
        header: HeaderName::from_static("x-signature"),
        algorithm: HmacAlgorithm::Sha256,
        encoding: if selector & 0x80 == 0 { SignatureEncoding::Hex } else { SignatureEncoding::Base64 },
        prefix: "sha256=".to_owned(),
        signed_content: Template::parse("{timestamp}.{body}").expect("template"),
        timestamp_header: Some(HeaderName::from_static("x-timestamp")),
    };
    let secrets = [Secret::new(secret)];
    let public_keys: Vec<Secret> = public_key(kind).map(Secret::new).into_iter().collect();
    let token_header = HeaderName::from_static("x-token");
    let keys = Keys {
        secrets: &secrets,
        public_keys: &public_keys,
        token_header: Some(&token_header),
        min_secret_bytes: None,
    };
    let verifier = Verifier::with_keys(kind, Some(&hmac), &keys, Duration::from_secs(300))
        .expect("verifier")
        .with_replay_guard(selector & 0x40 != 0);
    let target = Target {
        method: http::Method::POST,
        urls: vec!["https://hooks.example/in?a=1".to_owned(), "https://hooks.example:443/in?a=1".to_owned()],
    };
    // An arbitrary request never verifies: finding a MAC by chance is not something a fuzzer does.
    let result = verifier.verify_request(Some(&target), headers, Bytes::copy_from_slice(body), 1_700_000_000);
    assert!(result.is_err());
});
