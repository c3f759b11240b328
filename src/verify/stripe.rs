//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over `"{t}.{body}"`. The key is
//! the whole `whsec_…` string. Several `v1` entries may be present (Stripe sends one per active secret);
//! other schemes such as `v0` are ignored. The tolerance applies. Calendly (`Calendly-Webhook-Signature`)
//! and Mux (`Mux-Signature`) sign the same way under their own header.

use http::HeaderName;

use super::{Check, MAX_CANDIDATES, MacKey, VerifyError, decode_hex};

/// `t=…,v1=…[,v1=…]`.
pub const SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
/// Calendly's `t=…,v1=…`.
pub const CALENDLY_SIGNATURE: HeaderName = HeaderName::from_static("calendly-webhook-signature");
/// Mux's `t=…,v1=…`.
pub const MUX_SIGNATURE: HeaderName = HeaderName::from_static("mux-signature");

/// Checks `t=…,v1=…` in the header `name`.
pub(crate) fn verify(check: &Check<'_>, name: &HeaderName) -> Result<(), VerifyError> {
    let header = check.header(name)?;
    let (timestamp, candidates) = timestamped_candidates(name, header, ',', "t", "v1")?;
    check.timestamp(name, timestamp)?;
    check.matches(&[timestamp.as_bytes(), b".", check.body], &candidates)
}

/// Reads a `{ts_key}=…{separator}{sig_key}=<hex>[{separator}{sig_key}=<hex>…]` header (Stripe's, Paddle's):
/// the first timestamp and every signature. As the providers' SDKs do, a signature that is not hex matches
/// nothing and the others still count, and other keys are ignored. No timestamp, no signature or more
/// than [`MAX_CANDIDATES`] is `malformed_header`; only signatures that are not hex, `bad_encoding`.
pub(crate) fn timestamped_candidates<'h>(
    name: &HeaderName,
    header: &'h str,
    separator: char,
    ts_key: &str,
    sig_key: &str,
) -> Result<(&'h str, Vec<Vec<u8>>), VerifyError> {
    let malformed = || VerifyError::MalformedHeader(name.clone());
    let mut timestamp = None;
    let mut entries = 0;
    let mut candidates = Vec::new();
    for item in header.split(separator) {
        let (key, value) = item.trim().split_once('=').ok_or_else(malformed)?;
        if key == ts_key && timestamp.is_none() {
            timestamp = Some(value);
        } else if key == sig_key {
            entries += 1;
            if let Ok(candidate) = decode_hex(name, value) {
                candidates.push(candidate);
            }
        }
    }
    let timestamp = timestamp.ok_or_else(malformed)?;
    if entries == 0 || entries > MAX_CANDIDATES {
        return Err(malformed());
    }
    if candidates.is_empty() {
        return Err(VerifyError::BadEncoding(name.clone(), "hex"));
    }
    Ok((timestamp, candidates))
}

pub(crate) fn sign(key: &MacKey, name: &HeaderName, body: &[u8], timestamp: i64) -> Vec<(HeaderName, String)> {
    let ts = timestamp.to_string();
    let mac = key.sign(&[ts.as_bytes(), b".", body]);
    vec![(name.clone(), format!("t={ts},v1={}", hex::encode(mac)))]
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::{headers, verifier};
    use crate::config::SchemeKind;

    // Computed independently:
    // printf '1700000000.{"id":"evt_1MqqbKLt4dXK03v5qaIbiNCC","object":"event"}' \
    //   | openssl dgst -sha256 -hmac "whsec_test_secret" -hex
    const BODY: &[u8] = br#"{"id":"evt_1MqqbKLt4dXK03v5qaIbiNCC","object":"event"}"#;
    const SIG: &str = "9d243686a9a29fe108b6d3468f53f003c98dddb97b1949de4a3725fca6f4215d";
    const NOW: i64 = 1_700_000_010;

    fn check(header: &str) -> Result<(), &'static str> {
        let v = verifier(SchemeKind::Stripe, &["whsec_test_secret"]);
        v.verify(headers(&[("stripe-signature", header)]), Bytes::from_static(BODY), NOW)
            .map(drop)
            .map_err(|e| e.reason())
    }

    #[test]
    fn known_vector_verifies() {
        check(&format!("t=1700000000,v1={SIG}")).expect("openssl vector");
    }

    #[test]
    fn one_matching_v1_among_several_is_enough() {
        let wrong = "0".repeat(64);
        check(&format!("t=1700000000,v1={wrong},v0=abc,v1={SIG}")).expect("second v1 matches");
    }

    // stripe-python `test_header_contains_valid_signature` and stripe-node "at least one valid
    // signature": an entry that is not hex is skipped, wherever the valid one stands.
    #[test]
    fn a_malformed_v1_entry_does_not_hide_a_valid_one() {
        check(&format!("t=1700000000,v1={SIG},v1=bad_signature")).expect("valid first");
        check(&format!("t=1700000000,v1=bad_signature,v1={SIG}")).expect("valid last");
        assert_eq!(check("t=1700000000,v1=bad_signature"), Err("bad_encoding"));
    }

    #[test]
    fn more_than_eight_candidates_is_malformed() {
        let wrong = "0".repeat(64);
        let many = std::iter::repeat_n(format!("v1={wrong}"), 8)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(check(&format!("t=1700000000,{many}")), Err("mismatch"));
        assert_eq!(check(&format!("t=1700000000,{many},v1={SIG}")), Err("malformed_header"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(check(&format!("v1={SIG}")), Err("malformed_header"));
        assert_eq!(check("t=1700000000"), Err("malformed_header"));
        assert_eq!(check("t=1700000000;v1=00"), Err("malformed_header"));
        assert_eq!(check("t=soon,v1=00"), Err("malformed_header"));
        assert_eq!(check("t=1700000000,v1=zz"), Err("bad_encoding"));
        assert_eq!(check(""), Err("malformed_header"));
    }

    #[test]
    fn missing_header_and_stale_timestamp_are_refused() {
        let v = verifier(SchemeKind::Stripe, &["whsec_test_secret"]);
        let none = v.verify(headers(&[]), Bytes::from_static(BODY), NOW);
        assert_eq!(none.expect_err("missing").reason(), "missing_header");
        let late = v.verify(
            headers(&[("stripe-signature", &format!("t=1700000000,v1={SIG}"))]),
            Bytes::from_static(BODY),
            1_700_000_000 + 301,
        );
        assert_eq!(late.expect_err("stale").reason(), "stale_timestamp");
    }
}
