//! `{seq}` and `{key}` substitution in URLs and bodies. Any other brace is literal, so JSON
//! bodies need no escaping.

/// A string split at its `{seq}` / `{key}` tokens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Seq,
    Key,
}

impl Template {
    pub(crate) fn parse(s: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = s;
        loop {
            let next = [("{seq}", Part::Seq), ("{key}", Part::Key)]
                .into_iter()
                .filter_map(|(tok, p)| rest.find(tok).map(|i| (i, tok.len(), p)))
                .min_by_key(|(i, _, _)| *i);
            match next {
                Some((i, len, p)) => {
                    if i > 0 {
                        parts.push(Part::Lit(rest[..i].to_owned()));
                    }
                    parts.push(p);
                    rest = &rest[i + len..];
                }
                None => {
                    if !rest.is_empty() {
                        parts.push(Part::Lit(rest.to_owned()));
                    }
                    return Self { parts };
                }
            }
        }
    }

    pub(crate) fn render(&self, seq: u64, key: u64) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Seq => out.push_str(&seq.to_string()),
                Part::Key => out.push_str(&key.to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Rendering is exactly "replace every `{seq}` and `{key}`", and nothing else changes.
        #[test]
        fn render_is_token_replacement(
            parts in proptest::collection::vec(
                proptest::prop_oneof!["\\PC{0,6}", proptest::strategy::Just("{seq}".to_string()),
                                      proptest::strategy::Just("{key}".to_string())], 0..8),
            seq in 0u64..1_000_000, key in 0u64..1_000_000,
        ) {
            let s: String = parts.concat();
            let want = s.replace("{seq}", &seq.to_string()).replace("{key}", &key.to_string());
            proptest::prop_assert_eq!(Template::parse(&s).render(seq, key), want);
        }
    }

    #[test]
    fn substitutes_only_its_tokens() {
        let t = Template::parse("/u/{key}/o/{seq}?x={seq}");
        assert_eq!(t.render(7, 42), "/u/42/o/7?x=7");
        let b = Template::parse(r#"{"id": {seq}, "k": "{key}", "x": {"y": 1}}"#);
        assert_eq!(b.render(3, 9), r#"{"id": 3, "k": "9", "x": {"y": 1}}"#);
        let plain = Template::parse("/plain");
        assert_eq!(plain.render(1, 1), "/plain");
    }
}
