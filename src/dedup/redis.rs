//! `store = "redis"`: shared by every replica, on a single node or a Redis Cluster. Only single-key
//! operations are used, so every key lives in one slot.
//! - Claim: `SET key token NX PX lease GET`, one round trip that also says what was there: nothing
//!   (claimed), the done marker `1` (duplicate) or another token (in flight). Needs Redis 7.0.
//! - Commit: `SET key 1 PX ttl GET`, a plain command (far cheaper for Redis than a script). It writes the
//!   done marker whoever holds the key: the event was delivered, so it is done. The old value it returns
//!   says whether the lease was still ours.
//! - Release: a Lua script that deletes the key only while the stored token is ours, so a replica whose
//!   lease ran out cannot delete another replica's claim. Run with EVALSHA, with its text on NOSCRIPT.
//!
//! Keys are `{prefix}:dedup:{source}:{h}`, where `h` is the first 12 bytes (96 bits) of SHA-256 of the
//! id, raw: a day of ids is held in memory, and every byte counts. With the default prefix and a source
//! name of up to 14 characters a key stays under 31 bytes, which Redis stores with a 1-byte header in a
//! 32-byte allocation.
//! The done marker is `1`, which Redis keeps as a shared integer: no allocation for the value.

use std::sync::Arc;
use std::time::Duration;

use super::{Found, StoreError, Token};
use crate::redis_client::{LuaScript, RedisClient, millis};

const DONE: &[u8] = b"1";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

#[derive(Clone)]
/// Event ids in Redis, under `{prefix}:…` keys with a TTL.
pub struct RedisStore {
    client: RedisClient,
    prefix: Arc<str>,
    release: Arc<LuaScript>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("client", &self.client)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// A store on the shared client, with keys under `prefix`.
    pub fn new(client: RedisClient, prefix: &str) -> Self {
        RedisStore {
            client,
            prefix: Arc::from(prefix),
            release: Arc::new(LuaScript::new(RELEASE)),
        }
    }

    pub(crate) fn key(&self, source: &str, id: &str) -> Vec<u8> {
        crate::redis_client::id_key(&format!("{}:dedup:{source}:", self.prefix), id)
    }

    pub(crate) async fn claim(&self, key: &[u8], token: Token, lease: Duration) -> Result<Found, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(token.to_hex())
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .arg("GET");
        // Safe to send twice: a second send that finds our own token means the first one claimed it.
        let previous: Option<Vec<u8>> = self.client.query_idempotent(&cmd).await.map_err(StoreError::Redis)?;
        Ok(match previous {
            None => Found::Claimed,
            Some(value) if value == DONE => Found::Duplicate,
            Some(value) if value == token.to_hex().as_bytes() => Found::Claimed,
            Some(_) => Found::InFlight(None),
        })
    }

    /// Marks the id done for `ttl`; `true` when the key still held our token.
    pub(crate) async fn commit(&self, key: &[u8], token: Token, ttl: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(DONE).arg("PX").arg(millis(ttl)).arg("GET");
        // Safe to send twice: the id is done either way (a second send can only make the lease look lost).
        let previous: Option<Vec<u8>> = self.client.query_idempotent(&cmd).await.map_err(StoreError::Redis)?;
        Ok(previous.is_some_and(|value| value == token.to_hex().as_bytes()))
    }

    /// Deletes the key while it holds our token; `true` when it did.
    pub(crate) async fn release(&self, key: &[u8], token: Token) -> Result<bool, StoreError> {
        // Safe to run twice: it deletes only a key holding our token.
        let deleted: i64 = self
            .client
            .eval_idempotent(&self.release, |cmd| {
                cmd.arg(1).arg(key).arg(token.to_hex());
            })
            .await
            .map_err(StoreError::Redis)?;
        Ok(deleted == 1)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .client
            .query_idempotent(&redis::cmd("PING"))
            .await
            .map_err(StoreError::Redis)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_have_a_fixed_length_whatever_the_id() {
        let urls = crate::config::RedisUrls::One("redis://127.0.0.1:1".into());
        let client = RedisClient::new(&urls, None, Duration::from_secs(1)).expect("lazy client");
        let store = RedisStore::new(client, "hg");
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
