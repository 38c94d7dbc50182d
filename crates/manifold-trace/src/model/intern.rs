//! Interned names: spans carry 4-byte symbols instead of strings.

use super::FxHashMap;
use crate::limits::{clip, MAX_NAME};

/// An interned name (service, operation, host, ...). `0` is always the empty string.
pub type Sym = u32;

/// Interns names so spans carry 4-byte symbols instead of strings.
#[derive(Debug, Clone)]
pub struct Interner {
    map: FxHashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
    /// Per-symbol memo for facts derived from a name (0 = not computed yet).
    memo: Vec<u8>,
    /// Names longer than [`MAX_NAME`] that were cut before being kept.
    cut: u64,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    /// A new interner holding only the empty string (symbol 0).
    pub fn new() -> Self {
        let mut me = Self {
            map: FxHashMap::default(),
            names: Vec::new(),
            memo: Vec::new(),
            cut: 0,
        };
        me.intern("");
        me
    }

    /// The symbol for `name`, adding it if new. A name longer than [`MAX_NAME`] is cut first
    /// ([`clip`]) and counted: every name is kept twice here and copied into every report row
    /// that shows it, so one hostile name must not be kept at its full length.
    pub fn intern(&mut self, name: &str) -> Sym {
        if name.len() > MAX_NAME {
            self.cut += 1;
            return self.intern(&clip(name));
        }
        if let Some(&s) = self.map.get(name) {
            return s;
        }
        let s = Sym::try_from(self.names.len()).unwrap_or(Sym::MAX);
        self.names.push(name.into());
        self.map.insert(name.into(), s);
        s
    }

    /// A memoized fact about a name: `compute` runs once per symbol.
    pub fn memo(&mut self, sym: Sym, compute: impl FnOnce(&str) -> bool) -> bool {
        let i = sym as usize;
        if self.memo.len() <= i {
            self.memo.resize(self.names.len().max(i + 1), 0);
        }
        match self.memo[i] {
            1 => false,
            2 => true,
            _ => {
                let v = compute(self.name(sym));
                self.memo[i] = if v { 2 } else { 1 };
                v
            }
        }
    }

    /// The symbol for `name` if it was interned (a long name as [`Interner::intern`] cut it).
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.map.get(clip(name).as_ref()).copied()
    }

    /// How many names longer than [`MAX_NAME`] were cut so far (each time one was given).
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// The name behind a symbol (empty for an unknown symbol).
    pub fn name(&self, sym: Sym) -> &str {
        self.names.get(sym as usize).map_or("", |s| s)
    }

    /// How many names are interned.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when only the empty string is interned.
    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64 MiB name is kept at most [`MAX_NAME`] bytes long (it was kept whole, twice: 128 MiB).
    #[test]
    fn a_huge_name_is_kept_cut_and_counted() {
        let mut i = Interner::new();
        let huge = "n".repeat(64 << 20);
        let s = i.intern(&huge);
        let kept: usize = (0..i.len()).map(|k| i.name(k as Sym).len()).sum();
        assert!(
            kept <= MAX_NAME,
            "{kept} bytes of names kept for one 64 MiB name"
        );
        assert!(i.name(s).ends_with('…'));
        assert_eq!(i.cut(), 1);
        assert_eq!(i.intern(&huge), s, "the same long name is the same symbol");
        assert_eq!(i.get(&huge), Some(s));
        assert_eq!(i.cut(), 2);
        assert_eq!(i.intern("short"), i.intern("short"));
        assert_eq!(i.cut(), 2);
    }
}
