//! `[server] ready_requires`: which of a replica's own dependencies decide its `/readyz`.
//!
//! Both are shared between replicas, so when one is down for everyone, every replica turns
//! unready at once; an operator who prefers a degraded gateway (the cache is skipped while Redis
//! is down) to none leaves `cache` out. See docs/replicas.md.

use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use serde::Serialize;

/// A dependency `/readyz` can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyDependency {
    /// The Redis tier (`[cache] redis`): answers a PING.
    Cache,
    /// The queue (`[queue]`, opened when a route offloads): answers a stats request.
    Queue,
}

impl ReadyDependency {
    /// The name in the config and in `/readyz`'s body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Queue => "queue",
        }
    }

    /// The default: every dependency the replica has.
    pub fn all() -> Vec<Self> {
        vec![Self::Cache, Self::Queue]
    }
}

/// `ready_requires = ["cache", "queue"]`: known names, each once (an empty list: `/readyz`
/// answers 200 whatever the dependencies, until shutdown).
pub(crate) fn ready_requires(
    v: &Spanned<Vec<Spanned<String>>>,
    diag: &mut Diagnostics<'_>,
) -> Vec<ReadyDependency> {
    let mut out = Vec::new();
    for name in v.get_ref() {
        let dep = match name.get_ref().as_str() {
            "cache" => ReadyDependency::Cache,
            "queue" => ReadyDependency::Queue,
            other => {
                // Quote at most a little of a hostile value.
                let shown: String = other.chars().take(40).collect();
                diag.push(
                    ErrorKind::Value,
                    name.span(),
                    format!(
                        "`server.ready_requires`: {shown:?} is not a dependency; write \"cache\" \
                         (the Redis tier) and/or \"queue\" (the queue's broker)"
                    ),
                );
                continue;
            }
        };
        if out.contains(&dep) {
            diag.push(
                ErrorKind::Value,
                name.span(),
                format!(
                    "`server.ready_requires`: {:?} is listed twice",
                    dep.as_str()
                ),
            );
            continue;
        }
        out.push(dep);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ReadyDependency::{self, Cache, Queue};

    fn compile(server: &str) -> Result<Vec<ReadyDependency>, String> {
        crate::compile(
            std::path::Path::new("r.toml"),
            &format!("[server]\n{server}\n"),
        )
        .map(|c| c.server.ready_requires)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn ready_requires_defaults_to_every_dependency_and_takes_a_subset() {
        assert_eq!(compile("").unwrap(), [Cache, Queue]);
        assert_eq!(compile("ready_requires = [\"queue\"]").unwrap(), [Queue]);
        assert_eq!(compile("ready_requires = []").unwrap(), []);
    }

    #[test]
    fn unknown_and_repeated_dependencies_are_refused_where_they_are() {
        let e = compile("ready_requires = [\"queue\", \"redis\"]").unwrap_err();
        assert!(e.contains("r.toml:2:"), "{e}");
        assert!(e.contains("\"redis\" is not a dependency"), "{e}");
        let e = compile("ready_requires = [\"cache\", \"cache\"]").unwrap_err();
        assert!(e.contains("\"cache\" is listed twice"), "{e}");
        let e = compile("ready_requires = \"cache\"").unwrap_err();
        assert!(e.contains("r.toml:2:"), "{e}");
    }

    #[test]
    fn a_hostile_name_is_quoted_short() {
        let long = "x".repeat(100_000);
        let e = compile(&format!("ready_requires = [\"{long}\"]")).unwrap_err();
        assert!(
            e.len() < 1_000,
            "the whole value was echoed: {} bytes",
            e.len()
        );
    }
}
