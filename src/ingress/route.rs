//! Step 2, routing: the path selects exactly one source, whose own stack then serves the request. An
//! unknown path is `404 not_found`, any method but POST `405 method_not_allowed`. Every answer leaves the
//! router labelled with the source's name (or `_unknown`), for the metrics and the logs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Method, Request};
use tower::Service;

use crate::peer::ClientIp;

/// The label of requests whose path selects no source.
pub const UNKNOWN_SOURCE: &str = "_unknown";

/// The refusals of this stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No source serves the path.
    #[error("no source serves this path")]
    NotFound,
    /// The path is a source's, but the method is not POST.
    #[error("only POST is accepted")]
    MethodNotAllowed,
}

/// A request's fate as the router hands it up: which source it was for, who sent it, and what happened.
#[derive(Debug)]
pub struct Routed<T> {
    /// The source's name, or `_unknown`.
    pub source: Arc<str>,
    /// The resolved client, for the logs.
    pub client_ip: Option<IpAddr>,
    /// What the source's stack answered, or the router's own refusal.
    pub result: T,
}

/// One source's name and the stack that serves it.
#[derive(Debug, Clone)]
struct Route<S> {
    name: Arc<str>,
    service: S,
}

/// Path to source: the only service of the stack that holds more than one inner service.
#[derive(Debug)]
pub struct Router<S> {
    by_path: Arc<HashMap<String, Route<S>>>,
    unknown: Arc<str>,
}

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            by_path: self.by_path.clone(),
            unknown: self.unknown.clone(),
        }
    }
}

impl<S> Router<S> {
    /// Routes each `(path, name, service)`.
    pub fn new(routes: impl IntoIterator<Item = (String, Arc<str>, S)>) -> Self {
        Router {
            by_path: Arc::new(
                routes
                    .into_iter()
                    .map(|(path, name, service)| (path, Route { name, service }))
                    .collect(),
            ),
            unknown: Arc::from(UNKNOWN_SOURCE),
        }
    }
}

impl<S, B> Service<Request<B>> for Router<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: From<RouteError>,
{
    type Response = Routed<Result<S::Response, S::Error>>;
    type Error = Infallible;
    type Future = RouteFuture<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each source's stack is readied when it is called: the stages hold no capacity of their own.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0);
        let Some(route) = self.by_path.get(req.uri().path()) else {
            return RouteFuture::refused(self.unknown.clone(), client_ip, RouteError::NotFound.into());
        };
        if req.method() != Method::POST {
            return RouteFuture::refused(route.name.clone(), client_ip, RouteError::MethodNotAllowed.into());
        }
        // A clone of the source's stack is a handful of reference counts. Every stage of it is always
        // ready (none holds capacity of its own: the in-flight cap refuses in `call`), so it is called
        // without waiting for readiness.
        let mut service = route.service.clone();
        RouteFuture {
            state: State::Inner {
                future: service.call(req),
            },
            source: Some(route.name.clone()),
            client_ip,
            _response: std::marker::PhantomData,
        }
    }
}

pin_project_lite::pin_project! {
    /// Either the router's own refusal or the source stack's future, labelled with the source.
    pub struct RouteFuture<F, R, E> {
        #[pin]
        state: State<F, E>,
        source: Option<Arc<str>>,
        client_ip: Option<IpAddr>,
        _response: std::marker::PhantomData<fn() -> R>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Refused { error: Option<E> },
        Inner { #[pin] future: F },
    }
}

impl<F, R, E> RouteFuture<F, R, E> {
    fn refused(source: Arc<str>, client_ip: Option<IpAddr>, error: E) -> Self {
        RouteFuture {
            state: State::Refused { error: Some(error) },
            source: Some(source),
            client_ip,
            _response: std::marker::PhantomData,
        }
    }
}

impl<F, R, E> Future for RouteFuture<F, R, E>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<Routed<Result<R, E>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Refused { error } => match error.take() {
                Some(error) => Err(error),
                None => panic!("RouteFuture polled after completion"),
            },
            StateProj::Inner { future } => ready!(future.poll(cx)),
        };
        let source = this.source.take().unwrap_or_else(|| Arc::from(UNKNOWN_SOURCE));
        Poll::Ready(Ok(Routed {
            source,
            client_ip: *this.client_ip,
            result,
        }))
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::error::{Accepted, Rejection};

    fn router() -> Router<tower::util::BoxCloneService<Request<()>, Accepted, Rejection>> {
        let ok = tower::util::BoxCloneService::new(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Rejection>(Accepted::Forwarded)
        }));
        Router::new([("/hooks/a".to_owned(), Arc::from("a"), ok)])
    }

    async fn route(method: Method, path: &str) -> Routed<Result<Accepted, Rejection>> {
        let mut req = Request::builder().method(method).uri(path).body(()).expect("request");
        req.extensions_mut().insert(ClientIp("192.0.2.1".parse().expect("ip")));
        router().oneshot(req).await.expect("infallible")
    }

    #[tokio::test]
    async fn a_known_path_reaches_its_source_labelled_with_its_name() {
        let routed = route(Method::POST, "/hooks/a").await;
        assert_eq!(&*routed.source, "a");
        assert!(matches!(routed.result, Ok(Accepted::Forwarded)));
        assert_eq!(routed.client_ip, Some("192.0.2.1".parse().expect("ip")));
    }

    #[tokio::test]
    async fn unknown_paths_are_404_under_unknown_and_other_methods_405_under_the_source() {
        let missing = route(Method::POST, "/hooks/b").await;
        assert_eq!(&*missing.source, UNKNOWN_SOURCE);
        assert!(matches!(missing.result, Err(Rejection::Route(RouteError::NotFound))));
        let get = route(Method::GET, "/hooks/a").await;
        assert_eq!(&*get.source, "a");
        assert!(matches!(
            get.result,
            Err(Rejection::Route(RouteError::MethodNotAllowed))
        ));
    }
}
