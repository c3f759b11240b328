//! `hookgate loadgen`: a realistic webhook sender for load tests. Every event is signed with the chosen
//! scheme, has a unique id (or, for `--duplicates`, repeats an earlier one, as providers do), and a JSON body
//! of the chosen size. With `--retry` it retries non-2xx answers like a provider (after 1 s, 2 s, 4 s …).
//!
//! Two ways to drive it:
//! - open loop, `--rate R`: requests are due at a fixed arrival rate whatever the answers; latency runs from
//!   when a request was *due*, so a slow gateway cannot hide its queueing (no coordinated omission);
//! - closed loop (no `--rate`): `--connections` workers each send their next request when the last answered.
//!
//! Connections are keep-alive, `--connections` of them. The report gives throughput, latency percentiles
//! (HDR histogram), and counts by status and by `x-hookgate-outcome`, as a table or as JSON (`--json`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::HeaderValue;
use serde::Serialize;
use tokio::sync::Mutex;

use super::client::{Answer, Connection};
use hookgate::config::{SchemeKind, Secret};
use hookgate::forward::wire::{RequestWriter, Target};
use hookgate::verify::Verifier;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// The gateway's source URL, such as `http://127.0.0.1:8080/webhooks/demo`.
    #[arg(long)]
    pub url: String,
    /// Signature scheme of the source.
    #[arg(long, default_value = "github")]
    pub scheme: SchemeKind,
    /// The source's secret.
    #[arg(long)]
    pub secret: String,
    /// Open loop: requests per second, due at a fixed rate. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Keep-alive connections (and, in closed loop, workers).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Stop after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many events (retries and duplicates not counted).
    #[arg(long)]
    pub events: Option<u64>,
    /// Body size in bytes (a JSON event padded to this size).
    #[arg(long, default_value_t = 1024)]
    pub body_size: usize,
    /// Fraction of requests that repeat an earlier event (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Retries of a non-2xx answer, as a provider would.
    #[arg(long, default_value_t = 0)]
    pub retry: u32,
    /// First retry delay, doubled each time.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,
    /// Write every answer to this file, one line each: Unix milliseconds, event id, and the status (or
    /// `error` when the connection failed). A fault test reads from it which events were acknowledged.
    #[arg(long)]
    pub answers: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub connections: usize,
    pub duration_seconds: f64,
    pub requests: u64,
    pub events: u64,
    pub retries: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    /// CPU seconds (user + system, every thread) this client spent on the run, so that a benchmark can
    /// count the client's share of the machine too. `None` where `/proc` is not available.
    pub cpu_seconds: Option<f64>,
    pub latency_ms: Latency,
    pub by_status: BTreeMap<String, u64>,
    pub by_outcome: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// One event to send: its id and body. Kept so that duplicates and retries resend it.
#[derive(Clone)]
struct Event {
    id: String,
    body: Bytes,
}

struct Shared {
    args: LoadgenArgs,
    /// Where every request goes: its connection address, `Host` header and request line.
    target: Target,
    verifier: Verifier,
    next: AtomicU64,
    /// The latest events, oldest first, for `--duplicates` to repeat.
    recent: Mutex<VecDeque<Event>>,
    started: Instant,
    /// `--answers`: the file every answer is written to.
    answers: Option<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>,
}

/// What one worker measured; merged at the end, so that workers share no lock on the hot path.
#[derive(Default)]
struct Results {
    latency: Option<Histogram<u64>>,
    requests: u64,
    retries: u64,
    errors: u64,
    by_status: BTreeMap<String, u64>,
    by_outcome: BTreeMap<String, u64>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

impl Shared {
    fn write_answer(&self, id: &str, status: Option<u16>) {
        use std::io::Write;
        let Some(answers) = &self.answers else { return };
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        let mut file = answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(file, "{ms} {id} {status}");
    }

    /// No new events: the time is up, or every event was handed out.
    fn done(&self) -> bool {
        let past_count = self.args.events.is_some_and(|n| self.next.load(Ordering::Relaxed) >= n);
        self.time_up() || past_count
    }

    /// The run's duration is over: not even retries go out any more.
    fn time_up(&self) -> bool {
        self.args.duration.is_some_and(|d| self.started.elapsed() >= d)
    }

    /// A new event, or with probability `duplicates` a recent one again.
    async fn event(&self) -> Option<Event> {
        if self.args.duplicates > 0.0 && rand::random::<f64>() < self.args.duplicates {
            let recent = self.recent.lock().await;
            if !recent.is_empty() {
                return Some(recent[rand::random_range(0..recent.len())].clone());
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.args.events.is_some_and(|limit| n >= limit) {
            return None;
        }
        let id = format!("evt_{:08x}{n:016x}", rand::random::<u32>());
        let mut body = format!(
            "{{\"id\":\"{id}\",\"event_id\":\"{id}\",\"object\":\"event\",\"type\":\"invoice.paid\",\"created\":{},\"data\":{{\"object\":{{\"amount\":4200,\"currency\":\"eur\",\"note\":\"",
            unix_now()
        );
        let tail = "\"}}}";
        let pad = self.args.body_size.saturating_sub(body.len() + tail.len());
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str(tail);
        let event = Event {
            id,
            body: Bytes::from(body),
        };
        if self.args.duplicates > 0.0 {
            let mut recent = self.recent.lock().await;
            if recent.len() >= 1024 {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        Some(event)
    }

    /// The event's request, signed now, encoded for one write.
    fn request(&self, event: &Event) -> Vec<u8> {
        let mut request = RequestWriter::new(&http::Method::POST, &self.target, event.body.len());
        request.header(
            &http::header::CONTENT_TYPE,
            &HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.verifier.sign(&event.body, &event.id, unix_now()) {
            // A signature is printable ASCII; one that is not is left off, and the gateway says so.
            if let Ok(value) = HeaderValue::from_str(&value) {
                request.header(&name, &value);
            }
        }
        request.finish(&event.body)
    }
}

impl Results {
    fn new() -> Self {
        Results {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
            ..Results::default()
        }
    }

    fn merge(&mut self, other: Results) {
        if let (Some(mine), Some(theirs)) = (self.latency.as_mut(), other.latency.as_ref()) {
            let _ = mine.add(theirs);
        }
        self.requests += other.requests;
        self.retries += other.retries;
        self.errors += other.errors;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_outcome {
            *self.by_outcome.entry(k).or_default() += v;
        }
    }

    fn record(&mut self, latency: Duration, status: Option<u16>, outcome: Option<String>, retry: bool) {
        self.requests += 1;
        self.retries += u64::from(retry);
        if let Some(h) = self.latency.as_mut() {
            let _ = h.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
        }
        match status {
            Some(status) => *self.by_status.entry(status.to_string()).or_default() += 1,
            None => self.errors += 1,
        }
        let outcome = outcome.unwrap_or_else(|| {
            if status.is_some() {
                "none".into()
            } else {
                "connection_error".into()
            }
        });
        *self.by_outcome.entry(outcome).or_default() += 1;
    }
}

/// Sends `event` (and its retries) on `connection`; latency counts from `due`.
async fn deliver(shared: &Shared, connection: &mut Connection, results: &mut Results, event: &Event, due: Instant) {
    let mut delay = shared.args.backoff;
    for attempt in 0..=shared.args.retry {
        let (status, outcome) = match connection.send(&shared.target, &shared.request(event)).await {
            Ok(Answer { status, outcome }) => (Some(status), outcome),
            Err(_) => (None, None),
        };
        results.record(due.elapsed(), status, outcome, attempt > 0);
        shared.write_answer(&event.id, status);
        if status.is_some_and(|s| (200..300).contains(&s)) || attempt == shared.args.retry || shared.time_up() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(shared.args.backoff_max);
    }
}

/// Runs the load and returns its report.
pub async fn run(args: LoadgenArgs) -> Result<Report, String> {
    if args.duration.is_none() && args.events.is_none() {
        return Err("give --duration or --events".to_owned());
    }
    if !(0.0..=1.0).contains(&args.duplicates) {
        return Err("--duplicates is a fraction from 0 to 1".to_owned());
    }
    let url: http::Uri = args.url.parse().map_err(|e| format!("--url: {e}"))?;
    let target = Target::new(&url).map_err(|e| format!("--url: {e}"))?;
    let verifier = Verifier::new(args.scheme, None, &[Secret::new(args.secret.clone())], Duration::ZERO)
        .map_err(|e| e.to_string())?;
    let connections = args.connections.max(1);
    let answers = match &args.answers {
        Some(path) => Some(std::sync::Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("--answers {}: {e}", path.display()))?,
        ))),
        None => None,
    };
    let shared = Arc::new(Shared {
        answers,
        target,
        verifier,
        next: AtomicU64::new(0),
        recent: Mutex::new(VecDeque::new()),
        started: Instant::now(),
        args: args.clone(),
    });
    let progress = progress_bar(&args);
    let cpu_before = process_cpu();

    let mut workers = Vec::new();
    match args.rate {
        None => {
            for _ in 0..connections {
                let shared = shared.clone();
                let progress = progress.clone();
                workers.push(tokio::spawn(async move {
                    let mut connection = Connection::default();
                    let mut results = Results::new();
                    while !shared.done() {
                        let Some(event) = shared.event().await else { break };
                        deliver(&shared, &mut connection, &mut results, &event, Instant::now()).await;
                        progress.inc(1);
                    }
                    results
                }));
            }
        }
        Some(rate) => {
            // The schedule: one event due every 1/rate s. Connections take due events in turn; an event waits
            // in the channel when every connection is busy, and that wait counts in its latency.
            let (tx, rx) = async_channel(connections * 4);
            for _ in 0..connections {
                let (shared, rx, progress) = (shared.clone(), rx.clone(), progress.clone());
                workers.push(tokio::spawn(async move {
                    let mut connection = Connection::default();
                    let mut results = Results::new();
                    while let Ok((due, event)) = rx.recv().await {
                        deliver(&shared, &mut connection, &mut results, &event, due).await;
                        progress.inc(1);
                    }
                    results
                }));
            }
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let start = Instant::now();
            let mut n: u32 = 0;
            while !shared.done() {
                let due = start + interval * n;
                tokio::time::sleep_until(due.into()).await;
                let Some(event) = shared.event().await else { break };
                if tx.send((due, event)).await.is_err() {
                    break;
                }
                n = n.saturating_add(1);
            }
            drop(tx);
        }
    }
    let mut results = Results::new();
    for worker in workers {
        if let Ok(theirs) = worker.await {
            results.merge(theirs);
        }
    }
    progress.finish_and_clear();
    if let Some(answers) = &shared.answers {
        use std::io::Write;
        answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush()
            .map_err(|e| format!("--answers: {e}"))?;
    }

    let elapsed = shared.started.elapsed();
    let quantile = |q: f64| {
        results
            .latency
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    Ok(Report {
        mode: match args.rate {
            Some(rate) => format!("open loop, {rate}/s"),
            None => "closed loop".to_owned(),
        },
        connections,
        duration_seconds: elapsed.as_secs_f64(),
        requests: results.requests,
        events: shared.next.load(Ordering::Relaxed).min(args.events.unwrap_or(u64::MAX)),
        retries: results.retries,
        errors: results.errors,
        requests_per_second: results.requests as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu_seconds: cpu_before
            .zip(process_cpu())
            .map(|(before, after)| after.saturating_sub(before).as_secs_f64()),
        latency_ms: Latency {
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            p99_9: quantile(0.999),
            max: results.latency.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        },
        by_status: results.by_status.clone(),
        by_outcome: results.by_outcome.clone(),
    })
}

/// CPU time (user + system) this process has used so far; `None` where `/proc` is not available.
fn process_cpu() -> Option<Duration> {
    cpu_from_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The CPU time in a `/proc/PID/stat` line: `utime` and `stime`, the 12th and 13th fields after the command
/// name (which is in parentheses and may hold spaces and parentheses itself, hence the last `)`).
fn cpu_from_stat(stat: &str) -> Option<Duration> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11).map(str::parse::<u64>);
    let utime = fields.next()?.ok()?;
    let stime = fields.next()?.ok()?;
    // In clock ticks of USER_HZ, which Linux fixes at 100 for /proc on x86, arm and riscv.
    Some(Duration::from_millis(utime.checked_add(stime)?.saturating_mul(10)))
}

/// A multi-consumer channel from tokio's mpsc, shared behind a mutex by the connections.
fn async_channel<T: Send + 'static>(size: usize) -> (tokio::sync::mpsc::Sender<T>, SharedReceiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(size);
    (tx, SharedReceiver(Arc::new(Mutex::new(rx))))
}

struct SharedReceiver<T>(Arc<Mutex<tokio::sync::mpsc::Receiver<T>>>);

impl<T> Clone for SharedReceiver<T> {
    fn clone(&self) -> Self {
        SharedReceiver(self.0.clone())
    }
}

impl<T> SharedReceiver<T> {
    async fn recv(&self) -> Result<T, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

/// A progress bar on a terminal, for runs longer than a few seconds.
fn progress_bar(args: &LoadgenArgs) -> indicatif::ProgressBar {
    let long = args.duration.is_some_and(|d| d > Duration::from_secs(3)) || args.events.is_some_and(|n| n > 50_000);
    if args.quiet || args.json || !long || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match args.events {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {pos} requests {per_sec} {wide_bar}")
    {
        bar.set_style(style);
    }
    bar
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{} · {} connections · {:.1} s\n",
            self.mode, self.connections, self.duration_seconds
        ));
        out.push_str(&format!(
            "requests  {:>10}   events {}   retries {}   connection errors {}\n",
            self.requests, self.events, self.retries, self.errors
        ));
        out.push_str(&format!("throughput {:>9.0} req/s\n", self.requests_per_second));
        if let Some(cpu) = self.cpu_seconds {
            out.push_str(&format!(
                "client CPU {cpu:.2} s ({:.1} µs per request)\n",
                cpu * 1e6 / self.requests.max(1) as f64
            ));
        }
        let l = &self.latency_ms;
        out.push_str(&format!(
            "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            l.p50, l.p90, l.p99, l.p99_9, l.max
        ));
        out.push_str("status    ");
        for (status, n) in &self.by_status {
            out.push_str(&format!("{status}: {n}  "));
        }
        out.push_str("\noutcome   ");
        for (outcome, n) in &self.by_outcome {
            out.push_str(&format!("{outcome}: {n}  "));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // A command name with a space and a parenthesis of its own; utime 250 and stime 37 ticks.
        let stat = "4242 (load gen) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 37 0 0 20 0 3 0 99 0 0";
        assert_eq!(cpu_from_stat(stat), Some(Duration::from_millis(2870)));
        assert_eq!(cpu_from_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(cpu_from_stat("no name at all"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(process_cpu().is_some());
    }
}
