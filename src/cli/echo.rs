//! `hookgate echo`: a demo downstream application. It answers every POST with a fixed status after a fixed
//! delay, and counts what it received (`GET /stats`). docker-compose uses it behind the gateway, and the
//! benchmark uses it as the application.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Status to answer POSTs with.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Time to wait before answering, such as `50ms`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
}

#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Binds `args.listen` and serves until `shutdown` completes.
pub async fn run(args: EchoArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, status = args.status, delay = ?args.delay, "echo downstream is serving");
    serve(listener, args, shutdown).await
}

/// Serves on a bound listener until `shutdown` completes.
pub async fn serve(listener: TcpListener, args: EchoArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let status = StatusCode::from_u16(args.status).map_err(|_| format!("{} is not an HTTP status", args.status))?;
    let counts = Arc::new(Counts::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let counts = counts.clone();
                let delay = args.delay;
                let service = service_fn(move |req| answer(req, status, delay, counts.clone()));
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        }
    }
    tracing::info!(
        received = counts.requests.load(Ordering::Relaxed),
        bytes = counts.bytes.load(Ordering::Relaxed),
        "echo downstream stopped"
    );
    Ok(())
}

async fn answer(
    req: Request<Incoming>,
    status: StatusCode,
    delay: Duration,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        let body = match req.uri().path() {
            "/stats" => format!(
                "{{\"received\":{},\"bytes\":{}}}\n",
                counts.requests.load(Ordering::Relaxed),
                counts.bytes.load(Ordering::Relaxed)
            ),
            _ => "ok\n".to_owned(),
        };
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let size = match req.into_body().collect().await {
        Ok(body) => body.to_bytes().len() as u64,
        Err(_) => 0,
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(size, Ordering::Relaxed);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}\n")));
    *response.status_mut() = status;
    Ok(response)
}
