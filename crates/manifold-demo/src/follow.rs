//! The offloaded row's second figure: how long after its answer a client following the
//! receipt's `status_url` with `?wait=` saw the offloaded work done (the label ready).
//!
//! A handful of requests, one at a time, over plain HTTP/1.1 (one connection each, closed
//! after the answer): the figure is the time from the checkout's answer to the status answer
//! saying `done`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Scenario;

/// Requests followed per measurement.
pub(crate) const FOLLOWED: usize = 5;

/// Largest answer read (a receipt or a status with its result).
const MAX_ANSWER: u64 = 1 << 20;

/// One request over a fresh connection: the status and the body, or why not.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let status = std::str::from_utf8(&answer[..split])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    // The gateway answers small JSON with a content-length; chunked bodies are not expected.
    Ok((status, answer[split + 4..].to_vec()))
}

/// The status URLs in a receipt-carrying answer: every string value starting with
/// `{status_path}/`.
fn status_urls(answer: &serde_json::Value, status_path: &str) -> Vec<String> {
    let prefix = format!("{status_path}/");
    match answer {
        serde_json::Value::Object(map) => map
            .values()
            .flat_map(|v| status_urls(v, status_path))
            .collect(),
        serde_json::Value::String(s) if s.starts_with(&prefix) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Sends [`FOLLOWED`] requests of `scenario` one at a time and follows each answer's status
/// URLs with `?wait=30s`; returns the median time from the answer to the last `done`, in ms.
/// `None` when the answers carry no status URL or a followed task did not end `done`.
pub(crate) async fn label_ready_p50_ms(
    scenario: &Scenario,
    addr: SocketAddr,
    status_path: &str,
) -> Option<f64> {
    if status_path.is_empty() {
        return None;
    }
    let mut times = Vec::with_capacity(FOLLOWED);
    for n in 0..FOLLOWED {
        let path = scenario.path.replace("{seq}", &n.to_string());
        let (status, body) = request(addr, scenario.method, &path, scenario.body)
            .await
            .ok()?;
        let answered = tokio::time::Instant::now();
        if !(200..300).contains(&status) {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let urls = status_urls(&answer, status_path);
        if urls.is_empty() {
            return None;
        }
        for url in urls {
            let (s, body) = request(addr, "GET", &format!("{url}?wait=30s"), None)
                .await
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            if s != 200 || v["status"] != "done" {
                tracing::warn!(%url, status = s, "demo: a followed task did not end done");
                return None;
            }
        }
        times.push(answered.elapsed());
    }
    times.sort();
    let mid = times
        .get(times.len() / 2)
        .copied()
        .unwrap_or(Duration::ZERO);
    Some(mid.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::status_urls;

    #[test]
    fn finds_status_urls_anywhere_in_the_answer() {
        let v = serde_json::json!({
            "order": "o-1", "shipping_status": "/tasks/abc",
            "nested": {"x": "/tasks/def", "y": "/tasksish"}, "n": 3
        });
        let mut urls = status_urls(&v, "/tasks");
        urls.sort();
        assert_eq!(urls, ["/tasks/abc", "/tasks/def"]);
        assert!(status_urls(&v, "/jobs").is_empty());
    }
}
