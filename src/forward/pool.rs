//! The client every `http` handler (and the queue's workers) share: a lean pool of keep-alive HTTP/1.1
//! connections per downstream host. A request takes an idle connection (or opens one), is sent, its answer is
//! read to the end, and the connection goes back to the pool. Only what a gateway in front of one application
//! needs: no proxies, no TLS, no HTTP/2.
//!
//! Each thread keeps its own idle connections: a connection is driven by a task on the runtime that
//! opened it, so a request on one core never borrows a connection whose reads wake another core.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per host; more are closed when they come back.
const MAX_IDLE_PER_HOST: usize = 512;

/// One keep-alive HTTP/1 connection, ready to send a request.
pub(crate) type Sender = SendRequest<Full<Bytes>>;
/// Idle connections by `host:port`, of one thread.
type Idle = RefCell<HashMap<String, Vec<Sender>>>;

#[derive(Clone, Default)]
/// The downstream client: a keep-alive pool per target, shared by every source.
pub struct HttpClient {
    idle: Arc<ThreadLocal<Idle>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// Where requests go, worked out once from an absolute `http://` URL: the pool key, the `Host` header
/// and the path that goes on the request line.
#[derive(Debug, Clone)]
pub struct Target {
    host: String,
    /// `host:port`, which is also the pool's key.
    address: String,
    pub(crate) host_header: HeaderValue,
    /// What goes on the request line: the path and query.
    pub(crate) path: Uri,
}

impl Target {
    /// A client for the target named by `uri` (scheme, host and port).
    pub fn new(uri: &Uri) -> Result<Self, String> {
        let authority = uri.authority().ok_or("the URL has no host")?;
        Ok(Target {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            address: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
            host_header: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            path: Uri::try_from(uri.path_and_query().map_or("/", |p| p.as_str())).map_err(|e| e.to_string())?,
        })
    }

    /// A new keep-alive connection to the target, driven by a task on the current runtime.
    pub(crate) async fn connect(&self) -> Result<Sender, String> {
        connect(&self.host, &self.address).await
    }
}

impl HttpClient {
    /// Sends a request with an absolute `http://` URI, reads the answer to its end, and returns its status.
    pub async fn request(&self, request: Request<Full<Bytes>>) -> Result<StatusCode, String> {
        let target = Target::new(request.uri())?;
        self.send(&target, request).await
    }

    /// Sends a request to `target` (its own URI is replaced), reads the answer to its end, and returns
    /// its status.
    pub async fn send(&self, target: &Target, mut request: Request<Full<Bytes>>) -> Result<StatusCode, String> {
        *request.uri_mut() = target.path.clone();
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, target.host_header.clone());
        }
        // A pooled connection the server closed meanwhile fails before anything is sent: then, and only
        // then, the request goes out once more on a new connection.
        let mut sender = match self.checkout(&target.address).await {
            Some(sender) => sender,
            None => target.connect().await?,
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut error) => match error.take_message() {
                Some(request) => {
                    sender = target.connect().await?;
                    sender.send_request(request).await.map_err(|e| error_chain(&e))?
                }
                None => return Err(error_chain(&error.into_error())),
            },
        };
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| error_chain(&e))?;
        }
        self.checkin(&target.address, sender);
        Ok(status)
    }

    /// An idle connection to `address` that is still open and ready for a request.
    async fn checkout(&self, address: &str) -> Option<Sender> {
        loop {
            let mut sender = self.idle.get_or_default().borrow_mut().get_mut(address)?.pop()?;
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, address: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.get_or_default().borrow_mut();
        match idle.get_mut(address) {
            Some(senders) if senders.len() < MAX_IDLE_PER_HOST => senders.push(sender),
            Some(_) => {}
            None => {
                idle.insert(address.to_owned(), vec![sender]);
            }
        }
    }
}

/// A new keep-alive connection to `address` (`host:port`), driven by a task on the current runtime.
async fn connect(host: &str, address: &str) -> Result<Sender, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {host} timed out"))?
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "downstream connection closed with an error");
        }
    });
    Ok(sender)
}

/// An error with its causes, since hyper's top-level messages ("client error (Connect)") hide the reason.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
