//! The verification stages of a source's stack: [`VerifyLayer`] reads the body and checks its signature
//! (`401 bad_signature`), and [`EventIdLayer`] takes the event id of what was verified (`400
//! bad_request`). The inner stages take a [`Verified`] request or an [`Event`], nothing else.

use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::Either;
use http::Request;
use hyper::body::Body;
use tower::{Layer, Service};

use tower::util::BoxCloneSyncService;

use super::event_id::{Event, EventIdError, Locator};
use super::{Keep, Target, Unverified, Verified, Verifier, VerifyError};
use crate::body::{self, BodyError};
use crate::peer::{IpDenied, ShadowRefusal};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a shadow source's refused requests go instead of being refused: the source's handler, around
/// every later stage. `R` and `E` are the stack's answer and refusal types.
pub type Bypass<R, E> = BoxCloneSyncService<Unverified, R, E>;

/// A shadow source's name and its [`Bypass`].
type Shadow<R, E> = Option<(Arc<str>, Bypass<R, E>)>;

/// Builds [`VerifyService`] around one source's verifier.
pub struct VerifyLayer<R, E> {
    source: Arc<str>,
    verifier: Arc<Verifier>,
    clock: Clock,
    urls: Option<Arc<UrlRebuilder>>,
    bypass: Option<Bypass<R, E>>,
    keep: Option<Arc<dyn Keep>>,
}

impl<R, E> Clone for VerifyLayer<R, E> {
    fn clone(&self) -> Self {
        VerifyLayer {
            source: self.source.clone(),
            verifier: self.verifier.clone(),
            clock: self.clock,
            urls: self.urls.clone(),
            bypass: self.bypass.clone(),
            keep: self.keep.clone(),
        }
    }
}

impl<R, E> std::fmt::Debug for VerifyLayer<R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyLayer")
            .field("source", &self.source)
            .field("verifier", &self.verifier)
            .field("shadow", &self.bypass.is_some())
            .finish()
    }
}

impl<R, E> VerifyLayer<R, E> {
    /// Checks each request of `source` against `verifier`'s keys, dating timestamps by `clock`.
    pub fn new(source: Arc<str>, verifier: Arc<Verifier>, clock: Clock) -> Self {
        let urls = verifier.signs_url().then(|| Arc::new(UrlRebuilder::new(None)));
        VerifyLayer {
            source,
            verifier,
            clock,
            urls,
            bypass: None,
            keep: None,
        }
    }

    /// For a quarantining source: a request refused here, or marked by an earlier stage with a
    /// [`ShadowRefusal`], is handed to `keep`, then refused as usual.
    pub fn quarantine(mut self, keep: Option<Arc<dyn Keep>>) -> Self {
        self.keep = keep;
        self
    }

    /// For a shadow source: a request that fails verification, or that an earlier stage marked with a
    /// [`ShadowRefusal`], goes to `bypass` with its verdict instead of being refused.
    pub fn shadow(mut self, bypass: Option<Bypass<R, E>>) -> Self {
        self.bypass = bypass;
        self
    }

    /// For a URL-signed scheme: the URL the provider was given (`public_url`), instead of one rebuilt
    /// from the request.
    pub fn with_public_url(mut self, public_url: Option<&str>) -> Self {
        if self.verifier.signs_url() {
            self.urls = Some(Arc::new(UrlRebuilder::new(public_url)));
        }
        self
    }
}

impl<S> Layer<S> for VerifyLayer<S::Response, S::Error>
where
    S: Service<Verified>,
{
    type Service = VerifyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            source: self.source.clone(),
            verifier: self.verifier.clone(),
            clock: self.clock,
            urls: self.urls.clone(),
            bypass: self.bypass.clone(),
            keep: self.keep.clone(),
        }
    }
}

/// Rebuilds the public URL a URL-signed scheme's provider signed.
#[derive(Debug)]
pub struct UrlRebuilder {
    public_url: Option<String>,
    /// Set once a mismatch has been logged with the URLs tried.
    logged: AtomicBool,
}

const FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

impl UrlRebuilder {
    fn new(public_url: Option<&str>) -> Self {
        UrlRebuilder {
            public_url: public_url.map(|u| u.trim_end_matches('?').to_owned()),
            logged: AtomicBool::new(false),
        }
    }

    /// The method and candidate URLs of `parts`: `public_url` with the request's query; else scheme and
    /// host from a trusted proxy's `X-Forwarded-Proto` / `X-Forwarded-Host`, else from the connection and
    /// `Host`, with the request's path and query. Each with and without its port.
    fn target(&self, parts: &http::request::Parts) -> Target {
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let base = match &self.public_url {
            Some(url) => Some(format!("{url}{query}")),
            None => {
                let trusted = parts.extensions.get::<crate::peer::FromTrustedProxy>().is_some();
                let forwarded = |name: &http::HeaderName| {
                    trusted
                        .then(|| parts.headers.get(name)?.to_str().ok())
                        .flatten()
                        .and_then(|v| v.split(',').next())
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                };
                let over_tls = parts.extensions.get::<crate::peer::OverTls>().is_some();
                let scheme = forwarded(&FORWARDED_PROTO).unwrap_or(if over_tls { "https" } else { "http" });
                let host = forwarded(&FORWARDED_HOST)
                    .or_else(|| parts.headers.get(http::header::HOST)?.to_str().ok())
                    .or_else(|| parts.uri.authority().map(|a| a.as_str()));
                host.map(|host| format!("{scheme}://{host}{}{query}", parts.uri.path()))
            }
        };
        Target {
            method: parts.method.clone(),
            urls: base.map(|b| url_variants(&b)).unwrap_or_default(),
        }
    }

    /// Logs, once per source, which URLs a mismatched request was checked against.
    fn log_mismatch(&self, target: &Target) {
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                urls = ?target.urls,
                "signature mismatch on a URL-signed scheme; if the sender is genuine, set `public_url` to the \
                 URL given to the provider (logged once)"
            );
        }
    }
}

/// `url`, and the same URL with its port removed (when it has one) or with the scheme's default port
/// added (when it has none): providers sign either form.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The port follows the last `:` that is outside an IPv6 literal's brackets.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    match authority[host_end..].rfind(':') {
        Some(colon) => {
            let host = &authority[..host_end + colon];
            variants.push(format!("{scheme}://{host}{tail}"));
        }
        None => {
            let port = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
            variants.push(format!("{scheme}://{authority}:{port}{tail}"));
        }
    }
    variants
}

/// Reads the body, verifies it, and hands the inner stage a [`Verified`] request.
pub struct VerifyService<S: Service<Verified>> {
    inner: S,
    source: Arc<str>,
    verifier: Arc<Verifier>,
    clock: Clock,
    urls: Option<Arc<UrlRebuilder>>,
    bypass: Option<Bypass<S::Response, S::Error>>,
    keep: Option<Arc<dyn Keep>>,
}

impl<S: Service<Verified> + Clone> Clone for VerifyService<S> {
    fn clone(&self) -> Self {
        VerifyService {
            inner: self.inner.clone(),
            source: self.source.clone(),
            verifier: self.verifier.clone(),
            clock: self.clock,
            urls: self.urls.clone(),
            bypass: self.bypass.clone(),
            keep: self.keep.clone(),
        }
    }
}

impl<S: Service<Verified>> std::fmt::Debug for VerifyService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyService")
            .field("source", &self.source)
            .field("shadow", &self.bypass.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for VerifyService<S>
where
    S: Service<Verified> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: From<BodyError> + From<VerifyError> + From<IpDenied>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service goes into the future; its clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let clock = self.clock;
        let urls = self.urls.clone();
        let source = self.source.clone();
        let bypass = self.bypass.clone();
        let keep = self.keep.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let body = body::collect(body).await?;
            let target = urls.as_ref().map(|u| u.target(&parts));
            let refused_before = parts.extensions.get::<ShadowRefusal>().copied();
            // Only a shadow or quarantining source needs the headers again after a refusal.
            let kept_headers = (bypass.is_some() || keep.is_some()).then(|| parts.headers.clone());
            let headers = std::mem::take(&mut parts.headers);
            let result = verifier.verify_request(target.as_ref(), headers, body.clone(), clock.now());
            if let (Err(VerifyError::Mismatch), Some(urls), Some(target)) = (&result, &urls, &target) {
                urls.log_mismatch(target);
            }
            // The first refusal, in request order, is the verdict.
            let refusal = match (refused_before, &result) {
                (Some(refused), _) => Some((refused.verdict, "none")),
                (None, Err(error)) => Some(("bad_signature", error.reason())),
                (None, Ok(_)) => None,
            };
            if let Some((verdict, reason)) = refusal {
                let headers = kept_headers.unwrap_or_default();
                if let Some(mut bypass) = bypass {
                    // Shadow mode: the request goes on, around the later stages, with its verdict.
                    let unverified = Unverified::new(headers, body, parts.extensions, verdict, reason);
                    std::future::poll_fn(|cx| bypass.poll_ready(cx)).await?;
                    return bypass.call(unverified).await;
                }
                if let Some(keep) = keep {
                    keep.keep(Unverified::new(headers, body, parts.extensions, verdict, reason))
                        .await;
                }
                // Refused as enforce mode refuses: the earlier stage's refusal first.
                return match result {
                    Err(error) if refused_before.is_none() => Err(error.into()),
                    _ => Err(IpDenied.into()),
                };
            }
            let mut verified = result?;
            crate::metrics::signature_match(&source, verified.key_index());
            verified.extensions = parts.extensions;
            inner.call(verified).await
        })
    }
}

/// The time that dates signed timestamps: the system's, or one fixed instant, so that a recorded request
/// (a provider's published example, say) can be checked as of the moment it was signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Always this Unix second.
    Fixed(i64),
}

impl Clock {
    /// Now, in Unix seconds.
    pub fn now(self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Clock::Fixed(at) => at,
        }
    }
}

/// Builds [`EventIdService`] around one source's event-id locator.
pub struct EventIdLayer<R, E> {
    locator: Arc<Locator>,
    shadow: Shadow<R, E>,
    keep: Option<Arc<dyn Keep>>,
}

impl<R, E> Clone for EventIdLayer<R, E> {
    fn clone(&self) -> Self {
        EventIdLayer {
            locator: self.locator.clone(),
            shadow: self.shadow.clone(),
            keep: self.keep.clone(),
        }
    }
}

impl<R, E> std::fmt::Debug for EventIdLayer<R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIdLayer")
            .field("locator", &self.locator)
            .field("shadow", &self.shadow.is_some())
            .finish()
    }
}

impl<R, E> EventIdLayer<R, E> {
    /// Reads each event's id where `locator` says.
    pub fn new(locator: Arc<Locator>) -> Self {
        EventIdLayer {
            locator,
            shadow: None,
            keep: None,
        }
    }

    /// For a quarantining source: an event without a usable id is handed to `keep`, then refused.
    pub fn quarantine(mut self, keep: Option<Arc<dyn Keep>>) -> Self {
        self.keep = keep;
        self
    }

    /// For a shadow source named `source`: an event without a usable id goes to `bypass` as
    /// `bad_request` instead of being refused, and every event with one counts as the verdict `pass`.
    pub fn shadow(mut self, source: Arc<str>, bypass: Option<Bypass<R, E>>) -> Self {
        self.shadow = bypass.map(|b| (source, b));
        self
    }
}

impl<S> Layer<S> for EventIdLayer<S::Response, S::Error>
where
    S: Service<Event>,
{
    type Service = EventIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        EventIdService {
            inner,
            locator: self.locator.clone(),
            shadow: self.shadow.clone(),
            keep: self.keep.clone(),
        }
    }
}

/// Takes the id of a verified event, or refuses it with a ready answer.
pub struct EventIdService<S: Service<Event>> {
    inner: S,
    locator: Arc<Locator>,
    shadow: Shadow<S::Response, S::Error>,
    keep: Option<Arc<dyn Keep>>,
}

impl<S: Service<Event> + Clone> Clone for EventIdService<S> {
    fn clone(&self) -> Self {
        EventIdService {
            inner: self.inner.clone(),
            locator: self.locator.clone(),
            shadow: self.shadow.clone(),
            keep: self.keep.clone(),
        }
    }
}

impl<S: Service<Event>> std::fmt::Debug for EventIdService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIdService")
            .field("locator", &self.locator)
            .field("shadow", &self.shadow.is_some())
            .finish_non_exhaustive()
    }
}

type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S> Service<Verified> for EventIdService<S>
where
    S: Service<Event>,
    S::Error: From<EventIdError> + Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Either<Ready<Result<S::Response, S::Error>>, BoxFuture<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, verified: Verified) -> Self::Future {
        match (self.locator.extract(&verified), &self.shadow) {
            (Ok(id), shadow) => {
                if let Some((source, _)) = shadow {
                    crate::metrics::shadow_verdict(source, "pass", "none");
                }
                Either::Right(self.inner.call(Event { verified, id }))
            }
            (Err(error), Some((_, bypass))) => {
                let mut bypass = bypass.clone();
                let unverified = Unverified::from_verified(verified, error.reason());
                Either::Left(Either::Right(Box::pin(async move {
                    std::future::poll_fn(|cx| bypass.poll_ready(cx)).await?;
                    bypass.call(unverified).await
                })))
            }
            (Err(error), None) => match self.keep.clone() {
                Some(keep) => {
                    let kept = Unverified::from_verified(verified, error.reason());
                    Either::Left(Either::Right(Box::pin(async move {
                        keep.keep(kept).await;
                        Err(error.into())
                    })))
                }
                None => Either::Left(Either::Left(ready(Err(error.into())))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{SchemeKind, Secret};
    use crate::error::{Accepted, Rejection};

    fn verifier() -> Arc<Verifier> {
        let secrets = [Secret::new("It's a Secret to Everybody")];
        Arc::new(Verifier::new(SchemeKind::Github, None, &secrets, std::time::Duration::ZERO).expect("verifier"))
    }

    /// GitHub's documented example: the secret "It's a Secret to Everybody" over "Hello, World!".
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn request(signature: &str, delivery: Option<&str>) -> Request<Full<Bytes>> {
        let mut req = Request::post("/")
            .header("x-hub-signature-256", signature)
            .body(Full::new(Bytes::from_static(b"Hello, World!")))
            .expect("request");
        if let Some(id) = delivery {
            req.headers_mut()
                .insert("x-github-delivery", id.parse().expect("value"));
        }
        req.extensions_mut()
            .insert(crate::peer::ClientIp("192.0.2.9".parse().expect("ip")));
        req
    }

    #[tokio::test]
    async fn a_valid_signature_reaches_the_inner_stage_with_its_extensions_and_a_bad_one_does_not() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let inner = tower::service_fn(move |verified: Verified| {
            seen.fetch_add(1, Ordering::SeqCst);
            let client = verified.extensions().get::<crate::peer::ClientIp>().copied();
            async move {
                assert_eq!(client, Some(crate::peer::ClientIp("192.0.2.9".parse().expect("ip"))));
                assert_eq!(verified.body().as_ref(), b"Hello, World!");
                Ok::<_, Rejection>(Accepted::Forwarded)
            }
        });
        let service = VerifyLayer::new(Arc::from("t"), verifier(), Clock::System).layer(inner);
        let ok = service.clone().oneshot(request(SIGNATURE, None)).await;
        assert!(matches!(ok, Ok(Accepted::Forwarded)), "{ok:?}");
        let tampered = SIGNATURE.replace("e17", "e18");
        let refused = service.oneshot(request(&tampered, None)).await;
        assert!(
            matches!(refused, Err(Rejection::BadSignature(VerifyError::Mismatch))),
            "{refused:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn urls_are_tried_with_and_without_their_port() {
        assert_eq!(
            url_variants("https://h.example:8443/p?a=1"),
            ["https://h.example:8443/p?a=1", "https://h.example/p?a=1"]
        );
        assert_eq!(
            url_variants("https://h.example/p"),
            ["https://h.example/p", "https://h.example:443/p"]
        );
        assert_eq!(url_variants("http://[::1]/p"), ["http://[::1]/p", "http://[::1]:80/p"]);
        assert_eq!(
            url_variants("http://[::1]:81?x"),
            ["http://[::1]:81?x", "http://[::1]?x"]
        );
    }

    /// The forwarded scheme and host count only from a trusted proxy; `public_url` wins over both, and
    /// the query is always the request's.
    #[test]
    fn the_public_url_is_rebuilt_from_trusted_headers_only() {
        let request = |trusted: bool| {
            let mut req = Request::post("/hook?x=1")
                .header("host", "inner.local:8080")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "hooks.example.com")
                .body(())
                .expect("request");
            if trusted {
                req.extensions_mut().insert(crate::peer::FromTrustedProxy);
            }
            req.into_parts().0
        };
        let rebuilt = UrlRebuilder::new(None);
        assert_eq!(
            rebuilt.target(&request(true)).urls[0],
            "https://hooks.example.com/hook?x=1"
        );
        assert_eq!(
            rebuilt.target(&request(false)).urls[0],
            "http://inner.local:8080/hook?x=1"
        );
        let configured = UrlRebuilder::new(Some("https://public.example/in"));
        assert_eq!(
            configured.target(&request(false)).urls[0],
            "https://public.example/in?x=1"
        );
    }

    #[tokio::test]
    async fn the_event_id_layer_hands_on_the_id_or_refuses_without_calling_inner() {
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ids.clone();
        let inner = tower::service_fn(move |event: Event| {
            seen.lock().expect("lock").push(event.id.as_str().to_owned());
            async { Ok::<_, Rejection>(Accepted::Forwarded) }
        });
        let locator = Arc::new(Locator::new(None, SchemeKind::Github).expect("github has a default id"));
        let service =
            VerifyLayer::new(Arc::from("t"), verifier(), Clock::System).layer(EventIdLayer::new(locator).layer(inner));
        let ok = service.clone().oneshot(request(SIGNATURE, Some("d-1"))).await;
        assert!(ok.is_ok(), "{ok:?}");
        let missing = service.oneshot(request(SIGNATURE, None)).await;
        assert!(
            matches!(missing, Err(Rejection::EventId(EventIdError::Missing(_)))),
            "{missing:?}"
        );
        assert_eq!(*ids.lock().expect("lock"), ["d-1"]);
    }
}
