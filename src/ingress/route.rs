//! Step 2, routing: the path selects exactly one source. An unknown path is `404 not_found`, any method
//! but POST `405 method_not_allowed`. Below this layer every request carries its `Arc<Source>`, and every
//! answer is labelled with the source's name.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use std::net::IpAddr;

use http::{Method, Request};
use tower::{Layer, Service};

use crate::error::{Accepted, Rejection};
use crate::gateway::Source;
use crate::ingress::client_ip::ClientIp;
use crate::metrics::UNKNOWN_SOURCE;

/// A finished request below the router: its source label and its fate.
#[derive(Debug)]
pub struct Handled {
    pub source: Arc<str>,
    /// The resolved client, for the logs.
    pub client_ip: Option<IpAddr>,
    pub result: Result<Accepted, Rejection>,
}

/// Path to source.
#[derive(Debug)]
pub struct Routes {
    by_path: HashMap<String, Arc<Source>>,
    unknown: Arc<str>,
}

impl Routes {
    pub fn new(sources: impl IntoIterator<Item = Arc<Source>>) -> Self {
        Routes {
            by_path: sources.into_iter().map(|s| (s.path.clone(), s)).collect(),
            unknown: Arc::from(UNKNOWN_SOURCE),
        }
    }

    pub fn get(&self, path: &str) -> Option<&Arc<Source>> {
        self.by_path.get(path)
    }
}

#[derive(Debug, Clone)]
pub struct RouteLayer {
    routes: Arc<Routes>,
}

impl RouteLayer {
    pub fn new(routes: Arc<Routes>) -> Self {
        RouteLayer { routes }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            inner,
            routes: self.routes.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteService<S> {
    inner: S,
    routes: Arc<Routes>,
}

impl<S, B> Service<Request<B>> for RouteService<S>
where
    S: Service<Request<B>, Response = Accepted, Error = Rejection>,
{
    type Response = Handled;
    type Error = Infallible;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner stages are always ready (they hold no capacity of their own); an error would be a
        // refusal, which `call` reports per request.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0);
        let Some(source) = self.routes.get(req.uri().path()) else {
            return RouteFuture::ready(self.routes.unknown.clone(), client_ip, Rejection::NotFound);
        };
        let name = source.name.clone();
        if req.method() != Method::POST {
            return RouteFuture::ready(name, client_ip, Rejection::MethodNotAllowed);
        }
        req.extensions_mut().insert(source.clone());
        RouteFuture {
            state: State::Inner {
                future: self.inner.call(req),
            },
            source: Some(name),
            client_ip,
        }
    }
}

pin_project_lite::pin_project! {
    /// Either an immediate refusal or the inner stages' future, labelled with the source.
    pub struct RouteFuture<F> {
        #[pin]
        state: State<F>,
        source: Option<Arc<str>>,
        client_ip: Option<IpAddr>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Ready { rejection: Option<Rejection> },
        Inner { #[pin] future: F },
    }
}

impl<F> RouteFuture<F> {
    fn ready(source: Arc<str>, client_ip: Option<IpAddr>, rejection: Rejection) -> Self {
        RouteFuture {
            state: State::Ready {
                rejection: Some(rejection),
            },
            source: Some(source),
            client_ip,
        }
    }
}

impl<F> Future for RouteFuture<F>
where
    F: Future<Output = Result<Accepted, Rejection>>,
{
    type Output = Result<Handled, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Ready { rejection } => match rejection.take() {
                Some(rejection) => Err(rejection),
                None => panic!("RouteFuture polled after completion"),
            },
            StateProj::Inner { future } => ready!(future.poll(cx)),
        };
        let source = this.source.take().unwrap_or_else(|| Arc::from(UNKNOWN_SOURCE));
        Poll::Ready(Ok(Handled {
            source,
            client_ip: *this.client_ip,
            result,
        }))
    }
}
