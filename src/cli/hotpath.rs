//! `hookgate hotpath`: runs signed requests through one source's stack in this process, for instruction
//! counts under `valgrind --tool=callgrind` (`bench/instructions.sh`). Every request is signed before the
//! first is sent, so that two runs that sign the same number and send different numbers differ by exactly
//! the requests' handling: verification of a 1 KiB body, claim and commit in the memory store, and the
//! forward (to the `discard` handler, or with `--loopback` over HTTP to an echo downstream in this process).

use std::time::Duration;

use bytes::Bytes;
use hookgate::config;
use hookgate::error::Accepted;
use hookgate::gateway::{Backends, Gateway};
use hookgate::peer::ClientIp;
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

pub fn run(args: HotpathArgs) -> Result<(), String> {
    let signed = args.signed.unwrap_or(args.requests);
    if signed < args.requests {
        return Err("--signed must be at least --requests".to_owned());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let forward = if args.loopback {
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
        let requests: Vec<_> = (0..signed)
            .map(|n| {
                let body = body(n);
                let headers = source.verifier.sign(&body, &format!("d-{n}"), 0);
                (headers, body)
            })
            .collect();
        let stack = hookgate::stack::source_stack(&gateway, source);
        let mut forwarded = 0;
        for (headers, body) in requests.into_iter().take(args.requests) {
            let mut request = http::Request::post("/hotpath")
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            for (name, value) in headers {
                let value = http::HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
                request.headers_mut().insert(name, value);
            }
            request.extensions_mut().insert(ClientIp([127, 0, 0, 1].into()));
            match stack.clone().oneshot(request).await {
                Ok(Accepted::Forwarded) => forwarded += 1,
                other => return Err(format!("a request was not forwarded: {other:?}")),
            }
        }
        println!("{forwarded} requests forwarded");
        Ok(())
    })
}
