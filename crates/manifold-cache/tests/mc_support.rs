//! Helpers for the memcached tests: settings, a raw text-protocol client for looking at a
//! server directly, and a private `memcached` child on its own port.

use std::time::Duration;

use manifold_cache::{Cache, CacheSettings, MemcachedSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::PrivateChild;

/// The memcached `.ci/run` starts (docs/cache.md).
pub(crate) const SHARED_MEMCACHED: &str = "127.0.0.1:11211";

pub(crate) fn mc_settings(servers: &[&str], prefix: &str) -> MemcachedSettings {
    MemcachedSettings {
        prefix: prefix.to_owned(),
        // Generous for a loaded 2-core CI machine; the outage tests prove the bound matters.
        timeout: Duration::from_millis(500),
        retry_after: Duration::from_millis(200),
        ..MemcachedSettings::new(servers.iter().map(|s| (*s).to_owned()).collect())
    }
}

pub(crate) fn mc_cache(servers: &[&str], prefix: &str) -> Cache {
    Cache::new(CacheSettings {
        memcached: Some(mc_settings(servers, prefix)),
        ..CacheSettings::default()
    })
    .unwrap()
}

/// Sends `cmd` and reads until the reply ends with `end` (at most 5 s, 1 MiB).
pub(crate) async fn mc_raw(addr: &str, cmd: &str, end: &str) -> String {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(cmd.as_bytes()).await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(end.as_bytes()) && out.len() < (1 << 20) {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("memcached answered in time")
        .expect("memcached reachable")
}

/// A private `memcached` on its own port, killed on drop. Never the shared one on 11211.
pub(crate) struct PrivateMemcached(PrivateChild);

impl std::ops::Deref for PrivateMemcached {
    type Target = PrivateChild;
    fn deref(&self) -> &PrivateChild {
        &self.0
    }
}

impl std::ops::DerefMut for PrivateMemcached {
    fn deref_mut(&mut self) -> &mut PrivateChild {
        &mut self.0
    }
}

impl PrivateMemcached {
    pub(crate) async fn start_on(port: u16) -> Self {
        let mut cmd = tokio::process::Command::new("memcached");
        // `-u` only matters as root (CI), where memcached refuses to run without it.
        cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
            .args(["-m", "16", "-u", "nobody"]);
        let addr = format!("127.0.0.1:{port}");
        let missing = "memcached must be installed (apt-get install memcached)";
        Self(
            PrivateChild::spawn(cmd, port, missing, "private memcached answers", || {
                let addr = addr.clone();
                async move {
                    let probe = async {
                        let mut s = TcpStream::connect(&addr).await.ok()?;
                        s.write_all(b"mn\r\n").await.ok()?;
                        let mut buf = [0u8; 4];
                        s.read_exact(&mut buf).await.ok()?;
                        Some(&buf == b"MN\r\n")
                    };
                    tokio::time::timeout(Duration::from_secs(1), probe)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(false)
                }
            })
            .await,
        )
    }

    pub(crate) async fn start() -> Self {
        Self::start_on(PrivateChild::free_port()).await
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The key the tier uses for `key` (its rule, repeated here so the tests can look and clean
/// up): as is when short and printable, else `#` + hex SHA-256.
pub(crate) fn mc_key(prefix: &str, kind: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let safe = prefix.len() + kind.len() + 1 + key.len() <= 250
        && !key.starts_with('#')
        && key.bytes().all(|b| b.is_ascii_graphic());
    if safe {
        format!("{prefix}{kind}:{key}")
    } else {
        let hex: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{prefix}{kind}:#{hex}")
    }
}

/// Removes what a test wrote on `addr` for `keys`: entries, locks and generations.
pub(crate) async fn mc_cleanup(addr: &str, prefix: &str, keys: &[&str]) {
    let mut cmd = format!("md {prefix}g q\r\n");
    for key in keys {
        let ns = key.split_once(' ').map_or(*key, |(ns, _)| ns);
        for k in [
            mc_key(prefix, "e", key),
            mc_key(prefix, "l", key),
            mc_key(prefix, "n", ns),
        ] {
            cmd.push_str(&format!("md {k} q\r\n"));
        }
    }
    cmd.push_str("mn\r\n");
    mc_raw(addr, &cmd, "MN\r\n").await;
}

/// Whether `addr` holds the tier's entry for `key`.
pub(crate) async fn has_entry(addr: &str, prefix: &str, key: &str) -> bool {
    let k = mc_key(prefix, "e", key);
    mc_raw(addr, &format!("mg {k} q\r\nmn\r\n"), "MN\r\n").await == "HD\r\nMN\r\n"
}
