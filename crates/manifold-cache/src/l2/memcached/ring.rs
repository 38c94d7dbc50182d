//! Consistent hashing (ketama-style) over the memcached servers: each server owns
//! [`POINTS_PER_SERVER`] points on a 32-bit circle, a key goes to the owner of the first point at
//! or after its hash. Adding or removing a server moves only the keys of the arcs it gains or
//! loses (about 1/n of them), not nearly all as `hash % n` would.
//!
//! Every replica must place a key on the same server, so the points depend only on the server
//! addresses as written in the config (never on their order, never on a per-process seed), and
//! the hash is SHA-256, stable across builds and platforms.

use sha2::{Digest, Sha256};

/// Points per server: enough that two servers split keys within a few percent of even.
pub(crate) const POINTS_PER_SERVER: usize = 160;

pub(crate) struct Ring {
    /// (point, server index), sorted by point (ties by address).
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// The ring of `addrs` (at least one).
    pub(crate) fn new(addrs: &[String]) -> Self {
        let mut points = Vec::with_capacity(addrs.len() * POINTS_PER_SERVER);
        for (i, addr) in addrs.iter().enumerate() {
            for r in 0..POINTS_PER_SERVER / 4 {
                let digest = Sha256::digest(format!("{addr}-{r}").as_bytes());
                for chunk in digest.chunks_exact(4).take(4) {
                    let point = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    points.push((point, i));
                }
            }
        }
        points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| addrs[a.1].cmp(&addrs[b.1])));
        Self { points }
    }

    /// The index of the server holding `key`.
    pub(crate) fn pick(&self, key: &str) -> usize {
        let digest = Sha256::digest(key.as_bytes());
        let h = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let i = self.points.partition_point(|(p, _)| *p < h);
        self.points
            .get(i)
            .or_else(|| self.points.first())
            .map_or(0, |(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn keys_spread_evenly_and_the_order_of_servers_does_not_matter() {
        let ab = addrs(&["127.0.0.1:11211", "127.0.0.1:11212"]);
        let ba = addrs(&["127.0.0.1:11212", "127.0.0.1:11211"]);
        let (r1, r2) = (Ring::new(&ab), Ring::new(&ba));
        let mut on_first = 0;
        for i in 0..10_000 {
            let key = format!("users GET /users/{i}");
            let s1 = &ab[r1.pick(&key)];
            let s2 = &ba[r2.pick(&key)];
            assert_eq!(s1, s2, "{key}");
            if s1 == "127.0.0.1:11211" {
                on_first += 1;
            }
        }
        assert!((4_000..=6_000).contains(&on_first), "{on_first} of 10000");
    }

    #[test]
    fn a_third_server_moves_about_a_third_of_the_keys_and_only_to_itself() {
        let two = addrs(&["10.0.0.1:11211", "10.0.0.2:11211"]);
        let three = addrs(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let (r2, r3) = (Ring::new(&two), Ring::new(&three));
        let mut moved = 0;
        for i in 0..10_000 {
            let key = format!("k{i}");
            let before = &two[r2.pick(&key)];
            let after = &three[r3.pick(&key)];
            if before != after {
                assert_eq!(after, "10.0.0.3:11211", "a key moved between old servers");
                moved += 1;
            }
        }
        assert!((2_000..=4_700).contains(&moved), "{moved} of 10000 moved");
    }

    #[test]
    fn one_server_takes_every_key() {
        let one = addrs(&["127.0.0.1:11211"]);
        let r = Ring::new(&one);
        assert!((0..100).all(|i| r.pick(&i.to_string()) == 0));
    }
}
