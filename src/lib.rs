//! hookgate: a webhook ingress gateway. It answers the sender, and only events that are authentic,
//! allowed, within limits and not already processed reach the application.
//!
//! # Layout
//! In request-flow order:
//! - [`config`]: plain data, one file per section; `load()` and the one `validate()` pass.
//! - [`gateway`]: the one builder: [`gateway::Backends`] (one Redis client, the dedup store, the
//!   downstream client) and [`gateway::Gateway`] (each source's parts).
//! - [`server`]: `run(config, listeners, shutdown, reload)`: accept loops, reload, graceful drain.
//! - [`cores`]: one single-threaded runtime per core, which the public connections are spread over.
//! - [`stack`]: the one place the stack is assembled: the door, then each source's own stack.
//! - [`sensitive`]: signature and credential headers marked sensitive at the door, before anything logs.
//! - [`request_id`]: the request id, set at the door.
//! - [`respond`]: turns each request's fate into status, outcome header, metric and log line.
//! - [`peer`]: who sent a request (peer address, resolved client), as request extensions.
//! - [`ingress`]: client IP, route (404/405), load shedding (503), allowlist (403), rate limit (429). All
//!   before the body is read.
//! - [`body`]: the body limit (413), the process's body budget (503), and the body read, with its minimum
//!   rate and deadline (408).
//! - [`verify`]: signature verification (401) and the event id (400); the only builder of `Verified`.
//! - [`dedup`]: two-phase claim, commit or release of event ids (200 duplicate, 409, 503), in memory or Redis.
//! - [`forward`]: downstream handlers (`http`, `queue`, `stdout`); 502/504.
//! - [`error`]: the one table from each stage's typed error to status, outcome and reason.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on their own listener.
//! - [`redis_client`]: the Redis connection shared by dedup and the queue.
//! - [`metrics`]: every metric name and label; a leaf.
//! - [`telemetry`]: logging setup.
//! - [`tls`]: HTTPS on the public listener.
//!
//! # Glossary
//! - **source**: one configured webhook sender: its path, scheme, keys, allowlist, limits and handler.
//! - **client IP**: the sender's address, resolved from the TCP peer and trusted proxies' headers.
//! - **verified**: a request whose signature matched one of its source's active keys ([`verify::Verified`]).
//! - **event**: a verified request with its event id ([`verify::event_id::Event`]).
//! - **claim**: an event id marked in flight under a lease; **commit** marks it done for the dedup TTL,
//!   **release** deletes it so that the sender's retry goes through.
//! - **replay guard**: a second key claimed, committed and released with the event id: the hash of what the
//!   signature covered, for sources whose event id is not signed ([`verify::Verified::replay_key`]).
//! - **unknown client**: the client of a request whose forwarding header could not be read where the client
//!   should be (`::`, [`ingress::client_ip::UNKNOWN_CLIENT`]); never the proxy.
//! - **handler**: where a source's events go: `http`, `queue`, `stdout` (or `discard`, for benchmarks).
//! - **delivered**: what a handler did with an event (forwarded, or queued).
//! - **outcome**: what the sender is told, the `x-hookgate-outcome` header and the `outcome` label.
//! - **rejection**: why a request was refused: one variant per stage, each with that stage's typed error.
//! - **backends**: what outlives a config and a reload: the Redis client, the dedup store, the HTTP client.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

/// The error type of bodies and of the layers that box them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub mod admin;
pub mod body;
pub mod config;
pub mod console;
pub mod cores;
pub mod dedup;
pub mod error;
pub mod forward;
pub mod gateway;
pub mod ingress;
pub mod metrics;
pub mod peer;
pub mod quarantine;
pub mod redis_client;
pub mod replay;
pub mod request_id;
pub mod respond;
pub mod sensitive;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod tls;
pub mod verify;
