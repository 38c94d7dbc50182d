use manifold_config::template::{encode_path_value, parse, RawSegment};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".*".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// A value referenced whole comes out of a compiled template unchanged, type and all.
    #[test]
    fn any_json_value_survives_a_template(v in json_value()) {
        let src = "[upstreams.u]\nendpoints = [\"http://127.0.0.1:1\"]\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"u\"\n  [routes.r.response]\n  body = { whole = \"{x}\", nested = [\"{x}\"] }\n";
        let cfg = manifold_config::compile("p.toml".as_ref(), src).unwrap();
        let manifold_config::RouteKind::Compose(plan) = &cfg.routes[0].kind else { panic!() };
        let manifold_config::template::JsonTemplate::Object(fields) = &plan.response.body else { panic!() };
        let manifold_config::template::JsonTemplate::Value(expr) = &fields[1].1 else { panic!("{fields:?}") };
        prop_assert_eq!(expr.walk(&v), Some(&v));
    }

    /// No value, once encoded, can add a path segment, a query key, a fragment or a line.
    #[test]
    fn encoded_values_add_no_segment_or_query_key(s in "\\PC*|[./?#&=%\\r\\n ]*") {
        let mut out = String::new();
        encode_path_value(&s, &mut out);
        for bad in ['/', '?', '#', '&', '=', '\r', '\n', ' '] {
            prop_assert!(!out.contains(bad), "{:?} → {:?}", s, out);
        }
        prop_assert!(out != "." && out != "..");
        let uri: http::Uri = format!("http://h/users/{out}/orders").parse().unwrap();
        prop_assert_eq!(uri.path().split('/').count(), 4);
        prop_assert!(uri.query().is_none());
        // And it decodes back to exactly the value.
        let decoded = percent_encoding::percent_decode_str(&out).decode_utf8().unwrap();
        prop_assert_eq!(decoded, s);
    }

    /// Parsing never panics, and literal text round-trips through `{{`/`}}` escapes.
    #[test]
    fn template_parser_is_total(s in "\\PC*") {
        let _ = parse(&s);
        let escaped = s.replace('{', "{{").replace('}', "}}");
        let segs = parse(&escaped).unwrap();
        let text: String = segs.iter().map(|seg| match seg { RawSegment::Lit(l) => l.clone(), RawSegment::Ref(_) => unreachable!() }).collect();
        prop_assert_eq!(text, s);
    }
}
