//! The `stdout` handler: writes each accepted event as one JSON line, so that a first run needs nothing
//! else. Logs go to stderr, so stdout carries events only.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Delivered;
use super::{Delivery, ForwardError, end_to_end_headers};
use crate::config::forward::STDOUT_WRITE_TIMEOUT;

#[derive(Debug, Clone, Default)]
/// Writes each event as one JSON line on standard output.
pub struct StdoutHandler;

#[derive(Serialize)]
struct Line<'a> {
    source: &'a str,
    event_id: &'a str,
    client_ip: String,
    received_at_ms: u128,
    headers: BTreeMap<&'a str, String>,
    /// `utf8` when `body` is the body's text, `base64` when the body is not UTF-8.
    body_encoding: &'static str,
    body: String,
}

impl StdoutHandler {
    /// The JSON line for one event, newline included.
    pub fn line(delivery: &Delivery<'_>) -> Vec<u8> {
        let mut headers: BTreeMap<&str, String> = BTreeMap::new();
        if let Some(verdict) = delivery.verdict {
            headers.insert("x-hookgate-verdict", verdict.to_owned());
        }
        for (name, value) in end_to_end_headers(delivery.headers) {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let raw = delivery.body;
        let (body_encoding, body) = match std::str::from_utf8(raw) {
            Ok(text) => ("utf8", text.to_owned()),
            Err(_) => {
                use base64::Engine;
                ("base64", base64::engine::general_purpose::STANDARD.encode(raw))
            }
        };
        let line = Line {
            source: delivery.source,
            event_id: delivery.event_id.as_str(),
            client_ip: delivery.client_ip.to_string(),
            received_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            headers,
            body_encoding,
            body,
        };
        let mut out = serde_json::to_vec(&line).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub(crate) async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, ForwardError> {
        let line = Self::line(delivery);
        // A blocked stdout (a full pipe) must stall this event, not a runtime worker thread; and not for
        // longer than the claim's lease (validation sees to that): past STDOUT_WRITE_TIMEOUT the event is
        // refused with 504. The write cannot be taken back, so the line may still appear once the pipe
        // drains, beside the sender's retry: a reader of stdout deduplicates on `event_id`.
        let write = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&line)?;
            out.flush()
        });
        tokio::time::timeout(STDOUT_WRITE_TIMEOUT, write)
            .await
            .map_err(|_| ForwardError::Timeout(STDOUT_WRITE_TIMEOUT))?
            .map_err(|e| ForwardError::Io(e.to_string()))?
            .map_err(|e| ForwardError::Io(e.to_string()))?;
        Ok(Delivered::Forwarded)
    }
}
