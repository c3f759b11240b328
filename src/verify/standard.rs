//! Standard Webhooks (and Svix, its origin): `webhook-id`, `webhook-timestamp` and `webhook-signature` (or
//! the `svix-*` aliases). The signature header holds space-separated `v1,<base64>` (HMAC-SHA256) or
//! `v1a,<base64>` (Ed25519) entries over `"{id}.{timestamp}.{body}"`. A `v1` secret is base64 after an
//! optional `whsec_`; a `v1a` public key is base64 after `whpk_`. Only the entries of the kinds of key the
//! source has are read. The tolerance applies.

use http::HeaderName;

use super::{Check, MAX_CANDIDATES, MacKey, VerifyError, decode_base64, encode_base64};

/// The message id, signed.
pub const ID: HeaderName = HeaderName::from_static("webhook-id");
/// Unix seconds, signed.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// Space-separated `v1,<base64>` signatures.
pub const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
/// Svix's name for the message id.
pub const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
const SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
const SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");

/// The key bytes of a `whsec_<base64>` (or bare base64) secret.
pub(crate) fn decode_secret(secret: &str) -> Result<Vec<u8>, &'static str> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "a Standard Webhooks secret must be base64, optionally after `whsec_`")
}

/// The `webhook-*` header when present, else its `svix-*` alias.
fn header_or_alias<'a>(
    check: &'a Check<'_>,
    name: &HeaderName,
    alias: &HeaderName,
) -> Result<(HeaderName, &'a str), VerifyError> {
    match check.header(name) {
        Err(VerifyError::MissingHeader(_)) => check.header(alias).map(|v| (alias.clone(), v)),
        other => other.map(|v| (name.clone(), v)),
    }
}

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let (_, id) = header_or_alias(check, &ID, &SVIX_ID)?;
    let (ts_name, timestamp) = header_or_alias(check, &TIMESTAMP, &SVIX_TIMESTAMP)?;
    let (sig_name, signatures) = header_or_alias(check, &SIGNATURE, &SVIX_SIGNATURE)?;
    let mut macs = Vec::new();
    let mut signatures_v1a = Vec::new();
    for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
        let (version, sig) = entry
            .split_once(',')
            .ok_or_else(|| VerifyError::MalformedHeader(sig_name.clone()))?;
        match version {
            "v1" if !check.keys.is_empty() => macs.push(decode_base64(&sig_name, sig)?),
            // An Ed25519 signature that is not base64 matches nothing; the others still count.
            "v1a" if !check.public_keys.is_empty() => {
                if let Ok(sig) = decode_base64(&sig_name, sig) {
                    signatures_v1a.push(sig);
                }
            }
            _ => {}
        }
    }
    let count = macs.len() + signatures_v1a.len();
    if count == 0 || count > MAX_CANDIDATES {
        return Err(VerifyError::MalformedHeader(sig_name));
    }
    check.timestamp(&ts_name, timestamp)?;
    let signed: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", check.body];
    if !macs.is_empty() && check.matches(&signed, &macs).is_ok() {
        return Ok(());
    }
    check.verifies(&signed, &signatures_v1a)
}

pub(crate) fn sign(key: &MacKey, body: &[u8], id: &str, timestamp: i64) -> Vec<(HeaderName, String)> {
    let ts = timestamp.to_string();
    let mac = key.sign(&[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    vec![
        (ID, id.to_owned()),
        (TIMESTAMP, ts),
        (SIGNATURE, format!("v1,{}", encode_base64(&mac))),
    ]
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::test_support::{headers, verifier};
    use crate::config::SchemeKind;

    // The test vector of the Standard Webhooks reference libraries, reproduced with
    // KEY=$(printf MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw | base64 -d | xxd -p -c 256)
    // printf 'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}' \
    //   | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary | base64
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const NOW: i64 = 1_614_265_330;

    fn check(prefix: &str, sig: &str, secret: &str) -> Result<(), &'static str> {
        let v = verifier(SchemeKind::Standard, &[secret]);
        let h = headers(&[
            (&format!("{prefix}-id"), ID),
            (&format!("{prefix}-timestamp"), TS),
            (&format!("{prefix}-signature"), sig),
        ]);
        v.verify(h, Bytes::from_static(BODY), NOW)
            .map(drop)
            .map_err(|e| e.reason())
    }

    #[test]
    fn reference_vector_verifies_with_both_header_families() {
        check("webhook", SIG, SECRET).expect("webhook-* headers");
        check("svix", SIG, SECRET).expect("svix-* aliases");
        check("webhook", SIG, &SECRET[6..]).expect("secret without whsec_");
    }

    #[test]
    fn one_matching_entry_among_several_is_enough() {
        let sigs = format!("v1,AAAA v1a,ignored {SIG}");
        check("webhook", &sigs, SECRET).expect("third entry matches");
    }

    #[test]
    fn malformed_and_wrong_are_refused() {
        assert_eq!(check("webhook", "v1", SECRET), Err("malformed_header"));
        assert_eq!(check("webhook", "v2,AAAA", SECRET), Err("malformed_header"));
        assert_eq!(check("webhook", "v1,***", SECRET), Err("bad_encoding"));
        assert_eq!(check("webhook", "v1,AAAA", SECRET), Err("mismatch"));
        assert_eq!(check("webhook", SIG, "whsec_b3RoZXItb3RoZXItb3RoZXI="), Err("mismatch"));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_a_config_error() {
        let secrets = [crate::config::Secret::new("whsec_not base64!")];
        let err = super::super::Verifier::new(SchemeKind::Standard, None, &secrets, std::time::Duration::ZERO)
            .expect_err("bad secret");
        assert!(err.to_string().starts_with("secrets[0]"), "{err}");
    }
}
