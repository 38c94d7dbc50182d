//! Unit tests of the direct encoder's pieces against the general paths (the property test
//! against the prost-typed reference is `tests/props.rs`).

use super::super::encode::attr;
use super::blocks::{put_call_attempt, put_call_name_method, put_endpoint, put_root_head};
use super::blocks::{put_url_prefix, Blocks, CALL_SLOTS};
use super::key;
use super::protobuf::{begin_message, end_message, put_len_prefixed, put_str};
use super::span::decimal;
use super::value::{put_attr, put_joined_attr, put_kv, Val};

#[test]
fn decimals_are_written_as_format_writes_them() {
    for n in [0u16, 7, 10, 99, 443, 8080, 10000, u16::MAX] {
        let mut digits = [0u8; 5];
        assert_eq!(decimal(n, &mut digits), n.to_string().as_bytes());
    }
}

#[test]
fn messages_written_in_place_get_the_shortest_length_prefix() {
    for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 100_000] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut want = vec![0xAA];
        put_len_prefixed(&mut want, 2, &body);
        let mut got = vec![0xAA];
        let at = begin_message(&mut got, 2);
        got.extend_from_slice(&body);
        end_message(&mut got, at);
        assert_eq!(got, want, "{len}");
    }
}

/// The short-attribute paths write what the general one writes, at every length and
/// integer size around their bounds.
#[test]
fn short_attributes_are_written_as_the_general_path_writes_them() {
    fn general<const N: usize>(key: &[u8; N], name: &str, v: &Val<'_>) -> Vec<u8> {
        let mut want = Vec::new();
        put_kv(&mut want, 9, name, v);
        let mut got = Vec::new();
        put_attr(&mut got, key, v);
        assert_eq!(got, want);
        got
    }
    for len in 0..200 {
        let text = "x".repeat(len);
        general(&key::URL_PATH, attr::URL_PATH, &Val::Str(&text));
        general(
            &key::HTTP_REQUEST_RESEND_COUNT,
            attr::HTTP_REQUEST_RESEND_COUNT,
            &Val::Str(&text),
        );
    }
    for i in [
        0i64,
        1,
        127,
        128,
        200,
        16_383,
        16_384,
        65_535,
        i64::MAX,
        -1,
        i64::MIN,
    ] {
        general(&key::SERVER_PORT, attr::SERVER_PORT, &Val::Int(i));
        general(
            &key::HTTP_RESPONSE_STATUS_CODE,
            attr::HTTP_RESPONSE_STATUS_CODE,
            &Val::Int(i),
        );
    }
    for d in [0.0, -0.0, 1.5, f64::MAX, f64::NAN, f64::INFINITY] {
        general(&key::FIRST_BYTE_MS, attr::FIRST_BYTE_MS, &Val::Double(d));
    }
    for x in [false, true] {
        general(&key::CANCELLED, attr::CANCELLED, &Val::Bool(x));
        general(&key::QUEUE_ENQUEUE, attr::QUEUE_ENQUEUE, &Val::Bool(x));
    }
}

/// A joined attribute is the attribute of the joined string, short or long (the long one
/// through the scratch buffer).
#[test]
fn joined_attributes_are_the_attribute_of_the_joined_string() {
    let mut scratch = b"left over".to_vec();
    for len in [0, 1, 50, 100, 120, 130, 300] {
        let path = "p".repeat(len);
        let parts: [&[u8]; 7] = [
            b"http://",
            b"[",
            "::1".as_bytes(),
            b"]",
            b":",
            b"8080",
            path.as_bytes(),
        ];
        let mut want = Vec::new();
        let joined = String::from_utf8(parts.concat()).expect("UTF-8");
        put_kv(&mut want, 9, attr::URL_FULL, &Val::Str(&joined));
        let mut got = Vec::new();
        put_joined_attr(&mut got, &key::URL_FULL, &parts, &mut scratch);
        assert_eq!(got, want, "{len}");
    }
}

#[test]
fn framed_keys_are_the_key_field_as_prost_writes_it() {
    let mut want = Vec::new();
    put_str(&mut want, 1, attr::HTTP_RESPONSE_STATUS_CODE);
    assert_eq!(&key::HTTP_RESPONSE_STATUS_CODE[..], &want[..]);
    let mut a = Vec::new();
    put_attr(&mut a, &key::URL_PATH, &Val::Str("/x"));
    let mut b = Vec::new();
    put_kv(&mut b, 9, attr::URL_PATH, &Val::Str("/x"));
    assert_eq!(a, b);
}

fn info(call: &str, address: &str, port: u16, attempt: u32) -> crate::span::CallInfo {
    use std::sync::Arc;
    crate::span::CallInfo {
        call: Arc::from(call),
        upstream: Arc::from("up"),
        method: http::Method::POST,
        path: "/orders".into(),
        endpoint: Some(crate::span::Endpoint {
            address: Arc::from(address),
            port,
            https: false,
        }),
        attempt,
        attempt_kind: crate::span::AttemptKind::First,
        enqueue: false,
    }
}

/// What the blocks of a call are when written fresh.
fn fresh_blocks(i: &crate::span::CallInfo) -> [Vec<u8>; 4] {
    let e = i.endpoint.as_ref().expect("an endpoint");
    let mut out: [Vec<u8>; 4] = Default::default();
    put_call_name_method(&mut out[0], i);
    put_call_attempt(&mut out[1], i);
    put_endpoint(&mut out[2], e);
    put_url_prefix(&mut out[3], e);
    out
}

fn cached_blocks(blocks: &mut Blocks, i: &crate::span::CallInfo) -> [Vec<u8>; 4] {
    let e = i.endpoint.as_ref().expect("an endpoint");
    let b = blocks.call(i, e);
    [
        b.name_method.to_vec(),
        b.attempt.to_vec(),
        b.endpoint.to_vec(),
        b.url_prefix.to_vec(),
    ]
}

/// A call's cached blocks are its fresh ones: on the first span of its shape (encoded), on the
/// next (copied), and after other shapes have replaced entries (more shapes than slots).
#[test]
fn cached_call_blocks_are_the_fresh_encoding() {
    let mut blocks = Blocks::default();
    let first = info("order", "127.0.0.1", 8080, 1);
    let want = fresh_blocks(&first);
    assert_eq!(cached_blocks(&mut blocks, &first), want);
    assert_eq!(cached_blocks(&mut blocks, &first), want);
    // The same strings in other `Arc`s, and other shapes of the same `Arc`s.
    let others: Vec<_> = (0..3 * CALL_SLOTS as u32)
        .map(|n| match n % 3 {
            0 => info("order", "127.0.0.1", 8080, 1),
            1 => {
                let mut i = first.clone();
                i.attempt = n;
                i.attempt_kind = crate::span::AttemptKind::Retry;
                i
            }
            _ => info(&format!("c{n}"), "::1", n as u16, 1),
        })
        .collect();
    for i in &others {
        assert_eq!(cached_blocks(&mut blocks, i), fresh_blocks(i));
    }
    for i in others.iter().rev() {
        assert_eq!(cached_blocks(&mut blocks, i), fresh_blocks(i));
    }
    assert_eq!(cached_blocks(&mut blocks, &first), want);
}

/// A matched route's cached name, method and route are the fresh ones, and a method or kind
/// of its own is not served another's.
#[test]
fn cached_root_blocks_are_the_fresh_encoding() {
    use crate::span::{RootInfo, RootKind};
    let route: std::sync::Arc<str> = std::sync::Arc::from("/checkout");
    let root = |method, kind| RootInfo {
        kind,
        method,
        route: std::sync::Arc::clone(&route),
        path: "/checkout".into(),
    };
    let mut blocks = Blocks::default();
    let mut name = String::new();
    for _ in 0..2 {
        for r in [
            root(http::Method::POST, RootKind::Server),
            root(http::Method::GET, RootKind::Server),
            root(http::Method::GET, RootKind::Consumer),
        ] {
            let mut want = Vec::new();
            put_root_head(&mut want, &r, &mut name);
            assert_eq!(blocks.root(&r), &want[..]);
        }
    }
}

/// Up to four shapes are each encoded once however they interleave, wherever their keys
/// land (a set holds four): a checkout's calls do not replace each other.
#[test]
fn four_shapes_are_encoded_once_each() {
    let mut blocks = Blocks::default();
    let shapes: Vec<_> = (0..4)
        .map(|n| info(&format!("c{n}"), "127.0.0.1", 80, 1))
        .collect();
    for _ in 0..10 {
        for i in &shapes {
            assert_eq!(cached_blocks(&mut blocks, i), fresh_blocks(i));
        }
    }
    assert_eq!(blocks.call_misses, 4);
}
