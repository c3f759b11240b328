//! Every scheme's signature-header parser and verifier, on arbitrary header values and bodies: never a
//! panic, and never a success without the key.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use hookgate::config::{HmacAlgorithm, HmacConfig, SchemeKind, Secret, SignatureEncoding, Template};
use hookgate::verify::Verifier;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const HEADERS: [&str; 12] = [
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
    let verifier = Verifier::new(kind, Some(&hmac), &[Secret::new(secret)], Duration::from_secs(300))
        .expect("verifier")
        .with_replay_guard(selector & 0x40 != 0);
    // An arbitrary request never verifies: finding a MAC by chance is not something a fuzzer does.
    assert!(verifier.verify(headers, Bytes::copy_from_slice(body), 1_700_000_000).is_err());
});
