//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 with the account's auth token over the full public
//! URL followed by the form parameters, sorted by name, each as `name` + `value` (a repeated name's values
//! sorted, blank values kept). A JSON body is not a form: its URL carries `bodySHA256`, the hex SHA-256 of
//! the body, which must match, and the URL alone is signed. Twilio signs the URL sometimes with, sometimes
//! without the port; both are tried. A signature of 32 bytes is HMAC-SHA256, which Twilio uses where an
//! account's signature settings ask for it; 20 bytes is HMAC-SHA1. No timestamp is signed; the idempotency
//! token, the default id, is not signed either, so the replay guard is on by default.

use std::cell::OnceCell;

use http::HeaderName;
use sha2::Digest;

use super::{Check, MacKey, VerifyError, decode_base64, encode_base64};

/// The base64 HMAC-SHA1 of URL and parameters.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-twilio-signature");

/// The `bodySHA256` query parameter of `url`, if any.
fn body_sha256(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "bodySHA256")
        .map(|(_, value)| value.into_owned())
}

/// The form parameters as Twilio signs them: by name, then value, each distinct pair once.
fn sorted_params(body: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// What is signed after `url`: nothing when it carries `bodySHA256` (which must then match the body), else
/// the sorted form parameters, read from the body once for all the URLs tried.
fn signed_tail<'a>(url: &str, body: &[u8], form: &'a OnceCell<Vec<u8>>) -> Result<&'a [u8], VerifyError> {
    match body_sha256(url) {
        Some(expected) => {
            let actual = hex::encode(sha2::Sha256::digest(body));
            if expected.eq_ignore_ascii_case(&actual) {
                Ok(&[])
            } else {
                Err(VerifyError::Mismatch)
            }
        }
        None => Ok(form.get_or_init(|| sorted_params(body))),
    }
}

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let candidate = [decode_base64(&SIGNATURE, check.header(&SIGNATURE)?)?];
    // The signature's length says the hash: 20 bytes SHA-1, 32 bytes SHA-256.
    let keys = if candidate[0].len() == 32 {
        check.keys_sha256
    } else {
        check.keys
    };
    let target = check.target()?;
    let form = OnceCell::new();
    for url in &target.urls {
        let Ok(tail) = signed_tail(url, check.body, &form) else {
            continue;
        };
        if check.matches_with(keys, &[url.as_bytes(), tail], &candidate).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

pub(crate) fn sign(key: &MacKey, body: &[u8], url: &str) -> Vec<(HeaderName, String)> {
    let form = OnceCell::new();
    let tail = signed_tail(url, body, &form).unwrap_or_default();
    vec![(SIGNATURE, encode_base64(&key.sign(&[url.as_bytes(), tail])))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_sorted_by_name_then_value() {
        assert_eq!(
            sorted_params(b"b=2&a=1&Digits=5678&Digits=1234&e="),
            b"Digits1234Digits5678a1b2e".to_vec()
        );
    }

    const SHA256_SIGNATURE: &str = "qWXlicrbRNTRzbwVXrT4UYzsnv0dbYHuVFw0iKH5ABA=";

    // No SDK publishes an HMAC-SHA256 vector; this one is
    // printf '%s' 'https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212' \
    //   | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef -binary | base64
    #[test]
    fn a_32_byte_signature_is_hmac_sha256() {
        use crate::config::Secret;
        use crate::verify::{Target, Verifier};
        let v = Verifier::new(
            crate::config::SchemeKind::Twilio,
            None,
            &[Secret::new("0123456789abcdef0123456789abcdef")],
            std::time::Duration::ZERO,
        )
        .expect("verifier");
        let target = Target {
            method: http::Method::POST,
            urls: vec!["https://mycompany.com/myapp.php?foo=1&bar=2".to_owned()],
        };
        let body = "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
        let check = |sig: &str| {
            let headers: http::HeaderMap = [(SIGNATURE, http::HeaderValue::from_str(sig).expect("value"))]
                .into_iter()
                .collect();
            v.verify_request(Some(&target), headers, bytes::Bytes::from(body), 0)
                .map(drop)
                .map_err(|e| e.reason())
        };
        check(SHA256_SIGNATURE).expect("HMAC-SHA256");
        assert_eq!(check(&SHA256_SIGNATURE.replacen('q', "r", 1)), Err("mismatch"));
    }

    #[test]
    fn body_hash_is_read_from_the_query() {
        assert_eq!(body_sha256("https://h/p?a=1&bodySHA256=ab12").as_deref(), Some("ab12"));
        assert_eq!(body_sha256("https://h/p?a=1"), None);
    }
}
