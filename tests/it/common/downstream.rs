//! A downstream application that records exactly what it received and answers as told.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// One request as the downstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone)]
struct Behaviour {
    /// Statuses to answer in turn; the last one repeats.
    statuses: Vec<StatusCode>,
    delay: Duration,
}

struct State {
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    behaviour: Mutex<Behaviour>,
}

/// A port held for a downstream: see [`FakeDownstream::reserve`].
pub struct Reserved {
    socket: TcpSocket,
    pub port: u16,
}

impl Reserved {
    /// The downstream starts answering on the held port.
    pub async fn start(self) -> FakeDownstream {
        FakeDownstream::listen(self.socket).await
    }
}

pub struct FakeDownstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeDownstream {
    pub async fn start() -> Self {
        Self::reserve().start().await
    }

    /// A loopback port held for a downstream that does not answer yet: bound, not listening, so that a
    /// connection to it is refused, and no other test can take the port before `start`.
    pub fn reserve() -> Reserved {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind downstream");
        let port = socket.local_addr().expect("addr").port();
        Reserved { socket, port }
    }

    async fn listen(socket: TcpSocket) -> Self {
        let listener = socket.listen(1024).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            behaviour: Mutex::new(Behaviour {
                statuses: vec![StatusCode::OK],
                delay: Duration::ZERO,
            }),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                state.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(move |req| handle(state.clone(), req))),
                );
            }
        });
        FakeDownstream { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers with these statuses in turn, repeating the last.
    pub fn answer(&self, statuses: &[u16]) {
        let mut behaviour = self.state.behaviour.lock().expect("lock");
        behaviour.statuses = statuses
            .iter()
            .map(|s| StatusCode::from_u16(*s).expect("status"))
            .collect();
    }

    pub fn delay(&self, delay: Duration) {
        self.state.behaviour.lock().expect("lock").delay = delay;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// The `x-hookgate-event-id` of every request received, in the order they came.
    pub fn event_ids(&self) -> Vec<String> {
        let received = self.state.received.lock().expect("lock");
        received
            .iter()
            .filter_map(|r| r.header("x-hookgate-event-id").map(str::to_owned))
            .collect()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }
}

impl Drop for FakeDownstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let (status, delay) = {
        let mut behaviour = state.behaviour.lock().expect("lock");
        let status = behaviour.statuses[0];
        if behaviour.statuses.len() > 1 {
            behaviour.statuses.remove(0);
        }
        (status, behaviour.delay)
    };
    state.received.lock().expect("lock").push(Received {
        at: std::time::Instant::now(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    tokio::time::sleep(delay).await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
    *response.status_mut() = status;
    Ok(response)
}
