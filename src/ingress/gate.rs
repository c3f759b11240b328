//! The middleware of the per-source checks on the client that run before the body is read (allowlist, rate
//! limit): each takes the routed source and the resolved client, and either lets the request in or refuses
//! it with a ready answer, at no cost for the body.

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use tower::{Layer, Service};

use super::client_ip::ClientIp;
use crate::error::{Accepted, Rejection};
use crate::gateway::Source;

/// One check of a client against its source.
pub trait ClientCheck: Clone {
    fn check(&self, source: &Source, client: IpAddr) -> Result<(), Rejection>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GateLayer<C>(pub C);

impl<S, C: ClientCheck> Layer<S> for GateLayer<C> {
    type Service = Gate<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            check: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gate<S, C> {
    inner: S,
    check: C,
}

impl<S, C, B> Service<Request<B>> for Gate<S, C>
where
    S: Service<Request<B>, Response = Accepted, Error = Rejection>,
    C: ClientCheck,
{
    type Response = Accepted;
    type Error = Rejection;
    type Future = Either<Ready<Result<Accepted, Rejection>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Rejection>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let source = req.extensions().get::<Arc<Source>>();
        let client = req.extensions().get::<ClientIp>();
        let checked = match (source, client) {
            (Some(source), Some(client)) => self.check.check(source, client.0),
            // Without a routed source or a resolved client (a wiring mistake) the request is refused: fail closed.
            _ => Err(Rejection::IpDenied),
        };
        match checked {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(rejection) => Either::Left(ready(Err(rejection))),
        }
    }
}
