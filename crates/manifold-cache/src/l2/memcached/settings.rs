//! The Memcached tier's settings and their checks (the config crate repeats the same rules,
//! so `manifold check` refuses what `Cache::new` would).

use std::time::Duration;

/// Default per-command bound: as short as Redis's, for the same reason.
pub const DEFAULT_MEMCACHED_TIMEOUT: Duration = Duration::from_millis(50);
/// Default pause before probing a failed server again.
pub const DEFAULT_MEMCACHED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// memcached's default item size limit (`-I 1m`).
pub const DEFAULT_MEMCACHED_MAX_ITEM_BYTES: u64 = 1024 * 1024;
/// Bounds of `max_item_bytes`: memcached accepts `-I` from 1 KiB to 1 GiB.
pub const MEMCACHED_ITEM_BYTES: std::ops::RangeInclusive<u64> = 1024..=(1 << 30);
/// Most servers in one tier.
pub const MAX_MEMCACHED_SERVERS: usize = 64;
/// Longest key prefix: with `{kind}:` and a 65-byte hashed key it stays under memcached's 250.
pub const MAX_MEMCACHED_PREFIX: usize = 150;

/// The Memcached tier's settings (`[cache] memcached = [...]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcachedSettings {
    /// `host:port` of each server. Every replica must list the same servers, spelled the same
    /// (the order does not matter): the spelling places keys on servers.
    pub servers: Vec<String>,
    /// Prepended to every key, so deployments sharing servers never see each other's entries.
    pub prefix: String,
    /// Every request-path command is abandoned after this long.
    pub timeout: Duration,
    /// After an error or timeout, requests skip that server for this long (one probes).
    pub retry_after: Duration,
    /// The servers' item size limit (`memcached -I`): larger entries are not written.
    pub max_item_bytes: u64,
}

impl MemcachedSettings {
    /// Settings for `servers` with the defaults.
    pub fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            prefix: crate::DEFAULT_REDIS_PREFIX.to_owned(),
            timeout: DEFAULT_MEMCACHED_TIMEOUT,
            retry_after: DEFAULT_MEMCACHED_RETRY_AFTER,
            max_item_bytes: DEFAULT_MEMCACHED_MAX_ITEM_BYTES,
        }
    }

    /// Every problem with these settings, for a clear start-up error.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("cache memcached lists no server".into());
        }
        if self.servers.len() > MAX_MEMCACHED_SERVERS {
            return Err(format!(
                "cache memcached lists {} servers; at most {MAX_MEMCACHED_SERVERS}",
                self.servers.len()
            ));
        }
        for (i, s) in self.servers.iter().enumerate() {
            check_server_addr(s).map_err(|e| format!("cache memcached server {s:?}: {e}"))?;
            if self.servers[..i].contains(s) {
                return Err(format!("cache memcached lists {s:?} twice"));
            }
        }
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_MEMCACHED_PREFIX
            || !self.prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "cache prefix {:?} must be 1 to {MAX_MEMCACHED_PREFIX} printable ASCII characters without spaces for memcached",
                self.prefix
            ));
        }
        if self.timeout.is_zero() {
            return Err("cache memcached timeout must be above zero".into());
        }
        if !MEMCACHED_ITEM_BYTES.contains(&self.max_item_bytes) {
            return Err(format!(
                "cache memcached max_item_bytes {} is outside {}..={} (memcached -I)",
                self.max_item_bytes,
                MEMCACHED_ITEM_BYTES.start(),
                MEMCACHED_ITEM_BYTES.end()
            ));
        }
        Ok(())
    }
}

/// `host:port` (IPv6 in brackets), the port a number above 0. Shared with the config checks.
pub fn check_server_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "is not host:port (e.g. \"127.0.0.1:11211\")".to_owned())?;
    if host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("has no host, or one with spaces".into());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address goes in brackets: \"[::1]:11211\"".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = MemcachedSettings::new(vec!["127.0.0.1:11211".into(), "[::1]:11212".into()]);
        assert!(ok.check().is_ok());
        let bad = |s: MemcachedSettings| s.check().unwrap_err();
        assert!(bad(MemcachedSettings::new(vec![])).contains("no server"));
        assert!(bad(MemcachedSettings::new(vec!["localhost".into()])).contains("host:port"));
        assert!(bad(MemcachedSettings::new(vec!["h:0".into()])).contains("port"));
        assert!(bad(MemcachedSettings::new(vec!["::1:11211".into()])).contains("brackets"));
        assert!(bad(MemcachedSettings::new(vec!["a:1".into(), "a:1".into()])).contains("twice"));
        let many = (1..=65).map(|p| format!("h:{p}")).collect();
        assert!(bad(MemcachedSettings::new(many)).contains("at most"));
        let mut s = MemcachedSettings::new(vec!["h:1".into()]);
        s.prefix = "has space".into();
        assert!(bad(s.clone()).contains("prefix"));
        s.prefix = "ok:".into();
        s.max_item_bytes = 10;
        assert!(bad(s).contains("max_item_bytes"));
    }
}
