//! Generic HMAC for senders without a scheme of their own. The header, algorithm (sha256, sha1, sha512),
//! encoding (hex, base64), a prefix such as `sha256=` and the signed content are all configured. The
//! signed content is a template of `{body}` and, optionally, `{timestamp}` (from `timestamp_header`, which
//! turns on the tolerance).

use http::HeaderName;

use super::{Check, MacKey, VerifyError, decode_base64, decode_hex, encode_base64};
use crate::config::source::Part;
use crate::config::{HmacConfig, SignatureEncoding, Template};

/// The byte slices `template` signs, in order.
fn render<'a>(template: &'a Template, body: &'a [u8], timestamp: &'a str) -> Vec<&'a [u8]> {
    template
        .parts()
        .iter()
        .map(|part| match part {
            Part::Literal(bytes) => bytes.as_slice(),
            Part::Body => body,
            Part::Timestamp => timestamp.as_bytes(),
        })
        .collect()
}

/// The settings of one generic HMAC source.
#[derive(Debug, Clone)]
pub(crate) struct Generic {
    header: HeaderName,
    encoding: SignatureEncoding,
    prefix: String,
    template: Template,
    timestamp_header: Option<HeaderName>,
}

impl Generic {
    pub(crate) fn new(config: &HmacConfig) -> Self {
        Generic {
            header: config.header.clone(),
            encoding: config.encoding,
            prefix: config.prefix.clone(),
            template: config.signed_content.clone(),
            timestamp_header: config.timestamp_header.clone(),
        }
    }

    pub(crate) fn verify(&self, check: &Check<'_>) -> Result<(), VerifyError> {
        let value = check.header(&self.header)?;
        let encoded = value
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| VerifyError::MalformedHeader(self.header.clone()))?;
        let candidate = match self.encoding {
            SignatureEncoding::Hex => decode_hex(&self.header, encoded)?,
            SignatureEncoding::Base64 => decode_base64(&self.header, encoded)?,
        };
        let timestamp = match &self.timestamp_header {
            Some(name) => {
                let value = check.header(name)?;
                check.timestamp(name, value)?;
                value
            }
            None => "",
        };
        check.matches(&render(&self.template, check.body, timestamp), &[candidate])
    }

    pub(crate) fn sign(&self, key: &MacKey, body: &[u8], timestamp: i64) -> Vec<(HeaderName, String)> {
        let ts = timestamp.to_string();
        let mac = key.sign(&render(&self.template, body, &ts));
        let encoded = match self.encoding {
            SignatureEncoding::Hex => hex::encode(mac),
            SignatureEncoding::Base64 => encode_base64(&mac),
        };
        let mut headers = vec![(self.header.clone(), format!("{}{encoded}", self.prefix))];
        if let Some(name) = &self.timestamp_header {
            headers.push((name.clone(), ts));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::HeaderName;

    use super::*;
    use crate::config::{HmacAlgorithm, SchemeKind, Secret};
    use crate::verify::Verifier;
    use crate::verify::test_support::headers;

    fn config(algorithm: HmacAlgorithm, encoding: SignatureEncoding, template: &str, ts: bool) -> HmacConfig {
        HmacConfig {
            header: HeaderName::from_static("x-signature"),
            algorithm,
            encoding,
            prefix: String::new(),
            signed_content: Template::parse(template).expect("template"),
            timestamp_header: ts.then(|| HeaderName::from_static("x-timestamp")),
        }
    }

    fn verifier(config: &HmacConfig) -> Verifier {
        Verifier::new(
            SchemeKind::Hmac,
            Some(config),
            &[Secret::new("hmac-test-key-0001")],
            Duration::from_secs(300),
        )
        .expect("verifier")
    }

    // printf 'hello' | openssl dgst -sha1 -hmac hmac-test-key-0001 -hex
    #[test]
    fn sha1_hex_vector_verifies() {
        let v = verifier(&config(HmacAlgorithm::Sha1, SignatureEncoding::Hex, "{body}", false));
        let h = headers(&[("x-signature", "0f48a1fb5b836c91584221273950bb32d7ad25b8")]);
        v.verify(h, Bytes::from_static(b"hello"), 0).expect("openssl vector");
    }

    // printf '1700000000.hello' | openssl dgst -sha512 -hmac hmac-test-key-0001 -binary | base64 -w0
    #[test]
    fn sha512_base64_timestamped_vector_verifies() {
        let v = verifier(&config(
            HmacAlgorithm::Sha512,
            SignatureEncoding::Base64,
            "{timestamp}.{body}",
            true,
        ));
        let sig = "2m6rjjIBo6MABL0xLtQjRY+zupz6SaAsVvES0/fE8lhmzxz8zWy+7I0TN5+uGGn3zvt6CWZXAb4rJcbkVspXTw==";
        let h = headers(&[("x-signature", sig), ("x-timestamp", "1700000000")]);
        v.verify(h.clone(), Bytes::from_static(b"hello"), 1_700_000_100)
            .expect("openssl vector");
        let stale = v.verify(h, Bytes::from_static(b"hello"), 1_700_000_301);
        assert_eq!(stale.expect_err("stale").reason(), "stale_timestamp");
    }

    #[test]
    fn prefix_is_required_when_configured() {
        let mut c = config(HmacAlgorithm::Sha256, SignatureEncoding::Hex, "{body}", false);
        c.prefix = "sha256=".to_owned();
        let v = verifier(&c);
        let signed = v.sign(b"x", "", 0);
        assert!(signed[0].1.starts_with("sha256="));
        let bare = signed[0].1.trim_start_matches("sha256=").to_owned();
        let err = v.verify(headers(&[("x-signature", &bare)]), Bytes::from_static(b"x"), 0);
        assert_eq!(err.expect_err("no prefix").reason(), "malformed_header");
    }
}
