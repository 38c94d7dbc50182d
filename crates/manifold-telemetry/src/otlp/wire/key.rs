//! The span attributes' keys, each with its `KeyValue.key` tag and length before it: written
//! with one fixed-size copy instead of a tag, a length and a `memcpy` per attribute.

use super::super::encode::attr;

/// `key` as the bytes of `KeyValue { key = 1 }`: tag, one-byte length, the key.
const fn framed<const N: usize>(key: &str) -> [u8; N] {
    let k = key.as_bytes();
    assert!(
        k.len() + 2 == N && k.len() < 0x80,
        "a key of under 128 bytes"
    );
    let mut out = [0u8; N];
    out[0] = 1 << 3 | super::protobuf::LEN as u8;
    out[1] = k.len() as u8;
    let mut i = 0;
    while i < k.len() {
        out[i + 2] = k[i];
        i += 1;
    }
    out
}

macro_rules! framed {
    ($name:ident, $key:expr) => {
        pub(super) const $name: [u8; $key.len() + 2] = framed($key);
    };
}

framed!(ATTEMPT, attr::ATTEMPT);
framed!(ATTEMPT_KIND, attr::ATTEMPT_KIND);
framed!(CACHE_OUTCOME, attr::CACHE_OUTCOME);
framed!(CALL, attr::CALL);
framed!(CANCELLED, attr::CANCELLED);
framed!(ERROR_TYPE, attr::ERROR_TYPE);
framed!(FIRST_BYTE_MS, attr::FIRST_BYTE_MS);
framed!(HTTP_REQUEST_METHOD, attr::HTTP_REQUEST_METHOD);
framed!(HTTP_REQUEST_RESEND_COUNT, attr::HTTP_REQUEST_RESEND_COUNT);
framed!(HTTP_RESPONSE_BODY_SIZE, attr::HTTP_RESPONSE_BODY_SIZE);
framed!(HTTP_RESPONSE_STATUS_CODE, attr::HTTP_RESPONSE_STATUS_CODE);
framed!(HTTP_ROUTE, attr::HTTP_ROUTE);
framed!(PARTIAL_CALLS, attr::PARTIAL_CALLS);
framed!(QUEUE_ENQUEUE, attr::QUEUE_ENQUEUE);
framed!(REQUEST_ID, attr::REQUEST_ID);
framed!(SERVER_ADDRESS, attr::SERVER_ADDRESS);
framed!(SERVER_PORT, attr::SERVER_PORT);
framed!(UPSTREAM, attr::UPSTREAM);
framed!(URL_FULL, attr::URL_FULL);
framed!(URL_PATH, attr::URL_PATH);
