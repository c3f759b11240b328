//! The `hookgate` command: parse arguments, load the config, set up logging, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

mod cli;

use clap::{Args, Parser, Subcommand};
use hookgate::config;
use hookgate::cores::Cores;
use hookgate::forward::queue::{Queue, Replay};
use hookgate::gateway::{Backends, Gateway};
use hookgate::server::{self, Listeners};
use hookgate::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A webhook ingress gateway: verify, deduplicate, forward."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file. Without it, `config/hookgate.toml`, or the embedded default when that file is absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also reload when the config file changes (checked every 2 s), besides on SIGHUP.
        #[arg(long)]
        watch_config: bool,
        /// Threads serving the public connections, each with a runtime of its own; connections are
        /// shared out among them in turn. Default: one per core.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Check a config file, secrets included, and print a one-line summary.
    CheckConfig {
        path: PathBuf,
        /// Judge the shipped IP lists' age as of this day (`YYYY-MM-DD`) instead of today: a check of a
        /// given commit then gives the same answer on any day.
        #[arg(long, value_parser = parse_day)]
        at: Option<SystemTime>,
    },
    /// Read a body on stdin and print the headers a sender would send, one `Name: value` per line.
    Sign(cli::signature::SignArgs),
    /// Read a body on stdin, verify it with the given headers and keys, and explain the result: the
    /// headers read, what is signed, the URLs and keys tried, the timestamp skew. Exit 0 when it verifies.
    Verify(cli::signature::VerifyArgs),
    /// GET an http:// URL and exit 0 on 2xx, 1 otherwise: a container health check without curl.
    Probe {
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// A demo downstream: answers POSTs with a status after a delay, and counts what it received
    /// (`GET /stats`). docker-compose and the benchmark use it.
    Echo(cli::echo::EchoArgs),
    /// Send signed webhooks at a fixed rate or as fast as answered, and report throughput and latency.
    Loadgen(cli::loadgen::LoadgenArgs),
    /// Run signed requests through the gateway's whole stack in this process: what `bench/instructions.sh` counts
    /// the instructions of.
    Hotpath(cli::hotpath::HotpathArgs),
    /// Queue operations.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Dead letters: events whose delivery failed `max_attempts` times.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Refused requests kept by sources with `quarantine = true`.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// A source, in the config at `config`.
#[derive(Args)]
struct SourceArgs {
    source: String,
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// What a replay takes: one entry of a source, or all of them.
#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    of: SourceArgs,
    /// One entry, by its id (a dead letter also by its event id). Safe to run twice: it is replayed once.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    id: Option<String>,
    /// Every entry of the source.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List a source's quarantined requests, one JSON object per line: id, time, client IP, verdict and
    /// reason, event id (when one can be read), size.
    List(SourceArgs),
    /// Run quarantined requests through the current config, as of the moment each was received, and forward
    /// each that now passes (with dedup); each delivered or duplicate is removed from the quarantine.
    Replay(ReplayArgs),
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Print depth, pending, delayed, dead and oldest-event age of every queued source, as JSON.
    Stats {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadCommand {
    /// List a source's dead letters, one JSON object per line.
    List(SourceArgs),
    /// Put dead letters back on the queue, with their attempts reset.
    Replay(ReplayArgs),
}

const DEFAULT_CONFIG: &str = "config/hookgate.toml";

/// Where transparent huge pages are `always` (the default of many kernels), every 2 MiB region the
/// allocator touches is backed whole, and each one it purges and touches again is zeroed whole: at 4
/// threads and 100 000 ids that took the gateway's peak RSS to 60 MiB, where small pages need 36. This is
/// what `MIMALLOC_ALLOW_THP=0` does, without asking every deployment to set it.
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes only integers and touches no memory of this process; on
    // failure (a kernel without it) nothing changes, and pages stay as the kernel chooses.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// glibc's allocator spent about a sixth of the gateway's CPU under load (many small, short-lived
/// allocations across threads); mimalloc handles that pattern far better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    small_pages_only();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Serve {
            config,
            watch_config,
            threads,
        } => serve(config, watch_config, threads),
        Command::CheckConfig { path, at } => check_config(&path, at.unwrap_or_else(SystemTime::now)),
        Command::Sign(args) => cli::signature::sign(args),
        Command::Verify(args) => cli::signature::verify(args),
        Command::Probe { url, timeout } => probe(&url, timeout),
        Command::Loadgen(args) => loadgen(args),
        Command::Hotpath(args) => cli::hotpath::run(args),
        Command::Queue(QueueCommand::Stats { config }) => queue_stats(&config),
        Command::Dead(DeadCommand::List(of)) => dead_list(&of.config, &of.source),
        Command::Dead(DeadCommand::Replay(args)) => {
            let which = args.id.map_or(Replay::All, Replay::One);
            dead_replay(&args.of.config, &args.of.source, &which)
        }
        Command::Quarantine(QuarantineCommand::List(of)) => quarantine_list(&of.config, &of.source),
        Command::Quarantine(QuarantineCommand::Replay(args)) => {
            quarantine_replay(&args.of.config, &args.of.source, args.id.as_deref())
        }
        Command::Echo(args) => runtime().and_then(|rt| rt.block_on(cli::echo::run(args, shutdown_signal()))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hookgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn serve(path: Option<PathBuf>, watch_config: bool, threads: Option<usize>) -> Result<(), String> {
    let path = path.unwrap_or_else(|| {
        if Path::new(DEFAULT_CONFIG).exists() {
            PathBuf::from(DEFAULT_CONFIG)
        } else {
            tracing::info!("{DEFAULT_CONFIG} not found; using the embedded default config");
            PathBuf::from(config::EMBEDDED_PATH)
        }
    });
    let config = config::load_or_embedded(&path).map_err(|e| e.to_string())?;
    let runtime = runtime()?;
    let cores = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let cores = Cores::start(cores).map_err(|e| format!("cannot start the runtimes: {e}"))?;
    runtime.block_on(async {
        let listeners = Listeners::bind(&config).await.map_err(|e| {
            format!(
                "cannot bind {} or {}: {e}",
                config.server.listen, config.server.admin_listen
            )
        })?;
        let listeners = listeners.spread_over(cores);
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(reload_on_sighup(reload_tx.clone()));
        if watch_config {
            tokio::spawn(reload_on_change(path.clone(), reload_tx));
        }
        server::run(config, &path, listeners, shutdown_signal(), reload_rx)
            .await
            .map_err(|e| e.to_string())
    })?;
    // Connections cut at the end of the grace period may still hold tasks; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// Asks for a reload on every SIGHUP.
async fn reload_on_sighup(reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload is unavailable");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the config");
        if reload.send(()).await.is_err() {
            return;
        }
    }
}

/// Asks for a reload when the file's modification time or size changes. Polling, rather than inotify,
/// also sees a Kubernetes ConfigMap update, which swaps a symlink.
async fn reload_on_change(path: PathBuf, reload: tokio::sync::mpsc::Sender<()>) {
    let stamp = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()));
    // The config file, and the TLS certificate and key it names (a renewed certificate is a reload too).
    let watched = |path: &Path| {
        let mut files = vec![path.to_owned()];
        if let Ok(config) = hookgate::config::load(path)
            && let Some(tls) = config.server.tls
        {
            files.extend([tls.cert_file, tls.key_file]);
        }
        files
    };
    let mut files = watched(&path);
    let mut last: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let now: Vec<_> = files.iter().map(|f| stamp(f)).collect();
        if now != last {
            if let Some((file, _)) = files.iter().zip(now.iter().zip(&last)).find(|(_, (a, b))| a != b) {
                tracing::info!(path = %file.display(), "a watched file changed: reloading");
            }
            files = watched(&path);
            last = files.iter().map(|f| stamp(f)).collect();
            if reload.send(()).await.is_err() {
                return;
            }
        }
    }
}

fn loadgen(args: cli::loadgen::LoadgenArgs) -> Result<(), String> {
    let json = args.json;
    let report = runtime()?.block_on(cli::loadgen::run(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let status = runtime()?.block_on(async {
        let client = hookgate::forward::http::client();
        match tokio::time::timeout(timeout, client.get(&uri)).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("{url}: {e}")),
            Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        }
    })?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// The queues of the config at `path`, connected to its Redis, without starting any worker.
async fn queues(path: &Path) -> Result<Vec<std::sync::Arc<Queue>>, String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    Ok(build(&config, path)?.queues)
}

/// The gateway of `config`, built exactly as `serve` builds it, without serving.
fn build(config: &config::Config, path: &Path) -> Result<Gateway, String> {
    let backends = Backends::connect(config, path).map_err(|e| e.to_string())?;
    Gateway::build(config, &backends, path).map_err(|e| e.to_string())
}

async fn queue_named(path: &Path, source: &str) -> Result<std::sync::Arc<Queue>, String> {
    queues(path)
        .await?
        .into_iter()
        .find(|q| q.source() == source)
        .ok_or_else(|| format!("{}: no source `{source}` with forward.kind = \"queue\"", path.display()))
}

fn queue_stats(path: &Path) -> Result<(), String> {
    runtime()?.block_on(async {
        let mut all = serde_json::Map::new();
        for queue in queues(path).await? {
            let stats = queue.stats().await.map_err(|e| format!("{}: {e}", queue.source()))?;
            all.insert(
                queue.source().to_owned(),
                serde_json::to_value(stats).map_err(|e| e.to_string())?,
            );
        }
        println!("{}", serde_json::Value::Object(all));
        Ok(())
    })
}

fn dead_list(path: &Path, source: &str) -> Result<(), String> {
    runtime()?.block_on(async {
        for letter in queue_named(path, source).await?.dead_letters().await? {
            println!("{}", serde_json::to_string(&letter).map_err(|e| e.to_string())?);
        }
        Ok(())
    })
}

fn dead_replay(path: &Path, source: &str, which: &Replay) -> Result<(), String> {
    runtime()?.block_on(async {
        let moved = queue_named(path, source).await?.replay(which).await?;
        println!("replayed {moved} dead letter(s) of {source}");
        Ok(())
    })
}

/// The gateway of the config at `path`, and its source named `source`, which must quarantine.
fn quarantined(path: &Path, source: &str) -> Result<(Gateway, hookgate::gateway::Source), String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    let gateway = build(&config, path)?;
    let found = hookgate::replay::quarantining(&gateway, source)
        .cloned()
        .ok_or_else(|| format!("{}: no source `{source}` with quarantine = true", path.display()))?;
    Ok((gateway, found))
}

fn quarantine_list(path: &Path, source: &str) -> Result<(), String> {
    runtime()?.block_on(async {
        let (_, found) = quarantined(path, source)?;
        let quarantine = found.quarantine.as_ref().ok_or("no quarantine")?;
        for entry in quarantine.list().await? {
            let event_id = entry
                .request()
                .and_then(|(headers, body)| found.event_id.peek(&headers, &body));
            let line = serde_json::json!({
                "id": entry.id,
                "received_at": humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_millis(entry.received_at_ms)
                ).to_string(),
                "client_ip": entry.client_ip,
                "verdict": entry.verdict,
                "reason": entry.reason,
                "event_id": event_id,
                "size": entry.size(),
                "redacted": entry.redacted,
            });
            println!("{line}");
        }
        Ok(())
    })
}

fn quarantine_replay(path: &Path, source: &str, id: Option<&str>) -> Result<(), String> {
    runtime()?.block_on(async {
        let (gateway, found) = quarantined(path, source)?;
        let results = hookgate::replay::quarantined(&gateway, &found, id).await?;
        let (mut delivered, mut kept) = (0, 0);
        for replayed in &results {
            match (&replayed.reason, replayed.result) {
                (_, "delivered" | "duplicate") => {
                    let note = if replayed.removed {
                        ""
                    } else {
                        " (removed by another replay)"
                    };
                    println!("{}: {}{note}", replayed.id, replayed.result);
                    delivered += 1;
                }
                (reason, result) => {
                    println!("{}: {result} ({}); kept", replayed.id, reason.as_deref().unwrap_or("-"));
                    kept += 1;
                }
            }
        }
        println!("{source}: {delivered} replayed, {kept} kept");
        Ok(())
    })
}

/// `YYYY-MM-DD`, as midnight UTC.
fn parse_day(day: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).map_err(|_| format!("`{day}` is not a YYYY-MM-DD day"))
}

fn check_config(path: &Path, now: SystemTime) -> Result<(), String> {
    let config = config::load_at(path, now).map_err(|e| e.to_string())?;
    // Building the gateway reads every secret and parses every URL, exactly as start-up does.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        // The store is set up but not contacted: a config check must not need Redis.
        build(&config, path)
    })?;
    let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    println!(
        "{}: ok: {} source(s) [{}], listen {}, admin {}, dedup {:?}",
        path.display(),
        names.len(),
        names.join(", "),
        config.server.listen,
        config.server.admin_listen,
        config.dedup.store
    );
    for source in config.sources.iter().filter(|s| s.mode == config::SourceMode::Shadow) {
        println!(
            "{}: source \"{}\" is in shadow mode: it forwards every request, whatever its verdict",
            path.display(),
            source.name
        );
    }
    Ok(())
}
