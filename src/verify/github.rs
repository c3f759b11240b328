//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the body. GitHub signs no timestamp, so
//! replays are stopped by dedup on `X-GitHub-Delivery`, not by a tolerance.

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_hex};

/// `sha256=` and the hex HMAC of the body.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
/// GitHub's delivery id, the default event id.
pub const DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let header = check.header(&SIGNATURE)?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
    let candidate = decode_hex(&SIGNATURE, hex)?;
    check.matches(&[check.body], &[candidate])
}

pub(crate) fn sign(key: &MacKey, body: &[u8], id: &str) -> Vec<(HeaderName, String)> {
    vec![
        (SIGNATURE, format!("sha256={}", hex::encode(key.sign(&[body])))),
        (DELIVERY, id.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::{headers, verifier};
    use crate::config::SchemeKind;

    // The example in GitHub's "Validating webhook deliveries" page, reproduced with
    // printf 'Hello, World!' | openssl dgst -sha256 -hmac "It's a Secret to Everybody" -hex
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn check(header: &str, body: &'static [u8]) -> Result<(), &'static str> {
        let v = verifier(SchemeKind::Github, &["It's a Secret to Everybody"]);
        v.verify(headers(&[("x-hub-signature-256", header)]), Bytes::from_static(body), 0)
            .map(drop)
            .map_err(|e| e.reason())
    }

    #[test]
    fn documented_vector_verifies() {
        check(SIG, b"Hello, World!").expect("GitHub's own example");
    }

    #[test]
    fn tampered_and_malformed_are_refused() {
        assert_eq!(check(SIG, b"Hello, World?"), Err("mismatch"));
        assert_eq!(check(&SIG[7..], b"Hello, World!"), Err("malformed_header"));
        assert_eq!(check("sha1=757107ea", b"Hello, World!"), Err("malformed_header"));
        assert_eq!(check("sha256=xyz", b"Hello, World!"), Err("bad_encoding"));
        // Hex digits only, but one too many: an odd length is an encoding error, not a mismatch.
        assert_eq!(check(&format!("{SIG}0"), b"Hello, World!"), Err("bad_encoding"));
        assert_eq!(check("sha256=", b"Hello, World!"), Err("mismatch"));
    }
}
