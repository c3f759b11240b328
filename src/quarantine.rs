//! The quarantine: requests of a source with `quarantine = true` that were refused as `bad_signature`,
//! `ip_denied` or `bad_request` are kept, headers and body, in a bounded Redis stream
//! `{prefix}:quarantine:{source}`, with the reason. Only requests that got past the rate limit and the body
//! limit reach it, so a flood cannot fill it; `[quarantine]` bounds its length and age. `hookgate
//! quarantine list` shows what is kept; `hookgate quarantine replay` runs a kept request through the
//! current config (the fixed secret, the new allowlist), forwards it only if it now passes, with dedup,
//! and removes it once delivered or found a duplicate, so a second replay delivers nothing twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use redis::streams::StreamRangeReply;
use serde::{Deserialize, Serialize};

use crate::config::QuarantineHeaders;
use crate::peer::ClientIp;
use crate::redis_client::RedisClient;
use crate::verify::Unverified;

/// The stream field that holds an entry's JSON.
const FIELD: &str = "q";

/// One kept request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The stream entry id, which names the entry for `replay --id`.
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// When it was received, in Unix milliseconds.
    pub received_at_ms: u64,
    /// The resolved client address.
    pub client_ip: String,
    /// What it was refused as: `bad_signature`, `ip_denied` or `bad_request`.
    pub verdict: String,
    /// The refined reason, such as `mismatch`.
    pub reason: String,
    /// Its headers, as received (or with signatures blanked, under `quarantine_headers = "redacted"`).
    pub headers: Vec<(String, String)>,
    /// Whether signature and credential headers were blanked: such an entry cannot verify on replay.
    pub redacted: bool,
    /// The body, base64.
    pub body: String,
}

impl Entry {
    /// The body's length in bytes.
    pub fn size(&self) -> usize {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .map_or(0, |b| b.len())
    }

    /// The request's headers and body, as they were kept; `None` for an entry that cannot be read back.
    pub fn request(&self) -> Option<(HeaderMap, Bytes)> {
        let body = base64::engine::general_purpose::STANDARD.decode(&self.body).ok()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(HeaderName::try_from(name).ok()?, HeaderValue::from_str(value).ok()?);
        }
        Some((headers, Bytes::from(body)))
    }
}

/// Where one source's refused requests are kept.
#[derive(Debug)]
pub struct Quarantine {
    source: Arc<str>,
    redis: RedisClient,
    key: String,
    max_entries: u64,
    max_age: Duration,
    /// With `quarantine_headers = "redacted"`: the headers blanked.
    redact: Option<Arc<[HeaderName]>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Quarantine {
    /// The quarantine of `source` under `prefix`; `sensitive` are the headers `redacted` blanks.
    pub fn new(
        source: Arc<str>,
        redis: RedisClient,
        prefix: &str,
        bounds: &crate::config::QuarantineConfig,
        headers: QuarantineHeaders,
        sensitive: Arc<[HeaderName]>,
    ) -> Self {
        Quarantine {
            key: format!("{prefix}:quarantine:{source}"),
            source,
            redis,
            max_entries: bounds.max_entries,
            max_age: bounds.max_age,
            redact: (headers == QuarantineHeaders::Redacted).then_some(sensitive),
        }
    }

    /// The source it belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Keeps `request`, then trims the stream to its bounds.
    pub async fn store(&self, request: &Unverified) -> Result<(), String> {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                let blank = self.redact.as_ref().is_some_and(|names| names.contains(name));
                let value = if blank {
                    "[redacted]".to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_owned(), value)
            })
            .collect();
        let entry = Entry {
            id: String::new(),
            received_at_ms: now_ms(),
            client_ip: request
                .extensions()
                .get::<ClientIp>()
                .map_or_else(String::new, |c| c.0.to_string()),
            verdict: request.verdict().to_owned(),
            reason: request.reason().to_owned(),
            headers,
            redacted: self.redact.is_some(),
            body: base64::engine::general_purpose::STANDARD.encode(request.body()),
        };
        let json = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
        let mut add = redis::cmd("XADD");
        add.arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_entries)
            .arg("*")
            .arg(FIELD)
            .arg(json);
        self.redis.query::<String>(&add).await?;
        let oldest = now_ms().saturating_sub(crate::redis_client::millis(self.max_age));
        let mut trim = redis::cmd("XTRIM");
        trim.arg(&self.key).arg("MINID").arg("~").arg(oldest);
        self.redis.query::<u64>(&trim).await?;
        Ok(())
    }

    /// Every kept request, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>, String> {
        let mut range = redis::cmd("XRANGE");
        range.arg(&self.key).arg("-").arg("+");
        let reply: StreamRangeReply = self.redis.query(&range).await?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|stream_id| {
                let raw: String = stream_id.get(FIELD)?;
                let mut entry: Entry = serde_json::from_str(&raw).ok()?;
                entry.id = stream_id.id;
                Some(entry)
            })
            .collect())
    }

    /// Removes one kept request; `false` when it was not there (removed already, by another replay).
    pub async fn remove(&self, id: &str) -> Result<bool, String> {
        let mut del = redis::cmd("XDEL");
        del.arg(&self.key).arg(id);
        Ok(self.redis.query::<u64>(&del).await? == 1)
    }

    /// How many requests are kept, and the age of the oldest, in seconds.
    pub async fn stats(&self) -> Result<(u64, f64), String> {
        let mut len = redis::cmd("XLEN");
        len.arg(&self.key);
        let count: u64 = self.redis.query(&len).await?;
        let mut first = redis::cmd("XRANGE");
        first.arg(&self.key).arg("-").arg("+").arg("COUNT").arg(1);
        let reply: StreamRangeReply = self.redis.query(&first).await?;
        let oldest = reply
            .ids
            .first()
            .and_then(|e| e.id.split('-').next()?.parse::<u64>().ok())
            .map_or(0.0, |ms| now_ms().saturating_sub(ms) as f64 / 1000.0);
        Ok((count, oldest))
    }

    /// Keeps the stats gauges of `quarantine` current while it lives (every 5 s).
    pub fn watch(quarantine: &Arc<Quarantine>) {
        let weak = Arc::downgrade(quarantine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(quarantine) = weak.upgrade() else { return };
                if let Ok((count, oldest)) = quarantine.stats().await {
                    crate::metrics::quarantine_stats(&quarantine.source, count, oldest);
                }
            }
        });
    }
}

impl crate::verify::Keep for Quarantine {
    fn keep(self: Arc<Self>, request: Unverified) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            match self.store(&request).await {
                Ok(()) => crate::metrics::quarantine_kept(&self.source, request.verdict()),
                Err(error) => {
                    tracing::warn!(source = %self.source, %error, "a refused request could not be quarantined");
                }
            }
        })
    }
}
