//! Steps 1 to 4, before the body is read: a request refused here costs no body memory and no HMAC.

pub mod allowlist;
pub mod client_ip;
pub mod connections;
pub mod gate;
pub mod ip_ranges;
pub mod rate_limit;
pub mod route;
pub mod shed;
