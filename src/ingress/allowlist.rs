//! Step 3, the allowlist: each source may list the CIDRs (IPv4 and IPv6) allowed to send; an empty list
//! allows any address. A client outside it is `403 ip_denied`, before its body is read.

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use ipnet::IpNet;
use tower::{Layer, Service};

use super::client_ip::ClientIp;
use crate::error::{Accepted, Rejection};
use crate::gateway::Source;

#[derive(Debug, Clone, Default)]
pub struct Allowlist(Vec<IpNet>);

impl Allowlist {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Allowlist(nets)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AllowlistLayer;

impl<S> Layer<S> for AllowlistLayer {
    type Service = AllowlistService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AllowlistService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AllowlistService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for AllowlistService<S>
where
    S: Service<Request<B>, Response = Accepted, Error = Rejection>,
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
        // Without a routed source or a resolved client (a wiring mistake) the request is refused: fail closed.
        let allowed = match (source, client) {
            (Some(source), Some(client)) => source.allowlist.allows(client.0),
            _ => false,
        };
        if allowed {
            Either::Right(self.inner.call(req))
        } else {
            Either::Left(ready(Err(Rejection::IpDenied)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_allows_all_and_cidrs_match_both_families() {
        assert!(Allowlist::default().allows("203.0.113.1".parse().expect("ip")));
        let list = Allowlist::new(vec![
            "10.0.0.0/8".parse().expect("v4"),
            "2001:db8::/32".parse().expect("v6"),
        ]);
        assert!(list.allows("10.200.0.1".parse().expect("ip")));
        assert!(list.allows("2001:db8:1::5".parse().expect("ip")));
        assert!(!list.allows("11.0.0.1".parse().expect("ip")));
        assert!(!list.allows("2001:db9::1".parse().expect("ip")));
    }
}
