//! Every node's children in one allocation, for assembly and the critical path.

/// The children of every node in one allocation (offsets into one list) rather than a `Vec` per
/// node: building and dropping a list per node was a large share of assembly and critical-path
/// time. `children[i]` is node `i`'s list, as a slice; indexing past the end panics, as a `Vec`
/// of lists would.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Children {
    /// `items[offsets[i]..offsets[i + 1]]` are node `i`'s children; `offsets.len()` is nodes + 1.
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Children {
    /// Nodes without children.
    pub fn empty(nodes: usize) -> Children {
        Children {
            offsets: vec![0; nodes + 1],
            items: Vec::new(),
        }
    }

    /// From one list per node.
    pub fn from_lists(lists: Vec<Vec<u32>>) -> Children {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut items = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        offsets.push(0);
        for l in lists {
            items.extend_from_slice(&l);
            offsets.push(items.len() as u32);
        }
        Children { offsets, items }
    }

    /// Room for `count[i + 1]` children of node `i` (`count[0]` is ignored), to be filled by
    /// [`Self::place`] in the order the lists should have.
    pub(crate) fn with_counts(mut count: Vec<u32>) -> Children {
        if let Some(c) = count.first_mut() {
            *c = 0;
        }
        let mut total = 0u32;
        for c in count.iter_mut() {
            total += *c;
            *c = total;
        }
        // `offsets[i]` is the next free place of node `i` while filling; see `place`
        let mut offsets: Vec<u32> = Vec::with_capacity(count.len());
        offsets.push(0);
        offsets.extend_from_slice(&count[..count.len().saturating_sub(1)]);
        Children {
            offsets,
            items: vec![0; total as usize],
        }
    }

    /// Append `child` to node `p`'s list (counted in [`Self::with_counts`]); once every child is
    /// placed, the offsets are the lists' bounds.
    pub(crate) fn place(&mut self, p: usize, child: u32) {
        if let Some(at) = self.offsets.get_mut(p + 1) {
            if let Some(slot) = self.items.get_mut(*at as usize) {
                *slot = child;
                *at += 1;
            }
        }
    }

    /// Sort every node's list by `key`.
    pub(crate) fn sort_each<K: Ord>(&mut self, mut key: impl FnMut(u32) -> K) {
        for w in 0..self.offsets.len().saturating_sub(1) {
            let (a, b) = (self.offsets[w] as usize, self.offsets[w + 1] as usize);
            if b - a > 1 {
                self.items[a..b].sort_by_key(|&c| key(c));
            }
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Node `i`'s children, `None` past the last node.
    pub fn get(&self, i: usize) -> Option<&[u32]> {
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        self.items.get(a as usize..b as usize)
    }

    /// Every node's list, in node order.
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.offsets
            .windows(2)
            .map(|w| &self.items[w[0] as usize..w[1] as usize])
    }
}

impl std::ops::Index<usize> for Children {
    type Output = [u32];
    fn index(&self, i: usize) -> &[u32] {
        match self.get(i) {
            Some(l) => l,
            None => panic!("node {i} out of range ({} nodes)", self.len()),
        }
    }
}
