//! A call's answer read as its result: the status judged, the body parsed under the parse
//! budget.

use super::Parsed;
use crate::error::{CallError, CallErrorKind};
use http::StatusCode;
use serde_json::Value;

/// A call's result from its answer: a non-2xx status is the call's failure; the body is JSON,
/// parsed under `server.max_parsed_bytes` as request bodies are (see [`crate::limit::parse`]):
/// an answer within `max_response_bytes` can take ~100 times its size parsed, and it is parsed
/// again for every request that reads it, cache hits included.
pub(super) fn parse_answer(
    upstream: &str,
    status: StatusCode,
    bytes: &[u8],
    budget: &crate::limit::ParseBudget,
) -> Result<Parsed, CallError> {
    if !status.is_success() {
        return Err(crate::upstream::error::status(upstream, status));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed::from(Value::Null));
    }
    let share = budget.take(bytes).map_err(|refused| match refused {
        crate::limit::ParseRefused::Spent => CallError::new(
            CallErrorKind::Shed,
            format!(
                "the answers being parsed take the gateway's budget for them ({} bytes, server.max_parsed_bytes), so upstream `{upstream}`'s answer was not parsed; retry shortly",
                budget.bytes()
            ),
        ),
        crate::limit::ParseRefused::TooLarge(estimate) => CallError::new(
            CallErrorKind::TooLarge,
            format!(
                "parsed, upstream `{upstream}`'s answer would take about {estimate} bytes, more than server.max_parsed_bytes ({})",
                budget.bytes()
            ),
        ),
    })?;
    let value = serde_json::from_slice(bytes).map_err(|e| {
        CallError::new(
            CallErrorKind::InvalidJson,
            format!("upstream `{upstream}` answered a body that is not JSON: {e}"),
        )
    })?;
    Ok(Parsed { value, share })
}

/// The status a cached answer stood for in its span (200 for a parsed answer; the upstream's
/// status for a failed one where known).
pub(super) fn response_status(result: &Result<Parsed, CallError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => match e.kind {
            CallErrorKind::Status(s) => s,
            _ => 502,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's `raw_value` feature (unified across the whole build when any crate enables
    /// it) makes every parse into `Value` read an object keyed by its private token as the JSON
    /// text in its string: an upstream (or a client) could then make the gateway see what no
    /// other parser sees. An answer is read as the JSON it is.
    #[test]
    fn an_answer_keyed_by_serde_json_s_raw_value_token_is_an_ordinary_object() {
        for body in [
            r#"{"$serde_json::private::RawValue":"[1,2]"}"#,
            r#"{"$serde_json::private::RawValue":""}"#,
            r#"{"a":1,"$serde_json::private::RawValue":"7"}"#,
        ] {
            let budget = crate::limit::ParseBudget::new(1 << 20);
            let v = parse_answer("u", StatusCode::OK, body.as_bytes(), &budget)
                .expect(body)
                .value;
            assert!(v.is_object(), "{body} read as {v}");
            let back: Value = serde_json::from_str(&v.to_string()).expect("written back");
            assert_eq!(back, v);
        }
    }
}
