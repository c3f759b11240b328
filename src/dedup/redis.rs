//! `store = "redis"`: shared by every replica, on a single node or a Redis Cluster. Only single-key
//! operations are used, so every key lives in one slot.
//! - Claim: `SET key token NX PX lease GET`, one round trip that also says what was there: nothing
//!   (claimed), the done marker `1` (duplicate) or another token (in flight). Needs Redis 7.0.
//! - Commit and release: Lua scripts that act only while the stored token is ours, so a replica whose
//!   lease ran out cannot overwrite or delete another replica's claim. Loaded with EVALSHA, falling back
//!   on NOSCRIPT.
//!
//! Keys are `{prefix}:dedup:{source}:{h}`, where `h` is the first 12 bytes (96 bits) of SHA-256 of the
//! id, raw: a day of ids is held in memory, and every byte counts. With the default prefix and a source
//! name of up to 14 characters a key stays under 31 bytes, which Redis stores with a 1-byte header in a
//! 32-byte allocation.
//! The done marker is `1`, which Redis keeps as a shared integer: no allocation for the value.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Script, ScriptInvocation, TlsCertificates};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{Found, StoreError, Token};
use crate::config::RedisUrls;

const DONE: &[u8] = b"1";
/// 96 bits: even at a billion ids a day per source, a collision (one event wrongly taken for a
/// duplicate) is about one in 10^11 per day.
const HASH_BYTES: usize = 12;

const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
  return 1
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    /// The cluster client connects on first use and is kept; it follows slot moves by itself.
    Cluster(Arc<(ClusterClient, OnceCell<ClusterConnection>)>),
}

#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    commit: Arc<Script>,
    release: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold a password: never print them.
        let kind = match self.connection {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("kind", &kind)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

impl RedisStore {
    /// Sets up the connection without connecting: the first call connects, and later ones reconnect.
    pub fn new(urls: &RedisUrls, ca_file: Option<&Path>, prefix: &str, timeout: Duration) -> Result<Self, String> {
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
        let connection = match urls {
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
                Connection::Single(ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?)
            }
            RedisUrls::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(invalid)?;
                Connection::Cluster(Arc::new((client, OnceCell::new())))
            }
        };
        Ok(RedisStore {
            connection,
            prefix: Arc::from(prefix),
            commit: Arc::new(Script::new(COMMIT)),
            release: Arc::new(Script::new(RELEASE)),
        })
    }

    pub(crate) fn key(&self, source: &str, id: &str) -> Vec<u8> {
        let digest = Sha256::digest(id.as_bytes());
        let mut key = format!("{}:dedup:{source}:", self.prefix).into_bytes();
        key.extend_from_slice(&digest[..HASH_BYTES]);
        key
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        match &self.connection {
            Connection::Single(manager) => cmd.query_async(&mut manager.clone()).await.map_err(redis_error),
            Connection::Cluster(cluster) => {
                let mut connection = cluster_connection(cluster).await?;
                cmd.query_async(&mut connection).await.map_err(redis_error)
            }
        }
    }

    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<i64, StoreError> {
        async fn on<C: ConnectionLike>(c: &mut C, i: &ScriptInvocation<'_>) -> Result<i64, StoreError> {
            i.invoke_async(c).await.map_err(redis_error)
        }
        match &self.connection {
            Connection::Single(manager) => on(&mut manager.clone(), invocation).await,
            Connection::Cluster(cluster) => on(&mut cluster_connection(cluster).await?, invocation).await,
        }
    }

    pub(crate) async fn claim(&self, key: &[u8], token: Token, lease: Duration) -> Result<Found, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(token.to_hex())
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .arg("GET");
        let previous: Option<Vec<u8>> = self.query(&cmd).await?;
        Ok(match previous {
            None => Found::Claimed,
            Some(value) if value == DONE => Found::Duplicate,
            Some(_) => Found::InFlight(None),
        })
    }

    pub(crate) async fn commit(&self, key: &[u8], token: Token, ttl: Duration) -> Result<bool, StoreError> {
        let mut invocation = self.commit.prepare_invoke();
        invocation.key(key).arg(token.to_hex()).arg(millis(ttl));
        Ok(self.invoke(&invocation).await? == 1)
    }

    pub(crate) async fn release(&self, key: &[u8], token: Token) -> Result<bool, StoreError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(key).arg(token.to_hex());
        Ok(self.invoke(&invocation).await? == 1)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

async fn cluster_connection(
    (client, cell): &(ClusterClient, OnceCell<ClusterConnection>),
) -> Result<ClusterConnection, StoreError> {
    cell.get_or_try_init(|| client.get_async_connection())
        .await
        .cloned()
        .map_err(redis_error)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_have_a_fixed_length_whatever_the_id() {
        let store = RedisStore::new(
            &RedisUrls::One("redis://127.0.0.1:1".into()),
            None,
            "hg",
            Duration::from_secs(1),
        )
        .expect("lazy store");
        let short = store.key("stripe", "a");
        let long = store.key("stripe", &"x".repeat(512));
        assert_eq!(short.len(), long.len());
        assert_eq!(short.len(), "hg:dedup:stripe:".len() + 12);
        assert!(short.len() < 31, "a 32-byte Redis allocation");
        assert!(short.starts_with(b"hg:dedup:stripe:"));
        assert_ne!(store.key("stripe", "a"), store.key("stripe", "b"));
        assert_ne!(store.key("stripe", "a"), store.key("github", "a"));
    }
}
