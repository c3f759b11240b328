//! Before any request: a cap on the open connections of one client (an IPv6 client by its prefix, as the
//! rate limit keys it, since one host may own a whole /64), and on all open connections, so that neither
//! one sender nor many can hold every socket and its head buffer. A connection past a cap is closed at
//! once. Trusted proxies are exempt from the per-client cap, since every client comes through them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use crate::peer::client_key;

/// Caps open connections per client (IPv6 by prefix) and in all.
pub struct ConnectionLimit {
    open: Mutex<Open>,
    max_per_client: usize,
    max_total: usize,
    ipv6_prefix: u8,
    exempt: Vec<IpNet>,
}

#[derive(Default)]
struct Open {
    per_client: HashMap<u128, usize>,
    total: usize,
}

/// One open connection, counted until it is dropped.
pub struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
    key: Option<u128>,
}

impl ConnectionLimit {
    /// At most `max_per_client` connections per client key (IPv6 by its first `ipv6_prefix` bits;
    /// `exempt` networks, the trusted proxies, are not counted per client) and `max_total` in all.
    pub fn new(max_per_client: usize, max_total: usize, ipv6_prefix: u8, exempt: Vec<IpNet>) -> Self {
        ConnectionLimit {
            open: Mutex::default(),
            max_per_client,
            max_total,
            ipv6_prefix,
            exempt,
        }
    }

    /// A slot for one more connection from `ip`, or `None` at either cap.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = ip.to_canonical();
        let key = (!self.exempt.iter().any(|net| net.contains(&ip))).then(|| client_key(ip, self.ipv6_prefix));
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return None;
        }
        if let Some(key) = key {
            let count = open.per_client.entry(key).or_insert(0);
            if *count >= self.max_per_client {
                return None;
            }
            *count += 1;
        }
        open.total += 1;
        Some(ConnectionSlot {
            limit: self.clone(),
            key,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        let Some(key) = self.key else { return };
        if let Some(count) = open.per_client.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One host may own a whole /64: its addresses share one cap, as in the rate limit; and the global cap
    /// holds whoever connects.
    #[test]
    fn ipv6_clients_are_capped_by_their_64_and_all_by_the_global_cap() {
        let limit = Arc::new(ConnectionLimit::new(2, 3, 64, Vec::new()));
        let a = limit
            .acquire("2001:db8::1".parse().expect("ip"))
            .expect("first of the /64");
        let _b = limit
            .acquire("2001:db8::ffff:2".parse().expect("ip"))
            .expect("second of the /64");
        assert!(
            limit.acquire("2001:db8::3".parse().expect("ip")).is_none(),
            "the /64's third"
        );
        let _c = limit
            .acquire("2001:db8:1::1".parse().expect("ip"))
            .expect("another /64");
        assert!(
            limit.acquire("198.51.100.1".parse().expect("ip")).is_none(),
            "the global cap of 3"
        );
        drop(a);
        assert!(
            limit.acquire("198.51.100.1".parse().expect("ip")).is_some(),
            "a slot came free"
        );
    }

    #[test]
    fn the_cap_is_per_address_and_released_on_drop() {
        let limit = Arc::new(ConnectionLimit::new(
            2,
            1000,
            64,
            vec!["10.0.0.0/8".parse().expect("cidr")],
        ));
        let ip: IpAddr = "198.51.100.1".parse().expect("ip");
        let a = limit.acquire(ip).expect("first");
        let _b = limit.acquire(ip).expect("second");
        assert!(limit.acquire(ip).is_none(), "third refused");
        assert!(
            limit.acquire("198.51.100.2".parse().expect("ip")).is_some(),
            "another address"
        );
        drop(a);
        assert!(limit.acquire(ip).is_some(), "a slot came free");
        let proxy: IpAddr = "10.1.1.1".parse().expect("ip");
        let held: Vec<_> = (0..10)
            .map(|_| limit.acquire(proxy).expect("proxies are exempt"))
            .collect();
        assert_eq!(held.len(), 10);
    }
}
