//! At start: would Redis keep what the queue acknowledges? A `202 queued` is a promise that the event
//! survives a Redis restart, which holds only with the append-only file on. Read with `INFO`, which
//! managed services keep (many disable `CONFIG`); on a cluster, every primary answers.

use std::sync::Arc;

use redis::Value;

use super::Queue;
use crate::redis_client::RedisClient;

/// What the Redis servers said of their persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Persistence {
    /// Every server that answered has the append-only file on; `fsync` is its `appendfsync`, when
    /// `CONFIG GET` is allowed.
    Aof {
        /// `always`, `everysec` or `no`.
        fsync: Option<String>,
    },
    /// At least one server has it off: a restart loses every entry.
    Volatile,
    /// Could not tell (Redis unreachable, or `INFO` refused), and why.
    Unknown(String),
}

/// Checks Redis's persistence against the queued sources. Refuses (with what to set) when the append-only
/// file is off and a source has not set `allow_volatile`; otherwise logs what it found, and warns where
/// a source waits for more replicas than Redis has.
pub async fn check(redis: &RedisClient, queues: &[Arc<Queue>]) -> Result<(), String> {
    if queues.is_empty() {
        return Ok(());
    }
    match read(redis).await {
        Persistence::Volatile => {
            let strict: Vec<&str> = queues
                .iter()
                .filter(|q| !q.config.allow_volatile)
                .map(|q| q.source())
                .collect();
            if !strict.is_empty() {
                return Err(format!(
                    "Redis runs without its append-only file (appendonly no): a Redis restart would lose every \
                     event the queue of {strict:?} has answered 202. Set `appendonly yes` with `appendfsync \
                     always` (or `everysec`, see the README's Durability section) on the Redis server, or set \
                     forward.allow_volatile = true on these sources to accept the loss"
                ));
            }
            tracing::warn!(
                "Redis runs without its append-only file: a Redis restart loses queued events (allow_volatile = true)"
            );
        }
        Persistence::Aof { fsync } => {
            let fsync = fsync.as_deref().unwrap_or("unknown: CONFIG is disabled");
            if fsync == "no" {
                tracing::warn!(
                    "Redis's append-only file is on with appendfsync no: a host crash can lose the last ~30 s of queued events"
                );
            } else {
                tracing::info!(appendfsync = fsync, "Redis keeps queued events in its append-only file");
            }
        }
        Persistence::Unknown(why) => {
            tracing::warn!(reason = %why, "cannot check that Redis persists queued events; going on");
        }
    }
    let wanted = queues.iter().map(|q| q.config.wait_replicas).max().unwrap_or(0);
    if wanted > 0 {
        match replicas(redis).await {
            Some(have) if have < wanted => tracing::warn!(
                replicas = have,
                wait_replicas = wanted,
                "Redis has fewer replicas than wait_replicas: appends are refused (503) until they connect"
            ),
            Some(_) => {}
            None => tracing::warn!("cannot read Redis's replicas (INFO replication)"),
        }
    }
    Ok(())
}

async fn read(redis: &RedisClient) -> Persistence {
    let pages = match redis.query::<Value>(redis::cmd("INFO").arg("persistence")).await {
        Ok(value) => pages(value),
        Err(error) => return Persistence::Unknown(error),
    };
    let enabled: Vec<Option<&str>> = pages.iter().map(|page| field(page, "aof_enabled")).collect();
    if enabled.is_empty() || enabled.contains(&None) {
        return Persistence::Unknown("INFO persistence has no aof_enabled".to_owned());
    }
    if enabled.iter().any(|on| *on != Some("1")) {
        return Persistence::Volatile;
    }
    let fsync = redis
        .query::<Vec<String>>(redis::cmd("CONFIG").arg("GET").arg("appendfsync"))
        .await
        .ok()
        .and_then(|pair| pair.into_iter().nth(1));
    Persistence::Aof { fsync }
}

/// The fewest replicas connected to any primary.
async fn replicas(redis: &RedisClient) -> Option<u32> {
    let value = redis.query::<Value>(redis::cmd("INFO").arg("replication")).await.ok()?;
    pages(value)
        .iter()
        .map(|page| field(page, "connected_slaves")?.parse::<u32>().ok())
        .min()
        .flatten()
}

/// The text of every `INFO` page in an answer: one from a single server; one per primary from a cluster.
fn pages(value: Value) -> Vec<String> {
    match value {
        Value::BulkString(bytes) => vec![String::from_utf8_lossy(&bytes).into_owned()],
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => vec![text],
        Value::Map(entries) => entries.into_iter().flat_map(|(_, page)| pages(page)).collect(),
        Value::Array(items) => items.into_iter().flat_map(pages).collect(),
        _ => Vec::new(),
    }
}

/// The value of `name:value` in an `INFO` page.
fn field<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    page.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_pages_are_read_from_a_server_or_from_each_primary() {
        let page = "# Persistence\r\nloading:0\r\naof_enabled:1\r\n";
        assert_eq!(pages(Value::BulkString(page.as_bytes().to_vec())), [page]);
        let cluster = Value::Map(vec![
            (
                Value::SimpleString("a:1".into()),
                Value::BulkString(b"aof_enabled:1\r\n".to_vec()),
            ),
            (
                Value::SimpleString("b:2".into()),
                Value::BulkString(b"aof_enabled:0\r\n".to_vec()),
            ),
        ]);
        let found: Vec<String> = pages(cluster);
        assert_eq!(
            found.iter().map(|p| field(p, "aof_enabled")).collect::<Vec<_>>(),
            [Some("1"), Some("0")]
        );
        assert_eq!(field("aof_enabled_x:3\r\naof_enabled:1", "aof_enabled"), Some("1"));
        assert_eq!(field("loading:0", "aof_enabled"), None);
    }
}
