//! The Redis connection that the dedup store and the queue share: one node or a Redis Cluster (the
//! cluster client, which follows slot moves). On one node each thread gets its own connection, driven
//! by a task on that thread's runtime, so that a core's commands and answers never cross to another
//! core, and the commands its requests issue at about the same moment go out together, in one write:
//! over TCP or a Unix socket a lean pipelined connection of our own (see [`pipeline`]; the benchmark
//! showed the crate's multiplexed connection, a task and a channel between the callers and the socket,
//! costing several microseconds per command), over TLS the crate's `ConnectionManager`. `rediss://` is
//! verified against the public web roots, or against `redis_ca_file` for a private CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Script, TlsCertificates, Value};
use sha2::Digest;
use thread_local::ThreadLocal;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::RedisUrls;
use pipeline::{Endpoint, Pipeline};

mod pipeline;

struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Plain TCP or Unix sockets: each thread's lean pipelined connection (see [`pipeline`]).
    lean: Option<(Arc<Endpoint>, ThreadLocal<Pipeline>)>,
    /// `rediss://`: the crate's connection manager, one per thread, connected on the thread's first
    /// command.
    managers: ThreadLocal<ConnectionManager>,
    /// Connections of their own for writes followed by `WAIT`, which blocks its connection until the
    /// replicas answer: the shared ones never wait for a replica.
    waiting: ThreadLocal<ConnectionManager>,
}

impl Single {
    fn manager(&self) -> Result<ConnectionManager, String> {
        self.managers
            .get_or_try(|| ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()))
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// This thread's connection for `WAIT`: its caller bounds each call, so it has no answer timeout.
    fn waiting_manager(&self) -> Result<ConnectionManager, String> {
        self.waiting
            .get_or_try(|| {
                let config = self.config.clone().set_response_timeout(None);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// Sends `cmd` with whatever else this thread's requests are sending now, and returns its answer, or
    /// fails by `deadline`.
    async fn query(&self, cmd: &Cmd, deadline: Instant) -> Result<Value, Failure> {
        match &self.lean {
            // The pipeline bounds each batch by its commands' deadlines: no timer per command.
            Some((endpoint, pipelines)) => {
                pipelines
                    .get_or(|| Pipeline::new(endpoint.clone()))
                    .query(cmd, deadline)
                    .await
            }
            // The manager pipelines concurrent commands on its one connection by itself. Boxed, as the
            // cluster's call is: the crate's futures are large, and every caller's future would carry
            // their size (and copy it, moving into a task) on the lean path too.
            None => {
                let mut manager = self.manager().map_err(Failure::other)?;
                Box::pin(within(deadline, async {
                    cmd.query_async(&mut manager).await.map_err(|e| Failure::of(&e))
                }))
                .await
            }
        }
    }
}

/// Why a command got no answer, and whether it is because the connection it was sent on was dead: then
/// a new connection is being made, and a command that is safe to run twice may be sent again.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    dropped: bool,
}

impl Failure {
    fn other(message: String) -> Self {
        Failure {
            message,
            dropped: false,
        }
    }

    fn of(error: &redis::RedisError) -> Self {
        Failure {
            message: error.to_string(),
            dropped: dead_connection(error),
        }
    }
}

/// The connection was closed under the command (a Redis restart, say), as opposed to Redis answering an
/// error or not answering in time.
fn dead_connection(error: &redis::RedisError) -> bool {
    error.is_connection_dropped() || error.is_io_error() && !error.is_timeout()
}

#[derive(Clone)]
enum Inner {
    Single(Arc<Single>),
    Cluster(Arc<Cluster>),
}

/// The cluster clients connect on first use and are kept: one for every command, and one, without an
/// answer timeout, for writes followed by `WAIT` (which blocks its connection until the replicas answer).
struct Cluster {
    shared: (ClusterClient, OnceCell<ClusterConnection>),
    waiting: (ClusterClient, OnceCell<ClusterConnection>),
}

/// A shared, lazily connected, self-reconnecting Redis connection.
#[derive(Clone)]
pub struct RedisClient {
    inner: Inner,
    /// How long a call may take, from the moment it is made, whether it is sent once or twice.
    timeout: Duration,
}

impl RedisClient {
    /// How long any call on this client may take, from the moment it is made (`dedup.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold a password: never print them.
        let kind = match self.inner {
            Inner::Single(_) => "single",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisClient").field("kind", &kind).finish()
    }
}

/// A connection of its own, for commands that block (`XREADGROUP … BLOCK`) and must not stall the
/// shared, pipelined one.
pub enum Dedicated {
    /// A multiplexed connection to one node.
    Single(MultiplexedConnection),
    /// A cluster connection that routes by key slot.
    Cluster(ClusterConnection),
}

impl RedisClient {
    /// Sets up the connection without connecting: the first call connects, and later ones reconnect.
    pub fn new(urls: &RedisUrls, ca_file: Option<&Path>, timeout: Duration) -> Result<Self, String> {
        crate::tls::install_crypto_provider();
        let invalid = |e: redis::RedisError| format!("dedup.redis_url: {e}");
        let certificates = match ca_file {
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(path).map_err(|e| format!("dedup.redis_ca_file: {}: {e}", path.display()))?,
                ),
            }),
            None => None,
        };
        let inner = match urls {
            RedisUrls::One(url) => {
                let client = match certificates {
                    Some(certificates) => redis::Client::build_with_tls(url.as_str(), certificates),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(invalid)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                let lean = pipeline::Endpoint::of(&client).map(|e| (Arc::new(e), ThreadLocal::new()));
                Inner::Single(Arc::new(Single {
                    client,
                    config,
                    lean,
                    managers: ThreadLocal::new(),
                    waiting: ThreadLocal::new(),
                }))
            }
            RedisUrls::Cluster(nodes) => {
                let build = |response_timeout: Duration| {
                    let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(response_timeout);
                    if let Some(certificates) = certificates.clone() {
                        builder = builder.certs(certificates);
                    }
                    builder.build().map_err(invalid)
                };
                Inner::Cluster(Arc::new(Cluster {
                    shared: (build(timeout)?, OnceCell::new()),
                    // Its callers bound each call; the client's own limit only catches a lost answer.
                    waiting: (build(Duration::from_secs(60))?, OnceCell::new()),
                }))
            }
        };
        Ok(RedisClient { inner, timeout })
    }

    /// Runs one command within the client's timeout; an error is the message Redis or the connection gave.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, String> {
        self.send(cmd, self.deadline(), Resend::Never).await
    }

    /// Runs one command that is safe to run twice: when the connection it went out on turns out to be
    /// dead (Redis restarted since it was made), it is sent once more on the new connection, so that no
    /// sender sees an error after Redis is back. Both sends share the one deadline.
    pub async fn query_idempotent<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, String> {
        self.send(cmd, self.deadline(), Resend::OnDeadConnection).await
    }

    /// Runs `script` on the keys and arguments that `keys_and_args` adds (the number of keys first, then
    /// the keys, then the arguments, as `EVALSHA` takes them), within the client's timeout, on the same
    /// connection as every other command: by its SHA-1, and with its text only when Redis answers
    /// `NOSCRIPT`.
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        keys_and_args: impl Fn(&mut Cmd),
    ) -> Result<T, String> {
        self.eval_with(script, &keys_and_args, Resend::Never).await
    }

    /// [`eval`](Self::eval) for a script that is safe to run twice: once more when its connection turns
    /// out to be dead.
    pub async fn eval_idempotent<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        keys_and_args: impl Fn(&mut Cmd),
    ) -> Result<T, String> {
        self.eval_with(script, &keys_and_args, Resend::OnDeadConnection).await
    }

    async fn eval_with<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        keys_and_args: &impl Fn(&mut Cmd),
        resend: Resend,
    ) -> Result<T, String> {
        let deadline = self.deadline();
        match self.send(&script.by_hash(keys_and_args), deadline, resend).await {
            Err(e) if is_no_script(&e) => self.send(&script.with_text(keys_and_args), deadline, resend).await,
            other => other,
        }
    }

    /// A call made now ends by then, however many times it is sent.
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    async fn send<T: FromRedisValue>(&self, cmd: &Cmd, deadline: Instant, resend: Resend) -> Result<T, String> {
        match self.query_once(cmd, deadline).await {
            Err(failure) if failure.dropped && resend == Resend::OnDeadConnection => {
                self.query_once(cmd, deadline).await.map_err(|f| f.message)
            }
            other => other.map_err(|f| f.message),
        }
    }

    async fn query_once<T: FromRedisValue>(&self, cmd: &Cmd, deadline: Instant) -> Result<T, Failure> {
        match &self.inner {
            Inner::Single(single) => {
                T::from_redis_value(single.query(cmd, deadline).await?).map_err(|e| Failure::other(e.to_string()))
            }
            Inner::Cluster(cluster) => {
                Box::pin(within(deadline, async {
                    let mut connection = cluster_connection(&cluster.shared).await.map_err(Failure::other)?;
                    cmd.query_async(&mut connection).await.map_err(|e| Failure::of(&e))
                }))
                .await
            }
        }
    }

    /// Runs `cmd` (a write), then `WAIT replicas timeout` on the same connection, and returns the command's
    /// answer with the number of replicas that acknowledged it. On a cluster both go to the node of the
    /// command's key. The caller bounds the call: `WAIT` blocks for up to `timeout`.
    pub async fn write_and_wait(&self, cmd: &Cmd, replicas: u32, timeout: Duration) -> Result<(Value, u32), String> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone())
            .cmd("WAIT")
            .arg(replicas)
            .arg(millis(timeout));
        let answers: (Value, u32) = match &self.inner {
            Inner::Single(single) => {
                let mut connection = single.waiting_manager()?;
                pipe.query_async(&mut connection).await
            }
            Inner::Cluster(cluster) => {
                let mut connection = cluster_connection(&cluster.waiting).await?;
                pipe.query_async(&mut connection).await
            }
        }
        .map_err(|e| e.to_string())?;
        Ok(answers)
    }

    /// A new connection, whose commands may block for up to `block` beyond the usual answer time.
    pub async fn dedicated(&self, block: Duration) -> Result<Dedicated, String> {
        let patience = block + Duration::from_secs(5);
        match &self.inner {
            Inner::Single(single) => {
                let client = &single.client;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(patience));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Dedicated::Single)
                    .map_err(|e| e.to_string())
            }
            Inner::Cluster(cluster) => cluster
                .shared
                .0
                .get_async_connection()
                .await
                .map(Dedicated::Cluster)
                .map_err(|e| e.to_string()),
        }
    }
}

impl Dedicated {
    /// Runs one command on this connection.
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, String> {
        match self {
            Dedicated::Single(c) => cmd.query_async(c).await.map_err(|e| e.to_string()),
            Dedicated::Cluster(c) => cmd.query_async(c).await.map_err(|e| e.to_string()),
        }
    }
}

/// Whether a command is sent once more when the connection it went out on was dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    Never,
    OnDeadConnection,
}

/// `work`, or a failure at `deadline`.
async fn within<T>(deadline: Instant, work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(Failure::other(NO_ANSWER.to_owned())))
}

/// What a call that ran out of time fails with.
const NO_ANSWER: &str = "Redis did not answer in time";

async fn cluster_connection(
    cluster: &(ClusterClient, OnceCell<ClusterConnection>),
) -> Result<ClusterConnection, String> {
    let (client, cell) = cluster;
    cell.get_or_try_init(|| client.get_async_connection())
        .await
        .cloned()
        .map_err(|e| e.to_string())
}

/// 96 bits: even at a billion ids a day per source, a collision (one event wrongly taken for another) is
/// about one in 10^11 per day.
const ID_DIGEST_BYTES: usize = 12;

/// The key for an id (an event's, whatever a sender put in it): `prefix` and a fixed-length digest of the
/// id, so that any id makes a short key of one length.
pub fn id_key(prefix: &str, id: &str) -> Vec<u8> {
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut key = prefix.as_bytes().to_vec();
    key.extend_from_slice(&digest[..ID_DIGEST_BYTES]);
    key
}

/// A duration in whole milliseconds, at least 1, for `PX` and scores.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whether an error message is Redis's `NOSCRIPT` (the script is not loaded yet; send it with `EVAL`), as
/// the server words it or as the client names it.
fn is_no_script(message: &str) -> bool {
    message.starts_with("NOSCRIPT") || message.starts_with("NoScript")
}

/// A Lua script, run by its SHA-1 (`EVALSHA`) on the connection every other command takes: a script is
/// one more command in the thread's next batch, not a hop through another connection. Its text goes out
/// (`EVAL`, which also caches it) only when Redis does not know it: a new or restarted Redis, or one whose
/// scripts were flushed.
pub struct LuaScript {
    text: &'static str,
    hash: String,
}

impl LuaScript {
    /// The script with this text.
    pub fn new(text: &'static str) -> Self {
        LuaScript {
            text,
            hash: Script::new(text).get_hash().to_owned(),
        }
    }

    /// `EVALSHA` of it, on the number of keys, keys and arguments that `keys_and_args` adds.
    fn by_hash(&self, keys_and_args: impl FnOnce(&mut Cmd)) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash);
        keys_and_args(&mut cmd);
        cmd
    }

    /// `EVAL` of its text, on the number of keys, keys and arguments that `keys_and_args` adds: for a
    /// connection that may not know it, and where the caller sends the command itself.
    pub(crate) fn with_text(&self, keys_and_args: impl FnOnce(&mut Cmd)) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.text);
        keys_and_args(&mut cmd);
        cmd
    }
}

impl std::fmt::Debug for LuaScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaScript").field("hash", &self.hash).finish()
    }
}
