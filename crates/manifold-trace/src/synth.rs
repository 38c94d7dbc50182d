//! Deterministic synthetic traces (Jaeger JSON) with known patterns, for tests, benchmarks and
//! demos: a checkout that calls its services one after another, an N+1 loop, a repeated
//! identical read, a retry after an error, waves of limited concurrency and a publish at the end.

use std::fmt::Write as _;

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }
}

struct Builder {
    spans: Vec<String>,
    next_id: u64,
    trace: String,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        parent: Option<u64>,
        process: &str,
        op: &str,
        start_us: i64,
        dur_us: i64,
        tags: &str,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let refs = match parent {
            Some(p) => format!(
                r#"[{{"refType":"CHILD_OF","traceID":"{}","spanID":"{p:016x}"}}]"#,
                self.trace
            ),
            None => "[]".into(),
        };
        self.spans.push(format!(
            r#"{{"traceID":"{}","spanID":"{id:016x}","operationName":"{op}","references":{refs},"startTime":{start_us},"duration":{dur_us},"tags":[{tags}],"logs":[],"processID":"{process}"}}"#,
            self.trace
        ));
        id
    }
}

fn tag(k: &str, v: &str) -> String {
    format!(r#"{{"key":"{k}","type":"string","value":"{v}"}}"#)
}

/// One checkout trace as a Jaeger trace object.
pub fn checkout_trace(rng: &mut Rng, n: u64, t0_us: i64) -> String {
    let trace = format!("{:016x}{:016x}", 0xc0ffee, n + 1);
    let mut b = Builder {
        spans: Vec::new(),
        next_id: n * 1000,
        trace: trace.clone(),
    };
    let mut t = t0_us + 200;
    let root_start = t0_us;
    let mut children: Vec<(String, String, i64, i64, String)> = Vec::new();
    // order (write), then payment, inventory (sequential although independent)
    for (svc, op, lo, hi, tags) in [
        (
            "p2",
            "POST /orders",
            80_000,
            120_000,
            tag("http.method", "POST"),
        ),
        (
            "p3",
            "POST /payments",
            250_000,
            350_000,
            tag("http.method", "POST"),
        ),
        (
            "p4",
            "POST /inventory/reserve",
            150_000,
            250_000,
            tag("http.method", "POST"),
        ),
    ] {
        let d = rng.range(lo, hi);
        children.push((svc.into(), op.into(), t, d, tags));
        t += d + 300;
    }
    // N+1: 5 product lookups one after another, the same product each time
    for i in 0..5 {
        let d = rng.range(8_000, 12_000);
        let url = format!("http://catalog/products/{}", 100 + (i % 2));
        children.push((
            "p5".into(),
            "GET /products/{id}".into(),
            t,
            d,
            format!("{},{}", tag("http.method", "GET"), tag("http.url", &url)),
        ));
        t += d + 100;
    }
    // retry: a failed price call repeated
    let fail = n.is_multiple_of(4);
    if fail {
        let d = rng.range(30_000, 50_000);
        children.push((
            "p6".into(),
            "GET /price".into(),
            t,
            d,
            format!(
                "{},{}",
                tag("http.method", "GET"),
                r#"{"key":"error","type":"bool","value":true}"#
            ),
        ));
        t += d + 200;
    }
    let d = rng.range(10_000, 20_000);
    children.push((
        "p6".into(),
        "GET /price".into(),
        t,
        d,
        tag("http.method", "GET"),
    ));
    t += d + 200;
    // waves of 2: 6 stock checks
    let mut wave_start = t;
    for w in 0..3 {
        let mut wave_end = wave_start;
        for _ in 0..2 {
            let d = rng.range(15_000, 20_000);
            children.push((
                "p7".into(),
                "GET /stock".into(),
                wave_start,
                d,
                tag("http.method", "GET"),
            ));
            wave_end = wave_end.max(wave_start + d);
        }
        wave_start = wave_end + 100;
        let _ = w;
    }
    t = wave_start;
    // publish at the end: nothing waits for it
    let d = rng.range(40_000, 60_000);
    children.push((
        "p8".into(),
        "publish order-created".into(),
        t,
        d,
        tag("span.kind", "producer"),
    ));
    t += d + 300;
    let root = b.span(
        None,
        "p1",
        "POST /checkout",
        root_start,
        t - root_start,
        &format!(
            "{},{}",
            tag("span.kind", "server"),
            tag("http.method", "POST")
        ),
    );
    for (svc, op, s, d, tags) in children {
        let id = b.span(Some(root), &svc, &op, s, d, &tags);
        // each call has a short server-side span beneath it
        if d > 2_000 {
            b.span(Some(id), &svc, "handle", s + 300, d - 600, "");
        }
    }
    let mut o = String::new();
    let _ = write!(
        o,
        r#"{{"traceID":"{trace}","spans":[{}],"processes":{{"#,
        b.spans.join(",")
    );
    let procs = [
        ("p1", "frontend"),
        ("p2", "orders"),
        ("p3", "payments"),
        ("p4", "inventory"),
        ("p5", "catalog"),
        ("p6", "pricing"),
        ("p7", "stock"),
        ("p8", "events"),
    ];
    let ps: Vec<String> = procs
        .iter()
        .map(|(k, v)| format!(r#""{k}":{{"serviceName":"{v}","tags":[]}}"#))
        .collect();
    let _ = write!(o, "{}}}}}", ps.join(","));
    o
}

/// [`checkout_file`] written to `w` one trace at a time (the same bytes), so that a file of a
/// million spans does not have to be held in memory: returns the number of spans written.
pub fn write_checkout_file(w: &mut impl std::io::Write, n: u64, seed: u64) -> std::io::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut spans = 0u64;
    w.write_all(br#"{"data":["#)?;
    for i in 0..n {
        if i > 0 {
            w.write_all(b",")?;
        }
        let t = checkout_trace(&mut rng, i, 1_700_000_000_000_000 + i as i64 * 2_000_000);
        spans += t.matches(r#""operationName""#).count() as u64;
        w.write_all(t.as_bytes())?;
    }
    write!(w, r#"],"total":{n},"limit":0,"offset":0,"errors":null}}"#)?;
    Ok(spans)
}

/// `{"data":[…]}` with `n` checkout traces.
pub fn checkout_file(n: u64, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut parts = Vec::with_capacity(n as usize);
    for i in 0..n {
        parts.push(checkout_trace(
            &mut rng,
            i,
            1_700_000_000_000_000 + i as i64 * 2_000_000,
        ));
    }
    format!(
        r#"{{"data":[{}],"total":{n},"limit":0,"offset":0,"errors":null}}"#,
        parts.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_file_is_the_one_in_memory() {
        for n in [0, 1, 5] {
            let mut w = Vec::new();
            let spans = write_checkout_file(&mut w, n, 3).expect("write to memory");
            let doc = checkout_file(n, 3);
            assert_eq!(String::from_utf8(w).expect("utf-8"), doc);
            assert_eq!(spans, doc.matches(r#""operationName""#).count() as u64);
        }
        // 33 spans, 35 when the price call is retried (every fourth trace)
        let mut w = Vec::new();
        assert_eq!(
            write_checkout_file(&mut w, 4, 3).expect("write"),
            33 * 3 + 35
        );
    }
}
