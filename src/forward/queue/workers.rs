//! The delivery workers: in every replica, one reader per queued source reads its stream in the consumer
//! group, reclaims entries a crashed replica left pending, moves due retries back, and hands entries to at
//! most `concurrency` deliveries.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamReadReply;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Queue;
use super::scripts::GROUP;
use crate::redis_client::millis;

/// How long one `XREADGROUP` waits for new entries before the reader looks at its other duties.
const BLOCK: Duration = Duration::from_millis(500);
const STATS_EVERY: Duration = Duration::from_secs(5);

/// The delivery workers of one gateway: one reader per queued source, until told to stop.
pub struct Workers {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Workers {
    /// Starts a reader for each queue. `consumer` names this replica in the consumer groups.
    pub fn start(queues: &[Arc<Queue>], consumer: &str) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        for queue in queues {
            tasks.spawn(read(queue.clone(), consumer.to_owned(), stop.clone(), tasks.clone()));
        }
        tasks.close();
        Workers { stop, tasks }
    }

    /// Stops taking new entries and waits, at most `grace`, for deliveries under way. What is left stays
    /// pending, for another replica to reclaim.
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("queue deliveries still running at the end of the grace period; they will be reclaimed");
        }
    }
}

/// This replica's consumer name: the host (the pod, on Kubernetes), the process, and a random suffix, so
/// that two gateways in one process (or a restarted one reusing a pid) never share a consumer.
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hookgate".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The reader of one source: reads new entries, reclaims abandoned ones, moves due retries, and hands
/// entries to at most `concurrency` deliveries.
async fn read(queue: Arc<Queue>, consumer: String, stop: CancellationToken, tasks: TaskTracker) {
    let slots = Arc::new(Semaphore::new(queue.config.concurrency));
    let mut failures = 0u32;
    let mut connection = None;
    let mut last_reclaim = tokio::time::Instant::now();
    let mut last_stats = tokio::time::Instant::now() - STATS_EVERY;
    while !stop.is_cancelled() {
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = tokio::time::Instant::now();
            if let Ok(stats) = queue.stats().await {
                crate::metrics::queue_stats(&queue.source, stats.figures());
            }
        }
        let step = async {
            if connection.is_none() {
                queue.ensure_group().await?;
                connection = Some(queue.redis.dedicated(BLOCK).await?);
            }
            let _ = queue.move_due().await?;
            // The slots first, then as many entries as slots in hand: an entry read is delivered at once,
            // never left pending while it waits for a slot, so a delivery takes at most `timeout` plus its
            // settling, which `reclaim_after` exceeds.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return Ok(Vec::new());
            };
            let mut held = vec![first];
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                held.push(slot);
            }
            let Some(dedicated) = connection.as_mut() else {
                return Ok(Vec::new());
            };
            let mut entries = Vec::new();
            if last_reclaim.elapsed() >= queue.config.reclaim_after / 4 {
                last_reclaim = tokio::time::Instant::now();
                entries.extend(queue.reclaim(dedicated, &consumer, held.len()).await?);
            }
            if entries.is_empty() {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP").arg(GROUP).arg(&consumer).arg("COUNT").arg(held.len());
                cmd.arg("BLOCK")
                    .arg(millis(BLOCK))
                    .arg("STREAMS")
                    .arg(&queue.keys.stream)
                    .arg(">");
                let reply: Option<StreamReadReply> = dedicated.query(&cmd).await?;
                entries.extend(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids));
            }
            if !entries.is_empty() && !queue.replicated(dedicated, entries.len()).await? {
                // Left pending: taken again after `reclaim_after`, when the replicas may have caught up.
                entries.clear();
            }
            // One slot per entry; the unused ones go back.
            held.truncate(entries.len());
            Ok::<_, String>(entries.into_iter().zip(held).collect::<Vec<_>>())
        };
        let entries = tokio::select! {
            () = stop.cancelled() => break,
            entries = step => entries,
        };
        match entries {
            Ok(entries) => {
                failures = 0;
                for (entry, slot) in entries {
                    let queue = queue.clone();
                    tasks.spawn(async move {
                        queue.deliver(&entry).await;
                        drop(slot);
                    });
                }
            }
            Err(error) => {
                connection = None;
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(source = %queue.source, %error, "queue reader cannot reach redis; retrying");
                }
                let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}
