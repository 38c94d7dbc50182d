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

#[cfg(test)]
mod tests {
    use super::route_shape;

    #[test]
    fn parameter_names_are_erased() {
        assert_eq!(route_shape("/u/{id}"), route_shape("/u/{x}"));
        assert_eq!(route_shape("/u/{id}/o/{*rest}"), "/u/{}/o/{*}");
        assert_ne!(route_shape("/u/{id}"), route_shape("/u/{*id}"));
        assert_eq!(route_shape("/static/a"), "/static/a");
    }
}
