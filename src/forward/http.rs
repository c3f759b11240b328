//! The `http` handler: POST to the source's URL over the keep-alive pool shared by every source, and wait
//! for the answer. 2xx is `forwarded`; anything else, a connection error or the timeout fails.

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
        let outgoing = Outgoing {
            source: delivery.source,
            event_id: delivery.event_id.header_value(),
            client_ip: &delivery.client_ip.to_string(),
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
        if let Ok(client) = HeaderValue::from_str(outgoing.client_ip) {
            request.header(&FORWARDED_FOR, &client);
            request.header(&REAL_IP, &client);
        }
        // RFC 7239: an IPv6 address is quoted, in brackets.
        let forwarded = if outgoing.client_ip.contains(':') {
            format!("for=\"[{}]\"", outgoing.client_ip)
        } else {
            format!("for={}", outgoing.client_ip)
        };
        if let Ok(forwarded) = HeaderValue::from_str(&forwarded) {
            request.header(&http::header::FORWARDED, &forwarded);
        }
        let source = HeaderValue::from_str(outgoing.source).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        request.header(&SOURCE_HEADER, &source);
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

/// The queue's delivery attempt, counted from 1.
pub const ATTEMPT_HEADER: HeaderName = HeaderName::from_static("x-hookgate-attempt");
