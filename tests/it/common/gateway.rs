//! The gateway under test: the real `server::run` on port 0, with a default test config that each test
//! changes only where it needs to.

use std::net::SocketAddr;
use std::path::Path;

use hookgate::config::{self, Config};
use hookgate::server::{self, Listeners};
use hookgate::verify::layer::Clock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One source per scheme, each forwarding to `{downstream}/{name}`.
pub fn test_config(downstream: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"

        [[source]]
        name = "stripe"
        path = "/stripe"
        scheme = "stripe"
        secrets = ["whsec_test_secret"]
        forward = {{ kind = "http", url = "{downstream}/stripe", timeout = "2s" }}

        [[source]]
        name = "github"
        path = "/github"
        scheme = "github"
        secrets = ["gh-secret-for-tests-0001"]
        forward = {{ kind = "http", url = "{downstream}/github", timeout = "2s" }}

        [[source]]
        name = "shopify"
        path = "/shopify"
        scheme = "shopify"
        secrets = ["shpss_secret_for_tests_01"]
        forward = {{ kind = "http", url = "{downstream}/shopify", timeout = "2s" }}

        [[source]]
        name = "slack"
        path = "/slack"
        scheme = "slack"
        secrets = ["slack-signing-secret"]
        forward = {{ kind = "http", url = "{downstream}/slack", timeout = "2s" }}

        [[source]]
        name = "standard"
        path = "/standard"
        scheme = "standard"
        secrets = ["whsec_c2VjcmV0LWtleS1ieXRlcw=="]
        forward = {{ kind = "http", url = "{downstream}/standard", timeout = "2s" }}

        [[source]]
        name = "hmac"
        path = "/hmac"
        scheme = "hmac"
        secrets = ["generic-secret-for-tests"]
        event_id = "header:x-event-id"
        hmac = {{ header = "x-signature", algorithm = "sha512", encoding = "base64", prefix = "sha512=", signed_content = "{{timestamp}}.{{body}}", timestamp_header = "x-timestamp" }}
        forward = {{ kind = "http", url = "{downstream}/hmac", timeout = "2s" }}
        "#
    );
    config::parse(&text, Path::new("test.toml")).expect("test config is valid")
}

pub const SCHEMES: [&str; 6] = ["stripe", "github", "shopify", "slack", "standard", "hmac"];

pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    reload: tokio::sync::mpsc::Sender<()>,
    task: Option<JoinHandle<Result<(), config::ConfigError>>>,
}

impl TestGateway {
    pub async fn start(config: Config) -> Self {
        Self::start_from(config, Path::new("test.toml")).await
    }

    /// Starts from `config`, reloading from `path` when asked.
    pub async fn start_from(config: Config, path: &Path) -> Self {
        Self::start_with(config, path, Clock::System).await
    }

    /// Starts from `config`, with signed timestamps dated by `clock`: a provider's published example is
    /// checked as of the moment it was signed.
    pub async fn start_at(config: Config, clock: Clock) -> Self {
        Self::start_with(config, Path::new("test.toml"), clock).await
    }

    async fn start_with(config: Config, path: &Path, clock: Clock) -> Self {
        let path = path.to_owned();
        let public = TcpListener::bind(config.server.listen).await.expect("bind public");
        let admin = TcpListener::bind(config.server.admin_listen).await.expect("bind admin");
        let addr = public.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let (reload, reload_rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(async move {
            let listeners = Listeners::new(public, admin);
            let shutdown = async {
                let _ = rx.await;
            };
            server::run_with_clock(config, &path, listeners, shutdown, reload_rx, clock).await
        });
        TestGateway {
            addr,
            admin: admin_addr,
            shutdown: Some(tx),
            reload,
            task: Some(task),
        }
    }

    /// Asks for a reload, as SIGHUP does.
    pub async fn reload(&self) {
        self.reload.send(()).await.expect("gateway running");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Signals shutdown and returns the task, so a test can act while the gateway drains.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), config::ConfigError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("gateway still running")
    }

    pub async fn stop(mut self) {
        self.begin_shutdown().await.expect("join").expect("clean shutdown");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
