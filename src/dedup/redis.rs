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

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use super::{Found, StoreError, Token};
use crate::redis_client::{RedisClient, millis};

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
pub struct RedisStore {
    client: RedisClient,
    prefix: Arc<str>,
    commit: Arc<Script>,
    release: Arc<Script>,
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
    pub fn new(client: RedisClient, prefix: &str) -> Self {
        RedisStore {
            client,
            prefix: Arc::from(prefix),
            commit: Arc::new(Script::new(COMMIT)),
            release: Arc::new(Script::new(RELEASE)),
        }
    }

    pub(crate) fn client(&self) -> &RedisClient {
        &self.client
    }

    pub(crate) fn key(&self, source: &str, id: &str) -> Vec<u8> {
        let digest = Sha256::digest(id.as_bytes());
        let mut key = format!("{}:dedup:{source}:", self.prefix).into_bytes();
        key.extend_from_slice(&digest[..HASH_BYTES]);
        key
    }

    pub(crate) async fn claim(&self, key: &[u8], token: Token, lease: Duration) -> Result<Found, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(token.to_hex())
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .arg("GET");
        let previous: Option<Vec<u8>> = self.client.query(&cmd).await.map_err(StoreError::Redis)?;
        Ok(match previous {
            None => Found::Claimed,
            Some(value) if value == DONE => Found::Duplicate,
            Some(_) => Found::InFlight(None),
        })
    }

    pub(crate) async fn commit(&self, key: &[u8], token: Token, ttl: Duration) -> Result<bool, StoreError> {
        self.if_token(&self.commit, key, token, Some(millis(ttl))).await
    }

    pub(crate) async fn release(&self, key: &[u8], token: Token) -> Result<bool, StoreError> {
        self.if_token(&self.release, key, token, None).await
    }

    /// Runs a compare-the-token script; `true` when the token still matched and the script acted.
    async fn if_token(
        &self,
        script: &Script,
        key: &[u8],
        token: Token,
        ttl_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation.key(key).arg(token.to_hex());
        if let Some(ttl_ms) = ttl_ms {
            invocation.arg(ttl_ms);
        }
        let acted: i64 = self.client.invoke(&invocation).await.map_err(StoreError::Redis)?;
        Ok(acted == 1)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .client
            .query(&redis::cmd("PING"))
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
