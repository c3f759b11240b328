//! A real `redis-server` child process on a free loopback port, started and killed by the test. Never a
//! shared server, never a mock.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// The password a client must give (redis-cli too).
    password: Option<String>,
    /// TLS only, with a certificate signed by the test CA in `dir`.
    tls: bool,
}

/// A port that is free, and whose cluster-bus twin (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let port = super::process::free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn redis_cli_with(port: u16, connection: &[String], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(connection)
        .args(args)
        .output()
        .expect("redis-cli is installed (scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With the append-only file on and `appendfsync always`: what it acknowledged survives a SIGKILL, and
    /// `restart` brings it back from its file.
    pub fn start_durable() -> Self {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A replica of `primary`, started, in sync, and confirming writes (`WAIT 1` answers 1).
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let port = primary.port.to_string();
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &port]);
        // `WAIT` counts the replicas that have this connection's last write: the write and the wait share one.
        let client = ::redis::Client::open(primary.url()).expect("url");
        let mut connection = client.get_connection().expect("connect");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, confirmed): ((), u32) = ::redis::pipe()
                .cmd("SET")
                .arg("test:replica-sync")
                .arg("1")
                .cmd("WAIT")
                .arg(1)
                .arg(100)
                .query(&mut connection)
                .expect("SET and WAIT");
            if confirmed == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the replica did not sync");
        }
        replica
    }

    fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = super::temp_dir(&format!("redis-{port}"));
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            password: None,
            tls: false,
        };
        server.restart();
        server
    }

    /// TLS only (no plain port), with a password, and a certificate signed by a test CA.
    pub fn start_tls_with_password(password: &str) -> Self {
        let port = free_port();
        let dir = super::temp_dir(&format!("redis-{port}"));
        make_certificates(&dir);
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let port_text = port.to_string();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            &file("cert.pem"),
            "--tls-key-file",
            &file("key.pem"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .map(str::to_owned)
        .to_vec();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra,
            password: Some(password.to_owned()),
            tls: true,
        };
        server.restart();
        server
    }

    /// Plain TCP, with a password.
    pub fn start_with_password(password: &str) -> Self {
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir: super::temp_dir(&format!("redis-{port}")),
            child: None,
            extra: vec!["--requirepass".to_owned(), password.to_owned()],
            password: Some(password.to_owned()),
            tls: false,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("ca.pem"))
    }

    fn cli_connection(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.tls {
            let cert = self.dir.join("ca.pem").to_string_lossy().into_owned();
            args.extend(["--tls".to_owned(), "--cacert".to_owned(), cert]);
        }
        if let Some(password) = &self.password {
            args.extend(["-a", password, "--no-auth-warning"].map(str::to_owned));
        }
        args
    }

    /// Sends the server a signal (`STOP` freezes it: its port still takes connections, and nothing answers;
    /// `CONT` thaws it).
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let sent = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal}");
    }

    /// Starts the server (again) on the same port, and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        // Later arguments win, so a TLS server's `--port 0` overrides the plain port.
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // A replica syncs at once, instead of after the 5 s a primary waits for others to join.
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["ping"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL); `restart` brings it back on the same port: empty, or from its append-only
    /// file when it has one.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli_with(self.port, &self.cli_connection(), args)
    }

    /// Every key (keys hold raw hash bytes), with its remaining time to live in milliseconds.
    pub fn keys_with_pttl(&self) -> Vec<(Vec<u8>, i64)> {
        let client = ::redis::Client::open(self.url()).expect("url");
        let mut connection = client.get_connection().expect("connect");
        let keys: Vec<Vec<u8>> = ::redis::cmd("KEYS").arg("*").query(&mut connection).expect("KEYS");
        keys.into_iter()
            .map(|key| {
                let pttl: i64 = ::redis::cmd("PTTL").arg(&key).query(&mut connection).expect("PTTL");
                (key, pttl)
            })
            .collect()
    }

    /// Runs one command on raw arguments through the redis crate.
    pub fn command<T: ::redis::FromRedisValue>(&self, name: &str, args: &[&[u8]]) -> T {
        let client = ::redis::Client::open(self.url()).expect("url");
        let mut connection = client.get_connection().expect("connect");
        let mut cmd = ::redis::cmd(name);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd.query(&mut connection).expect("command")
    }
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`cert.pem`, `key.pem`), as a
/// private CA would issue them: the server certificate is not itself a CA.
fn make_certificates(dir: &std::path::Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hookgate-test-ca",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
        ],
    ];
    let tails: [&[&str]; 3] = [
        &["-keyout", "ca.key", "-out", "ca.pem"],
        &["-out", "server.csr"],
        &["-days", "1", "-extfile", "server.ext", "-out", "cert.pem"],
    ];
    for (step, tail) in steps.iter().zip(tails) {
        let status = Command::new("openssl")
            .args(*step)
            .args(tail)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {step:?} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters with `--cluster-enabled yes`, joined by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three primaries, no replicas, no persistence.
    pub fn start() -> Self {
        Self::start_with(0, &[])
    }

    /// Three primaries with one replica each, every node with its append-only file: what a queue on a
    /// cluster runs on.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1, &["--appendonly", "yes", "--appendfsync", "everysec"])
    }

    fn start_with(replicas: usize, extra: &[&str]) -> Self {
        let args: Vec<&str> = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_with(&args))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let ok = node.cli(&["cluster", "info"]).contains("cluster_state:ok");
                let replication = node.cli(&["info", "replication"]);
                let synced = replication.contains("role:master") || replication.contains("master_link_status:up");
                // Every node knows every other, and which are replicas: a failover needs their votes.
                let table = node.cli(&["cluster", "nodes"]);
                let known = table.lines().filter(|l| l.contains(" connected")).count() == nodes.len()
                    && table.matches("slave").count() == 3 * replicas;
                if ok && synced && known {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The node that serves `key` now, and the replica of it (waiting, at most 20 s, until the cluster's
    /// table shows both).
    pub fn primary_and_replica_of(&self, key: &str) -> (&RedisServer, &RedisServer) {
        let slot: u16 = self.nodes[0].cli(&["cluster", "keyslot", key]).parse().expect("slot");
        let node = |address: &str| {
            let port: u16 = address
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("port");
            self.nodes.iter().find(|n| n.port == port).expect("one of ours")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let table = self.nodes[0].cli(&["cluster", "nodes"]);
            let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
            let serves = |fields: &Vec<&str>| {
                fields.get(8..).unwrap_or_default().iter().any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                })
            };
            let primary = lines
                .iter()
                .find(|f| f.len() > 8 && f[2].contains("master") && serves(f));
            if let Some(primary) = primary
                && let Some(replica) = lines.iter().find(|f| f.len() > 3 && f[3] == primary[0])
            {
                return (node(primary[1]), node(replica[1]));
            }
            assert!(
                Instant::now() < deadline,
                "no primary and replica for slot {slot}:\n{table}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
