//! Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex>`, HMAC-SHA256 over the message id,
//! the timestamp (RFC 3339) and the body, concatenated, with the subscription's secret. Twitch's own
//! tolerance is 10 minutes. The message id, signed, is the event id.

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_hex};

/// `sha256=` and the hex HMAC.
pub const SIGNATURE: HeaderName = HeaderName::from_static("twitch-eventsub-message-signature");
/// The message id, signed; the default event id.
pub const ID: HeaderName = HeaderName::from_static("twitch-eventsub-message-id");
/// An RFC 3339 time, signed.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("twitch-eventsub-message-timestamp");
/// `notification`, `webhook_callback_verification` or `revocation`.
pub const MESSAGE_TYPE: HeaderName = HeaderName::from_static("twitch-eventsub-message-type");

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let id = check.header(&ID)?;
    let timestamp = check.header(&TIMESTAMP)?;
    let signature = check.header(&SIGNATURE)?;
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
    let candidate = decode_hex(&SIGNATURE, hex)?;
    let at = humantime::parse_rfc3339_weak(timestamp).map_err(|_| VerifyError::MalformedHeader(TIMESTAMP))?;
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or(VerifyError::MalformedHeader(TIMESTAMP))?;
    check.fresh(seconds)?;
    check.matches(&[id.as_bytes(), timestamp.as_bytes(), check.body], &[candidate])
}

pub(crate) fn sign(key: &MacKey, body: &[u8], id: &str, timestamp: i64) -> Vec<(HeaderName, String)> {
    let at = u64::try_from(timestamp).map_or(std::time::UNIX_EPOCH, |s| {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
    });
    let ts = humantime::format_rfc3339_seconds(at).to_string();
    let mac = key.sign(&[id.as_bytes(), ts.as_bytes(), body]);
    vec![
        (ID, id.to_owned()),
        (TIMESTAMP, ts),
        (MESSAGE_TYPE, "notification".to_owned()),
        (SIGNATURE, format!("sha256={}", hex::encode(mac))),
    ]
}
