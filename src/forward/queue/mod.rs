//! The `queue` handler: durable hand-off on Redis Streams, shared by every replica.
//!
//! Accept: the verified event is appended (`XADD`) to `{prefix}:queue:{source}`; only once Redis has it is
//! the dedup claim committed and the sender answered `202 queued`. If the append fails, the claim is
//! released and the sender gets `503`, so it retries: an event is never acknowledged unless Redis has it.
//!
//! Deliver: in every replica, one reader per source reads with `XREADGROUP` in the consumer group
//! `hookgate` and hands entries to at most `concurrency` deliveries. Each POSTs like the `http` handler,
//! plus `x-hookgate-attempt`. Every outcome is one atomic Lua script:
//! - delivered (2xx): `XACK` and `XDEL`;
//! - failed, attempts left: into the sorted set `{prefix}:delayed:{source}`, scored by when it is due
//!   (backoff with full jitter), then `XACK` and `XDEL`; a mover puts due entries back on the stream;
//! - failed, no attempts left: into the dead-letter stream `{prefix}:dead:{source}` with the last error.
//!
//! A crash at any point loses nothing: until its script runs, an entry stays pending in the group, and
//! `XAUTOCLAIM` hands it to a live consumer after `reclaim_after`. At worst an event is delivered twice
//! (the crash came after the POST and before the script), which dedup downstream of hookgate, or the
//! application, absorbs.
//!
//! The source name is a Redis Cluster hash tag (`hg:queue:{stripe}`): all of a source's keys live in one
//! slot, so the scripts that touch two of them work on a cluster.

pub mod durability;
mod envelope;
mod scripts;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply};
use redis::{Cmd, FromRedisValue};
use serde::Serialize;

use self::envelope::{Envelope, now_ms};
use self::scripts::{FIELD, GROUP, Scripts};
pub use self::workers::{Workers, consumer_name};
use super::http::{HttpHandler, Outgoing};
use super::{Delivered, Delivery, ForwardError};
use crate::config::forward::QUEUE_APPEND_TIMEOUT;
use crate::config::{BackoffConfig, DedupConfig, QueueConfig};
use crate::redis_client::{Dedicated, LuaScript, RedisClient, millis};

/// The delay before the retry that follows `attempts` failed attempts: full jitter, uniform between zero
/// and `min(max, initial × multiplier^(attempts − 1))`.
pub fn backoff(config: &BackoffConfig, attempts: u32, unit: f64) -> Duration {
    let exponent = i32::try_from(attempts.saturating_sub(1)).unwrap_or(i32::MAX);
    let cap = config.initial.as_secs_f64() * config.multiplier.powi(exponent);
    let cap = if cap.is_finite() {
        cap.min(config.max.as_secs_f64())
    } else {
        config.max.as_secs_f64()
    };
    Duration::from_secs_f64(cap * unit.clamp(0.0, 1.0))
}

/// The keys of one source's queue.
#[derive(Debug, Clone)]
struct Keys {
    stream: String,
    delayed: String,
    dead: String,
    /// Followed by a digest of the event id: marks an event as appended (see `scripts::APPEND`).
    marker_prefix: String,
}

/// One source's queue: the accept side (enqueue), the delivery side (workers), and its operations.
pub struct Queue {
    source: Arc<str>,
    redis: RedisClient,
    keys: Keys,
    config: QueueConfig,
    http: HttpHandler,
    scripts: Scripts,
    /// How long an event's append is remembered (`dedup.ttl`), so that a sender's retry does not append it
    /// again.
    marker_ttl: Duration,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("source", &self.source)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// What `hookgate queue stats` and `/admin/queues` report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// Events in the stream: waiting or being delivered.
    pub depth: u64,
    /// Of those, read by a consumer and not yet settled.
    pub pending: u64,
    /// Waiting for a retry.
    pub delayed: u64,
    /// In the dead-letter stream.
    pub dead: u64,
    /// Age of the oldest event not yet delivered, in seconds.
    pub oldest_age_seconds: f64,
}

/// One dead letter, as `hookgate dead list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The dead letter's stream entry id.
    pub entry_id: String,
    /// The event id it carried.
    pub event_id: String,
    /// Deliveries tried.
    pub attempts: u32,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
    /// When the gateway accepted it, in Unix milliseconds.
    pub received_at_ms: u64,
    /// The entry could not be read: its raw fields are in the dead-letter stream, for a person (`XRANGE`),
    /// and it cannot be replayed.
    pub unreadable: bool,
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum Replay {
    /// One, by its dead-letter entry id or its event id. Running it twice replays it once.
    One(String),
    /// Every dead letter of the source.
    All,
}

impl Queue {
    /// A queue for `source` on the shared client, with keys under `dedup.key_prefix`, and Redis calls
    /// bounded by `dedup.timeout`.
    pub fn new(
        source: &str,
        redis: RedisClient,
        dedup: &DedupConfig,
        config: QueueConfig,
        client: super::http::HttpClient,
    ) -> Result<Self, String> {
        let prefix = &dedup.key_prefix;
        let http = HttpHandler::new(client, &config.url, config.timeout)?;
        Ok(Queue {
            source: Arc::from(source),
            redis,
            keys: Keys {
                stream: format!("{prefix}:queue:{{{source}}}"),
                delayed: format!("{prefix}:delayed:{{{source}}}"),
                dead: format!("{prefix}:dead:{{{source}}}"),
                marker_prefix: format!("{prefix}:queued:{{{source}}}:"),
            },
            config,
            http,
            scripts: Scripts::new(),
            marker_ttl: dedup.ttl,
        })
    }

    /// The source this queue belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Appends a verified event, once: `Ok` means Redis has it (and, with `wait_replicas`, that many
    /// replicas too).
    pub(crate) async fn enqueue(&self, delivery: &Delivery<'_>) -> Result<Delivered, ForwardError> {
        let envelope = Envelope::new(delivery).to_json();
        // In the source's hash slot, beside the stream.
        let marker = crate::redis_client::id_key(&self.keys.marker_prefix, delivery.event_id.as_str());
        let maxlen = self.config.maxlen.unwrap_or(0);
        let ttl = millis(self.marker_ttl);
        let replicas = self.config.wait_replicas;
        // The keys and arguments of `scripts::APPEND`.
        let keys_and_args = |cmd: &mut Cmd| {
            cmd.arg(3)
                .arg(&self.keys.stream)
                .arg(&self.keys.delayed)
                .arg(&marker)
                .arg(maxlen)
                .arg(FIELD)
                .arg(&envelope)
                .arg(ttl);
        };
        let run = async {
            if replicas == 0 {
                // Pipelined with the other commands of this thread; safe to send twice (once per event).
                let outcome = self
                    .redis
                    .eval_idempotent::<i64>(&self.scripts.append, keys_and_args)
                    .await?;
                return Ok((outcome, 0));
            }
            // The script and `WAIT` go out together on one connection: `EVAL`, whose text needs no loading.
            let (outcome, acknowledged) = self
                .redis
                .write_and_wait(
                    &self.scripts.append.with_text(keys_and_args),
                    replicas,
                    self.config.wait_timeout,
                )
                .await?;
            Ok((i64::from_redis_value(outcome).map_err(|e| e.to_string())?, acknowledged))
        };
        let appended = if replicas == 0 && self.redis.timeout() <= QUEUE_APPEND_TIMEOUT {
            // The client bounds the call within the append's limit already: no second timer per event.
            run.await
        } else {
            tokio::time::timeout(QUEUE_APPEND_TIMEOUT, run)
                .await
                .unwrap_or_else(|_| Err(format!("redis did not answer within {QUEUE_APPEND_TIMEOUT:?}")))
        };
        match appended {
            Ok((0, _)) => Err(ForwardError::QueueFull),
            Ok((_, acknowledged)) if acknowledged < replicas => {
                tracing::warn!(source = %self.source, event_id = %delivery.event_id.as_str(), acknowledged, wanted = replicas, "replicas did not confirm an append in time; the sender will retry");
                Err(ForwardError::Unreplicated {
                    acknowledged,
                    wanted: replicas,
                })
            }
            Ok(_) => Ok(Delivered::Queued),
            Err(e) => Err(ForwardError::Enqueue(e)),
        }
    }

    /// Creates the consumer group (and the stream) when they do not exist yet.
    async fn ensure_group(&self) -> Result<(), String> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.redis.query::<String>(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) if e.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delivers one entry and settles it. Returns the result label for metrics.
    async fn deliver(&self, entry: &StreamId) -> &'static str {
        let raw: Option<String> = entry.get(FIELD);
        let readable = raw
            .and_then(|raw| serde_json::from_str::<Envelope>(&raw).ok())
            .and_then(|envelope| Some((envelope.request_parts()?, envelope)));
        let Some(((headers, body), mut envelope)) = readable else {
            // Not ours to read (written by another version, say): keep it, byte for byte, for a person
            // rather than drop it or deliver something else.
            tracing::warn!(source = %self.source, entry_id = %entry.id, "a queue entry cannot be read; dead-lettered as it was");
            return self
                .settle(&self.scripts.bury_raw, Some(&self.keys.dead), &entry.id, &[], "dead")
                .await;
        };
        envelope.attempt += 1;
        let outgoing = Outgoing {
            source: &self.source,
            event_id: HeaderValue::from_str(&envelope.event_id).unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            client_ip: &envelope.client_ip,
            request_id: HeaderValue::from_str(&envelope.request_id).unwrap_or_else(|_| HeaderValue::from_static("0")),
            attempt: Some(envelope.attempt),
        };
        let started = std::time::Instant::now();
        let result = self.http.send(outgoing, &headers, &body).await;
        crate::metrics::forward(
            &self.source,
            if result.is_ok() { "2xx" } else { "error" },
            started.elapsed(),
        );
        match result {
            Ok(()) => self.settle(&self.scripts.ack, None, &entry.id, &[], "delivered").await,
            Err(error) => {
                envelope.last_error = Some(error.to_string());
                if envelope.attempt >= self.config.max_attempts {
                    tracing::warn!(source = %self.source, event_id = %envelope.event_id, attempts = envelope.attempt, %error, "delivery failed for the last time; dead-lettered");
                    self.settle_dead(&entry.id, &envelope.to_json()).await
                } else {
                    let delay = backoff(&self.config.backoff, envelope.attempt, rand::random::<f64>());
                    tracing::debug!(source = %self.source, event_id = %envelope.event_id, attempt = envelope.attempt, ?delay, %error, "delivery failed; will retry");
                    envelope.nonce = rand::random();
                    let due = now_ms() + millis(delay);
                    let args = [due.to_string(), envelope.to_json()];
                    self.settle(&self.scripts.retry, Some(&self.keys.delayed), &entry.id, &args, "retry")
                        .await
                }
            }
        }
    }

    async fn settle_dead(&self, entry_id: &str, payload: &str) -> &'static str {
        self.settle(
            &self.scripts.bury,
            Some(&self.keys.dead),
            entry_id,
            &[payload.to_owned()],
            "dead",
        )
        .await
    }

    /// Runs one settling script on the stream and, for a retry or a dead letter, the key the entry moves to.
    /// `result` labels the outcome in metrics; `superseded` when another replica had settled the entry
    /// first (it took it over while this one was paused), so this one moved nothing. A failure leaves the
    /// entry pending, to be reclaimed and delivered again.
    async fn settle(
        &self,
        script: &LuaScript,
        moves_to: Option<&str>,
        entry_id: &str,
        extra: &[String],
        result: &'static str,
    ) -> &'static str {
        let keys_and_args = |cmd: &mut Cmd| {
            cmd.arg(1 + usize::from(moves_to.is_some())).arg(&self.keys.stream);
            if let Some(key) = moves_to {
                cmd.arg(key);
            }
            cmd.arg(GROUP).arg(entry_id);
            for arg in extra {
                cmd.arg(arg);
            }
        };
        // Bounded by the client's timeout (`dedup.timeout`): with `timeout`, it bounds how long an entry
        // stays pending before it is settled, which `reclaim_after` must exceed.
        let result = match self.redis.eval::<i64>(script, keys_and_args).await {
            Ok(1) => result,
            Ok(_) => {
                tracing::info!(source = %self.source, entry_id, "another replica settled this entry first (it took it over); nothing moved");
                "superseded"
            }
            Err(error) => {
                tracing::warn!(source = %self.source, entry_id, %error, "cannot settle a delivery; it will be reclaimed");
                "unsettled"
            }
        };
        crate::metrics::queue_delivery(&self.source, result, 1);
        result
    }

    /// With `wait_replicas`: whether that many replicas have the entries just read on `connection` (the
    /// read is a write, after the entries in the replication stream, so `WAIT` on its connection covers
    /// them). An entry is delivered only once a failover can no longer lose it: else a sender's retry,
    /// refused for want of replicas, could append it again after a failover and have it delivered twice.
    async fn replicated(&self, connection: &mut Dedicated, count: usize) -> Result<bool, String> {
        let wanted = self.config.wait_replicas;
        if wanted == 0 {
            return Ok(true);
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(millis(self.config.wait_timeout));
        let acknowledged: u32 = connection.query(&wait).await?;
        if acknowledged < wanted {
            tracing::warn!(source = %self.source, acknowledged, wanted, entries = count, "queue entries not on enough replicas yet; not delivered until they are");
            crate::metrics::queue_delivery(&self.source, "unreplicated", count);
            return Ok(false);
        }
        Ok(true)
    }

    /// Puts retries that are due back on the stream.
    async fn move_due(&self) -> Result<i64, String> {
        self.redis
            .eval(&self.scripts.move_due, |cmd| {
                cmd.arg(2)
                    .arg(&self.keys.delayed)
                    .arg(&self.keys.stream)
                    .arg(now_ms())
                    .arg(100);
            })
            .await
    }

    /// Takes over entries that another consumer left pending for longer than `reclaim_after`. Entries
    /// deleted while pending (by hand, or by a trim of an older version) are gone: they are counted as
    /// lost, and logged.
    async fn reclaim(&self, connection: &mut Dedicated, consumer: &str, count: usize) -> Result<Vec<StreamId>, String> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.keys.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(millis(self.config.reclaim_after))
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        let reply: StreamAutoClaimReply = connection.query(&cmd).await?;
        if !reply.deleted_ids.is_empty() {
            tracing::error!(source = %self.source, entry_ids = ?reply.deleted_ids, "queue entries were deleted while pending: these events are lost");
            crate::metrics::queue_lost(&self.source, reply.deleted_ids.len());
        }
        Ok(reply.claimed)
    }

    /// A consistent snapshot: one script reads every number at the same instant.
    pub async fn stats(&self) -> Result<QueueStats, String> {
        let keys_and_args = |cmd: &mut Cmd| {
            cmd.arg(3)
                .arg(&self.keys.stream)
                .arg(&self.keys.delayed)
                .arg(&self.keys.dead)
                .arg(GROUP);
        };
        let (depth, pending, delayed, dead, first, first_delayed): (
            u64,
            u64,
            u64,
            u64,
            Option<String>,
            Option<String>,
        ) = self.redis.eval(&self.scripts.stats, keys_and_args).await?;
        let oldest_ms = first
            .into_iter()
            .chain(first_delayed)
            .filter_map(|raw| serde_json::from_str::<Envelope>(&raw).ok())
            .map(|e| e.received_at_ms)
            .min();
        let oldest_age_seconds = oldest_ms.map_or(0.0, |ms| now_ms().saturating_sub(ms) as f64 / 1000.0);
        Ok(QueueStats {
            depth,
            pending,
            delayed,
            dead,
            oldest_age_seconds,
        })
    }

    /// Every dead letter of this queue, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, String> {
        let reply: StreamRangeReply = self
            .redis
            .query(redis::cmd("XRANGE").arg(&self.keys.dead).arg("-").arg("+"))
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|entry| {
                let envelope = entry
                    .get::<String>(FIELD)
                    .and_then(|raw| serde_json::from_str::<Envelope>(&raw).ok());
                DeadLetter {
                    entry_id: entry.id.clone(),
                    event_id: envelope.as_ref().map(|e| e.event_id.clone()).unwrap_or_default(),
                    attempts: envelope.as_ref().map_or(0, |e| e.attempt),
                    last_error: envelope.as_ref().and_then(|e| e.last_error.clone()),
                    received_at_ms: envelope.as_ref().map_or(0, |e| e.received_at_ms),
                    unreadable: entry.map.contains_key("unreadable_entry"),
                }
            })
            .collect())
    }

    /// Moves dead letters back onto the queue with their attempts reset. Returns how many moved. Each move
    /// is atomic and happens once: a dead letter already replayed is gone from the dead stream.
    pub async fn replay(&self, which: &Replay) -> Result<usize, String> {
        let reply: StreamRangeReply = self
            .redis
            .query(redis::cmd("XRANGE").arg(&self.keys.dead).arg("-").arg("+"))
            .await?;
        let mut moved = 0;
        for entry in &reply.ids {
            let Some(mut envelope) = entry
                .get::<String>(FIELD)
                .and_then(|raw| serde_json::from_str::<Envelope>(&raw).ok())
            else {
                continue;
            };
            if let Replay::One(id) = which
                && *id != entry.id
                && *id != envelope.event_id
            {
                continue;
            }
            envelope.attempt = 0;
            envelope.last_error = None;
            let json = envelope.to_json();
            let keys_and_args = |cmd: &mut Cmd| {
                cmd.arg(2)
                    .arg(&self.keys.dead)
                    .arg(&self.keys.stream)
                    .arg(&entry.id)
                    .arg(&json);
            };
            moved += usize::try_from(self.redis.eval::<i64>(&self.scripts.replay, keys_and_args).await?).unwrap_or(0);
        }
        Ok(moved)
    }
}

impl QueueStats {
    /// The figures the metrics gauges show.
    pub fn figures(&self) -> crate::metrics::QueueFigures {
        crate::metrics::QueueFigures {
            depth: self.depth,
            pending: self.pending,
            delayed: self.delayed,
            dead: self.dead,
            oldest_age_seconds: self.oldest_age_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_max_with_full_jitter() {
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(5),
        };
        assert_eq!(backoff(&config, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&config, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&config, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&config, 4, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&config, 60, 1.0), Duration::from_secs(5), "no overflow");
        assert_eq!(backoff(&config, 3, 0.0), Duration::ZERO);
        assert_eq!(backoff(&config, 3, 0.5), Duration::from_secs(2));
    }
}
