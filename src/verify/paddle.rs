//! Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>…]`, HMAC-SHA256 over `"{ts}:{body}"` with
//! the notification destination's secret key (the whole `pdl_ntfset_…` string). Any `h1` may match (Paddle
//! sends one per active secret during a rotation); an `h1` that is not hex matches nothing, and unknown keys
//! are ignored. Paddle's own tolerance is 5 seconds.

use http::HeaderName;

use super::{Check, MacKey, VerifyError};

/// `ts=…;h1=…`.
pub const SIGNATURE: HeaderName = HeaderName::from_static("paddle-signature");

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let header = check.header(&SIGNATURE)?;
    let (timestamp, candidates) = super::stripe::timestamped_candidates(&SIGNATURE, header, ';', "ts", "h1")?;
    check.timestamp(&SIGNATURE, timestamp)?;
    check.matches(&[timestamp.as_bytes(), b":", check.body], &candidates)
}

pub(crate) fn sign(key: &MacKey, body: &[u8], timestamp: i64) -> Vec<(HeaderName, String)> {
    let ts = timestamp.to_string();
    let mac = key.sign(&[ts.as_bytes(), b":", body]);
    vec![(SIGNATURE, format!("ts={ts};h1={}", hex::encode(mac)))]
}
