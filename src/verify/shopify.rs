//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 over the body with the app's client secret.
//! Shopify's newer deliveries name the same headers without `X-` (`Shopify-Hmac-Sha256`,
//! `Shopify-Webhook-Id`); both families are read. No timestamp is signed, and neither is the webhook id:
//! the replay guard stops a resend under a fresh id.

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_base64, encode_base64};

/// The base64 HMAC of the body.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
/// Shopify's webhook id, the default event id.
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("x-shopify-webhook-id");

/// The same MAC, as Shopify's newer "events" deliveries name it (`@shopify/shopify-api`,
/// `WEBHOOK_HEADER_NAMES`).
pub const EVENTS_SIGNATURE: HeaderName = HeaderName::from_static("shopify-hmac-sha256");
/// The webhook id under the newer name.
pub const EVENTS_WEBHOOK_ID: HeaderName = HeaderName::from_static("shopify-webhook-id");

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let (name, value) = match check.header(&SIGNATURE) {
        Err(VerifyError::MissingHeader(_)) => (EVENTS_SIGNATURE, check.header(&EVENTS_SIGNATURE)?),
        other => (SIGNATURE, other?),
    };
    let candidate = decode_base64(&name, value)?;
    check.matches(&[check.body], &[candidate])
}

pub(crate) fn sign(key: &MacKey, body: &[u8], id: &str) -> Vec<(HeaderName, String)> {
    vec![
        (SIGNATURE, encode_base64(&key.sign(&[body]))),
        (WEBHOOK_ID, id.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::{headers, verifier};
    use crate::config::SchemeKind;

    // printf '{"id":820982911946154508}' | openssl dgst -sha256 -hmac "shpss_test_secret" -binary | base64
    const BODY: &[u8] = br#"{"id":820982911946154508}"#;
    const SIG: &str = "AU5n5C4JV1EbE8g4yEzV+ZHbqkXpM29HXkzNAa5zicA=";

    fn check(header: &str, secrets: &[&str]) -> Result<(), &'static str> {
        let v = verifier(SchemeKind::Shopify, secrets);
        v.verify(
            headers(&[("x-shopify-hmac-sha256", header)]),
            Bytes::from_static(BODY),
            0,
        )
        .map(drop)
        .map_err(|e| e.reason())
    }

    #[test]
    fn known_vector_verifies_with_rotation() {
        check(SIG, &["shpss_test_secret"]).expect("openssl vector");
        check(SIG, &["shpss_new_secret", "shpss_test_secret"]).expect("old secret still active");
    }

    #[test]
    fn the_unprefixed_events_header_carries_the_same_mac() {
        let v = verifier(SchemeKind::Shopify, &["shpss_test_secret"]);
        let verify = |name: &str, sig: &str| {
            v.verify(headers(&[(name, sig)]), Bytes::from_static(BODY), 0)
                .map(drop)
                .map_err(|e| e.reason())
        };
        verify("shopify-hmac-sha256", SIG).expect("events header");
        assert_eq!(verify("shopify-hmac-sha256", "AAAA"), Err("mismatch"));
    }

    #[test]
    fn wrong_secret_and_bad_base64_are_refused() {
        assert_eq!(check(SIG, &["shpss_other_secret_01"]), Err("mismatch"));
        assert_eq!(check("not base64!", &["shpss_test_secret"]), Err("bad_encoding"));
    }
}
