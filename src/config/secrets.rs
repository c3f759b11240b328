//! Where a secret comes from (`env:NAME`, `file:/path`, a literal) and the secret itself, which never
//! shows in `Debug`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret comes from. Resolved once at load; its value never appears in `Debug`.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub enum SecretRef {
    /// `env:NAME`: read from an environment variable.
    Env(String),
    /// `file:/path`: read from a file (trailing newline trimmed).
    File(PathBuf),
    /// The value itself, written in the config file.
    Literal(Secret),
}

impl From<String> for SecretRef {
    fn from(s: String) -> Self {
        if let Some(name) = s.strip_prefix("env:") {
            SecretRef::Env(name.to_owned())
        } else if let Some(path) = s.strip_prefix("file:") {
            SecretRef::File(PathBuf::from(path))
        } else {
            SecretRef::Literal(Secret(s))
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Literal(_) => f.write_str("[redacted literal]"),
        }
    }
}

impl SecretRef {
    /// Reads the secret's value. A trailing newline of a file is dropped.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set or not UTF-8"))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            SecretRef::Literal(secret) => secret.0.clone(),
        };
        if value.is_empty() {
            return Err(format!("secret {self:?} is empty"));
        }
        Ok(Secret(value))
    }
}

/// A secret value. `Debug` prints `[redacted]` so that it cannot reach a log by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; only the verifiers call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
