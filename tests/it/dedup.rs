//! Deduplication end to end, against the memory store and a real `redis-server` (single node and
//! cluster): each event reaches the downstream once, and a failed delivery never swallows the retry.

use std::sync::Arc;
use std::time::Duration;

use hookgate::config::{Config, ForwardConfig, OnStoreError, RedisUrls, StoreKind};
use hookgate::dedup::{ClaimResult, DedupStore};
use hookgate::verify::event_id::EventId;

use crate::common::gateway::test_config;
use crate::common::redis::{RedisCluster, RedisServer};
use crate::common::{FakeDownstream, Reply, Sender, TestGateway, event_body, sign};

fn on_redis(mut config: Config, urls: RedisUrls) -> Config {
    config.dedup.store = StoreKind::Redis;
    config.dedup.redis_url = urls;
    config
}

fn redis_config(downstream: &FakeDownstream, redis: &RedisServer) -> Config {
    let mut config = on_redis(test_config(&downstream.url("")), RedisUrls::One(redis.url()));
    config.dedup.redis_ca_file = redis.ca_file();
    config
}

async fn deliver(gateway: &TestGateway, config: &Config, source: &str, id: &str) -> Reply {
    let body = event_body(id);
    Sender::default()
        .post(
            &gateway.url(&format!("/{source}")),
            sign(config, source, &body, id),
            body,
        )
        .await
}

async fn same_event_twice_is_forwarded_once(config: Config, downstream: &FakeDownstream) {
    let gateway = TestGateway::start(config.clone()).await;
    deliver(&gateway, &config, "stripe", "evt_twice")
        .await
        .assert(200, "forwarded");
    deliver(&gateway, &config, "stripe", "evt_twice")
        .await
        .assert(200, "duplicate");
    // The same id from another source is another event.
    deliver(&gateway, &config, "slack", "evt_twice")
        .await
        .assert(200, "forwarded");
    assert_eq!(downstream.received().len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn same_event_twice_is_forwarded_once_in_memory() {
    let downstream = FakeDownstream::start().await;
    same_event_twice_is_forwarded_once(test_config(&downstream.url("")), &downstream).await;
}

#[tokio::test]
async fn same_event_twice_is_forwarded_once_in_redis() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    same_event_twice_is_forwarded_once(redis_config(&downstream, &redis), &downstream).await;
    assert_eq!(redis.cli(&["dbsize"]), "2");
}

#[tokio::test]
async fn claim_released_when_downstream_fails_so_the_retry_is_forwarded() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.answer(&[500, 200]);
    let config = redis_config(&downstream, &redis);
    let gateway = TestGateway::start(config.clone()).await;

    deliver(&gateway, &config, "github", "d-retry")
        .await
        .assert(502, "downstream_error");
    assert_eq!(redis.cli(&["dbsize"]), "0", "the claim was released: the key is gone");
    deliver(&gateway, &config, "github", "d-retry")
        .await
        .assert(200, "forwarded");
    deliver(&gateway, &config, "github", "d-retry")
        .await
        .assert(200, "duplicate");
    assert_eq!(downstream.received().len(), 2, "the failed try and the retry");
    gateway.stop().await;
}

#[tokio::test]
async fn claim_released_when_downstream_times_out_so_the_retry_is_forwarded() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_secs(30));
    let mut config = redis_config(&downstream, &redis);
    if let ForwardConfig::Http { timeout, .. } = &mut config.sources[1].forward {
        *timeout = Duration::from_millis(300);
    }
    let gateway = TestGateway::start(config.clone()).await;
    deliver(&gateway, &config, "github", "d-slow")
        .await
        .assert(504, "downstream_timeout");
    assert_eq!(redis.cli(&["dbsize"]), "0");
    downstream.delay(Duration::ZERO);
    deliver(&gateway, &config, "github", "d-slow")
        .await
        .assert(200, "forwarded");
    gateway.stop().await;
}

async fn fifty_concurrent_deliveries_reach_the_downstream_once(config: Config, downstream: &FakeDownstream) {
    downstream.delay(Duration::from_millis(100));
    let gateway = Arc::new(TestGateway::start(config.clone()).await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (gateway, config) = (gateway.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            deliver(&gateway, &config, "standard", "msg_same").await
        }));
    }
    let mut outcomes = std::collections::BTreeMap::new();
    for task in tasks {
        let reply = task.await.expect("task");
        *outcomes.entry(reply.outcome().to_owned()).or_insert(0) += 1;
        if reply.outcome() == "in_flight" {
            assert_eq!(reply.status, 409);
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    assert_eq!(downstream.received().len(), 1, "{outcomes:?}");
    assert_eq!(outcomes.get("forwarded"), Some(&1), "{outcomes:?}");
    let others = outcomes.get("duplicate").unwrap_or(&0) + outcomes.get("in_flight").unwrap_or(&0);
    assert_eq!(others, 49, "{outcomes:?}");
}

#[tokio::test]
async fn fifty_concurrent_identical_deliveries_reach_the_downstream_once_in_memory() {
    let downstream = FakeDownstream::start().await;
    fifty_concurrent_deliveries_reach_the_downstream_once(test_config(&downstream.url("")), &downstream).await;
}

#[tokio::test]
async fn fifty_concurrent_identical_deliveries_reach_the_downstream_once_in_redis() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    fifty_concurrent_deliveries_reach_the_downstream_once(redis_config(&downstream, &redis), &downstream).await;
}

#[tokio::test]
async fn an_event_delivered_through_one_gateway_is_a_duplicate_at_another() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let config = redis_config(&downstream, &redis);
    let a = TestGateway::start(config.clone()).await;
    let b = TestGateway::start(config.clone()).await;
    deliver(&a, &config, "shopify", "shop-1").await.assert(200, "forwarded");
    deliver(&b, &config, "shopify", "shop-1").await.assert(200, "duplicate");
    deliver(&b, &config, "shopify", "shop-2").await.assert(200, "forwarded");
    deliver(&a, &config, "shopify", "shop-2").await.assert(200, "duplicate");
    assert_eq!(downstream.received().len(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_done_key_is_short_and_lives_for_the_ttl() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let mut config = redis_config(&downstream, &redis);
    config.dedup.ttl = Duration::from_secs(3600);
    let gateway = TestGateway::start(config.clone()).await;
    let long_id = format!("evt_{}", "x".repeat(400));
    deliver(&gateway, &config, "stripe", &long_id)
        .await
        .assert(200, "forwarded");
    let keys = redis.keys_with_pttl();
    assert_eq!(keys.len(), 1);
    let (key, pttl) = &keys[0];
    assert!(key.starts_with(b"hg:dedup:stripe:"), "{key:?}");
    assert_eq!(
        key.len(),
        "hg:dedup:stripe:".len() + 12,
        "a fixed-length hash, whatever the id's length"
    );
    assert!((3_590_000..=3_600_000).contains(pttl), "PTTL {pttl} ms, TTL 3600 s");
    let value: Vec<u8> = redis.command("GET", &[key]);
    assert_eq!(value, b"1", "a done id holds the one-byte marker");
    gateway.stop().await;
}

async fn store(redis: &RedisServer) -> Arc<DedupStore> {
    let mut config = test_config("http://127.0.0.1:1");
    config.dedup.store = StoreKind::Redis;
    config.dedup.redis_url = RedisUrls::One(redis.url());
    let backends = hookgate::gateway::Backends::connect(&config, std::path::Path::new("test.toml")).expect("backends");
    backends.dedup
}

fn id(text: &str) -> EventId {
    EventId::new(text.to_owned()).expect("id")
}

#[tokio::test]
async fn an_expired_lease_lets_a_new_claim_through_and_a_late_commit_still_marks_the_event_done() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let ClaimResult::Claimed(stale) = store.claim("src", &id("e1")).await.expect("claim") else {
        panic!("first claim")
    };
    assert!(matches!(
        store.claim("src", &id("e1")).await,
        Ok(ClaimResult::InFlight { .. })
    ));
    // Let the lease run out now, as it would after a crash.
    let keys = redis.keys_with_pttl();
    assert!(keys[0].1 > 29_000, "the lease is dedup.lease: {keys:?}");
    let expire_now = || {
        let _: i64 = redis.command("PEXPIRE", &[&keys[0].0, b"1"]);
    };
    expire_now();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let ClaimResult::Claimed(fresh) = store.claim("src", &id("e1")).await.expect("claim") else {
        panic!("a new claim after the lease ran out")
    };
    let ClaimResult::Claimed(stale_again) = ({
        expire_now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.claim("src", &id("e1")).await.expect("claim")
    }) else {
        panic!("claim")
    };
    assert_eq!(fresh.release().await, Ok(false), "a stale token cannot release");
    assert_eq!(redis.cli(&["dbsize"]), "1", "the newest claim is untouched");
    assert!(matches!(
        store.claim("src", &id("e1")).await,
        Ok(ClaimResult::InFlight { .. })
    ));
    // The first holder delivered the event after all: a commit marks it done whoever holds the key now,
    // and says that the lease was lost. The newest holder can no longer release it.
    assert_eq!(stale.commit().await, Ok(false), "the commit says the lease was lost");
    assert!(matches!(
        store.claim("src", &id("e1")).await,
        Ok(ClaimResult::Duplicate)
    ));
    assert_eq!(stale_again.release().await, Ok(false), "a done id stays done");
    assert!(matches!(
        store.claim("src", &id("e1")).await,
        Ok(ClaimResult::Duplicate)
    ));
}

#[tokio::test]
async fn a_dropped_claim_releases_its_key() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let claim = store.claim("src", &id("dropped")).await.expect("claim");
    assert!(matches!(claim, ClaimResult::Claimed(_)));
    assert_eq!(redis.cli(&["dbsize"]), "1");
    drop(claim);
    store.flush(Duration::from_secs(5)).await;
    assert_eq!(redis.cli(&["dbsize"]), "0");
}

#[tokio::test]
async fn requests_cut_at_shutdown_release_their_claims() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    downstream.delay(Duration::from_secs(3600));
    let mut config = redis_config(&downstream, &redis);
    config.server.shutdown_grace = Duration::from_millis(200);
    let mut gateway = TestGateway::start(config.clone()).await;
    let url = gateway.url("/github");
    let body = event_body("d-cut");
    let headers = sign(&config, "github", &body, "d-cut");
    let request = tokio::spawn(async move { Sender::default().try_post(&url, headers, body).await });
    while downstream.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        redis.cli(&["dbsize"]),
        "2",
        "the id and the replay guard claimed while in flight"
    );
    gateway.begin_shutdown().await.expect("join").expect("clean shutdown");
    assert!(request.await.expect("task").is_err(), "the cut request got no answer");
    assert_eq!(redis.cli(&["dbsize"]), "0", "the cut request's claim was released");
}

#[tokio::test]
async fn unauthenticated_requests_never_reach_the_store() {
    let redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let config = redis_config(&downstream, &redis);
    let gateway = TestGateway::start(config.clone()).await;
    let body = event_body("evt_probe");
    let mut headers = sign(&config, "stripe", &body, "evt_probe");
    headers.insert("stripe-signature", "t=1,v1=00".parse().expect("value"));
    let reply = Sender::default().post(&gateway.url("/stripe"), headers, body).await;
    reply.assert(401, "bad_signature");
    assert_eq!(redis.cli(&["dbsize"]), "0");
    let stats = redis.cli(&["info", "commandstats"]);
    assert!(!stats.contains("cmdstat_set:"), "no SET was sent: {stats}");
    gateway.stop().await;
}

#[tokio::test]
async fn with_redis_down_new_events_get_503_and_the_gateway_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let mut config = redis_config(&downstream, &redis);
    config.dedup.unready_after = Duration::from_millis(300);
    let gateway = TestGateway::start(config.clone()).await;
    let sender = Sender::default();
    deliver(&gateway, &config, "github", "before")
        .await
        .assert(200, "forwarded");
    let ready = sender
        .send("GET", &gateway.admin_url("/readyz"), Default::default(), "")
        .await;
    assert_eq!(ready.status, 200);

    redis.stop();
    let reply = deliver(&gateway, &config, "github", "during").await;
    reply.assert(503, "unavailable");
    assert_eq!(reply.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));
    // One failed check keeps the replica in the load balancer (a blip must not empty it); only an outage
    // longer than dedup.unready_after (here 300 ms) fails readiness. The store's health is a metric.
    let readyz = || async {
        Sender::default()
            .send("GET", &gateway.admin_url("/readyz"), Default::default(), "")
            .await
    };
    let first = readyz().await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let metrics = sender
        .send("GET", &gateway.admin_url("/metrics"), Default::default(), "")
        .await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("hookgate_store_up 0"));
    let mut unready = false;
    for _ in 0..100 {
        if readyz().await.status == 503 {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(unready, "a sustained outage fails readiness");
    assert_eq!(
        downstream.received().len(),
        1,
        "nothing forwarded while the store is down"
    );

    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if deliver(&gateway, &config, "github", "after").await.outcome() == "forwarded" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the gateway reconnected without a restart");
    let ready = sender
        .send("GET", &gateway.admin_url("/readyz"), Default::default(), "")
        .await;
    assert_eq!(ready.status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn with_on_store_error_accept_events_go_through_without_dedup() {
    let mut redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let mut config = redis_config(&downstream, &redis);
    config.dedup.on_store_error = OnStoreError::Accept;
    let gateway = TestGateway::start(config.clone()).await;
    redis.stop();
    deliver(&gateway, &config, "github", "open-1")
        .await
        .assert(200, "forwarded");
    deliver(&gateway, &config, "github", "open-1")
        .await
        .assert(200, "forwarded");
    assert_eq!(
        downstream.received().len(),
        2,
        "no dedup while the store is down, as configured"
    );
    let metrics = Sender::default()
        .send("GET", &gateway.admin_url("/metrics"), Default::default(), "")
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"hookgate_dedup_total{source="github",result="store_error_accepted"}"#),
        "{text}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn dedup_works_on_a_redis_cluster_across_slots() {
    let cluster = RedisCluster::start();
    let downstream = FakeDownstream::start().await;
    let config = on_redis(test_config(&downstream.url("")), RedisUrls::Cluster(cluster.urls()));
    let gateway = TestGateway::start(config.clone()).await;
    for i in 0..30 {
        deliver(&gateway, &config, "github", &format!("c-{i}"))
            .await
            .assert(200, "forwarded");
    }
    for i in 0..30 {
        deliver(&gateway, &config, "github", &format!("c-{i}"))
            .await
            .assert(200, "duplicate");
    }
    downstream.answer(&[500, 200]);
    deliver(&gateway, &config, "github", "c-fail")
        .await
        .assert(502, "downstream_error");
    deliver(&gateway, &config, "github", "c-fail")
        .await
        .assert(200, "forwarded");
    assert_eq!(downstream.received().len(), 32);
    let per_node: Vec<u32> = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["dbsize"]).parse().expect("dbsize"))
        .collect();
    // 31 ids, each with its replay guard's key.
    assert_eq!(per_node.iter().sum::<u32>(), 62, "{per_node:?}");
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over slots on several nodes: {per_node:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn dedup_works_over_tls_with_a_password() {
    let redis = RedisServer::start_tls_with_password("s3cret-pw");
    let downstream = FakeDownstream::start().await;
    let config = redis_config(&downstream, &redis);
    assert!(config.dedup.redis_url.urls()[0].starts_with("rediss://"));
    let gateway = TestGateway::start(config.clone()).await;
    deliver(&gateway, &config, "github", "tls-1")
        .await
        .assert(200, "forwarded");
    deliver(&gateway, &config, "github", "tls-1")
        .await
        .assert(200, "duplicate");
    // The delivery id, and the replay guard's key.
    assert_eq!(redis.cli(&["dbsize"]), "2");
    gateway.stop().await;
}

#[tokio::test]
async fn a_wrong_redis_password_is_a_store_error_not_a_delivery() {
    let redis = RedisServer::start_tls_with_password("right");
    let downstream = FakeDownstream::start().await;
    let mut config = redis_config(&downstream, &redis);
    config.dedup.redis_url = RedisUrls::One(redis.url().replace(":right@", ":wrong@"));
    let gateway = TestGateway::start(config.clone()).await;
    deliver(&gateway, &config, "github", "pw-1")
        .await
        .assert(503, "unavailable");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn a_redis_certificate_from_an_unknown_ca_is_refused() {
    let redis = RedisServer::start_tls_with_password("pw");
    let downstream = FakeDownstream::start().await;
    let mut config = redis_config(&downstream, &redis);
    config.dedup.redis_ca_file = None;
    let gateway = TestGateway::start(config.clone()).await;
    deliver(&gateway, &config, "github", "mitm-1")
        .await
        .assert(503, "unavailable");
    assert!(downstream.received().is_empty());
    gateway.stop().await;
}

/// Commands issued by many requests at once travel together, and each caller still gets its own answer,
/// an error included. (How much the batching saves under real traffic is measured by the benchmark.)
#[tokio::test]
async fn concurrent_commands_are_pipelined_and_each_gets_its_own_answer() {
    let redis = RedisServer::start();
    let urls = RedisUrls::One(redis.url());
    let client = hookgate::redis_client::RedisClient::new(&urls, None, Duration::from_secs(5)).expect("client");
    let _: i64 = client
        .query(&redis_cmd("RPUSH", &["a-list", "x"]))
        .await
        .expect("warm up");
    let reads = || -> i64 {
        let info = redis.cli(&["info", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_reads_processed")
    };
    let before = reads();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let (key, value) = (format!("k{i}"), format!("v{i}"));
                let set: Option<String> = client
                    .query(&redis_cmd("SET", &[&key, &value, "GET"]))
                    .await
                    .expect("set");
                assert_eq!(set, None);
                client.query::<String>(&redis_cmd("GET", &[&key])).await.expect("get")
            })
        })
        .collect();
    // A command that fails, among them: only its caller sees the error.
    let wrong = client.query::<String>(&redis_cmd("GET", &["a-list"])).await;
    assert!(wrong.is_err_and(|e| e.contains("WRONGTYPE")));
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("task"), format!("v{i}"));
    }
    // 401 commands: one read each, were they sent one by one (the `info` calls add two).
    let used = reads() - before;
    assert!(used < 40, "{used} reads for 401 commands");
}

/// The connection logs in and picks its database from the URL: a wrong password is an error that says
/// so (and does not print the password), and the right one writes into the database the URL names.
#[tokio::test]
async fn the_connection_logs_in_and_selects_the_database_of_its_url() {
    let redis = RedisServer::start_with_password("right-pw");
    let client = |url: String| {
        hookgate::redis_client::RedisClient::new(&RedisUrls::One(url), None, Duration::from_secs(5)).expect("client")
    };
    let wrong = client(redis.url().replace(":right-pw@", ":wrong-pw@"));
    let refused = wrong
        .query::<String>(&redis_cmd("PING", &[]))
        .await
        .expect_err("a wrong password");
    assert!(refused.contains("WRONGPASS"), "{refused}");
    assert!(!refused.contains("wrong-pw"), "{refused}");

    let right = client(format!("{}/3", redis.url()));
    let set: Option<String> = right
        .query(&redis_cmd("SET", &["in-db-3", "yes", "GET"]))
        .await
        .expect("set");
    assert_eq!(set, None);
    assert_eq!(redis.cli(&["-n", "3", "get", "in-db-3"]), "yes");
    assert_eq!(redis.cli(&["-n", "0", "exists", "in-db-3"]), "0");
}

/// Redis frozen (SIGSTOP) with commands on the wire: they fail after the answer timeout, not later, and
/// once Redis thaws, the answers it owed them are never handed to the commands that follow.
#[tokio::test]
async fn a_frozen_redis_times_out_and_its_late_answers_reach_no_one() {
    let redis = RedisServer::start();
    let client =
        hookgate::redis_client::RedisClient::new(&RedisUrls::One(redis.url()), None, Duration::from_millis(300))
            .expect("client");
    let _: String = client.query(&redis_cmd("SET", &["k", "old"])).await.expect("warm up");
    redis.signal("STOP");
    let started = std::time::Instant::now();
    let frozen = tokio::time::timeout(
        Duration::from_secs(5),
        client.query::<String>(&redis_cmd("GET", &["k"])),
    )
    .await
    .expect("the client's own timeout ends the wait");
    assert!(frozen.is_err_and(|e| e.contains("in time")));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    redis.signal("CONT");
    // The frozen connection's answer (`old`) arrives now; a new command must get its own.
    let echoed: String = client.query(&redis_cmd("ECHO", &["fresh"])).await.expect("echo");
    assert_eq!(echoed, "fresh");
    let got: String = client.query(&redis_cmd("GET", &["k"])).await.expect("get");
    assert_eq!(got, "old");
}

/// A command that queues behind a batch stuck on a frozen Redis fails by its own deadline: the client's
/// timeout bounds a call from the moment it is made, not from the moment its batch goes out (which would
/// let it wait up to twice as long).
#[tokio::test]
async fn a_command_queued_behind_a_stuck_batch_fails_by_its_own_deadline() {
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(500);
    let client = hookgate::redis_client::RedisClient::new(&RedisUrls::One(redis.url()), None, timeout).expect("client");
    let _: String = client.query(&redis_cmd("SET", &["k", "v"])).await.expect("warm up");
    redis.signal("STOP");
    let started = std::time::Instant::now();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.query::<String>(&redis_cmd("GET", &["k"])).await }
    });
    // One thread: a few turns let the first command's batch go out (the write lands in the socket's
    // buffer; Redis, stopped, does not read it), so the second command waits for the next batch.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        client.query::<String>(&redis_cmd("ECHO", &["x"])),
    )
    .await
    .expect("the client's own timeout ends the wait");
    let waited = started.elapsed();
    assert!(second.is_err_and(|e| e.contains("in time")));
    assert!(waited >= timeout, "{waited:?}");
    assert!(waited < timeout + timeout / 2, "queued past its deadline: {waited:?}");
    let first = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first command ends")
        .expect("its task");
    assert!(first.is_err_and(|e| e.contains("in time")));
    redis.signal("CONT");
}

/// A script goes out by its hash; its text only when Redis does not know it: the first time, and again
/// after its scripts were flushed (as after a restart), without the caller seeing an error.
#[tokio::test]
async fn scripts_run_by_their_hash_and_their_text_goes_out_only_when_redis_lacks_it() {
    let redis = RedisServer::start();
    let client = hookgate::redis_client::RedisClient::new(&RedisUrls::One(redis.url()), None, Duration::from_secs(5))
        .expect("client");
    let script = hookgate::redis_client::LuaScript::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let add = |n: i64| {
        let (client, script) = (&client, &script);
        async move {
            client
                .eval::<i64>(script, |cmd| {
                    cmd.arg(1).arg("counter").arg(n);
                })
                .await
                .expect("the script runs")
        }
    };
    assert_eq!(add(1).await, 1);
    assert_eq!(add(2).await, 3);
    assert_eq!(add(3).await, 6);
    assert_eq!(redis.cli(&["script", "flush"]), "OK");
    assert_eq!(add(4).await, 10);
    let calls = |command: &str| -> u64 {
        let stats = redis.cli(&["info", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        calls("eval"),
        2,
        "the text went out more often than Redis lacked the script"
    );
    assert!(calls("evalsha") >= 2, "the hash was not tried first");
}

fn redis_cmd(name: &str, args: &[&str]) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd(name);
    args.iter().for_each(|a| {
        cmd.arg(*a);
    });
    cmd
}

/// After Redis restarts, the connection each thread held is dead. The first request on it answered `503`
/// before the connection was made again; now the claim is sent once more on the new connection.
#[tokio::test]
async fn the_first_request_after_redis_restarts_is_served() {
    let mut redis = RedisServer::start();
    let downstream = FakeDownstream::start().await;
    let config = redis_config(&downstream, &redis);
    let gateway = TestGateway::start(config.clone()).await;
    deliver(&gateway, &config, "github", "before-restart")
        .await
        .assert(200, "forwarded");
    redis.stop();
    redis.restart();
    deliver(&gateway, &config, "github", "after-restart")
        .await
        .assert(200, "forwarded");
    deliver(&gateway, &config, "github", "after-restart")
        .await
        .assert(200, "duplicate");
    gateway.stop().await;
}

/// The memory store keeps a fixed-size digest per id, not the id: 20 000 delivered ids of 36 characters
/// (a UUID, as GitHub's delivery ids are) hold well under 120 bytes each, where the whole key took about
/// 330 at its peak.
#[tokio::test]
async fn the_memory_store_holds_a_small_fixed_size_entry_per_id() {
    use hookgate::dedup::{ClaimResult, DedupStore};
    use hookgate::verify::event_id::EventId;
    let config = hookgate::config::DedupConfig {
        max_keys: 100_000,
        ..Default::default()
    };
    let store = DedupStore::new(&config, None).expect("memory store");
    // Everything runs on this thread, so its allocation count is the store's.
    let before = crate::alloc::net_on_this_thread();
    const IDS: usize = 20_000;
    for n in 0..IDS {
        let id = EventId::new(format!("{n:08x}-0000-4000-8000-000000000000")).expect("id");
        match store.claim("memsize", &id).await.expect("claim") {
            ClaimResult::Claimed(claim) => assert!(claim.commit().await.expect("commit")),
            _ => panic!("a fresh id is claimed"),
        }
    }
    let per_id = (crate::alloc::net_on_this_thread() - before) / IDS as isize;
    eprintln!("memory store: {per_id} bytes per delivered id");
    assert!(per_id < 120, "{per_id} bytes per id");
    let again = EventId::new("00000000-0000-4000-8000-000000000000".to_owned()).expect("id");
    assert!(
        matches!(store.claim("memsize", &again).await, Ok(ClaimResult::Duplicate)),
        "the first id is still known by its digest"
    );
}
