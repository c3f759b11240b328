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

use crate::peer::{ClientIp, ShadowRefusal};

/// The allowed addresses as sorted, merged, inclusive ranges per family, so that a lookup is a binary
/// search however many CIDRs are listed (provider lists run to hundreds).
#[derive(Debug, Clone)]
pub struct Allowlist {
    any: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// Sorts and merges overlapping or adjacent ranges.
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|after| start <= after) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

impl Default for Allowlist {
    /// Empty: any address is allowed.
    fn default() -> Self {
        Allowlist::new(Vec::new())
    }
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], value: T) -> bool {
    // The last range starting at or before `value` is the only one that can hold it.
    let after = ranges.partition_point(|(start, _)| *start <= value);
    after > 0 && value <= ranges[after - 1].1
}

impl Allowlist {
    /// An allowlist of these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in &nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Allowlist {
            any: nets.is_empty(),
            v4: merged(v4, |x| x.checked_add(1)),
            v6: merged(v6, |x| x.checked_add(1)),
        }
    }

    /// True when `ip` is in one of the networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.any
            || match ip.to_canonical() {
                IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
                IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
            }
    }
}

pub use crate::peer::IpDenied;

/// Builds [`AllowlistService`] around one source's list.
#[derive(Debug, Clone)]
pub struct AllowlistLayer {
    list: Arc<Allowlist>,
    shadow: bool,
}

impl AllowlistLayer {
    /// Lets in only the clients `list` allows.
    pub fn new(list: Arc<Allowlist>) -> Self {
        AllowlistLayer { list, shadow: false }
    }

    /// For a shadow or quarantining source: a client outside the list goes on, marked with a
    /// [`ShadowRefusal`], for the verify stage to forward or keep (after the rate limit and the body limit).
    pub fn defer(mut self, defer: bool) -> Self {
        self.shadow = defer;
        self
    }
}

impl<S> Layer<S> for AllowlistLayer {
    type Service = AllowlistService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AllowlistService {
            inner,
            list: self.list.clone(),
            shadow: self.shadow,
        }
    }
}

/// Refuses a client outside the list with a ready answer, before anything of the body is read.
#[derive(Debug, Clone)]
pub struct AllowlistService<S> {
    inner: S,
    list: Arc<Allowlist>,
    shadow: bool,
}

impl<S, B> Service<Request<B>> for AllowlistService<S>
where
    S: Service<Request<B>>,
    S::Error: From<IpDenied>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Without a resolved client (a wiring mistake) the request is refused: fail closed.
        let allowed = req
            .extensions()
            .get::<ClientIp>()
            .is_some_and(|c| self.list.allows(c.0));
        if allowed {
            Either::Right(self.inner.call(req))
        } else if self.shadow {
            req.extensions_mut().insert(ShadowRefusal { verdict: "ip_denied" });
            Either::Right(self.inner.call(req))
        } else {
            Either::Left(ready(Err(IpDenied.into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::error::{Accepted, Rejection};

    /// The allowlist layer over a stub that counts the requests it is handed.
    async fn through(list: Allowlist, client: Option<&str>) -> (Result<Accepted, Rejection>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let service = AllowlistLayer::new(Arc::new(list)).layer(tower::service_fn(move |_: Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Rejection>(Accepted::Forwarded) }
        }));
        let mut req = Request::new(());
        if let Some(ip) = client {
            req.extensions_mut().insert(ClientIp(ip.parse().expect("ip")));
        }
        let result = service.oneshot(req).await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn the_layer_lets_in_listed_clients_and_refuses_others_without_calling_inner() {
        let list = || Allowlist::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let (ok, calls) = through(list(), Some("10.1.2.3")).await;
        assert!(matches!(ok, Ok(Accepted::Forwarded)) && calls == 1);
        let (denied, calls) = through(list(), Some("192.0.2.1")).await;
        assert!(matches!(denied, Err(Rejection::IpDenied(_))), "{denied:?}");
        assert_eq!(calls, 0, "a refused request never reaches the inner stage");
    }

    #[tokio::test]
    async fn the_layer_fails_closed_without_a_resolved_client() {
        let (denied, calls) = through(Allowlist::default(), None).await;
        assert!(matches!(denied, Err(Rejection::IpDenied(_))));
        assert_eq!(calls, 0);
    }

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
        assert!(list.allows("::ffff:10.1.2.3".parse().expect("mapped")));
    }

    #[test]
    fn edges_of_ranges_and_full_ranges() {
        let list = Allowlist::new(vec![
            "10.0.0.0/24".parse().expect("net"),
            "10.0.1.0/24".parse().expect("net"),
        ]);
        assert!(list.allows("10.0.0.0".parse().expect("ip")));
        assert!(list.allows("10.0.1.255".parse().expect("ip")));
        assert!(!list.allows("10.0.2.0".parse().expect("ip")));
        assert!(!list.allows("9.255.255.255".parse().expect("ip")));
        let all = Allowlist::new(vec!["0.0.0.0/0".parse().expect("net"), "::/0".parse().expect("net")]);
        assert!(all.allows("255.255.255.255".parse().expect("ip")));
        assert!(all.allows("ffff::1".parse().expect("ip")));
    }

    proptest::proptest! {
        /// The binary search agrees with checking every CIDR in turn.
        #[test]
        fn agrees_with_a_linear_scan(
            nets in proptest::collection::vec((proptest::prelude::any::<u32>(), 8u8..=32), 1..40),
            probes in proptest::collection::vec(proptest::prelude::any::<u32>(), 50),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(addr, len)| IpNet::V4(ipnet::Ipv4Net::new(addr.into(), len).expect("len").trunc()))
                .collect();
            let list = Allowlist::new(nets.clone());
            for probe in probes.into_iter().chain(nets.iter().map(|n| match n { IpNet::V4(n) => u32::from(n.network()), IpNet::V6(_) => 0 })) {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(probe));
                proptest::prop_assert_eq!(list.allows(ip), nets.iter().any(|n| n.contains(&ip)), "{}", ip);
            }
        }
    }
}
