//! Replaying quarantined requests: each runs through the current config's stack for its source (the fixed
//! secret, the new allowlist), its signature dated as of the moment it was received, with dedup, and is
//! forwarded only if it now passes. One delivered, or found a duplicate, leaves the quarantine; one still
//! refused stays. Used by `hookgate quarantine replay` and by the console.

use http_body_util::Full;
use tower::ServiceExt;

use crate::error::Accepted;
use crate::gateway::{Gateway, Source};
use crate::peer::ClientIp;
use crate::verify::layer::Clock;

/// What became of one replayed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The quarantine entry's id.
    pub id: String,
    /// `delivered`, `duplicate`, `refused` or `failed`.
    pub result: &'static str,
    /// Why it was refused or failed (`bad_signature:mismatch`, say).
    pub reason: Option<String>,
    /// Whether this replay removed it from the quarantine (`false` when another replay did first).
    pub removed: bool,
}

/// Replays `source`'s quarantined request `id`, or all of them. Errors only when the quarantine cannot be
/// read, or `id` is not in it.
pub async fn quarantined(gateway: &Gateway, source: &Source, id: Option<&str>) -> Result<Vec<Replayed>, String> {
    let quarantine = source
        .quarantine
        .clone()
        .ok_or_else(|| format!("source `{}` has no quarantine", source.name))?;
    // The replay must not quarantine what it refuses again, nor forward it as a shadow source would.
    let replaying = Source {
        quarantine: None,
        shadow: false,
        ..source.clone()
    };
    let entries: Vec<_> = quarantine
        .list()
        .await?
        .into_iter()
        .filter(|e| id.is_none_or(|id| e.id == id))
        .collect();
    if let (Some(id), true) = (id, entries.is_empty()) {
        return Err(format!("no quarantined request `{id}` in {}", source.name));
    }
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some((headers, body)) = entry.request() else {
            crate::metrics::quarantine_replay(&source.name, "failed");
            results.push(Replayed {
                id: entry.id,
                result: "failed",
                reason: Some("the entry cannot be read back".to_owned()),
                removed: false,
            });
            continue;
        };
        let received = i64::try_from(entry.received_at_ms / 1000).unwrap_or(i64::MAX);
        let stack = crate::stack::source_stack_at(gateway, &replaying, Clock::Fixed(received));
        let mut request = http::Request::post(replaying.path.as_str())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        if let Ok(ip) = entry.client_ip.parse() {
            request.extensions_mut().insert(ClientIp(ip));
        }
        let outcome = stack.oneshot(request).await;
        let (result, reason) = match &outcome {
            Ok(Accepted::Duplicate) => ("duplicate", None),
            Ok(_) => ("delivered", None),
            Err(rejection) if rejection.outcome().status().is_client_error() => {
                ("refused", Some(rejection.reason().to_owned()))
            }
            Err(rejection) => ("failed", Some(rejection.reason().to_owned())),
        };
        crate::metrics::quarantine_replay(&source.name, result);
        let removed = if outcome.is_ok() {
            quarantine.remove(&entry.id).await?
        } else {
            false
        };
        results.push(Replayed {
            id: entry.id,
            result,
            reason,
            removed,
        });
    }
    Ok(results)
}

/// The source named `name` of `gateway`, if it keeps a quarantine.
pub fn quarantining<'g>(gateway: &'g Gateway, name: &str) -> Option<&'g Source> {
    gateway
        .sources
        .iter()
        .find(|s| &*s.name == name && s.quarantine.is_some())
}
