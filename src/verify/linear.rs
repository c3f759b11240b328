//! Linear: `Linear-Signature: <hex>`, HMAC-SHA256 of the body with the webhook's signing secret. The
//! freshness is the body's own `webhookTimestamp` (Unix milliseconds), which the signature covers;
//! Linear's advice is 60 seconds, both ways. The event id is `Linear-Delivery`, which is not signed, so
//! the replay guard is on by default.

use http::HeaderName;

use super::event_id::find_in_json;
use super::{Check, MacKey, VerifyError, decode_hex};

/// The hex HMAC of the body.
pub const SIGNATURE: HeaderName = HeaderName::from_static("linear-signature");
/// Linear's delivery id, the default event id.
pub const DELIVERY: HeaderName = HeaderName::from_static("linear-delivery");

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let candidate = decode_hex(&SIGNATURE, check.header(&SIGNATURE)?)?;
    check.matches(&[check.body], &[candidate])?;
    let stamp = find_in_json(check.body, &["webhookTimestamp".to_owned()])
        .ok()
        .flatten()
        .ok_or(VerifyError::MalformedBody("no webhookTimestamp"))?;
    let millis: i64 = stamp
        .parse()
        .map_err(|_| VerifyError::MalformedBody("webhookTimestamp is not a number"))?;
    check.fresh(millis.div_euclid(1000))
}

pub(crate) fn sign(key: &MacKey, body: &[u8], id: &str) -> Vec<(HeaderName, String)> {
    vec![(SIGNATURE, hex::encode(key.sign(&[body]))), (DELIVERY, id.to_owned())]
}
