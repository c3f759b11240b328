//! Test helpers: a gateway on port 0, a downstream that records what it receives, a loopback client and
//! signing with the same code a sender would use.

pub mod downstream;
pub mod gateway;
pub mod process;
pub mod redis;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hookgate::config::Config;
use hookgate::verify::Verifier;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use downstream::FakeDownstream;
pub use gateway::TestGateway;

/// A directory of this test process's own, `name` inside it, created if need be: under the target
/// directory's `tmp` (cargo's place for what integration tests write), not the system's temp directory, so
/// that what a test leaves behind goes with `cargo clean`.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hookgate-it-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `text` to the file `name` in this test process's own directory.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = temp_dir("files").join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// An answer as the sender sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn outcome(&self) -> &str {
        self.headers
            .get("x-hookgate-outcome")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
    }

    /// Asserts status and outcome header together, the way every test checks an answer.
    #[track_caller]
    pub fn assert(&self, status: u16, outcome: &str) {
        assert_eq!(
            (self.status.as_u16(), self.outcome()),
            (status, outcome),
            "body: {:?}",
            self.body
        );
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .expect("clock after 1970")
}

/// The headers a sender of `source` would send for `body`, signed at `timestamp`.
pub fn sign_at(config: &Config, source: &str, body: &[u8], id: &str, timestamp: i64) -> HeaderMap {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == source)
        .unwrap_or_else(|| panic!("no source {source}"));
    let secrets: Vec<_> = source.secrets.iter().map(|s| s.resolve().expect("secret")).collect();
    let verifier = Verifier::new(source.scheme, source.hmac.as_ref(), &secrets, source.tolerance()).expect("verifier");
    let mut headers: HeaderMap = verifier
        .sign(body, id, timestamp)
        .into_iter()
        .map(|(k, v)| (k, HeaderValue::from_str(&v).expect("header value")))
        .collect();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if source.name == "hmac" {
        headers.insert("x-event-id", HeaderValue::from_str(id).expect("id"));
    }
    headers
}

pub fn sign(config: &Config, source: &str, body: &[u8], id: &str) -> HeaderMap {
    sign_at(config, source, body, id, unix_now())
}

/// Waits, at most `limit`, until `done` holds; whether it did.
pub async fn until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}

/// A JSON body that carries `id` where Stripe (`/id`) and Slack (`/event_id`) put it.
pub fn event_body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\",\"event_id\":\"{id}\",\"type\":\"test.event\",\"data\":{{\"note\":\"caf\u{e9} \u{2603}\",\"n\":1}}}}").into_bytes()
}

/// The value of one series (`name{labels}`, as the page spells it) in a Prometheus text page; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The Prometheus text page at `url` (empty when it cannot be fetched).
pub async fn scrape(url: &str) -> String {
    let reply = Sender::default().try_send("GET", url, HeaderMap::new(), "").await;
    reply
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
}

/// Fetches the Prometheus page at `url` until `done` holds of it, at most `limit`; the last page fetched.
pub async fn scrape_until(url: &str, limit: std::time::Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let page = scrape(url).await;
        if done(&page) || std::time::Instant::now() >= deadline {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A keep-alive client over loopback.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Sender {
    fn default() -> Self {
        Sender {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }
}

impl Sender {
    pub async fn send(&self, method: &str, url: &str, headers: HeaderMap, body: impl Into<Bytes>) -> Reply {
        self.try_send(method, url, headers, body)
            .await
            .expect("gateway answers")
    }

    /// Like `send`, but a connection cut before the answer is an `Err`, not a panic.
    pub async fn try_send(
        &self,
        method: &str,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body.into()))
            .expect("request");
        request.headers_mut().extend(headers);
        let response = self.client.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.map_err(|e| e.to_string())?.to_bytes(),
        })
    }

    pub async fn try_post(&self, url: &str, headers: HeaderMap, body: impl Into<Bytes>) -> Result<Reply, String> {
        self.try_send("POST", url, headers, body).await
    }

    pub async fn post(&self, url: &str, headers: HeaderMap, body: impl Into<Bytes>) -> Reply {
        self.send("POST", url, headers, body).await
    }
}

pub fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("value"),
    )
}
