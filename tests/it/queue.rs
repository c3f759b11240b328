//! The queue handler against a real `redis-server`: 202 at once, retries with backoff, dead letters and
//! replay, crash safety (SIGKILL of the real binary), two gateways on one stream, Redis down at accept,
//! and a burst of 10 000 events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate::config::{BackoffConfig, Config, ForwardConfig, OnStoreError, QueueConfig, RedisUrls, StoreKind};
use hookgate::forward::queue::{Queue, QueueStats, Replay};
use hookgate::gateway::{Backends, Gateway};

use crate::common::downstream::Received;
use crate::common::gateway::test_config;
use crate::common::process::{self, Serving};
use crate::common::redis::RedisServer;
use crate::common::{FakeDownstream, Reply, Sender, TestGateway, event_body, metric, scrape_until, sign, until};

fn queue_settings(url: String) -> QueueConfig {
    QueueConfig {
        url: url.parse().expect("downstream url"),
        timeout: Duration::from_secs(2),
        max_attempts: 5,
        backoff: BackoffConfig {
            initial: Duration::from_millis(200),
            multiplier: 2.0,
            max: Duration::from_secs(1),
        },
        reclaim_after: Duration::from_secs(4),
        concurrency: 16,
        maxlen: None,
        // The test servers run without persistence; the durability tests run theirs with AOF.
        allow_volatile: true,
        wait_replicas: 0,
        wait_timeout: Duration::from_secs(1),
    }
}

/// The test config, with `source` renamed after the test (its own metrics) and queued to the downstream.
pub(crate) fn queued(
    downstream: &str,
    redis: &RedisServer,
    name: &str,
    settings: impl FnOnce(&mut QueueConfig),
) -> Config {
    let mut config = test_config(downstream);
    config.dedup.store = StoreKind::Redis;
    config.dedup.redis_url = RedisUrls::One(redis.url());
    let source = config.sources.iter_mut().find(|s| s.name == "github").expect("github");
    source.name = name.to_owned();
    let mut queue = queue_settings(format!("{downstream}/github"));
    settings(&mut queue);
    source.forward = ForwardConfig::Queue(queue);
    config
}

pub(crate) async fn send(gateway: &TestGateway, config: &Config, name: &str, id: &str) -> Reply {
    let body = event_body(id);
    Sender::default()
        .post(&gateway.url("/github"), sign(config, name, &body, id), body)
        .await
}

/// The queue of `source` in `config`, for its statistics and dead letters, built as `serve` builds it.
fn queue_of(config: &Config, source: &str) -> Arc<Queue> {
    let path = std::path::Path::new("test.toml");
    let backends = Backends::connect(config, path).expect("backends");
    let gateway = Gateway::build(config, &backends, path).expect("gateway");
    gateway.queue(source).expect("a queued source").clone()
}

/// Whether `source`'s queue holds nothing, in its stream or waiting for a retry: every entry has been
/// settled, so nothing more can be delivered. What a test waits for before it counts deliveries, instead of
/// a pause.
pub(crate) fn settled(redis: &RedisServer, source: &str) -> bool {
    redis.cli(&["XLEN", &format!("hg:queue:{{{source}}}")]) == "0"
        && redis.cli(&["ZCARD", &format!("hg:delayed:{{{source}}}")]) == "0"
}

fn attempts(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.header("x-hookgate-attempt").unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn a_failing_downstream_is_retried_with_backoff_until_it_answers() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.answer(&[503, 503, 200]);
    let config = queued(&downstream.url(""), &redis, "qretry", |_| {});
    let gateway = TestGateway::start(config.clone()).await;

    let started = Instant::now();
    send(&gateway, &config, "qretry", "q-1").await.assert(202, "queued");
    let answered = started.elapsed();
    assert!(until(Duration::from_secs(10), || downstream.received().len() == 3).await);
    let received = downstream.received();
    assert_eq!(attempts(&received), ["1", "2", "3"]);
    assert!(received.iter().all(|r| r.header("x-hookgate-event-id") == Some("q-1")));
    // Full jitter: each wait is at most the backoff cap (200 ms, then 400 ms), plus the reader's tick.
    let slack = Duration::from_millis(600);
    assert!(received[1].at - received[0].at <= Duration::from_millis(200) + slack);
    assert!(received[2].at - received[1].at <= Duration::from_millis(400) + slack);
    assert!(
        answered < received[2].at - started,
        "the sender was answered before the delivery succeeded"
    );

    // The last delivery is acknowledged just after the downstream answers it.
    let queue = queue_of(&config, "qretry");
    let mut stats = queue.stats().await.expect("stats");
    for _ in 0..100 {
        if stats.depth == 0 {
            break;
        }
        assert_eq!(
            (stats.depth, stats.pending),
            (1, 1),
            "in flight, consistently: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = queue.stats().await.expect("stats");
    }
    assert_eq!(
        (stats.depth, stats.pending, stats.delayed, stats.dead),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_event_that_always_fails_is_dead_lettered_and_replay_delivers_it_once() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.answer(&[500]);
    let config = queued(&downstream.url(""), &redis, "qdead", |q| {
        q.max_attempts = 3;
        q.backoff.initial = Duration::from_millis(50);
    });
    let gateway = TestGateway::start(config.clone()).await;
    send(&gateway, &config, "qdead", "dead-1").await.assert(202, "queued");

    let queue = queue_of(&config, "qdead");
    let mut stats = QueueStats::default();
    for _ in 0..250 {
        stats = queue.stats().await.expect("stats");
        if stats.dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((stats.dead, stats.depth, stats.delayed), (1, 0, 0), "{stats:?}");
    assert_eq!(
        attempts(&downstream.received()),
        ["1", "2", "3"],
        "max_attempts counts every POST"
    );
    // The CLI sees the same dead letter.
    let cli_config = format!(
        "[dedup]\nstore = \"redis\"\nredis_url = \"{}\"\n[[source]]\nname = \"qdead\"\npath = \"/github\"\nscheme = \"github\"\nsecrets = [\"cli-secret-0123456789\"]\nforward = {{ kind = \"queue\", url = \"{}/github\" }}\n",
        redis.url(),
        downstream.url("")
    );
    let path = crate::common::temp_file("dead-cli.toml", &cli_config);
    let listed = tokio::process::Command::new(process::BIN)
        .args(["dead", "list", "qdead", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("dead list");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON line");
    assert_eq!(
        (line["event_id"].as_str(), line["attempts"].as_u64()),
        (Some("dead-1"), Some(3))
    );

    let letters = queue.dead_letters().await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event_id.as_str(), letters[0].attempts), ("dead-1", 3));
    assert!(
        letters[0].last_error.as_deref().is_some_and(|e| e.contains("500")),
        "{letters:?}"
    );

    downstream.answer(&[200]);
    assert_eq!(
        queue.replay(&Replay::One("dead-1".to_owned())).await.expect("replay"),
        1
    );
    assert_eq!(
        queue.replay(&Replay::One("dead-1".to_owned())).await.expect("replay"),
        0,
        "safe to run twice"
    );
    assert!(
        until(Duration::from_secs(10), || downstream.received().len() == 4
            && settled(&redis, "qdead"))
        .await
    );
    let received = downstream.received();
    assert_eq!(received.len(), 4, "delivered once after the replay");
    assert_eq!(
        received[3].header("x-hookgate-attempt"),
        Some("1"),
        "attempts start over"
    );
    assert!(queue.dead_letters().await.expect("list").is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn an_entry_that_cannot_be_read_is_dead_lettered_and_nothing_is_delivered() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let config = queued(&downstream.url(""), &redis, "qbad", |_| {});
    let gateway = TestGateway::start(config.clone()).await;
    // One event through the gateway, so that the stream and its consumer group exist and are being read.
    send(&gateway, &config, "qbad", "good-1").await.assert(202, "queued");
    assert!(until(Duration::from_secs(10), || downstream.received().len() == 1).await);

    let stream = format!("{}:queue:{{qbad}}", config.dedup.key_prefix);
    let good = |body: &str| {
        format!(
            r#"{{"event_id":"e","headers":[],"body":"{body}","client_ip":"203.0.113.9","request_id":"r","received_at_ms":1,"attempt":0}}"#
        )
    };
    // Not JSON; JSON with a body that is not base64; and, as a control, one that is well formed.
    for value in ["not json".to_owned(), good("not base64!"), good("e30=")] {
        let _: String = redis.command("XADD", &[stream.as_bytes(), b"*", b"e", value.as_bytes()]);
    }
    let queue = queue_of(&config, "qbad");
    let mut stats = QueueStats::default();
    for _ in 0..250 {
        stats = queue.stats().await.expect("stats");
        if stats.dead == 2 && downstream.received().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.dead, 2, "{stats:?}");
    let received = downstream.received();
    assert_eq!(received.len(), 2, "only the readable entries are delivered");
    assert_eq!(received[1].body.as_ref(), b"{}");

    // Each dead letter holds the entry's own fields, byte for byte, beside the id it had in the queue (they
    // were replaced by `{"unreadable_entry": id}`, and the content was gone).
    let dead = format!("{}:dead:{{qbad}}", config.dedup.key_prefix);
    let letters: ::redis::streams::StreamRangeReply = redis.command("XRANGE", &[dead.as_bytes(), b"-", b"+"]);
    let kept: Vec<(Option<String>, Option<String>)> = letters
        .ids
        .iter()
        .map(|letter| (letter.get("unreadable_entry"), letter.get("e")))
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .all(|(id, _)| id.as_deref().is_some_and(|id| id.contains('-'))),
        "{kept:?}"
    );
    // Delivered concurrently, so dead-lettered in either order.
    let mut values: Vec<Option<String>> = kept.into_iter().map(|(_, e)| e).collect();
    values.sort();
    let mut expected = [Some("not json".to_owned()), Some(good("not base64!"))];
    expected.sort();
    assert_eq!(values, expected);
    let listed = queue.dead_letters().await.expect("dead letters");
    assert!(listed.iter().all(|letter| letter.unreadable), "{listed:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_source_whose_downstream_keeps_failing_does_not_starve_another() {
    let redis = RedisServer::start();
    let failing = FakeDownstream::start().await;
    failing.answer(&[500]);
    failing.delay(Duration::from_millis(300));
    let healthy = FakeDownstream::start().await;
    let mut config = queued(&failing.url(""), &redis, "qstuck", |q| {
        q.concurrency = 2;
        q.backoff.initial = Duration::from_millis(10);
        q.max_attempts = 1000;
    });
    let other = config
        .sources
        .iter_mut()
        .find(|s| s.name == "shopify")
        .expect("shopify");
    other.name = "qfine".to_owned();
    other.forward = ForwardConfig::Queue(queue_settings(healthy.url("/shopify")));
    let gateway = TestGateway::start(config.clone()).await;
    for i in 0..20 {
        send(&gateway, &config, "qstuck", &format!("stuck-{i}"))
            .await
            .assert(202, "queued");
    }
    let started = Instant::now();
    for i in 0..20 {
        let id = format!("fine-{i}");
        let body = event_body(&id);
        let reply = Sender::default()
            .post(&gateway.url("/shopify"), sign(&config, "qfine", &body, &id), body)
            .await;
        reply.assert(202, "queued");
    }
    assert!(until(Duration::from_secs(10), || healthy.received().len() == 20).await);
    // The failing source's two slots are busy with 300 ms failures all along; the other source is not held up.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(failing.received().len() >= 2);
    gateway.stop().await;
}

#[tokio::test]
async fn two_gateways_on_one_stream_deliver_every_event_once() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let config = queued(&downstream.url(""), &redis, "qtwo", |q| q.concurrency = 4);
    let a = Arc::new(TestGateway::start(config.clone()).await);
    let b = Arc::new(TestGateway::start(config.clone()).await);
    let sends: Vec<_> = (0..200)
        .map(|i| {
            let gateway = if i % 2 == 0 { a.clone() } else { b.clone() };
            let config = config.clone();
            tokio::spawn(async move { send(&gateway, &config, "qtwo", &format!("two-{i}")).await })
        })
        .collect();
    for task in sends {
        task.await.expect("task").assert(202, "queued");
    }
    assert!(
        until(Duration::from_secs(20), || downstream.received().len() >= 200
            && settled(&redis, "qtwo"))
        .await
    );
    let received = downstream.received();
    let ids: HashSet<_> = downstream.event_ids().into_iter().collect();
    assert_eq!(ids.len(), 200, "every event delivered");
    assert_eq!(received.len(), 200, "none delivered twice");
}

#[tokio::test]
async fn with_redis_down_at_accept_the_sender_gets_503_and_nothing_is_forwarded() {
    let mut redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let mut config = queued(&downstream.url(""), &redis, "qdown", |_| {});
    // Without dedup in the way, the append itself is what fails.
    config.dedup.on_store_error = OnStoreError::Accept;
    let gateway = TestGateway::start(config.clone()).await;
    redis.stop();
    let reply = send(&gateway, &config, "qdown", "down-1").await;
    reply.assert(503, "unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    // The append failed: the event is nowhere a reader could take it from, so nothing is waited for.
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn a_burst_of_10000_events_is_accepted_then_drained_exactly_once() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let mut config = queued(&downstream.url(""), &redis, "qburst", |q| q.concurrency = 64);
    // One loopback client sends everything: lift the per-IP limit, which would rightly refuse it.
    config.rate_limit.per_second = 1_000_000;
    config.rate_limit.burst = 1_000_000;
    let gateway = Arc::new(TestGateway::start(config.clone()).await);
    let total = 10_000;
    let senders = 64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let (gateway, config) = (gateway.clone(), config.clone());
            tokio::spawn(async move {
                let sender = Sender::default();
                for i in (s..total).step_by(senders) {
                    let id = format!("burst-{i}");
                    let body = event_body(&id);
                    let reply = sender
                        .post(&gateway.url("/github"), sign(&config, "qburst", &body, &id), body)
                        .await;
                    reply.assert(202, "queued");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    let accepted = started.elapsed();
    assert!(until(Duration::from_secs(120), || downstream.received().len() >= total).await);
    let drained = started.elapsed();
    assert!(until(Duration::from_secs(20), || settled(&redis, "qburst")).await);
    let received = downstream.received();
    let ids: HashSet<_> = downstream.event_ids().into_iter().collect();
    assert_eq!((ids.len(), received.len()), (total, total));
    eprintln!(
        "burst of {total}: accepted in {accepted:?} ({:.0}/s), all delivered after {drained:?} ({:.0}/s overall)",
        total as f64 / accepted.as_secs_f64(),
        total as f64 / drained.as_secs_f64()
    );
}

pub(crate) fn process_config(redis: &RedisServer, downstream_port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:PUBLIC"
admin_listen = "127.0.0.1:ADMIN"
[dedup]
store = "redis"
redis_url = "{}"
[[source]]
name = "qcrash"
path = "/github"
scheme = "github"
secrets = ["gh-secret-for-tests-0001"]
[source.forward]
kind = "queue"
url = "http://127.0.0.1:{downstream_port}/github"
timeout = "1s"
reclaim_after = "2500ms"
backoff = {{ initial = "300ms", multiplier = 2.0, max = "1s" }}
allow_volatile = true
"#,
        redis.url()
    )
}

pub(crate) async fn send_to(process: &Serving, id: &str) -> Reply {
    let config = test_config("http://127.0.0.1:1");
    let body = event_body(id);
    let url = format!("http://127.0.0.1:{}/github", process.public);
    Sender::default()
        .post(&url, sign(&config, "github", &body, id), body)
        .await
}

#[tokio::test]
async fn sigkill_after_the_202_and_before_delivery_loses_nothing() {
    let redis = RedisServer::start();
    // Nothing listens on the downstream's port yet: no delivery can happen before the kill.
    let held = FakeDownstream::reserve();
    let port = held.port;
    let text = process_config(&redis, port);
    let mut first = process::serve("before", &text, &[]).await;
    send_to(&first, "crash-1").await.assert(202, "queued");
    first.child.kill().await.expect("SIGKILL");

    let downstream = held.start().await;
    let second = process::serve("before", &text, &[]).await;
    assert!(
        until(Duration::from_secs(20), || !downstream.received().is_empty()).await,
        "delivered after restart"
    );
    assert!(until(Duration::from_secs(20), || settled(&redis, "qcrash")).await);
    let received = downstream.received();
    assert_eq!(
        received.len(),
        1,
        "delivered once: the first process's attempts never reached the downstream"
    );
    assert_eq!(received[0].header("x-hookgate-event-id"), Some("crash-1"));

    let stats = tokio::process::Command::new(process::BIN)
        .args(["queue", "stats", "--config"])
        .arg(&second.path)
        .output()
        .await
        .expect("queue stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(stats["qcrash"]["depth"], 0, "{stats}");
    assert_eq!(stats["qcrash"]["dead"], 0, "{stats}");
}

#[tokio::test]
async fn sigkill_during_a_delivery_delivers_at_least_once() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    // The downstream holds the first delivery without answering: the process dies in the middle of it.
    downstream.delay(Duration::from_secs(3600));
    let text = process_config(&redis, downstream.addr.port());
    let mut first = process::serve("during", &text, &[]).await;
    send_to(&first, "crash-2").await.assert(202, "queued");
    assert!(until(Duration::from_secs(10), || downstream.received().len() == 1).await);
    first.child.kill().await.expect("SIGKILL");

    downstream.delay(Duration::ZERO);
    let _second = process::serve("during", &text, &[]).await;
    // The entry is pending on the dead consumer; after reclaim_after (2.5 s) the new process takes it over.
    assert!(
        until(Duration::from_secs(20), || downstream.received().len() >= 2).await,
        "redelivered"
    );
    assert!(until(Duration::from_secs(20), || settled(&redis, "qcrash")).await);
    let received = downstream.received();
    let duplicates = received.len() - 1;
    assert_eq!(
        duplicates, 1,
        "the interrupted POST and the redelivery: one duplicate, stated"
    );
    assert!(
        received
            .iter()
            .all(|r| r.header("x-hookgate-event-id") == Some("crash-2"))
    );
}

/// `maxlen` trimmed the oldest entries, pending ones included: events answered `202 queued` vanished (of
/// 350 with `maxlen = 100`, 249 were never delivered). Now the queue refuses the append at the cap, and
/// every event it acknowledged is delivered.
#[tokio::test]
async fn at_maxlen_appends_are_refused_and_nothing_acknowledged_is_lost() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.answer(&[503]);
    let config = queued(&downstream.url(""), &redis, "qfull", |q| {
        q.maxlen = Some(10);
        q.max_attempts = 1000;
        q.backoff.initial = Duration::from_millis(20);
        q.backoff.max = Duration::from_millis(100);
    });
    let gateway = TestGateway::start(config.clone()).await;
    let mut queued_ids = Vec::new();
    let mut refused = 0;
    for i in 0..35 {
        let id = format!("full-{i}");
        let reply = send(&gateway, &config, "qfull", &id).await;
        match reply.status.as_u16() {
            202 => queued_ids.push(id),
            503 => {
                reply.assert(503, "unavailable");
                assert_eq!(reply.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));
                refused += 1;
            }
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }
    assert_eq!(queued_ids.len(), 10, "exactly maxlen acknowledged");
    assert_eq!(refused, 25);
    // The downstream comes back: every acknowledged event arrives.
    downstream.answer(&[200]);
    let switched = std::time::Instant::now();
    let delivered = || {
        let got: std::collections::BTreeSet<String> = downstream
            .received()
            .iter()
            .filter(|r| r.at >= switched)
            .filter_map(|r| r.header("x-hookgate-event-id").map(str::to_owned))
            .collect();
        queued_ids.iter().all(|id| got.contains(id))
    };
    assert!(
        until(Duration::from_secs(20), delivered).await,
        "every 202 is delivered"
    );
    gateway.stop().await;
}

/// The settling scripts moved an entry whether or not their `XACK` acknowledged it. A gateway paused
/// (SIGSTOP) in the middle of a delivery has its entry taken over by another after `reclaim_after`; when
/// both settle a failed attempt, the entry went onto the delayed set twice, and would be delivered twice
/// from then on. Now the late one moves nothing, and says so (`superseded`).
#[tokio::test]
async fn a_delivery_settled_by_two_replicas_is_moved_once() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.answer(&[500]);
    downstream.delay(Duration::from_millis(300));
    // Retries far in the future: a retried entry stays on the delayed set, where the test counts it.
    let text = process_config(&redis, downstream.addr.port())
        .replace("name = \"qcrash\"", "name = \"qsuper\"")
        .replace("initial = \"300ms\"", "initial = \"1h\"")
        .replace("max = \"1s\"", "max = \"1h\"");
    let mut first = process::serve("super-a", &text, &[]).await;
    send_to(&first, "super-1").await.assert(202, "queued");
    assert!(until(Duration::from_secs(10), || downstream.received().len() == 1).await);
    // Paused while the downstream holds its POST: the entry stays pending on the first gateway.
    process::signal(&first.child, "STOP").await;

    let _second = process::serve("super-b", &text, &[]).await;
    let delayed_key = "hg:delayed:{qsuper}";
    let delayed = || redis.cli(&["ZCARD", delayed_key]);
    assert!(
        until(Duration::from_secs(20), || delayed() == "1").await,
        "the second gateway took the entry over, tried it, and put it on the delayed set"
    );
    assert_eq!(downstream.received().len(), 2);

    process::signal(&first.child, "CONT").await;
    // The first gateway's delivery ends (its timeout passed while it was stopped) and it settles.
    let url = format!("http://127.0.0.1:{}/metrics", first.admin);
    let series = |result: &str| format!("hookgate_queue_deliveries_total{{source=\"qsuper\",result=\"{result}\"}}");
    let settled = |page: &str| metric(page, &series("superseded")) + metric(page, &series("retry")) >= 1.0;
    let page = scrape_until(&url, Duration::from_secs(10), settled).await;
    assert!(settled(&page), "the first gateway settled within 10 s:\n{page}");
    assert_eq!(metric(&page, &series("superseded")), 1.0, "{page}");
    assert_eq!(metric(&page, &series("retry")), 0.0, "{page}");
    assert_eq!(delayed(), "1", "the entry is on the delayed set once");
    first.child.kill().await.expect("kill");
}

/// `XAUTOCLAIM` reports the ids of entries deleted while pending: events that were acknowledged and will
/// never be delivered. They were ignored; now they are counted and logged.
#[tokio::test]
async fn entries_deleted_while_pending_are_counted_as_lost() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let stream = "hg:queue:{qlost}";
    // An entry read by a consumer that then vanished, and deleted (by hand, or by an old trim) while pending.
    redis.cli(&["XGROUP", "CREATE", stream, "hookgate", "0", "MKSTREAM"]);
    let id = redis.cli(&["XADD", stream, "*", "e", "{}"]);
    redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "hookgate",
        "ghost",
        "COUNT",
        "1",
        "STREAMS",
        stream,
        ">",
    ]);
    assert_eq!(redis.cli(&["XDEL", stream, &id]), "1");

    let config = queued(&downstream.url(""), &redis, "qlost", |q| {
        q.timeout = Duration::from_millis(500);
        q.reclaim_after = Duration::from_millis(1600);
    });
    let gateway = TestGateway::start(config.clone()).await;
    let series = "hookgate_queue_lost_total{source=\"qlost\"}";
    let page = scrape_until(&gateway.admin_url("/metrics"), Duration::from_secs(10), |page| {
        metric(page, series) >= 1.0
    })
    .await;
    assert_eq!(metric(&page, series), 1.0, "{page}");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}
