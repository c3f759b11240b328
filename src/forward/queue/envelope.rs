//! The envelope: one queued event as it is stored in the stream, with everything needed to deliver it
//! as the `http` handler would.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::forward::{Delivery, end_to_end_headers};

/// One queued event as it is stored: everything needed to deliver it as the `http` handler would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub event_id: String,
    /// End-to-end headers whose values are text.
    pub headers: Vec<(String, String)>,
    /// End-to-end headers whose values are not text, base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binary_headers: Vec<(String, String)>,
    /// The raw body, base64.
    pub body: String,
    pub client_ip: String,
    pub request_id: String,
    pub received_at_ms: u64,
    /// Delivery attempts made so far.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Makes two otherwise equal retries distinct members of the delayed set.
    #[serde(default)]
    pub nonce: u64,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Envelope {
    pub(super) fn new(delivery: &Delivery<'_>) -> Self {
        let mut headers = Vec::new();
        let mut binary_headers = Vec::new();
        if let Some(verdict) = delivery.verdict {
            headers.push((super::super::VERDICT_HEADER.as_str().to_owned(), verdict.to_owned()));
        }
        for (name, value) in end_to_end_headers(delivery.headers) {
            match value.to_str() {
                Ok(text) => headers.push((name.as_str().to_owned(), text.to_owned())),
                Err(_) => binary_headers.push((name.as_str().to_owned(), base64_encode(value.as_bytes()))),
            }
        }
        Envelope {
            event_id: delivery.event_id.as_str().to_owned(),
            headers,
            binary_headers,
            body: base64_encode(delivery.body),
            client_ip: delivery.client_ip.to_string(),
            request_id: delivery.request_id.to_str().unwrap_or_default().to_owned(),
            received_at_ms: now_ms(),
            attempt: 0,
            last_error: None,
            nonce: rand::random(),
        }
    }

    /// The stored headers and body as they are sent; `None` when any of them cannot be read back, so that
    /// an entry is never delivered with a part missing.
    pub(super) fn request_parts(&self) -> Option<(HeaderMap, Bytes)> {
        let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).ok();
        let mut map = HeaderMap::new();
        let text = self.headers.iter().map(|(n, v)| (n, HeaderValue::from_str(v).ok()));
        let binary = self
            .binary_headers
            .iter()
            .map(|(n, v)| (n, decode(v).and_then(|b| HeaderValue::from_bytes(&b).ok())));
        for (name, value) in text.chain(binary) {
            map.append(HeaderName::try_from(name.as_str()).ok()?, value?);
        }
        Some((map, Bytes::from(decode(&self.body)?)))
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub(super) fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_through_json() {
        let envelope = Envelope {
            event_id: "evt_1".into(),
            headers: vec![("stripe-signature".into(), "t=1,v1=ab".into())],
            binary_headers: vec![("x-odd".into(), base64_encode(&[0xff, 0x20]))],
            body: base64_encode(b"{\"a\":1}"),
            client_ip: "203.0.113.9".into(),
            request_id: "r1".into(),
            received_at_ms: 1,
            attempt: 2,
            last_error: Some("the downstream answered 503".into()),
            nonce: 7,
        };
        let back: Envelope = serde_json::from_str(&envelope.to_json()).expect("json");
        assert_eq!(back, envelope);
        let (headers, body) = back.request_parts().expect("readable");
        assert_eq!(headers["stripe-signature"], "t=1,v1=ab");
        assert_eq!(headers["x-odd"].as_bytes(), &[0xff, 0x20]);
        assert_eq!(body.as_ref(), b"{\"a\":1}");
        let broken = Envelope {
            binary_headers: vec![("x-odd".into(), "not base64!".into())],
            ..back
        };
        assert!(
            broken.request_parts().is_none(),
            "a header that cannot be read back is not dropped silently"
        );
    }
}
