//! The `http` handler: POST to the source's URL over the keep-alive pool shared by every source, and wait
//! for the answer. 2xx is `forwarded`; anything else, a connection error or the timeout fails.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::Delivered;
use super::{
    Delivery, EVENT_ID_HEADER, FORWARDED_FOR, ForwardError, REQUEST_ID_HEADER, SOURCE_HEADER, VERDICT_HEADER,
    end_to_end_headers,
};
use crate::config::DownstreamUrl;

pub use super::pool::HttpClient;
use super::wire::RequestWriter;
pub use super::wire::Target;

/// The client every `http` handler shares, so connections to one downstream are pooled across sources.
pub fn client() -> HttpClient {
    HttpClient::default()
}

#[derive(Debug, Clone)]
/// Forwards each event to one downstream URL over the shared pool.
pub struct HttpHandler {
    client: HttpClient,
    target: Target,
    timeout: Duration,
}

impl HttpHandler {
    /// A handler for `url`, with a per-delivery `timeout`.
    pub fn new(client: HttpClient, url: &DownstreamUrl, timeout: Duration) -> Result<Self, String> {
        Ok(HttpHandler {
            client,
            target: Target::new(url.uri())?,
            timeout,
        })
    }

    pub(crate) async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, ForwardError> {
        let client_ip = IpText::new(delivery.client_ip);
        let outgoing = Outgoing {
            source: delivery.source,
            event_id: delivery.event_id.header_value(),
            client_ip: client_ip.as_str(),
            request_id: delivery.request_id.clone(),
            attempt: None,
        };
        let verdict = delivery
            .verdict
            .map(|verdict| (VERDICT_HEADER, HeaderValue::from_static(verdict)));
        let headers = end_to_end_headers(delivery.headers).chain(verdict.as_ref().map(|(n, v)| (n, v)));
        self.send(outgoing, headers, delivery.body).await?;
        Ok(Delivered::Forwarded)
    }

    /// POSTs `body` with the end-to-end `headers` and the gateway's own; `Ok` only on 2xx.
    pub(crate) async fn send<'h>(
        &self,
        outgoing: Outgoing<'_>,
        headers: impl IntoIterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        body: &[u8],
    ) -> Result<(), ForwardError> {
        let request = self.request(outgoing, headers, body);
        let status = tokio::time::timeout(self.timeout, self.client.send(&self.target, &request))
            .await
            .map_err(|_| ForwardError::Timeout(self.timeout))?
            .map_err(ForwardError::Connect)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(ForwardError::Status(status))
        }
    }

    /// The request, encoded for one write: the end-to-end `headers`, then the gateway's own.
    fn request<'h>(
        &self,
        outgoing: Outgoing<'_>,
        headers: impl IntoIterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        body: &[u8],
    ) -> Vec<u8> {
        let mut request = RequestWriter::new(&Method::POST, &self.target, body.len());
        for (name, value) in headers {
            request.header(name, value);
        }
        // Only the resolved client goes on: entries to its left came from the sender and could be forged.
        let client = outgoing.client_ip.as_bytes();
        if request.header_from_parts(&FORWARDED_FOR, &[client]) {
            request.header_from_parts(&REAL_IP, &[client]);
            // RFC 7239: an IPv6 address is quoted, in brackets.
            let forwarded: &[&[u8]] = if client.contains(&b':') {
                &[b"for=\"[", client, b"]\""]
            } else {
                &[b"for=", client]
            };
            request.header_from_parts(&http::header::FORWARDED, forwarded);
        }
        if !request.header_from_parts(&SOURCE_HEADER, &[outgoing.source.as_bytes()]) {
            request.header(&SOURCE_HEADER, &HeaderValue::from_static("invalid"));
        }
        request.header(&EVENT_ID_HEADER, &outgoing.event_id);
        request.header(&REQUEST_ID_HEADER, &outgoing.request_id);
        if let Some(attempt) = outgoing.attempt {
            request.header(&ATTEMPT_HEADER, &HeaderValue::from(attempt));
        }
        request.finish(body)
    }
}

/// What the gateway adds to a forwarded event, besides its own headers and body.
pub(crate) struct Outgoing<'a> {
    pub source: &'a str,
    pub event_id: HeaderValue,
    pub client_ip: &'a str,
    pub request_id: HeaderValue,
    /// The queue's delivery attempt, counted from 1; `None` for synchronous delivery.
    pub attempt: Option<u32>,
}

const REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// An IP address as text, on the stack. IPv4 is written digit by digit: `Ipv4Addr`'s `Display` supports
/// padding, and so writes into a buffer of its own first, through `fmt`, at about 1 200 instructions per
/// address where this takes a tenth of that.
struct IpText {
    text: [u8; 45],
    length: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut out = IpText {
            text: [0; 45],
            length: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    if octet >= 100 {
                        out.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        out.push(b'0' + octet / 10 % 10);
                    }
                    out.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let mut cursor = std::io::Cursor::new(&mut out.text[..]);
                // 45 bytes hold the longest IPv6 text (an IPv4-mapped address in full).
                let _ = write!(cursor, "{v6}");
                out.length = usize::try_from(cursor.position()).unwrap_or(0);
            }
        }
        out
    }

    fn push(&mut self, byte: u8) {
        self.text[self.length] = byte;
        self.length += 1;
    }

    fn as_str(&self) -> &str {
        // Digits, dots, colons and hex: always ASCII.
        std::str::from_utf8(&self.text[..self.length]).unwrap_or_default()
    }
}

/// The queue's delivery attempt, counted from 1.
pub const ATTEMPT_HEADER: HeaderName = HeaderName::from_static("x-hookgate-attempt");

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The gateway's own header lines of a request built for `client_ip`, in order.
    fn own_headers(client_ip: &str, source: &str) -> Vec<String> {
        let url: DownstreamUrl = "http://127.0.0.1:9/hook".parse().expect("url");
        let handler = HttpHandler::new(client(), &url, Duration::from_secs(1)).expect("handler");
        let outgoing = Outgoing {
            source,
            event_id: HeaderValue::from_static("evt_1"),
            client_ip,
            request_id: HeaderValue::from_static("rid"),
            attempt: None,
        };
        let request = handler.request(outgoing, [], b"{}");
        let text = String::from_utf8(request).expect("ascii");
        let head = text.split("\r\n\r\n").next().expect("a head");
        head.lines().skip(3).map(str::to_owned).collect()
    }

    #[test]
    fn the_resolved_client_goes_on_in_three_headers_ipv6_quoted_in_brackets() {
        assert_eq!(
            own_headers("198.51.100.7", "stripe"),
            [
                "x-forwarded-for: 198.51.100.7",
                "x-real-ip: 198.51.100.7",
                "forwarded: for=198.51.100.7",
                "x-hookgate-source: stripe",
                "x-hookgate-event-id: evt_1",
                "x-request-id: rid",
            ]
        );
        let v6 = own_headers("2001:db8::17", "stripe");
        assert_eq!(
            v6[..3],
            [
                "x-forwarded-for: 2001:db8::17",
                "x-real-ip: 2001:db8::17",
                "forwarded: for=\"[2001:db8::17]\""
            ]
        );
    }

    #[test]
    fn text_that_cannot_be_a_header_value_is_left_out_never_written() {
        // A queue envelope's client text is data read back from Redis: a line break in it must not end
        // the line early.
        let lines = own_headers("1.2.3.4\r\nx-evil: 1", "bad\nname");
        assert_eq!(
            lines,
            [
                "x-hookgate-source: invalid",
                "x-hookgate-event-id: evt_1",
                "x-request-id: rid"
            ]
        );
    }

    proptest! {
        #[test]
        fn ip_text_is_the_standard_text_of_every_address(ip in any::<IpAddr>()) {
            let text = IpText::new(ip);
            prop_assert_eq!(text.as_str(), ip.to_string());
        }
    }
}
