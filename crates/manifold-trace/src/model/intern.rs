//! Interned names: spans carry 4-byte symbols instead of strings.

use super::FxHashMap;

/// An interned name (service, operation, host, ...). `0` is always the empty string.
pub type Sym = u32;

/// Interns names so spans carry 4-byte symbols instead of strings.
#[derive(Debug, Clone)]
pub struct Interner {
    map: FxHashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
    /// Per-symbol memo for facts derived from a name (0 = not computed yet).
    memo: Vec<u8>,
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
        };
        me.intern("");
        me
    }

    /// The symbol for `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> Sym {
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

    /// The symbol for `name` if it was interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.map.get(name).copied()
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
