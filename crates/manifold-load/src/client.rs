//! Sending one request with a pooled keep-alive client, and naming what went wrong.

use std::error::Error as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::engine::Outcome;
use crate::report::ErrorKind;
use crate::template::Template;
use crate::{LoadError, LoadSpec, MAX_BODY_BYTES, MAX_RESPONSE_BYTES};

/// Cheap to clone: one per scheduled request.
#[derive(Clone)]
pub(crate) struct HttpSender {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Full<Bytes>>,
    urls: Vec<Template>,
    method: Method,
    headers: HeaderMap,
    body: Option<Template>,
}

impl HttpSender {
    pub(crate) fn new(spec: &LoadSpec) -> Result<Self, LoadError> {
        if spec.urls.is_empty() {
            return Err(LoadError::Input("no URL to send to".into()));
        }
        let mut urls = Vec::new();
        for u in &spec.urls {
            let t = Template::parse(u);
            check_url(&t.render(1, 1)).map_err(|m| LoadError::Input(format!("URL {u:?}: {m}")))?;
            urls.push(t);
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &spec.headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| LoadError::Input(format!("bad header name {k:?}")))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| LoadError::Input(format!("bad value for header {k}: {v:?}")))?;
            headers.append(name, value);
        }
        let body = match &spec.body {
            Some(b) => {
                if b.len() > MAX_BODY_BYTES {
                    return Err(LoadError::Input(format!(
                        "request body is {} bytes, above the {MAX_BODY_BYTES} limit",
                        b.len()
                    )));
                }
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Some(Template::parse(b))
            }
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(spec.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(spec.connections.unwrap_or(usize::MAX))
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                urls,
                method: spec.method.clone(),
                headers,
                body,
            }),
        })
    }

    pub(crate) async fn send(&self, seq: u64, key: u64) -> Outcome {
        let inner = &self.inner;
        let idx = ((seq - 1) % inner.urls.len() as u64) as usize;
        let Ok(uri) = inner.urls[idx].render(seq, key).parse::<Uri>() else {
            return Err(ErrorKind::Other);
        };
        let body = inner
            .body
            .as_ref()
            .map_or_else(Bytes::new, |b| Bytes::from(b.render(seq, key)));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = inner.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = inner.headers.clone();
        let resp = inner.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                ErrorKind::Connect
            } else {
                classify(e.source())
            }
        })?;
        let status = resp.status().as_u16();
        match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(_) => Ok(status),
            Err(e) => Err(classify(Some(&*e))),
        }
    }
}

/// Only plain `http://host[:port]/…` URLs: this tool measures latency, it does not do TLS.
fn check_url(u: &str) -> Result<(), String> {
    let uri: Uri = u.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("scheme {other}:// is not supported, only http://")),
        None => return Err("needs a scheme and host, like http://127.0.0.1:8080/path".into()),
    }
    if uri.authority().is_none() {
        return Err("needs a host".into());
    }
    Ok(())
}

/// Name a transport failure by walking its sources.
fn classify(mut err: Option<&(dyn std::error::Error + 'static)>) -> ErrorKind {
    while let Some(e) = err {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return ErrorKind::Closed;
            }
            if h.is_timeout() {
                return ErrorKind::Timeout;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    return ErrorKind::Closed
                }
                K::ConnectionRefused => return ErrorKind::Connect,
                K::TimedOut => return ErrorKind::Timeout,
                _ => {}
            }
        }
        err = e.source();
    }
    ErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_the_run() {
        let mut spec = LoadSpec::new("https://example.invalid/", 1.0);
        let err = HttpSender::new(&spec).err().unwrap().to_string();
        assert!(err.contains("only http://"), "{err}");
        spec.urls = vec!["/relative".into()];
        assert!(HttpSender::new(&spec).is_err());
        spec.urls = vec!["http://127.0.0.1:1/u/{key}?s={seq}".into()];
        assert!(HttpSender::new(&spec).is_ok());
        spec.headers = vec![("bad header".into(), "x".into())];
        assert!(HttpSender::new(&spec).is_err());
        spec.headers = vec![];
        spec.urls = vec![];
        assert!(HttpSender::new(&spec).is_err());
    }

    #[test]
    fn io_errors_are_named() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(Some(&reset)), ErrorKind::Closed);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(Some(&refused)), ErrorKind::Connect);
        let other = std::io::Error::other("x");
        assert_eq!(classify(Some(&other)), ErrorKind::Other);
    }
}
