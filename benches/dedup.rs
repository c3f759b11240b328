//! Claim+commit throughput of the dedup stores.
//! - memory: one task on one core, each iteration a new id.
//! - redis: 64 concurrent tasks sharing one multiplexed connection, against the server named by
//!   `HOOKGATE_BENCH_REDIS_URL` (skipped when unset; `bench/dedup.sh` starts a private one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hookgate::config::{DedupConfig, RedisUrls, StoreKind};
use hookgate::dedup::{ClaimResult, DedupStore};
use hookgate::redis_client::RedisClient;
use hookgate::verify::event_id::EventId;

const CONCURRENCY: u64 = 64;

fn ids(prefix: &str, n: u64) -> Vec<EventId> {
    (0..n)
        .map(|i| EventId::new(format!("{prefix}_evt_{i:012}")).expect("id"))
        .collect()
}

async fn claim_commit(store: &Arc<DedupStore>, id: &EventId) {
    match store.claim("bench", id).await {
        Ok(ClaimResult::Claimed(claim)) => {
            claim.commit().await.expect("commit");
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The default bound (100 000 ids): once full, every claim also evicts the oldest id, the steady state.
    let store = runtime.block_on(async { DedupStore::new(&DedupConfig::default(), None).expect("store") });
    let mut group = c.benchmark_group("dedup_memory");
    group.throughput(Throughput::Elements(1));
    let mut round = 0u64;
    group.bench_function("claim_commit", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            round += 1;
            let ids = ids(&format!("m{round}"), iters);
            let store = store.clone();
            async move {
                let started = Instant::now();
                for id in &ids {
                    claim_commit(&store, id).await;
                }
                started.elapsed()
            }
        });
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let Ok(url) = std::env::var("HOOKGATE_BENCH_REDIS_URL") else {
        eprintln!("dedup_redis: HOOKGATE_BENCH_REDIS_URL is not set; run bench/dedup.sh");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = DedupConfig {
        store: StoreKind::Redis,
        redis_url: RedisUrls::One(url),
        timeout: Duration::from_secs(5),
        ..DedupConfig::default()
    };
    let store = runtime.block_on(async {
        let redis = RedisClient::new(&config.redis_url, None, config.timeout).expect("redis client");
        DedupStore::new(&config, Some(&redis)).expect("store")
    });
    let mut group = c.benchmark_group("dedup_redis");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let mut round = 0u64;
    group.bench_function("claim_commit_64_tasks", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            round += 1;
            let per_task = iters.div_ceil(CONCURRENCY);
            let tasks: Vec<Vec<EventId>> = (0..CONCURRENCY)
                .map(|t| ids(&format!("r{round}t{t}"), per_task))
                .collect();
            let store = store.clone();
            async move {
                let started = Instant::now();
                let handles: Vec<_> = tasks
                    .into_iter()
                    .map(|ids| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            for id in &ids {
                                claim_commit(&store, id).await;
                            }
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.expect("task");
                }
                // Report per requested iteration, so that rounding up per task does not flatter the figure.
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * CONCURRENCY) as f64)
            }
        });
    });
    group.finish();
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
