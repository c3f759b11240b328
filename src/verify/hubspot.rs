//! HubSpot, signature v3: `X-HubSpot-Signature-v3: <base64>`, HMAC-SHA256 with the app's client secret over
//! the method, the full request URL (with a few percent-escapes decoded, as HubSpot does before signing),
//! the body and `X-HubSpot-Request-Timestamp` (Unix milliseconds). HubSpot's own tolerance is 5 minutes.

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_base64, encode_base64};

/// The base64 HMAC.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-hubspot-signature-v3");
/// Unix milliseconds, signed.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("x-hubspot-request-timestamp");

/// The escapes HubSpot decodes in the URL before it signs it.
const DECODED: [(&str, char); 12] = [
    ("%3A", ':'),
    ("%2F", '/'),
    ("%3F", '?'),
    ("%40", '@'),
    ("%21", '!'),
    ("%24", '$'),
    ("%27", '\''),
    ("%28", '('),
    ("%29", ')'),
    ("%2A", '*'),
    ("%2C", ','),
    ("%3B", ';'),
];

/// `url` as HubSpot signs it.
fn signed_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or("");
        match DECODED.iter().find(|(e, _)| e.eq_ignore_ascii_case(escape)) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn verify(check: &Check<'_>) -> Result<(), VerifyError> {
    let candidate = [decode_base64(&SIGNATURE, check.header(&SIGNATURE)?)?];
    let timestamp = check.header(&TIMESTAMP)?;
    let millis: i64 = timestamp.parse().map_err(|_| VerifyError::MalformedHeader(TIMESTAMP))?;
    check.fresh(millis.div_euclid(1000))?;
    let target = check.target()?;
    let method = target.method.as_str().as_bytes();
    for url in &target.urls {
        let url = signed_url(url);
        let parts = [method, url.as_bytes(), check.body, timestamp.as_bytes()];
        if check.matches(&parts, &candidate).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

pub(crate) fn sign(
    key: &MacKey,
    body: &[u8],
    method: &http::Method,
    url: &str,
    timestamp: i64,
) -> Vec<(HeaderName, String)> {
    let millis = timestamp.saturating_mul(1000).to_string();
    let url = signed_url(url);
    let mac = key.sign(&[method.as_str().as_bytes(), url.as_bytes(), body, millis.as_bytes()]);
    vec![(TIMESTAMP, millis), (SIGNATURE, encode_base64(&mac))]
}

#[cfg(test)]
mod tests {
    use super::signed_url;

    #[test]
    fn listed_escapes_are_decoded_and_others_kept() {
        assert_eq!(
            signed_url("https://h.example/p%3Aq?x=%2F%2f%20%zz%"),
            "https://h.example/p:q?x=//%20%zz%"
        );
    }
}
