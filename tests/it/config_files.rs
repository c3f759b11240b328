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

/// A valid public key in the form each public-key scheme's provider shows it: RFC 8032's TEST 1 key for
/// the Ed25519 ones, and the key of sendgrid-python's `test/unit/test_eventwebhook.py` for SendGrid.
fn public_key_of(scheme: config::SchemeKind) -> &'static str {
    match scheme {
        config::SchemeKind::Discord => "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        config::SchemeKind::Telnyx => "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        config::SchemeKind::Standard => "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        config::SchemeKind::Sendgrid => {
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
        }
        other => panic!("{} takes no public keys", other.as_str()),
    }
}

#[tokio::test]
async fn every_shipped_config_is_valid() {
    let day = lists_checked_on();
    let as_of = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).expect("day");
    let mut files = Vec::new();
    toml_files(Path::new("config"), &mut files);
    for scheme in config::SchemeKind::ALL {
        let example = Path::new("config/examples").join(format!("{}.toml", scheme.as_str()));
        assert!(example.exists(), "no example for scheme {}", scheme.as_str());
    }
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
            for key in &source.public_keys {
                if let SecretRef::Env(name) = key {
                    command.env(name, public_key_of(source.scheme));
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

/// The README's scheme table has a row for every scheme, with the headers, signed content and key form
/// that `hookgate verify` prints, its tolerance and its default event id.
#[test]
fn the_readme_lists_every_scheme() {
    let readme = std::fs::read_to_string("README.md").expect("read");
    let rows: Vec<String> = config::SchemeKind::ALL
        .into_iter()
        .map(|scheme| {
            let doc = scheme.doc();
            let tolerance = if scheme == config::SchemeKind::Hmac {
                "5m, with a `timestamp_header`".to_owned()
            } else if scheme.timestamped() {
                humantime::format_duration(scheme.default_tolerance()).to_string()
            } else {
                "none: no timestamp".to_owned()
            };
            let id = scheme
                .default_event_id()
                .map_or("none: set `event_id`".to_owned(), |id| format!("`{id}`"));
            // In a table cell a `|` must be escaped, even inside backticks.
            let cell = |text: &str| format!("`{}`", text.replace('|', "\\|"));
            format!(
                "| `{}` | {} | {} | {} | {tolerance} | {id} |",
                scheme.as_str(),
                cell(doc.headers),
                cell(doc.signed),
                doc.key.replace('|', "\\|")
            )
        })
        .collect();
    let missing: Vec<&String> = rows.iter().filter(|row| !readme.contains(row.as_str())).collect();
    assert!(
        missing.is_empty(),
        "README rows missing or different; expected:\n{}",
        rows.join("\n")
    );
}
