//! The scanner's limits: long strings cut as they are read, huge values skipped.

use std::io::{self, Read};

use super::Scanner;
use crate::limits::Limits;

/// A reader that hands out at most `n` bytes at a time, so that strings straddle refills.
struct Chunks(io::Cursor<Vec<u8>>, usize);

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.1);
        self.0.read(&mut buf[..n])
    }
}

fn scanner(bytes: &[u8], chunk: usize, string: usize, unit: usize) -> Scanner {
    let limits = Limits {
        string,
        unit,
        ..Limits::DEFAULT
    };
    Scanner::new(
        Box::new(Chunks(io::Cursor::new(bytes.to_vec()), chunk)),
        limits,
    )
}

/// A 3 MiB string is kept as its first 1 MiB (it was buffered whole: a gzip bomb of one string
/// cost its full size), the value stays valid JSON, and the bytes read are still counted.
#[test]
fn a_long_string_is_cut_while_it_is_read() {
    let mut doc = br#"{"name":""#.to_vec();
    doc.extend(std::iter::repeat_n(b'x', 3 << 20));
    doc.extend(br#"","n":1}"#);
    let mut sc = scanner(&doc, 1 << 16, 1 << 20, 1 << 30);
    let r = sc.value(true).expect("io").expect("a value");
    assert!(
        sc.buf.len() < (1 << 20) + 1024,
        "{} bytes buffered",
        sc.buf.len()
    );
    let v: serde_json::Value = serde_json::from_slice(&sc.buf[r]).expect("still JSON");
    assert_eq!(v["name"].as_str().map(str::len), Some(1 << 20));
    assert_eq!(v["n"], 1);
    assert_eq!(sc.cut_strings, 1);
    assert_eq!(sc.consumed_total(), doc.len() as u64);
}

/// A value over the unit limit is read to its end without being kept; the next one is whole.
#[test]
fn a_huge_value_is_skipped_and_the_next_one_read() {
    let big = format!(r#"{{"a":[{}1]}}"#, "1,".repeat(100_000));
    let doc = format!("{big} {{\"b\":2}}");
    let mut sc = scanner(doc.as_bytes(), 4096, 1 << 20, 10_000);
    let r = sc.value(true).expect("io").expect("a value");
    assert!(r.is_empty());
    assert_eq!(sc.take_oversize(), Some(big.len() as u64));
    assert_eq!(sc.take_oversize(), None);
    assert!(sc.buf.len() < 20_000, "{} bytes buffered", sc.buf.len());
    assert_eq!(sc.peek_nonws().expect("io"), Some(b'{'));
    let r = sc.value(true).expect("io").expect("the next value");
    assert_eq!(&sc.buf[r], br#"{"b":2}"#);
    assert_eq!(sc.consumed_total(), doc.len() as u64);
}

/// A scalar has no business being a megabyte long: it is malformed, not buffered.
#[test]
fn a_huge_scalar_is_malformed() {
    let doc = "1".repeat(3 << 20);
    let mut sc = scanner(doc.as_bytes(), 1 << 16, 1 << 20, 1 << 30);
    assert_eq!(sc.value(false).expect("io"), None);
}

/// Pieces of string text: plain, multi-byte characters, and every kind of escape, including a
/// surrogate pair (whose halves must stay together).
const PIECES: [&str; 9] = ["a", "bc", "é", "€", "😀", r"\n", r#"\""#, r"\\", r"\u00e9"];
const PAIR: &str = r"\ud83d\ude00";

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Wherever the limit falls, the cut string is valid JSON text and a prefix of the original.
    #[test]
    fn a_cut_never_splits_a_character_or_an_escape(
        pieces in proptest::collection::vec(0..PIECES.len() + 1, 1..80),
        max in 1usize..60,
        chunk in 1usize..16,
    ) {
        let text: String = pieces
            .iter()
            .map(|&k| PIECES.get(k).copied().unwrap_or(PAIR))
            .collect();
        let doc = format!(r#"["{text}",1]"#);
        let mut sc = scanner(doc.as_bytes(), chunk, max, 1 << 30);
        let r = sc.value(true).expect("io").expect("a value");
        let v: (String, u8) = serde_json::from_slice(&sc.buf[r]).expect("valid JSON after the cut");
        let whole: (String, u8) = serde_json::from_str(&doc).expect("the original");
        proptest::prop_assert!(whole.0.starts_with(&v.0), "{:?} / {:?}", v.0, whole.0);
        proptest::prop_assert_eq!(v.1, 1);
        let raw_len = text.len();
        proptest::prop_assert_eq!(sc.cut_strings, u64::from(raw_len > max));
        proptest::prop_assert_eq!(sc.consumed_total(), doc.len() as u64);
    }
}
