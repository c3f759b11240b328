//! `[admin]`: who may use the admin port's console, and whether it may act.

use serde::Deserialize;

use super::secrets::SecretRef;

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Let the console replay a dead letter or a quarantined request (POST, with a CSRF token). Default
    /// off: the console only reads.
    #[serde(default)]
    pub allow_actions: bool,
    /// A bearer token (`env:NAME`, `file:/path` or a literal) that every admin path but `/healthz` and
    /// `/readyz` then requires: `Authorization: Bearer …`, or the cookie the console's `/login` sets.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

impl AdminConfig {
    /// Whether `other` sets the same (the token by where it is read from: `env:`, `file:` or a literal).
    pub fn same_as(&self, other: &AdminConfig) -> bool {
        self.allow_actions == other.allow_actions && format!("{:?}", self.token) == format!("{:?}", other.token)
    }
}
