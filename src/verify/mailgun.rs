//! Mailgun: the signature travels in the JSON body, `{"signature": {"timestamp", "token", "signature"}}`:
//! hex HMAC-SHA256 of timestamp and token, with the account's webhook signing key. Mailgun signs neither
//! the body nor a header: what the signature proves is the token, which is therefore the event id
//! (`json:/signature/token`), and the timestamp, to which the tolerance applies.

use super::event_id::find_in_json;
use super::{Check, VerifyError};

fn field(check: &Check<'_>, name: &str) -> Result<String, VerifyError> {
    find_in_json(check.body, &["signature".to_owned(), name.to_owned()])
        .map_err(|()| VerifyError::MalformedBody("not JSON"))?
        .ok_or(VerifyError::MalformedBody(
            "no signature.timestamp, signature.token and signature.signature",
        ))
}

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let timestamp = field(check, "timestamp")?;
    let token = field(check, "token")?;
    let signature = field(check, "signature")?;
    if signature.len() > super::MAX_HEADER_BYTES {
        return Err(VerifyError::MalformedBody("signature too long"));
    }
    let candidate = hex::decode(&signature).map_err(|_| VerifyError::MalformedBody("signature is not hex"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::MalformedBody("signature.timestamp is not a number"))?;
    check.fresh(seconds)?;
    check.matches(&[timestamp.as_bytes(), token.as_bytes()], &[candidate])
}
