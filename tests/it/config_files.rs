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

#[tokio::test]
async fn every_shipped_config_is_valid() {
    let mut files = Vec::new();
    toml_files(Path::new("config"), &mut files);
    assert!(files.len() >= 7, "the default and one example per provider: {files:?}");
    // The container, docker-compose and Kubernetes configs too.
    toml_files(Path::new("deploy"), &mut files);
    for file in files {
        let parsed = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command.arg("check-config").arg(&file);
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

#[test]
fn the_embedded_default_is_the_shipped_default() {
    let shipped = std::fs::read_to_string("config/hookgate.toml").expect("read");
    assert_eq!(shipped, config::EMBEDDED_DEFAULT);
}
