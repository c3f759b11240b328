//! Who sent a request, as request extensions that travel from the door to the handler: the TCP peer
//! ([`PeerAddr`], set by the server) and the resolved client ([`ClientIp`], set by the client-IP stage).
//! A leaf: every stage may read these, none has to import another stage for them.

use std::net::{IpAddr, SocketAddr};

use http::HeaderName;

/// The TCP peer, put in the request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The resolved client, put in the request extensions by the client-IP stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// `X-Forwarded-For`: read from trusted proxies, and set anew towards the downstream.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `X-Request-Id`: set at the door when the sender sent none, answered back, and forwarded.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
