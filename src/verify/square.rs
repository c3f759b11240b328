//! Square: `X-Square-Hmacsha256-Signature: <base64>`, HMAC-SHA256 over the notification URL (as entered
//! in Square's developer console) followed by the body, with the subscription's signature key. No
//! timestamp is signed; the event id `event_id` is in the body, so it is signed too.

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_base64, encode_base64};

/// The base64 HMAC of URL and body.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-square-hmacsha256-signature");

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let candidate = [decode_base64(&SIGNATURE, check.header(&SIGNATURE)?)?];
    let target = check.target()?;
    for url in &target.urls {
        if check.matches(&[url.as_bytes(), check.body], &candidate).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

pub(crate) fn sign(key: &MacKey, body: &[u8], url: &str) -> Vec<(HeaderName, String)> {
    vec![(SIGNATURE, encode_base64(&key.sign(&[url.as_bytes(), body])))]
}
