//! Every config file shipped in `config/` loads, and passes `hookgate check-config` with its env secrets set.

use std::path::{Path, PathBuf};

use hookgate::config::{self, SecretRef};
use tokio::process::Command;

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read config dir") {
        let path = entry.expect("entry").path();
        if path.ends_with("ip-ranges") {
            // Provider IP lists, not configs: `ingress::ip_ranges` tests them.
            continue;
        } else if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// The day the newest shipped IP list was checked. The configs are judged as of that day, not today: the
/// lists are refused a year after it, and a test must not start failing on a date.
fn lists_checked_on() -> String {
    config::ip_ranges::names()
        .map(|name| config::ip_ranges::lookup(name).expect("shipped").updated)
        .max()
        .expect("lists")
}

#[tokio::test]
async fn every_shipped_config_is_valid() {
    let day = lists_checked_on();
    let as_of = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).expect("day");
    let mut files = Vec::new();
    toml_files(Path::new("config"), &mut files);
    assert!(files.len() >= 7, "the default and one example per provider: {files:?}");
    // The container, docker-compose and Kubernetes configs too.
    toml_files(Path::new("deploy"), &mut files);
    for file in files {
        let parsed = config::load_at(&file, as_of).unwrap_or_else(|e| panic!("{e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command.arg("check-config").arg(&file).args(["--at", &day]);
        for source in &parsed.sources {
            for secret in &source.secrets {
                if let SecretRef::Env(name) = secret {
                    // A syntactically right value for each scheme: base64 after whsec_ works everywhere.
                    command.env(name, "whsec_c2VjcmV0LWtleS1ieXRlcw==");
                }
            }
        }
        let out = command.output().await.expect("run check-config");
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Kubernetes config refers to `@stripe` and `@github`: judged as of two years after the lists were
/// checked, it is refused and says where to refresh them; judged as of their day, it passes.
#[tokio::test]
async fn the_age_of_the_ip_lists_is_judged_as_of_the_given_day() {
    let day = lists_checked_on();
    let (year, rest) = day.split_once('-').expect("YYYY-MM-DD");
    let later = format!("{}-{rest}", year.parse::<u32>().expect("year") + 2);
    let check = |at: String| {
        Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["check-config", "deploy/k8s/base/hookgate.toml", "--at", &at])
            .env("STRIPE_WEBHOOK_SECRET", "whsec_c2VjcmV0LWtleS1ieXRlcw==")
            .env("GITHUB_WEBHOOK_SECRET", "github-secret-for-tests")
            .output()
    };
    let stale = check(later).await.expect("run");
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        !stale.status.success() && stderr.contains("refresh it from"),
        "{stderr}"
    );
    let fresh = check(day).await.expect("run");
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
}

#[test]
fn the_embedded_default_is_the_shipped_default() {
    let shipped = std::fs::read_to_string("config/hookgate.toml").expect("read");
    assert_eq!(shipped, config::EMBEDDED_DEFAULT);
}
