//! The hot path, piece by piece: verification per scheme at 1 KiB and 64 KiB, event-id extraction from
//! JSON, and one whole request through the stack (in process, no sockets) with a `discard` handler.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookgate::config::{EventIdSpec, SchemeKind, Secret};
use hookgate::verify::Verifier;
use hookgate::verify::event_id::Locator;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use tower::ServiceExt;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JSON event of about `size` bytes with its id first.
fn body(size: usize) -> Bytes {
    let head = r#"{"id":"evt_1NqYQ2LkdIwHu7ix","event_id":"Ev0123456789","type":"invoice.paid","data":{"note":""#;
    let tail = r#""}}"#;
    let mut text = String::from(head);
    text.extend(std::iter::repeat_n('x', size.saturating_sub(head.len() + tail.len())));
    text.push_str(tail);
    Bytes::from(text)
}

fn headers(pairs: Vec<(http::HeaderName, String)>) -> HeaderMap {
    pairs
        .into_iter()
        .map(|(k, v)| (k, HeaderValue::from_str(&v).expect("value")))
        .collect()
}

fn verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for size in [1024, 64 * 1024] {
        let body = body(size);
        group.throughput(Throughput::Bytes(size as u64));
        for scheme in [
            SchemeKind::Stripe,
            SchemeKind::Github,
            SchemeKind::Shopify,
            SchemeKind::Slack,
            SchemeKind::Standard,
        ] {
            let secret = if scheme == SchemeKind::Standard {
                "whsec_c2VjcmV0LWtleS1ieXRlcw=="
            } else {
                "secret"
            };
            let verifier =
                Verifier::new(scheme, None, &[Secret::new(secret)], Duration::from_secs(300)).expect("verifier");
            let signed = headers(verifier.sign(&body, "msg_1", now()));
            group.bench_with_input(BenchmarkId::new(scheme.as_str(), size), &size, |b, _| {
                b.iter(|| {
                    verifier
                        .verify(black_box(signed.clone()), black_box(body.clone()), now())
                        .expect("valid")
                })
            });
        }
    }
    group.finish();
}

fn event_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_id_json");
    let verifier = Verifier::new(
        SchemeKind::Github,
        None,
        &[Secret::new("bench-secret-0123456789")],
        Duration::from_secs(300),
    )
    .expect("verifier");
    for size in [1024, 64 * 1024] {
        let body = body(size);
        let verified = verifier
            .verify(headers(verifier.sign(&body, "d", now())), body, now())
            .expect("valid");
        for (name, pointer) in [("first_key", "/id"), ("nested_missing", "/data/object/id")] {
            let locator =
                Locator::new(Some(&EventIdSpec::Json(pointer.to_owned())), SchemeKind::Github).expect("locator");
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| locator.extract(black_box(&verified)))
            });
        }
    }
    group.finish();
}

fn whole_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let text = r#"
        [rate_limit]
        per_second = 1000000000
        burst = 1000000000
        [dedup]
        max_keys = 1000000
        [[source]]
        name = "bench"
        path = "/webhooks/bench"
        scheme = "github"
        secrets = ["bench-secret-0123456789"]
        forward = { kind = "discard" }
    "#;
    let config = hookgate::config::parse(text, Path::new("bench.toml")).expect("config");
    let stack = runtime.block_on(async {
        let path = Path::new("bench.toml");
        let backends = hookgate::gateway::Backends::connect(&config, path).expect("backends");
        let gateway = hookgate::gateway::Gateway::build(&config, &backends, path).expect("gateway");
        hookgate::stack::build(&gateway)
    });
    let verifier = Verifier::new(
        SchemeKind::Github,
        None,
        &[Secret::new("bench-secret-0123456789")],
        Duration::ZERO,
    )
    .expect("v");
    let body = body(1024);
    let peer = hookgate::peer::PeerAddr("203.0.113.7:40000".parse().expect("addr"));
    let mut n = 0u64;
    c.bench_function("stack/verify_memory_dedup_discard_1k", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let mut request = Request::post("/webhooks/bench")
                .body(Full::new(body.clone()))
                .expect("request");
            *request.headers_mut() = headers(verifier.sign(&body, &format!("d-{n}"), now()));
            request.extensions_mut().insert(peer);
            let service = stack.clone();
            async move {
                let response = service.oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), 200);
            }
        })
    });
}

criterion_group!(benches, verification, event_ids, whole_request);
criterion_main!(benches);
