use super::*;
use proptest::prelude::*;

const PUBLIC: &str = "/public/{*rest}";

fn norm(raw: &str) -> Result<String, PathError> {
    normalize(raw, PUBLIC, EscapedSlashes::Reject)
}

#[test]
fn traversal_never_leaves_the_route() {
    for (raw, err) in [
        ("/public/../admin", PathError::OutsideRoute),
        ("/public/%2e%2e/admin", PathError::OutsideRoute),
        ("/public/%2E%2e/admin", PathError::OutsideRoute),
        ("/public/.%2E/admin", PathError::OutsideRoute),
        ("/public/a/../../admin", PathError::OutsideRoute),
        ("/public/..%2fadmin", PathError::EscapedSlash),
        ("/public/..%5cadmin", PathError::EscapedSlash),
        ("/public/..\\admin", PathError::Backslash),
        ("/public/..;/admin", PathError::DotSegmentWithParams),
        ("/public/.;x/admin", PathError::DotSegmentWithParams),
        ("/public/..%3b/admin", PathError::DotSegmentWithParams),
        ("/public/%2e%2e;/admin", PathError::DotSegmentWithParams),
        ("/public/../../etc", PathError::AboveRoot),
        ("/public/%zz", PathError::BadEscape),
        ("/public/%2", PathError::BadEscape),
        ("public/x", PathError::NotAbsolute),
        ("/public", PathError::OutsideRoute),
    ] {
        assert_eq!(norm(raw), Err(err), "{raw}");
    }
}

#[test]
fn harmless_paths_are_normalized_and_kept() {
    for (raw, want) in [
        ("/public/a/b", "/public/a/b"),
        ("/public/a/", "/public/a/"),
        ("/public//a///b", "/public/a/b"),
        ("/public/./a/./b/.", "/public/a/b/"),
        ("/public/a/../b", "/public/b"),
        ("/public/a/..", "/public/"),
        ("/public/../public/x", "/public/x"),
        ("/public/%61%7e%2d", "/public/a~-"),
        ("/public/caf%c3%a9", "/public/caf%C3%A9"),
        ("/public/a;v=1/b", "/public/a;v=1/b"),
        ("/public/...", "/public/..."),
        ("/public/..a", "/public/..a"),
        ("/public/%2e%2e.json", "/public/...json"),
    ] {
        assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn escaped_slashes_can_be_kept_but_never_split() {
    let keep = |raw| normalize(raw, PUBLIC, EscapedSlashes::Keep);
    assert_eq!(keep("/public/a%2fb").as_deref(), Ok("/public/a%2Fb"));
    assert_eq!(
        keep("/public/..%2fadmin").as_deref(),
        Ok("/public/..%2Fadmin")
    );
    assert_eq!(keep("/public/%5c").as_deref(), Ok("/public/%5C"));
    // A raw backslash is still refused.
    assert_eq!(keep("/public/a\\b"), Err(PathError::Backslash));
}

#[test]
fn parameters_in_the_middle_keep_the_route_shape() {
    let p = "/u/{id}/x";
    assert_eq!(
        normalize("/u/7/x", p, EscapedSlashes::Reject).as_deref(),
        Ok("/u/7/x")
    );
    for raw in ["/u/./x", "/u/../x", "/u/%2e/x", "/u/%2E%2E/x"] {
        assert!(normalize(raw, p, EscapedSlashes::Reject).is_err(), "{raw}");
    }
    assert_eq!(
        normalize("/", "/", EscapedSlashes::Reject).as_deref(),
        Ok("/")
    );
    assert_eq!(
        normalize("/a/b", "/{*rest}", EscapedSlashes::Reject).as_deref(),
        Ok("/a/b")
    );
    assert_eq!(
        normalize("/..", "/{*rest}", EscapedSlashes::Reject),
        Err(PathError::AboveRoot)
    );
}

#[test]
fn dot_segments_are_found_in_rendered_paths() {
    assert!(has_dot_segment("/users/%2E%2E/orders"));
    assert!(has_dot_segment("/users/%2E"));
    assert!(has_dot_segment("/users/..%3Bx"));
    assert!(!has_dot_segment("/users/%2E%2E.json"));
    assert!(!has_dot_segment("/users/..%2Fadmin"));
    assert!(!has_dot_segment("/users/%252E%252E"));
    // A query after the path does not hide its last segment, nor is it a path itself.
    assert!(has_dot_segment("/users/%2E%2E?view=full"));
    assert!(has_dot_segment("/users/.?"));
    assert!(has_dot_segment("/users/..%3Bx?a=b"));
    assert!(!has_dot_segment("/users/x?next=/../admin"));
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just(".%2e".to_owned()),
        Just("..;".to_owned()),
        Just("..;x".to_owned()),
        Just("%2f".to_owned()),
        Just("a%2Fb".to_owned()),
        Just("%5c".to_owned()),
        Just("\\".to_owned()),
        Just("public".to_owned()),
        Just("u".to_owned()),
        Just("x".to_owned()),
        Just("%70ublic".to_owned()),
        Just("%".to_owned()),
        "[a-z%;.~0-9A-F]{0,6}",
    ]
}

fn pattern() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(PUBLIC),
        Just("/{*rest}"),
        Just("/u/{id}/x"),
        Just("/public"),
        Just("/"),
        Just("/public/x/{*rest}"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever comes in, an accepted path has no dot segment, no empty segment but a trailing
    /// one, starts with the route's literal prefix (so a base path in front is never left), and is
    /// its own normal form.
    #[test]
    fn accepted_paths_stay_inside_the_route(
        segs in proptest::collection::vec(segment(), 0..8),
        pattern in pattern(),
        keep in any::<bool>(),
    ) {
        let raw = format!("/{}", segs.join("/"));
        let escaped = if keep { EscapedSlashes::Keep } else { EscapedSlashes::Reject };
        if let Ok(out) = normalize(&raw, pattern, escaped) {
            prop_assert!(out.starts_with('/'));
            prop_assert!(out.starts_with(literal_prefix(pattern)), "{raw} -> {out}");
            prop_assert!(!has_dot_segment(&out), "{raw} -> {out}");
            prop_assert!(!out.contains("//"), "{raw} -> {out}");
            prop_assert!(!out.contains('\\'));
            if !keep {
                prop_assert!(!out.contains("%2F") && !out.contains("%5C"), "{raw} -> {out}");
            }
            prop_assert_eq!(normalize(&out, pattern, escaped), Ok(out.clone()));
            // With an endpoint base path in front, the upstream path stays under it.
            let upstream = format!("/base{out}");
            prop_assert!(upstream.starts_with("/base/"));
        }
    }

    /// The one-pass check for a path already normal answers as the normalizer proper does, and
    /// borrows exactly when the answer is the path itself.
    #[test]
    fn the_shortcut_for_normal_paths_answers_as_the_normalizer(
        segs in proptest::collection::vec(segment(), 0..8),
        pattern in pattern(),
        keep in any::<bool>(),
        trailing in any::<bool>(),
    ) {
        let mut raw = format!("/{}", segs.join("/"));
        if trailing {
            raw.push('/');
        }
        let escaped = if keep { EscapedSlashes::Keep } else { EscapedSlashes::Reject };
        let fast = normalized(&raw, pattern, escaped);
        prop_assert_eq!(
            fast.clone().map(std::borrow::Cow::into_owned),
            normalize_slow(&raw, pattern, escaped)
        );
        if let Ok(std::borrow::Cow::Borrowed(out)) = fast {
            prop_assert_eq!(out, raw.as_str());
        }
    }
}

#[test]
fn a_normal_path_is_borrowed_and_one_to_normalize_is_not() {
    let borrowed = |raw| {
        matches!(
            normalized(raw, "/{*rest}", EscapedSlashes::Reject),
            Ok(std::borrow::Cow::Borrowed(_))
        )
    };
    for raw in [
        "/",
        "/item",
        "/public/a/b",
        "/public/a/",
        "/a.json",
        "/a/b.c/d",
    ] {
        assert!(borrowed(raw), "{raw}");
    }
    for raw in ["/a//b", "/a/./b", "/a/%41", "/.well-known", "/a/.."] {
        assert!(!borrowed(raw), "{raw}");
    }
}

#[test]
fn dot_segments_behind_escaped_slashes_are_found() {
    for hidden in [
        "/users/..%2Fadmin",
        "/users/a%2F..%2F..%2Fetc/x",
        "/users/x%2F.",
        "/users/..%5Cadmin",
        "/users/..%2f",
        "/users/%2E%2E%2Fadmin",
        "/users/..%3Bx%2Fy",
    ] {
        assert!(has_hidden_dot_segment(hidden), "{hidden}");
    }
    for fine in [
        "/users/a%2Fb",
        "/users/..x%2Fy",
        "/users/a%2F.b",
        "/users/..",
        "/users/x?next=..%2Fadmin",
        "/users/%252F..",
    ] {
        assert!(!has_hidden_dot_segment(fine), "{fine}");
    }
}
