//! The real `hookgate` binary as a child process, on free loopback ports.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use http::HeaderMap;
use tokio::process::{Child, Command};

use super::Sender;

pub const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits until `/readyz` on the admin port answers 200. Fails if the child exits or 5 s pass.
pub async fn wait_ready(admin: u16, child: &mut Child) {
    let sender = Sender::default();
    let url = format!("http://127.0.0.1:{admin}/readyz");
    for _ in 0..200 {
        if sender
            .try_send("GET", &url, HeaderMap::new(), "")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            return;
        }
        assert!(child.try_wait().expect("try_wait").is_none(), "hookgate exited early");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("hookgate did not become ready in 5 s");
}

/// A running `hookgate serve`, killed when dropped.
pub struct Serving {
    pub child: Child,
    pub public: u16,
    pub admin: u16,
    /// The config file, which a test may rewrite.
    pub path: PathBuf,
}

/// Sends `signal` (`"TERM"`, `"HUP"`, …) to the process `child`.
pub async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("pid").to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// Waits up to 10 s for `child` to exit, and checks that it exited 0.
pub async fn exits_cleanly(child: &mut Child) {
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s")
        .expect("wait");
    assert!(status.success(), "clean exit, got {status}");
}

/// Writes `text` (with `PUBLIC` and `ADMIN` replaced by free ports) to a file named after `name`, starts
/// `hookgate serve --config FILE` with `extra` arguments, and waits until it is ready.
pub async fn serve(name: &str, text: &str, extra: &[&str]) -> Serving {
    serve_with_env(name, text, extra, &[]).await
}

/// Like [`serve`], with environment variables set for the process.
pub async fn serve_with_env(name: &str, text: &str, extra: &[&str], env: &[(&str, &str)]) -> Serving {
    let (public, admin) = (free_port(), free_port());
    let text = text
        .replace("PUBLIC", &public.to_string())
        .replace("ADMIN", &admin.to_string());
    let path = super::temp_file(&format!("{name}-{public}.toml"), &text);
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(extra)
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hookgate");
    wait_ready(admin, &mut child).await;
    Serving {
        child,
        public,
        admin,
        path,
    }
}
