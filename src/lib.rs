//! hookgate: a webhook ingress gateway. It answers the sender, and only events that are authentic,
//! allowed, within limits and not already processed reach the application.
//!
//! # Layout
//! In request-flow order:
//! - [`config`]: typed, strict config; `load()` and `validate()`.
//! - [`gateway`]: the runtime form of a config (secrets read, keys set up, routes built).
//! - [`server`]: `run(config, listeners, shutdown)`: accept loops and graceful drain.
//! - [`cores`]: one single-threaded runtime per core, which the public connections are spread over.
//! - [`stack`]: the one place the request stack is assembled, first layer first.
//! - [`respond`]: outermost layer; turns each request's fate into status, outcome header and metrics.
//! - [`ingress`]: client IP, route (404/405), load shedding (503), and the per-source gates: allowlist
//!   (403) and rate limit (429). All before the body is read.
//! - [`pipeline`]: body limit (413), verification (401), event id (400), dedup claim (200/409/503),
//!   forwarding (502/504), commit or release.
//! - [`verify`]: one module per signature scheme; the only builder of a `Verified` event.
//! - [`dedup`]: two-phase claim, commit or release of event ids, in memory or in Redis.
//! - [`forward`]: downstream handlers (`http`, `stdout`).
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on their own listener.
//! - [`redis_client`]: the Redis connection shared by dedup and the queue.
//! - [`metrics`]: every metric name and label.
//! - [`error`]: the one table from outcome to status.
//! - [`echo`]: a demo downstream, for docker-compose and the benchmark.
//! - [`loadgen`]: a webhook sender for load tests and the benchmark.
//! - [`telemetry`]: logging setup.
//! - [`tls`]: HTTPS on the public listener.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod cores;
pub mod dedup;
pub mod echo;
pub mod error;
pub mod forward;
pub mod gateway;
pub mod ingress;
pub mod loadgen;
pub mod metrics;
pub mod pipeline;
pub mod redis_client;
pub mod respond;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod tls;
pub mod verify;
