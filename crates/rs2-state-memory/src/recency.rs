//! The store's recency order: a doubly linked list of keys, least recently used first.
//!
//! Nodes live in a slab and hold only the key's hash; the table entry of a key holds its node's
//! index, so an evicted node finds its entry with a hash lookup and an index compare. The list
//! is changed only under the store's recency lock, together with the table, so a node and its
//! entry come and go as one.
//!
//! The list also counts the operations that put a node at the back (a push, or a move that
//! changes the order): the store's recency rule measures a key's age in these operations, not
//! in time (see `InMemoryState` and `docs/decisions/005-recency-by-list-order.md`).

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: u64,
    prev: u32,
    next: u32,
    live: bool,
}

/// Keys in recency order.
#[derive(Debug)]
pub(crate) struct RecencyList {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Least recently used.
    head: u32,
    /// Most recently used.
    tail: u32,
    len: usize,
    /// Pushes and order-changing moves so far. Only ever grows (`clear` keeps it), so ages
    /// measured against it stay meaningful across a clear.
    ops: u64,
}

impl Default for RecencyList {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
            ops: 0,
        }
    }
}

impl RecencyList {
    /// Memory per key in the list.
    pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

    pub fn len(&self) -> usize {
        self.len
    }

    /// Operations that put a node at the back so far (pushes and moves that changed the order).
    /// A node has at most this many nodes behind it counted from its own push or move, which is
    /// what makes an age in operations a bound on its distance from the back.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Sets the operation count, for tests of what happens when it grows past 32 bits.
    #[cfg(test)]
    pub fn set_ops(&mut self, ops: u64) {
        self.ops = ops;
    }

    /// Adds a key as the most recently used; returns its node.
    pub fn push_back(&mut self, hash: u64) -> u32 {
        let node = Node {
            hash,
            prev: self.tail,
            next: NIL,
            live: true,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.nodes[index as usize] = node;
                index
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        match self.tail {
            NIL => self.head = index,
            tail => self.nodes[tail as usize].next = index,
        }
        self.tail = index;
        self.len += 1;
        self.ops += 1;
        index
    }

    fn unlink(&mut self, index: u32) {
        let Node { prev, next, .. } = self.nodes[index as usize];
        match prev {
            NIL => self.head = next,
            prev => self.nodes[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.nodes[next as usize].prev = prev,
        }
    }

    /// Whether `index` is a live node for a key with `hash`.
    fn holds(&self, index: u32, hash: u64) -> bool {
        self.nodes
            .get(index as usize)
            .is_some_and(|node| node.live && node.hash == hash)
    }

    /// Marks the key as the most recently used. A stale `index` (its key is gone) is ignored,
    /// and so is a move of the node already at the back; neither counts as an operation.
    pub fn move_to_back(&mut self, index: u32, hash: u64) {
        if !self.holds(index, hash) || self.tail == index {
            return;
        }
        self.ops += 1;
        self.unlink(index);
        let tail = self.tail;
        let node = &mut self.nodes[index as usize];
        node.prev = tail;
        node.next = NIL;
        match tail {
            NIL => self.head = index,
            tail => self.nodes[tail as usize].next = index,
        }
        self.tail = index;
    }

    /// Removes a key's node.
    pub fn remove(&mut self, index: u32) {
        if self.nodes.get(index as usize).is_some_and(|n| n.live) {
            self.unlink(index);
            self.nodes[index as usize].live = false;
            self.free.push(index);
            self.len -= 1;
        }
    }

    /// Removes and returns the least recently used key's node and hash.
    pub fn pop_front(&mut self) -> Option<(u32, u64)> {
        let index = self.head;
        if index == NIL {
            return None;
        }
        let hash = self.nodes[index as usize].hash;
        self.remove(index);
        Some((index, hash))
    }

    /// One more than the largest node index handed out (node slots, live or free).
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, least recently used first, as `(node, hash)`.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let mut index = self.head;
        std::iter::from_fn(move || {
            if index == NIL {
                return None;
            }
            let node = self.nodes[index as usize];
            let out = (index, node.hash);
            index = node.next;
            Some(out)
        })
    }

    /// Removes every node; the operation count carries on.
    pub fn clear(&mut self) {
        *self = Self {
            ops: self.ops,
            ..Self::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(list: &mut RecencyList) -> Vec<u64> {
        let mut out = Vec::new();
        let mut i = list.head;
        while i != NIL {
            out.push(list.nodes[i as usize].hash);
            i = list.nodes[i as usize].next;
        }
        out
    }

    #[test]
    fn least_recently_used_comes_out_first() {
        let mut list = RecencyList::default();
        let a = list.push_back(1);
        let _b = list.push_back(2);
        let c = list.push_back(3);
        list.move_to_back(a, 1);
        assert_eq!(order(&mut list), [2, 3, 1]);
        assert_eq!(list.iter().map(|(_, h)| h).collect::<Vec<_>>(), [2, 3, 1]);
        assert_eq!(list.iter().next(), Some((1, 2)));
        list.remove(c);
        assert_eq!(order(&mut list), [2, 1]);
        assert_eq!(list.pop_front(), Some((1, 2)));
        // A stale index (or a wrong hash) is ignored.
        list.move_to_back(c, 3);
        list.move_to_back(a, 99);
        assert_eq!(order(&mut list), [1]);
        let d = list.push_back(4);
        assert!(d == c || d == 1, "freed nodes are reused");
        assert_eq!(list.len(), 2);
        assert_eq!(list.pop_front(), Some((a, 1)));
        assert_eq!(list.pop_front().map(|(_, h)| h), Some(4));
        assert_eq!(list.pop_front(), None);
    }

    #[test]
    fn pushes_and_real_moves_are_counted_and_clear_keeps_the_count() {
        let mut list = RecencyList::default();
        let a = list.push_back(1);
        let b = list.push_back(2);
        assert_eq!(list.ops(), 2);
        list.move_to_back(b, 2); // already at the back: no change, not counted
        list.move_to_back(a, 99); // wrong hash: ignored
        assert_eq!(list.ops(), 2);
        list.move_to_back(a, 1);
        assert_eq!(list.ops(), 3);
        assert_eq!(order(&mut list), [2, 1]);
        list.pop_front();
        list.remove(a);
        assert_eq!(list.ops(), 3, "removals are not operations at the back");
        list.push_back(3);
        list.clear();
        assert_eq!((list.len(), list.ops()), (0, 4));
        assert_eq!(list.pop_front(), None);
    }
}
