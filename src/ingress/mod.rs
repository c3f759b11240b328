//! Steps 1 to 5, before the body is read: the client's address, the route (404/405), load shedding (503),
//! the allowlist (403) and the rate limit (429). A request refused here costs no body memory and no HMAC.
//! Each stage refuses with its own error type; the one table in `error.rs` turns it into an answer.

pub mod allowlist;
pub mod client_ip;
pub mod connections;
pub mod rate_limit;
pub mod route;
pub mod shed;
