//! `hookgate hotpath`: runs signed requests through the gateway's whole stack in this process (the door's
//! layers, the router, then the source's stack), for instruction counts under `valgrind --tool=callgrind`
//! (`bench/instructions.sh`). Every request is signed before the first is sent, so that two runs that sign
//! the same number and send different numbers differ by exactly the requests' handling: the door's layers,
//! verification of a 1 KiB body, claim and commit in the memory store, and the forward (to the `discard`
//! handler, or with `--loopback` over HTTP to an echo downstream in this process).

use std::time::Duration;

use bytes::Bytes;
use hookgate::config;
use hookgate::gateway::{Backends, Gateway};
use hookgate::peer::PeerAddr;
use hookgate::stack::GatewayService;
use http_body_util::Full;
use tower::ServiceExt;

#[derive(Debug, Clone, clap::Args)]
pub struct HotpathArgs {
    /// Requests to send.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Requests to sign beforehand (at least `--requests`): keep it the same across the runs compared.
    #[arg(long)]
    signed: Option<usize>,
    /// Forward over loopback HTTP to an echo downstream in this process, instead of to `discard`.
    #[arg(long)]
    loopback: bool,
}

fn config_text(forward: &str) -> String {
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [rate_limit]
        per_second = 1000000
        burst = 1000000
        [dedup]
        store = "memory"
        max_keys = 1000000
        [[source]]
        name = "hotpath"
        path = "/hotpath"
        scheme = "github"
        secrets = ["hotpath-secret-0123456789"]
        forward = {forward}
        "#
    )
}

/// A 1 KiB JSON body with the id `n`.
fn body(n: usize) -> Bytes {
    let head = format!("{{\"id\":\"evt_{n:012}\",\"type\":\"hotpath\",\"pad\":\"");
    let pad = 1024usize.saturating_sub(head.len() + 2);
    Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
}

/// The requests of one run, signed, and the stack they go through.
struct Prepared {
    stack: GatewayService,
    requests: Vec<Request>,
}

type Request = http::Request<Full<Bytes>>;

pub fn run(args: HotpathArgs) -> Result<(), String> {
    let signed = args.signed.unwrap_or(args.requests);
    if signed < args.requests {
        return Err("--signed must be at least --requests".to_owned());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let Prepared { stack, mut requests } = runtime.block_on(prepare(signed, args.loopback))?;
    // The requests not sent are dropped after the count, not in it.
    let unsent = requests.split_off(args.requests);
    let forwarded = drive(&runtime, &stack, requests)?;
    drop(unsent);
    println!("{forwarded} requests forwarded");
    Ok(())
}

/// Builds the gateway, signs `signed` requests, and sends one more (id `signed`) through the stack, so that
/// whatever is made on first use (a clock's calibration, which spins on the wall clock; tracing's call
/// sites) is made here and not in [`drive`].
async fn prepare(signed: usize, loopback: bool) -> Result<Prepared, String> {
    let forward = if loopback {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let echo = super::echo::EchoArgs {
            listen: addr,
            status: 200,
            delay: Duration::ZERO,
        };
        tokio::spawn(super::echo::serve(listener, echo, std::future::pending()));
        format!("{{ kind = \"http\", url = \"http://{addr}/in\", timeout = \"5s\" }}")
    } else {
        "{ kind = \"discard\" }".to_owned()
    };
    let path = std::path::Path::new("hotpath.toml");
    let config = config::parse(&config_text(&forward), path).map_err(|e| e.to_string())?;
    let backends = Backends::connect(&config, path).map_err(|e| e.to_string())?;
    let gateway = Gateway::build(&config, &backends, path).map_err(|e| e.to_string())?;
    let source = gateway.sources.first().ok_or("no source")?;
    let mut requests = (0..=signed)
        .map(|n| {
            let body = body(n);
            let headers = source.verifier.sign(&body, &format!("d-{n}"), 0);
            let mut request = http::Request::post("/hotpath")
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            for (name, value) in headers {
                let value = http::HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
                request.headers_mut().insert(name, value);
            }
            // What the server puts on every request: the connection's peer.
            request
                .extensions_mut()
                .insert(PeerAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
            Ok(request)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let stack = hookgate::stack::build(&gateway);
    let warm_up = requests.pop().ok_or("no request")?;
    expect_forwarded(stack.clone().oneshot(warm_up).await)?;
    Ok(Prepared { stack, requests })
}

/// Sends `requests` through the stack, one after the other. `bench/instructions.sh` counts the instructions
/// inside this function only (`--toggle-collect`), so it must stay a function of its own.
#[inline(never)]
fn drive(runtime: &tokio::runtime::Runtime, stack: &GatewayService, requests: Vec<Request>) -> Result<usize, String> {
    runtime.block_on(async {
        let mut forwarded = 0;
        for request in requests {
            expect_forwarded(stack.clone().oneshot(request).await)?;
            forwarded += 1;
        }
        Ok(forwarded)
    })
}

/// Succeeds on `200 forwarded`, the answer of a delivered event.
fn expect_forwarded<B, E: std::fmt::Debug>(answer: Result<http::Response<B>, E>) -> Result<(), String> {
    let response = answer.map_err(|e| format!("a request failed: {e:?}"))?;
    let outcome = response
        .headers()
        .get("x-hookgate-outcome")
        .and_then(|v| v.to_str().ok());
    match (response.status().as_u16(), outcome) {
        (200, Some("forwarded")) => Ok(()),
        (status, outcome) => Err(format!("a request was not forwarded: {status} {outcome:?}")),
    }
}
