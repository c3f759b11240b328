//! Every metric name and label in one place. Labels are bounded: a configured source name (or
//! `_unknown`), an outcome, a reason, a status class. Never an IP address or an event id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::thread::LocalKey;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by source, outcome and status.
pub const REQUESTS_TOTAL: &str = "hookgate_requests_total";
/// A shadow source's requests by the verdict enforce mode would have given (`pass`, `ip_denied`,
/// `bad_signature`, `bad_request`) and its reason.
pub const SHADOW_VERDICTS: &str = "hookgate_shadow_verdicts_total";
/// Refused requests kept in a source's quarantine, by verdict.
pub const QUARANTINE_KEPT: &str = "hookgate_quarantine_kept_total";
/// Requests in a source's quarantine now.
pub const QUARANTINE_ENTRIES: &str = "hookgate_quarantine_entries";
/// Age of the oldest request in a source's quarantine.
pub const QUARANTINE_OLDEST_AGE: &str = "hookgate_quarantine_oldest_age_seconds";
/// Replays of quarantined requests, by result (`delivered`, `duplicate`, `refused`, `failed`).
pub const QUARANTINE_REPLAYS: &str = "hookgate_quarantine_replays_total";
/// Verified requests by the position of the key (secret or public key) that matched: during a rotation,
/// it shows when the old key has stopped being used.
pub const SIGNATURE_MATCHES: &str = "hookgate_signature_matches_total";
/// Refused requests by source and reason.
pub const REJECTIONS_TOTAL: &str = "hookgate_rejections_total";
/// Time from request to answer, by source and outcome.
pub const REQUEST_DURATION: &str = "hookgate_request_duration_seconds";
/// Time spent in the downstream handler, by source.
pub const FORWARD_DURATION: &str = "hookgate_forward_duration_seconds";
/// Requests being processed now.
pub const INFLIGHT_REQUESTS: &str = "hookgate_inflight_requests";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "hookgate_build_info";
/// Dedup store answers by result (`new`, `duplicate`, `in_flight`, …).
pub const DEDUP_TOTAL: &str = "hookgate_dedup_total";
/// Client keys the rate limiter tracks.
pub const RATELIMIT_TRACKED_KEYS: &str = "hookgate_ratelimit_tracked_keys";
/// Config reloads by result.
pub const CONFIG_RELOADS_TOTAL: &str = "hookgate_config_reloads_total";
/// Queue deliveries by source and result.
pub const QUEUE_DELIVERIES_TOTAL: &str = "hookgate_queue_deliveries_total";
/// Queue entries found deleted while pending: events acknowledged and never delivered.
pub const QUEUE_LOST_TOTAL: &str = "hookgate_queue_lost_total";
/// Entries in a source's stream.
pub const QUEUE_DEPTH: &str = "hookgate_queue_depth";
/// Entries read by a worker and not yet settled.
pub const QUEUE_PENDING: &str = "hookgate_queue_pending";
/// Entries waiting for a retry.
pub const QUEUE_DELAYED: &str = "hookgate_queue_delayed";
/// Dead letters.
pub const QUEUE_DEAD: &str = "hookgate_queue_dead_letters";
/// Age of the oldest undelivered entry.
pub const QUEUE_OLDEST_AGE: &str = "hookgate_queue_oldest_age_seconds";
/// Dedup store errors by operation.
pub const STORE_ERRORS_TOTAL: &str = "hookgate_store_errors_total";
/// Dedup store call time by operation.
pub const STORE_DURATION: &str = "hookgate_store_duration_seconds";

/// Whether the dedup store answered its last health check.
pub const STORE_UP: &str = "hookgate_store_up";
/// Panics caught while serving a request.
pub const PANICS_TOTAL: &str = "hookgate_panics_total";

/// Histogram buckets from 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// A metric with a source label and one more, as the hot path records it.
type Key = (&'static str, Arc<str>, &'static str);
type Cache<K, T> = RefCell<HashMap<K, T, foldhash::fast::RandomState>>;

thread_local! {
    /// The hot path's handles, per thread: finding one is a hash of a few short strings, where the
    /// `metrics` macros build a label list and look it up in the shared registry on every call.
    static COUNTERS: Cache<Key, Counter> = RefCell::default();
    static HISTOGRAMS: Cache<Key, Histogram> = RefCell::default();
    static STORE_DURATIONS: Cache<&'static str, Histogram> = RefCell::default();
    static INFLIGHT: Cache<(), Gauge> = RefCell::default();
}

/// The handle `make` registers, from this thread's `cache` once the recorder is installed (a handle taken
/// before would stay a no-op, so none is kept then).
fn cached<K: Eq + Hash, T: Clone>(cache: &'static LocalKey<Cache<K, T>>, key: K, make: impl FnOnce() -> T) -> T {
    if RECORDER.get().is_none() {
        return make();
    }
    cache.with_borrow_mut(|handles| handles.entry(key).or_insert_with(make).clone())
}

/// The counter `name{source, label_name=label}`.
fn source_counter(name: &'static str, source: &Arc<str>, label_name: &'static str, label: &'static str) -> Counter {
    cached(
        &COUNTERS,
        (name, source.clone(), label),
        || counter!(name, "source" => source.clone(), label_name => label),
    )
}

/// The histogram `name{source, label_name=label}`.
fn source_histogram(name: &'static str, source: &Arc<str>, label_name: &'static str, label: &'static str) -> Histogram {
    cached(
        &HISTOGRAMS,
        (name, source.clone(), label),
        || histogram!(name, "source" => source.clone(), label_name => label),
    )
}

/// Installs the Prometheus recorder once per process and returns its handle; later calls return the same
/// handle, so several gateways in one test process share it.
pub fn install() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
                    }
                    describe();
                    handle
                }
                // The bucket list is a non-empty constant, so this arm is not taken.
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the metrics recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Moves the histograms' recorded samples into their buckets every few seconds. A scrape does it too,
/// but without one (no Prometheus yet, or a slow one) the samples would pile up in memory.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(REQUESTS_TOTAL, "Requests answered, by source and outcome.");
    describe_counter!(REJECTIONS_TOTAL, "Requests refused, by source and reason.");
    describe_counter!(
        QUARANTINE_KEPT,
        "Refused requests kept in the source's quarantine, by verdict."
    );
    describe_gauge!(QUARANTINE_ENTRIES, "Requests in the source's quarantine.");
    describe_gauge!(
        QUARANTINE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest request in the source's quarantine."
    );
    describe_counter!(QUARANTINE_REPLAYS, "Replays of quarantined requests, by result.");
    describe_counter!(
        SHADOW_VERDICTS,
        "Requests of shadow sources, by the verdict enforce mode would have given and its reason; all forwarded."
    );
    describe_counter!(
        SIGNATURE_MATCHES,
        "Verified requests, by source and the position of the key that matched (0 is the first listed)."
    );
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time from request head to answer.");
    describe_histogram!(FORWARD_DURATION, Unit::Seconds, "Time spent in the downstream handler.");
    describe_gauge!(INFLIGHT_REQUESTS, "Requests being processed now.");
    describe_gauge!(
        RATELIMIT_TRACKED_KEYS,
        "Client IPs the rate limiters track now, all sources together."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Config reloads by result: ok, or error (the old config stays)."
    );
    describe_counter!(
        QUEUE_DELIVERIES_TOTAL,
        "Queue delivery attempts by source and result: delivered, retry, dead, superseded, unsettled, unreplicated."
    );
    describe_counter!(
        QUEUE_LOST_TOTAL,
        "Queue entries found deleted while still pending: acknowledged events that were never delivered."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Events in a source's queue stream: waiting or being delivered."
    );
    describe_gauge!(QUEUE_PENDING, "Events read by a delivery worker and not yet settled.");
    describe_gauge!(QUEUE_DELAYED, "Events waiting for a retry.");
    describe_gauge!(QUEUE_DEAD, "Events in a source's dead-letter stream.");
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest event not yet delivered."
    );
    describe_counter!(
        PANICS_TOTAL,
        "Requests whose handling panicked; each was answered 500 and the process kept serving."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the running build.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Counts one answered request and, for a refusal, its reason.
pub fn request(source: &Arc<str>, outcome: &'static str, reason: Option<&'static str>, elapsed: Duration) {
    source_counter(REQUESTS_TOTAL, source, "outcome", outcome).increment(1);
    source_histogram(REQUEST_DURATION, source, "outcome", outcome).record(elapsed.as_secs_f64());
    if let Some(reason) = reason {
        counter!(REJECTIONS_TOTAL, "source" => source.clone(), "reason" => reason).increment(1);
    }
}

/// The `key` label of a key's position; positions past 15 share one label (no source has that many).
const KEY_LABELS: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16+",
];

/// Counts one verified request under the position of the key that matched.
pub fn signature_match(source: &Arc<str>, key_index: usize) {
    let label = KEY_LABELS[key_index.min(KEY_LABELS.len() - 1)];
    source_counter(SIGNATURE_MATCHES, source, "key", label).increment(1);
}

/// Counts one refused request kept in `source`'s quarantine.
pub fn quarantine_kept(source: &Arc<str>, verdict: &'static str) {
    source_counter(QUARANTINE_KEPT, source, "verdict", verdict).increment(1);
}

/// Sets `source`'s quarantine gauges.
pub fn quarantine_stats(source: &Arc<str>, entries: u64, oldest_age_seconds: f64) {
    gauge!(QUARANTINE_ENTRIES, "source" => source.clone()).set(entries as f64);
    gauge!(QUARANTINE_OLDEST_AGE, "source" => source.clone()).set(oldest_age_seconds);
}

/// Counts one replay of a quarantined request under its result.
pub fn quarantine_replay(source: &Arc<str>, result: &'static str) {
    source_counter(QUARANTINE_REPLAYS, source, "result", result).increment(1);
}

/// Counts one request of a shadow source under its verdict (`pass` for one enforce mode would accept).
pub fn shadow_verdict(source: &Arc<str>, verdict: &'static str, reason: &'static str) {
    counter!(SHADOW_VERDICTS, "source" => source.clone(), "verdict" => verdict, "reason" => reason).increment(1);
}

/// Times one handler call; `status_class` is `2xx`, `4xx`, `5xx`, `timeout` or `error`.
pub fn forward(source: &Arc<str>, status_class: &'static str, elapsed: Duration) {
    source_histogram(FORWARD_DURATION, source, "status_class", status_class).record(elapsed.as_secs_f64());
}

/// Moves the in-flight gauge by `delta`.
pub fn inflight(delta: f64) {
    cached(&INFLIGHT, (), || gauge!(INFLIGHT_REQUESTS)).increment(delta);
}

/// Counts one dedup claim; `result` is `claimed`, `duplicate`, `in_flight` or `store_error`.
pub fn dedup(source: &Arc<str>, result: &'static str) {
    source_counter(DEDUP_TOTAL, source, "result", result).increment(1);
}

/// Times one store call over the network; `op` is `claim`, `commit`, `release` or `ping`.
pub fn store_call(op: &'static str, elapsed: Duration) {
    cached(&STORE_DURATIONS, op, || histogram!(STORE_DURATION, "op" => op)).record(elapsed.as_secs_f64());
}

/// Counts one store error of `op`.
pub fn store_error(op: &'static str) {
    counter!(STORE_ERRORS_TOTAL, "op" => op).increment(1);
}

/// Sets the rate limiter's tracked-keys gauge.
pub fn ratelimit_tracked_keys(tracked: usize) {
    gauge!(RATELIMIT_TRACKED_KEYS).set(tracked as f64);
}

/// `result` is `ok` or `error`.
pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
}

/// `count` deliveries of `source` ended in `result`: `delivered`, `retry`, `dead`, `superseded` (another
/// replica settled it first), `unsettled`, or `unreplicated` (read, and held back until `wait_replicas`
/// replicas have it).
pub fn queue_delivery(source: &Arc<str>, result: &'static str, count: usize) {
    counter!(QUEUE_DELIVERIES_TOTAL, "source" => source.clone(), "result" => result)
        .increment(u64::try_from(count).unwrap_or(u64::MAX));
}

/// `count` queue entries of `source` were found deleted while pending.
pub fn queue_lost(source: &Arc<str>, count: usize) {
    counter!(QUEUE_LOST_TOTAL, "source" => source.clone()).increment(u64::try_from(count).unwrap_or(u64::MAX));
}

/// A source's queue figures, read from Redis.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueFigures {
    /// Events in the stream: waiting or being delivered.
    pub depth: u64,
    /// Read by a worker, not yet settled.
    pub pending: u64,
    /// Waiting for a retry.
    pub delayed: u64,
    /// In the dead-letter stream.
    pub dead: u64,
    /// Age of the oldest event not yet delivered.
    pub oldest_age_seconds: f64,
}

/// Sets a source's queue gauges.
pub fn queue_stats(source: &Arc<str>, figures: QueueFigures) {
    gauge!(QUEUE_DEPTH, "source" => source.clone()).set(figures.depth as f64);
    gauge!(QUEUE_PENDING, "source" => source.clone()).set(figures.pending as f64);
    gauge!(QUEUE_DELAYED, "source" => source.clone()).set(figures.delayed as f64);
    gauge!(QUEUE_DEAD, "source" => source.clone()).set(figures.dead as f64);
    gauge!(QUEUE_OLDEST_AGE, "source" => source.clone()).set(figures.oldest_age_seconds);
}

/// Whether the dedup store answered its last health check: 1 or 0.
pub fn store_up(up: bool) {
    gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
}

/// Counts a request whose handling panicked (answered `500 internal_error`).
pub fn panic() {
    counter!(PANICS_TOTAL).increment(1);
}
