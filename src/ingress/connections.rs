//! Before any request: a cap on the open connections of one client address, so that one sender cannot
//! hold every socket. A connection past the cap is closed at once. Trusted proxies are exempt, since every
//! client comes through them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

/// Caps open connections per client address.
pub struct ConnectionLimit {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    exempt: Vec<IpNet>,
}

/// One open connection, counted until it is dropped.
pub struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
    ip: Option<IpAddr>,
}

impl ConnectionLimit {
    /// At most `max` connections per address; `exempt` networks are not counted.
    pub fn new(max: usize, exempt: Vec<IpNet>) -> Self {
        ConnectionLimit {
            open: Mutex::default(),
            max,
            exempt,
        }
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(ConnectionSlot {
                limit: self.clone(),
                ip: None,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limit: self.clone(),
            ip: Some(ip),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.limit.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_address_and_released_on_drop() {
        let limit = Arc::new(ConnectionLimit::new(2, vec!["10.0.0.0/8".parse().expect("cidr")]));
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
