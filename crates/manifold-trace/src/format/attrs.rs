//! The attribute rules every format shares: span kind, error, HTTP method and path, host,
//! writes, and the argument fingerprint for cache detection.

use std::borrow::Cow;

use super::Value;
use crate::limits::head;
use crate::model::{fingerprint, flags, Interner, Span, SpanKind, Sym};

/// What the attribute rules extract from a span's tags / attributes / logs. Text kept here
/// (method, path, host, service) is at most a little over [`MAX_NAME`](crate::limits::MAX_NAME)
/// long ([`head`]): it is interned next, which cuts it and counts the cut.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    /// Span kind from a `span.kind` tag.
    pub kind: Option<SpanKind>,
    /// An error was reported.
    pub error: bool,
    /// HTTP method.
    pub method: Option<Cow<'static, str>>,
    /// Route, path or RPC method.
    pub path: Option<String>,
    /// Fingerprint of the identifying argument text (URL with query, statement, destination).
    args: Option<u64>,
    /// The call writes or publishes.
    pub write: bool,
    /// Host or IP.
    pub host: Option<String>,
    /// Service name given as an attribute (`service.name`).
    pub service: Option<String>,
}

const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
const KNOWN_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Attrs {
    /// Feed one attribute.
    pub fn add(&mut self, key: &str, v: &Value<'_>) {
        match key {
            "span.kind" => self.kind = Some(SpanKind::parse(&v.text())),
            "error" => self.error |= v.truthy(),
            "otel.status_code" => self.error |= v.text().eq_ignore_ascii_case("error"),
            "http.status_code" | "http.response.status_code" => {
                self.error |= v.int().is_some_and(|c| c >= 400)
            }
            "grpc.status" | "rpc.grpc.status_code" | "grpc.status_code" => {
                let t = v.text();
                let t = t.trim();
                if !(t.is_empty() || t == "0" || t.eq_ignore_ascii_case("ok")) {
                    self.error = true
                }
            }
            "http.method" | "http.request.method" => {
                // the usual methods without an allocation per span
                let t = v.text();
                let m = match KNOWN_METHODS.iter().find(|k| k.eq_ignore_ascii_case(&t)) {
                    Some(k) => Cow::Borrowed(*k),
                    None => Cow::Owned(head(&t).to_ascii_uppercase()),
                };
                if WRITE_METHODS.contains(&m.as_ref()) {
                    self.write = true;
                }
                self.method = Some(m);
            }
            "http.route" => self.path = Some(head(&v.text()).to_string()),
            "http.target" | "url.path" | "http.path" => {
                let t = v.text();
                if self.path.is_none() {
                    self.path = Some(head(t.split('?').next().unwrap_or("")).to_string());
                }
                self.arg(&t);
            }
            "http.url" | "url.full" => {
                let t = v.text();
                if self.path.is_none() {
                    self.path = Some(head(path_of_url(&t)).to_string());
                }
                self.arg(&t);
            }
            "url.query" => self.arg(&v.text()),
            "db.statement" | "db.query.text" | "sql.query" => {
                let t = v.text();
                // compared in place: a hostile statement of one long word is not copied
                let first = t.split_whitespace().next().unwrap_or("");
                if ["INSERT", "UPDATE", "DELETE", "UPSERT", "MERGE", "REPLACE"]
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(first))
                {
                    self.write = true;
                }
                self.arg(&t);
            }
            "messaging.destination" | "messaging.destination.name" => self.arg(&v.text()),
            "messaging.operation" | "messaging.operation.type" => {
                let t = v.text();
                if ["publish", "send", "create"]
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(&t))
                {
                    self.write = true;
                }
            }
            "rpc.method" => {
                self.path.get_or_insert_with(|| head(&v.text()).to_string());
            }
            "hostname" | "host.name" | "ip" | "host.ip" | "net.host.ip" => {
                self.host.get_or_insert_with(|| head(&v.text()).to_string());
            }
            "service.name" => self.service = Some(head(&v.text()).to_string()),
            _ => {}
        }
    }

    fn arg(&mut self, text: &str) {
        let h = fingerprint(text.as_bytes());
        self.args = Some(crate::model::mix(self.args.unwrap_or(0), h));
    }

    /// Feed one log/event field (errors only).
    pub fn add_log_field(&mut self, key: &str, v: &Value<'_>) {
        match key {
            "error.object" | "exception.type" | "exception.message" => self.error = true,
            "error" => self.error |= matches!(v, Value::Str(_)) || v.truthy(),
            "event" => {
                self.error |= v.text().eq_ignore_ascii_case("error")
                    || v.text().eq_ignore_ascii_case("exception")
            }
            _ => {}
        }
    }

    /// Write what was found into a span (kind given by the format takes precedence when known).
    pub fn apply(&self, span: &mut Span, interner: &mut Interner) {
        if span.kind == SpanKind::Unspecified {
            if let Some(k) = self.kind {
                span.kind = k;
            }
        }
        if self.error {
            span.flags |= flags::ERROR;
        }
        let named_write = interner.memo(span.operation, |n| name_writes(&n.to_ascii_lowercase()));
        if self.write || span.kind == SpanKind::Producer || named_write {
            span.flags |= flags::WRITE;
        }
        if let Some(m) = &self.method {
            span.http_method = interner.intern(m);
        }
        if let Some(p) = &self.path {
            span.http_path = interner.intern(p);
        }
        if let Some(h) = &self.host {
            span.host = interner.intern(h);
        }
        let mut key = crate::model::mix(u64::from(span.service), u64::from(span.operation));
        if let Some(a) = self.args {
            span.flags |= flags::HAS_ARGS;
            key = crate::model::mix(key, a);
        }
        span.call_key = key;
    }
}

/// The path part of a URL (`http://h:1/a/b?x` → `/a/b`).
pub fn path_of_url(url: &str) -> &str {
    // byte searches (what `str::find` with these patterns finds, without setting up a
    // substring search per span); every byte looked for is ASCII, so cuts fall on characters
    let b = url.as_bytes();
    let rest = match memchr::memchr_iter(b':', b).find(|&i| b.get(i + 1..i + 3) == Some(b"//")) {
        Some(i) => &url[i + 3..],
        None => url,
    };
    let start = memchr::memchr(b'/', rest.as_bytes()).unwrap_or(rest.len());
    let p = &rest[start..];
    let end = memchr::memchr2(b'?', b'#', p.as_bytes()).unwrap_or(p.len());
    &p[..end]
}

fn name_writes(op: &str) -> bool {
    const WORDS: [&str; 14] = [
        "publish", "send", "write", "insert", "update", "save", "enqueue", "notify", "emit",
        "produce", "post", "put", "delete", "email",
    ];
    op.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| WORDS.contains(&w))
}

/// Intern a service name, `unknown` stays symbol 0 so assembly can count it.
pub(crate) fn service_sym(name: Option<&str>, interner: &mut Interner) -> Sym {
    match name {
        Some(n) if !n.trim().is_empty() => interner.intern(n),
        _ => 0,
    }
}
