//! Slack: `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 over `"v0:{X-Slack-Request-Timestamp}:{body}"` with the
//! app's signing secret. The tolerance applies. Zoom signs the same way with its secret token, under
//! `x-zm-signature` and `x-zm-request-timestamp`.

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_hex};

/// `v0=` and the hex HMAC of `v0:{timestamp}:{body}`.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
/// Unix seconds, signed.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
/// Zoom's `v0=` signature.
pub const ZOOM_SIGNATURE: HeaderName = HeaderName::from_static("x-zm-signature");
/// Zoom's signed timestamp.
pub const ZOOM_TIMESTAMP: HeaderName = HeaderName::from_static("x-zm-request-timestamp");

/// Checks a `v0=` signature in `signature_header` over `v0:{timestamp}:{body}`.
pub(crate) fn verify(
    check: &Check<'_>,
    timestamp_header: &HeaderName,
    signature_header: &HeaderName,
) -> Result<(), VerifyError> {
    let timestamp = check.header(timestamp_header)?;
    let signature = check.header(signature_header)?;
    let hex = signature
        .strip_prefix("v0=")
        .ok_or_else(|| VerifyError::MalformedHeader(signature_header.clone()))?;
    let candidate = decode_hex(signature_header, hex)?;
    check.timestamp(timestamp_header, timestamp)?;
    check.matches(&[b"v0:", timestamp.as_bytes(), b":", check.body], &[candidate])
}

pub(crate) fn sign(
    key: &MacKey,
    timestamp_header: &HeaderName,
    signature_header: &HeaderName,
    body: &[u8],
    timestamp: i64,
) -> Vec<(HeaderName, String)> {
    let ts = timestamp.to_string();
    let mac = key.sign(&[b"v0:", ts.as_bytes(), b":", body]);
    vec![
        (timestamp_header.clone(), ts),
        (signature_header.clone(), format!("v0={}", hex::encode(mac))),
    ]
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::{headers, verifier};
    use crate::config::SchemeKind;

    // The example in Slack's "Verifying requests from Slack" page, reproduced with
    // printf 'v0:1531420618:%s' "$BODY" | openssl dgst -sha256 -hmac 8f742231b10e8888abcd99yyyzzz85a5 -hex
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(ts: &str, sig: &str, now: i64) -> Result<(), &'static str> {
        let v = verifier(SchemeKind::Slack, &[SECRET]);
        let h = headers(&[("x-slack-request-timestamp", ts), ("x-slack-signature", sig)]);
        v.verify(h, Bytes::from_static(BODY), now)
            .map(drop)
            .map_err(|e| e.reason())
    }

    #[test]
    fn documented_vector_verifies() {
        check("1531420618", SIG, 1_531_420_618 + 60).expect("Slack's own example");
    }

    #[test]
    fn stale_malformed_and_tampered_are_refused() {
        assert_eq!(check("1531420618", SIG, 1_531_420_618 + 301), Err("stale_timestamp"));
        assert_eq!(check("1531420619", SIG, 1_531_420_618), Err("mismatch"));
        assert_eq!(check("1531420618", &SIG[3..], 1_531_420_618), Err("malformed_header"));
        assert_eq!(check("yesterday", SIG, 1_531_420_618), Err("malformed_header"));
        let v = verifier(SchemeKind::Slack, &[SECRET]);
        let only_sig = headers(&[("x-slack-signature", SIG)]);
        let err = v
            .verify(only_sig, Bytes::from_static(BODY), 0)
            .expect_err("no timestamp");
        assert_eq!(err.reason(), "missing_header");
    }
}
