//! The one rule deciding which route patterns share a path: `manifold check` rejects conflicts
//! with it and the gateway's router groups routes by it, so a config that passes the check is
//! exactly the config the gateway serves (no route lost at start).

/// A route pattern with its parameter names erased: `/u/{id}` and `/u/{x}` have the same shape
/// `/u/{}`, `/f/{*rest}` has `/f/{*}`. Routes with the same shape match the same requests, so
/// they are told apart by method only; the router (matchit) sees one pattern per shape, and
/// each route reads its parameters by position, under its own names.
///
/// Compiled patterns have whole-segment parameters only (the compiler rejects the rest), so a
/// segment is either literal or one parameter.
pub fn route_shape(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with("{*") {
                "{*}"
            } else if s.starts_with('{') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether any route offloads (async or publish calls): only then does the gateway open the
/// queue and answer task statuses.
pub fn offloads<'a>(routes: impl IntoIterator<Item = &'a crate::Route>) -> bool {
    routes.into_iter().any(|r| match &r.kind {
        crate::RouteKind::Compose(p) => p.calls.iter().any(|c| c.mode != crate::Mode::Sync),
        _ => false,
    })
}

/// A stand-in task id for the shadowing check (any id has this shape).
const SAMPLE_ID: &str = "0123456789abcdef0123456789abcdef";

/// Why the status route cannot be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRouteError<T> {
    /// A route (its value in the router) already answers `{status_path}/<task id>`: the status
    /// route would shadow it.
    Shadows(T),
    /// The router refuses the pattern (it overlaps a route's in a way matchit cannot order).
    Conflicts(String),
}

/// Adds `GET {status_path}/{task_id}` to `router`, which holds the routes (one pattern per
/// shape, as `manifold check` and the gateway build it), unless it would shadow or conflict
/// with one. The one rule both use, so `check` and `serve` agree. `""` adds nothing.
pub fn add_status_route<T: Clone>(
    router: &mut matchit::Router<T>,
    status_path: &str,
    value: T,
) -> Result<(), StatusRouteError<T>> {
    if status_path.is_empty() {
        return Ok(());
    }
    if let Ok(m) = router.at(&format!("{status_path}/{SAMPLE_ID}")) {
        return Err(StatusRouteError::Shadows(m.value.clone()));
    }
    router
        .insert(format!("{status_path}/{{task_id}}"), value)
        .map_err(|e| StatusRouteError::Conflicts(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_route_refuses_to_shadow_or_conflict() {
        let router = |paths: &[&str]| {
            let mut r = matchit::Router::new();
            for (i, p) in paths.iter().enumerate() {
                r.insert(*p, i).unwrap();
            }
            r
        };
        let mut r = router(&["/orders/{id}", "/tasks"]);
        assert_eq!(add_status_route(&mut r, "/tasks", 99), Ok(()));
        assert_eq!(r.at("/tasks/abc").unwrap().value, &99);
        assert_eq!(r.at("/tasks").unwrap().value, &1);
        let mut r = router(&["/{*rest}"]);
        assert_eq!(
            add_status_route(&mut r, "/tasks", 99),
            Err(StatusRouteError::Shadows(0))
        );
        let mut r = router(&["/tasks/{id}"]);
        assert_eq!(
            add_status_route(&mut r, "/tasks", 99),
            Err(StatusRouteError::Shadows(0))
        );
        let mut r = router(&["/{a}/{b}"]);
        assert_eq!(
            add_status_route(&mut r, "/tasks", 99),
            Err(StatusRouteError::Shadows(0))
        );
        let mut r = router(&["/{*rest}"]);
        assert_eq!(add_status_route(&mut r, "", 99), Ok(()));
    }

    #[test]
    fn parameter_names_are_erased() {
        assert_eq!(route_shape("/u/{id}"), route_shape("/u/{x}"));
        assert_eq!(route_shape("/u/{id}/o/{*rest}"), "/u/{}/o/{*}");
        assert_ne!(route_shape("/u/{id}"), route_shape("/u/{*id}"));
        assert_eq!(route_shape("/static/a"), "/static/a");
    }
}
