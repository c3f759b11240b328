//! The provider IP lists shipped in `config/ip-ranges/`, referenced as `allow_ips = ["@stripe"]`. They are
//! compiled into the binary, so a reference works wherever hookgate runs. Each list names its source and
//! the date it was last checked; a config that uses a list older than `client_ip.ip_ranges_max_age`, or a
//! list that does not exist, is refused, so that an outdated allowlist fails a deploy rather than
//! silently dropping a provider's new addresses.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Deserialize;

const LISTS: &[(&str, &str)] = &[
    ("github", include_str!("../../config/ip-ranges/github.toml")),
    ("stripe", include_str!("../../config/ip-ranges/stripe.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFile {
    source: String,
    updated: String,
    ranges: Vec<IpNet>,
}

/// One provider's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList {
    /// The name it is referenced by, without the `@`.
    pub name: String,
    /// Where the list comes from.
    pub source: String,
    /// The day it was last checked against its source, `YYYY-MM-DD`.
    pub updated: String,
    /// The ranges.
    pub ranges: Vec<IpNet>,
}

/// The names of the shipped lists.
pub fn names() -> impl Iterator<Item = &'static str> {
    LISTS.iter().map(|(name, _)| *name)
}

/// Reads a shipped list by name.
pub fn lookup(name: &str) -> Result<IpList, String> {
    let (_, text) = LISTS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let known: Vec<_> = names().map(|n| format!("@{n}")).collect();
        format!("unknown IP list `@{name}`; shipped lists: {}", known.join(", "))
    })?;
    let file: ListFile = toml::from_str(text).map_err(|e| format!("IP list `@{name}` is malformed: {e}"))?;
    Ok(IpList {
        name: name.to_owned(),
        source: file.source,
        updated: file.updated,
        ranges: file.ranges,
    })
}

impl IpList {
    /// Refuses a list that was last checked more than `max_age` before `now`.
    pub fn check_fresh(&self, max_age: Duration, now: SystemTime) -> Result<(), String> {
        let name = &self.name;
        let updated = humantime::parse_rfc3339(&format!("{}T00:00:00Z", self.updated))
            .map_err(|_| format!("IP list `@{name}` has a bad date `{}`", self.updated))?;
        let age = now.duration_since(updated).unwrap_or(Duration::ZERO);
        if age > max_age {
            return Err(format!(
                "IP list `@{name}` was last checked on {} ({} days ago, more than client_ip.ip_ranges_max_age): \
                 refresh it from {} or raise the limit",
                self.updated,
                age.as_secs() / 86_400,
                self.source
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: Duration = Duration::from_secs(365 * 86_400);

    #[test]
    fn every_shipped_list_parses_and_is_not_empty() {
        for name in names() {
            let list = lookup(name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!list.ranges.is_empty(), "{name}");
            assert!(list.source.starts_with("https://"), "{name}");
        }
    }

    #[test]
    fn an_unknown_list_is_an_error_naming_the_known_ones() {
        let err = lookup("paypal").expect_err("unknown");
        assert!(err.contains("@paypal") && err.contains("@stripe"), "{err}");
    }

    #[test]
    fn a_stale_list_is_an_error_naming_its_source() {
        let list = lookup("stripe").expect("shipped");
        let checked = humantime::parse_rfc3339(&format!("{}T00:00:00Z", list.updated)).expect("date");
        let err = list.check_fresh(YEAR, checked + 2 * YEAR).expect_err("stale");
        assert!(err.contains("ips_webhooks.txt") && err.contains("days ago"), "{err}");
        list.check_fresh(YEAR, checked + YEAR)
            .expect("a year old is still fresh");
    }

    #[test]
    fn github_hooks_include_ipv6() {
        let ranges = lookup("github").expect("shipped").ranges;
        assert!(ranges.iter().any(|r| matches!(r, IpNet::V6(_))));
        assert!(
            ranges
                .iter()
                .any(|r| r.contains(&"140.82.115.1".parse::<std::net::IpAddr>().expect("ip")))
        );
    }
}
