//! What a `202 queued` promises, against real Redis servers: the gateway refuses a Redis that would lose
//! acknowledged events on restart, an acknowledged event survives a SIGKILL of Redis on its append-only
//! file, and with `wait_replicas` an append no replica confirmed is refused, and its retry is not appended
//! twice.

use std::time::{Duration, Instant};

use crate::common::process::{self, BIN};
use crate::common::redis::{RedisCluster, RedisServer};
use crate::common::{FakeDownstream, temp_file, until};
use crate::queue::{process_config, queued, send, settled};

/// Before: the gateway started on a Redis without persistence and answered `202 queued` for events that a
/// Redis restart would lose.
#[tokio::test]
async fn a_queue_on_redis_without_persistence_refuses_to_start_and_says_what_to_set() {
    let redis = RedisServer::start();
    let text = process_config(&redis, process::free_port())
        .replace("allow_volatile = true\n", "")
        .replace("PUBLIC", &process::free_port().to_string())
        .replace("ADMIN", &process::free_port().to_string());
    let path = temp_file("volatile.toml", &text);
    let run = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("exits within 20 s")
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused to start: {stderr}");
    for needed in ["appendonly yes", "allow_volatile", "qcrash"] {
        assert!(stderr.contains(needed), "names {needed}: {stderr}");
    }

    // Accepting the loss is a choice: with allow_volatile it serves.
    let accepting = process_config(&redis, process::free_port());
    let _serving = process::serve("volatile-ok", &accepting, &[]).await;

    // With the append-only file on, it serves without being told anything.
    let durable = RedisServer::start_durable();
    let text = process_config(&durable, process::free_port()).replace("allow_volatile = true\n", "");
    let _serving = process::serve("durable", &text, &[]).await;
}

/// The README promises that an acknowledged event is never lost; no test ever restarted Redis with
/// persistence. Here Redis is SIGKILLed with events acknowledged and not yet delivered, and restarted on
/// its append-only file: each arrives, once.
#[tokio::test]
async fn acknowledged_events_survive_a_sigkill_of_redis_on_its_append_only_file() {
    let mut redis = RedisServer::start_durable();
    // Nothing listens on the downstream's port yet: every event waits in the queue.
    let held = FakeDownstream::reserve();
    let port = held.port;
    let config = queued(&format!("http://127.0.0.1:{port}"), &redis, "qaof", |q| {
        q.allow_volatile = false;
        q.backoff.initial = Duration::from_millis(50);
        q.backoff.max = Duration::from_millis(200);
        q.max_attempts = 1000;
    });
    let gateway = crate::common::TestGateway::start(config.clone()).await;
    let ids: Vec<String> = (0..20).map(|i| format!("aof-{i}")).collect();
    for id in &ids {
        send(&gateway, &config, "qaof", id).await.assert(202, "queued");
    }
    redis.stop();
    redis.restart();

    let downstream = held.start().await;
    let delivered = || {
        let mut got = downstream.event_ids();
        got.sort();
        got
    };
    let mut expected = ids.clone();
    expected.sort();
    assert!(
        until(Duration::from_secs(20), || delivered().len() >= ids.len()).await,
        "delivered after the restart: {:?}",
        delivered()
    );
    let stream = "hg:queue:{qaof}";
    assert!(until(Duration::from_secs(10), || redis.cli(&["XLEN", stream]) == "0").await);
    assert_eq!(delivered(), expected, "each acknowledged event, once");
    gateway.stop().await;
}

/// With `wait_replicas = 1` and no replica, the append is not confirmed: the sender gets `503` and
/// retries. Once a replica is in sync the retry is acknowledged, without appending the event a second
/// time, and it is delivered once.
#[tokio::test]
async fn an_append_no_replica_confirmed_is_refused_and_its_retry_is_not_appended_twice() {
    let redis = RedisServer::start_durable();
    let held = FakeDownstream::reserve();
    let port = held.port;
    let config = queued(&format!("http://127.0.0.1:{port}"), &redis, "qwait", |q| {
        q.allow_volatile = false;
        q.wait_replicas = 1;
        q.wait_timeout = Duration::from_millis(200);
        q.backoff.initial = Duration::from_millis(50);
        q.backoff.max = Duration::from_millis(200);
        q.max_attempts = 1000;
    });
    let gateway = crate::common::TestGateway::start(config.clone()).await;
    let refused = send(&gateway, &config, "qwait", "w-1").await;
    refused.assert(503, "unavailable");
    assert_eq!(
        refused.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    let stream = "hg:queue:{qwait}";
    let queued_entries = || {
        redis.cli(&["XLEN", stream]).parse::<u64>().unwrap_or(0)
            + redis.cli(&["ZCARD", "hg:delayed:{qwait}"]).parse::<u64>().unwrap_or(0)
    };
    assert_eq!(queued_entries(), 1, "the event is in the queue, unconfirmed");

    let _replica = RedisServer::start_replica_of(&redis);
    send(&gateway, &config, "qwait", "w-1").await.assert(202, "queued");
    assert_eq!(queued_entries(), 1, "the retry did not append the event again");
    send(&gateway, &config, "qwait", "w-2").await.assert(202, "queued");

    let downstream = held.start().await;
    assert!(
        until(Duration::from_secs(20), || queued_entries() == 0
            && downstream.received().len() >= 2)
        .await
    );
    let mut ids = downstream.event_ids();
    ids.sort();
    assert_eq!(ids, ["w-1", "w-2"]);
    gateway.stop().await;
}

/// A queue on a real Redis Cluster (three primaries, one replica each, named to the gateway by the
/// comma-separated `HOOKGATE_REDIS_URL`), with `wait_replicas = 1`. In the middle of a stream of events,
/// the primary that holds the queue's slot hands over to its replica (`CLUSTER FAILOVER`): senders retry
/// what is refused while it moves, dedup and the queue go on, and every acknowledged event is delivered.
#[tokio::test]
async fn a_queue_on_a_cluster_loses_nothing_through_a_primary_failover() {
    let cluster = RedisCluster::start_with_replicas();
    let downstream = FakeDownstream::start().await;
    let text = process_config(&cluster.nodes[0], downstream.addr.port())
        .replace("name = \"qcrash\"", "name = \"qcl\"")
        .replace("allow_volatile = true", "wait_replicas = 1\nwait_timeout = \"500ms\"");
    let urls = cluster.urls().join(",");
    let serving = process::serve_with_env("cluster", &text, &[], &[("HOOKGATE_REDIS_URL", &urls)]).await;
    let (primary, replica) = cluster.primary_and_replica_of("hg:queue:{qcl}");

    // A sender that retries each event until it is acknowledged (for at most 20 s), as a provider would.
    let port = serving.public;
    let sender = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..150 {
            let id = format!("cl-{i}");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let reply = send_to_port(port, &id).await;
                if reply.status == 202 {
                    acknowledged.push(id);
                    break;
                }
                assert!(Instant::now() < deadline, "{id} never acknowledged: {:?}", reply.body);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        acknowledged
    });
    assert!(until(Duration::from_secs(20), || downstream.received().len() >= 30).await);
    // A manual failover that cannot finish in 5 s is abandoned by Redis; ask again, within 30 s.
    let mut asked = Instant::now() - Duration::from_secs(10);
    assert!(
        until(Duration::from_secs(30), || {
            if asked.elapsed() >= Duration::from_secs(6) {
                asked = Instant::now();
                assert_eq!(replica.cli(&["cluster", "failover"]), "OK");
            }
            replica.cli(&["info", "replication"]).contains("role:master")
        })
        .await,
        "the replica took over: {}\n{}\n{}",
        replica.port,
        replica.cli(&["info", "replication"]),
        cluster.nodes[0].cli(&["cluster", "nodes"])
    );
    assert!(
        until(Duration::from_secs(20), || primary
            .cli(&["info", "replication"])
            .contains("master_link_status:up"))
        .await,
        "the old primary follows it, so that WAIT 1 can be met again"
    );
    let acknowledged = tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("the sender finished")
        .expect("sender");
    assert_eq!(acknowledged.len(), 150);
    let delivered = || {
        downstream
            .event_ids()
            .into_iter()
            .collect::<std::collections::BTreeSet<String>>()
    };
    assert!(
        until(Duration::from_secs(30), || acknowledged
            .iter()
            .all(|id| delivered().contains(id)))
        .await,
        "every acknowledged event is delivered after the failover"
    );
    // Dedup goes on across the failover: an acknowledged event sent again is a duplicate.
    let again = send_to_port(port, "cl-0").await;
    again.assert(200, "duplicate");
}

async fn send_to_port(port: u16, id: &str) -> crate::common::Reply {
    let config = crate::common::gateway::test_config("http://127.0.0.1:1");
    let body = crate::common::event_body(id);
    let url = format!("http://127.0.0.1:{port}/github");
    crate::common::Sender::default()
        .post(&url, crate::common::sign(&config, "github", &body, id), body)
        .await
}

/// With `wait_replicas`, a worker delivered an entry as soon as it was appended, replicated or not: an
/// entry refused for want of replicas (`503`) could be delivered, lost in a failover, appended again by
/// the sender's retry, and delivered a second time. Now an entry is delivered only once the replicas have
/// it.
#[tokio::test]
async fn with_wait_replicas_an_entry_is_delivered_only_once_a_replica_has_it() {
    let redis = RedisServer::start_durable();
    let downstream = FakeDownstream::start().await;
    let config = queued(&downstream.url(""), &redis, "qheld", |q| {
        q.allow_volatile = false;
        q.wait_replicas = 1;
        q.wait_timeout = Duration::from_millis(200);
        q.timeout = Duration::from_millis(500);
        q.reclaim_after = Duration::from_millis(1600);
    });
    let gateway = crate::common::TestGateway::start(config.clone()).await;
    send(&gateway, &config, "qheld", "h-1").await.assert(503, "unavailable");

    let held = "hookgate_queue_deliveries_total{source=\"qheld\",result=\"unreplicated\"}";
    let page = crate::common::scrape_until(&gateway.admin_url("/metrics"), Duration::from_secs(10), |page| {
        crate::common::metric(page, held) >= 1.0
    })
    .await;
    assert!(
        crate::common::metric(&page, held) >= 1.0,
        "a worker read the entry and held it back:\n{page}"
    );
    assert!(
        downstream.received().is_empty(),
        "not delivered while no replica has it"
    );

    let _replica = RedisServer::start_replica_of(&redis);
    send(&gateway, &config, "qheld", "h-1").await.assert(202, "queued");
    assert!(
        until(Duration::from_secs(20), || !downstream.received().is_empty()
            && settled(&redis, "qheld"))
        .await
    );
    let received = downstream.received();
    assert_eq!(received.len(), 1, "delivered once, after a replica had it");
    assert_eq!(received[0].header("x-hookgate-event-id"), Some("h-1"));
    gateway.stop().await;
}
