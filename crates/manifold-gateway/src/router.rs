//! Request path → the routes (one per method) that share its pattern, and their parameters.
//!
//! Routes are grouped by [`manifold_config::route_shape`], the rule `manifold check` rejects
//! conflicts with, so every route the check accepts is served, and one that cannot be
//! registered stops the gateway at start instead of being skipped.

use crate::error::GatewayError;
use manifold_config::Config;

/// Routes compiled for matching: one matchit pattern per shape → the routes sharing it.
#[derive(Debug)]
pub(crate) struct Router {
    paths: matchit::Router<Vec<usize>>,
}

impl Router {
    /// Fails on the first route matchit refuses (a conflict the compiler did not see).
    pub(crate) fn new(config: &Config) -> Result<Self, GatewayError> {
        let mut paths = matchit::Router::new();
        // (shape, the first route's pattern, the routes): insertion in declaration order, as
        // the compiler's check does.
        let mut groups: Vec<(String, usize, Vec<usize>)> = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let shape = manifold_config::route_shape(&r.path);
            match groups.iter_mut().find(|(s, _, _)| *s == shape) {
                Some((_, _, v)) => v.push(i),
                None => groups.push((shape, i, vec![i])),
            }
        }
        for (_, first, idx) in groups {
            let route = &config.routes[first];
            paths
                .insert(route.path.clone(), idx)
                .map_err(|e| GatewayError::Route {
                    route: route.name.clone(),
                    path: route.path.clone(),
                    reason: e.to_string(),
                })?;
        }
        // Task statuses: an empty route list marks the status route. Added by the rule
        // `manifold check` applies, so a config it accepts starts.
        if manifold_config::offloads(&config.routes) {
            let status_path = &config.queue.status_path;
            manifold_config::add_status_route(&mut paths, status_path, Vec::new()).map_err(
                |e| GatewayError::Route {
                    route: "[queue] status_path".into(),
                    path: format!("{status_path}/{{task_id}}"),
                    reason: match e {
                        manifold_config::StatusRouteError::Shadows(routes) => format!(
                            "it would shadow route `{}`",
                            routes
                                .first()
                                .map_or("?", |&i| config.routes[i].name.as_str())
                        ),
                        manifold_config::StatusRouteError::Conflicts(why) => why,
                    },
                },
            )?;
        }
        Ok(Router { paths })
    }

    /// The task id when `path` is the status route's (`{status_path}/{task_id}`), still
    /// percent-encoded.
    pub(crate) fn status_id<'p>(&self, path: &'p str) -> Option<&'p str> {
        let m = self.paths.at(path).ok()?;
        if m.value.is_empty() {
            m.params.get("task_id")
        } else {
            None
        }
    }

    /// The routes whose pattern matches `path`, and the match's parameters.
    pub(crate) fn at<'r, 'p>(
        &'r self,
        path: &'p str,
    ) -> Option<matchit::Match<'r, 'p, &'r Vec<usize>>> {
        self.paths.at(path).ok()
    }
}

/// A matched route's parameters, percent-decoded, in pattern order. By position, not by name:
/// routes sharing a shape may name their parameters differently (`GET /u/{id}`, `POST /u/{x}`),
/// and matchit reports the names of the one pattern it holds for the shape.
pub(crate) fn params(matched: &matchit::Params<'_, '_>) -> Vec<String> {
    matched
        .iter()
        .map(|(_, raw)| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}
