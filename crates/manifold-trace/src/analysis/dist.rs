//! A bounded distribution: exact while small, a log histogram after, so memory stays flat.

use std::collections::BTreeMap;

/// A distribution that is exact up to 4096 values, then a log histogram (buckets 1% apart).
#[derive(Debug, Clone, Default)]
pub struct Dist {
    exact: Vec<i64>,
    hist: Option<BTreeMap<i32, u64>>,
    count: u64,
    sum: i128,
    max: i64,
}

const EXACT_LIMIT: usize = 4096;

impl Dist {
    /// Add a value (ns).
    pub fn add(&mut self, v: i64) {
        self.count += 1;
        self.sum += i128::from(v);
        self.max = if self.count == 1 { v } else { self.max.max(v) };
        if let Some(h) = &mut self.hist {
            *h.entry(bucket(v)).or_insert(0) += 1;
            return;
        }
        self.exact.push(v);
        if self.exact.len() > EXACT_LIMIT {
            let mut h = BTreeMap::new();
            for &x in &self.exact {
                *h.entry(bucket(x)).or_insert(0) += 1;
            }
            self.exact = Vec::new();
            self.hist = Some(h);
        }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of values.
    pub fn sum(&self) -> i128 {
        self.sum
    }

    /// Largest value.
    pub fn max(&self) -> i64 {
        self.max
    }

    /// The q-quantile (nearest rank), 0 when empty.
    pub fn quantile(&self, q: f64) -> i64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        match &self.hist {
            None => {
                let mut v = self.exact.clone();
                let idx = (rank - 1) as usize;
                let (_, x, _) = v.select_nth_unstable(idx);
                *x
            }
            Some(h) => {
                let mut seen = 0;
                for (b, n) in h {
                    seen += n;
                    if seen >= rank {
                        return unbucket(*b).min(self.max);
                    }
                }
                self.max
            }
        }
    }
}

fn bucket(v: i64) -> i32 {
    if v <= 0 {
        return i32::MIN + 1;
    }
    ((v as f64).ln() / 1.01f64.ln()).floor() as i32
}

fn unbucket(b: i32) -> i64 {
    if b == i32::MIN + 1 {
        return 0;
    }
    (1.01f64.powi(b) * 1.005) as i64
}
