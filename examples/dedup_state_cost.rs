//! Redis memory per remembered event: `used_memory` before and after committing N events through the
//! real dedup store, divided by N.
//!
//! cargo run --release --example dedup_state_cost -- redis://127.0.0.1:6390 100000

use std::time::Duration;

use hookgate::config::{DedupConfig, RedisUrls, StoreKind};
use hookgate::dedup::{ClaimResult, DedupStore};
use hookgate::verify::event_id::EventId;

async fn used_memory(client: &redis::Client) -> u64 {
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let client = redis::Client::open(url.as_str()).expect("url");
    let config = DedupConfig {
        store: StoreKind::Redis,
        redis_url: RedisUrls::One(url),
        timeout: Duration::from_secs(5),
        ..DedupConfig::default()
    };
    let redis =
        hookgate::redis_client::RedisClient::new(&config.redis_url, None, config.timeout).expect("redis client");
    let store = DedupStore::new(&config, Some(&redis)).expect("store");
    let before = used_memory(&client).await;
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                // Stripe-like ids: "evt_" and 24 characters.
                for i in (t..n).step_by(64) {
                    let id = EventId::new(format!("evt_{i:024}")).expect("id");
                    let ClaimResult::Claimed(claim) = store.claim("stripe", &id).await.expect("claim") else {
                        panic!("id {i} was not new: run against an empty Redis");
                    };
                    assert!(claim.commit().await.expect("commit"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let after = used_memory(&client).await;
    let per_event = (after - before) as f64 / n as f64;
    println!("events: {n}");
    println!("used_memory before: {before} B, after: {after} B");
    println!("bytes per done event: {per_event:.1}");
    println!(
        "key: hg:dedup:stripe:<12 hash bytes> ({} bytes), value: \"1\"",
        "hg:dedup:stripe:".len() + 12
    );
}
