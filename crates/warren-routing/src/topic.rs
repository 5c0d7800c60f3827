//! Topic exchange index: a trie over binding-key words, matched like RabbitMQ's topic trie.
//!
//! Semantics follow `rabbit_db_topic_exchange.erl` (RabbitMQ 3.13/4.x; 3.x had the same code
//! in `rabbit_exchange_type_topic.erl`):
//!
//! * A key is split on every `.`; the empty key has **no** words (`split_topic_key(<<>>) ->
//!   []`), any other key has one more word than it has dots, so `"a..b"` is `a`, `""`, `b` and
//!   `"."` is two empty words.
//! * In a binding key, a word that is exactly `*` matches one word and a word that is exactly
//!   `#` matches zero or more words; anything else (including `a*` or `#a`) is literal.
//! * A `*` or `#` inside a *routing* key is an ordinary word; it only matches the binding words
//!   `*` and `#` (RabbitMQ looks it up as an edge label, which lands on the wildcard edges that
//!   match any word anyway).
//!
//! Matching walks the trie with an explicit stack of `(node, words consumed)` states. A `#`
//! node can absorb words, so the same state is reachable along many paths ("#.#.#" against a
//! long key); states at `#` nodes are memoised per publish so the walk is bounded by
//! `nodes × words` instead of growing combinatorially, and the explicit stack means a huge
//! routing key cannot overflow the call stack. Per-publish scratch buffers live in a
//! thread-local so steady-state routing allocates nothing but the destinations it pushes.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::indexed::DestSet;

const ROOT: usize = 0;

/// Above this many pushed destinations, deduplication across trie nodes switches from a
/// linear scan of what was already pushed to a hash set.
const LINEAR_DEDUP_LIMIT: usize = 32;

/// Scratch buffers larger than this (in elements) are shrunk after use, so one pathological
/// routing key does not pin its memory to the thread forever.
const SCRATCH_RETAIN: usize = 4096;

/// Splits a key into words exactly as RabbitMQ does (see the module docs).
pub(crate) fn words(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty())
        .then(|| key.split('.'))
        .into_iter()
        .flatten()
}

/// One binding-key word, as an edge label in the trie.
#[derive(Clone, Copy)]
enum Word<'a> {
    Literal(&'a str),
    Star,
    Hash,
}

impl<'a> Word<'a> {
    fn of(word: &'a str) -> Self {
        match word {
            "*" => Word::Star,
            "#" => Word::Hash,
            w => Word::Literal(w),
        }
    }
}

#[derive(Debug, Clone)]
struct Node<D> {
    literal: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Reached through a `#` edge, so it may absorb any number of further words.
    is_hash: bool,
    /// Destinations of bindings whose key ends at this node.
    dests: DestSet<D>,
}

impl<D> Node<D> {
    fn new(is_hash: bool) -> Self {
        Node {
            literal: HashMap::new(),
            star: None,
            hash: None,
            is_hash,
            dests: DestSet::default(),
        }
    }
}

impl<D: Clone + Eq + Hash> Node<D> {
    fn is_prunable(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.dests.is_empty()
    }

    fn child(&self, word: Word<'_>) -> Option<usize> {
        match word {
            Word::Literal(w) => self.literal.get(w).copied(),
            Word::Star => self.star,
            Word::Hash => self.hash,
        }
    }
}

/// The trie. Nodes live in an arena (`nodes[0]` is the root) and are recycled through `free`,
/// so unbinding prunes empty branches without shifting indices.
#[derive(Debug, Clone)]
pub(crate) struct TopicTrie<D> {
    nodes: Vec<Node<D>>,
    free: Vec<usize>,
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::new(false)],
            free: Vec::new(),
        }
    }
}

impl<D: Clone + Eq + Hash> TopicTrie<D> {
    fn alloc(&mut self, is_hash: bool) -> usize {
        if let Some(id) = self.free.pop() {
            if let Some(node) = self.nodes.get_mut(id) {
                *node = Node::new(is_hash);
                return id;
            }
        }
        self.nodes.push(Node::new(is_hash));
        self.nodes.len() - 1
    }

    fn set_child(&mut self, parent: usize, word: Word<'_>, child: Option<usize>) {
        let Some(node) = self.nodes.get_mut(parent) else {
            return;
        };
        match (word, child) {
            (Word::Literal(w), Some(c)) => {
                node.literal.insert(w.into(), c);
            }
            (Word::Literal(w), None) => {
                node.literal.remove(w);
            }
            (Word::Star, c) => node.star = c,
            (Word::Hash, c) => node.hash = c,
        }
    }

    /// Adds one reference from the node for `binding_key` to `dest`, creating the path.
    pub(crate) fn add(&mut self, binding_key: &str, dest: &D) {
        let mut cur = ROOT;
        for w in words(binding_key) {
            let word = Word::of(w);
            cur = match self.nodes.get(cur).and_then(|n| n.child(word)) {
                Some(next) => next,
                None => {
                    let next = self.alloc(matches!(word, Word::Hash));
                    self.set_child(cur, word, Some(next));
                    next
                }
            };
        }
        if let Some(node) = self.nodes.get_mut(cur) {
            node.dests.add(dest);
        }
    }

    /// Drops one reference from the node for `binding_key` to `dest`, pruning branches that
    /// become empty.
    pub(crate) fn remove(&mut self, binding_key: &str, dest: &D) {
        let mut path: Vec<(usize, Word<'_>)> = Vec::new();
        let mut cur = ROOT;
        for w in words(binding_key) {
            let word = Word::of(w);
            let Some(next) = self.nodes.get(cur).and_then(|n| n.child(word)) else {
                return;
            };
            path.push((cur, word));
            cur = next;
        }
        let released = self
            .nodes
            .get_mut(cur)
            .is_some_and(|node| node.dests.release(dest));
        if !released {
            return;
        }
        while let Some((parent, word)) = path.pop() {
            if !self.nodes.get(cur).is_some_and(Node::is_prunable) {
                break;
            }
            self.set_child(parent, word, None);
            if let Some(node) = self.nodes.get_mut(cur) {
                // Replace rather than keep: frees the node's maps now, not at reuse.
                *node = Node::new(false);
                self.free.push(cur);
            }
            cur = parent;
        }
    }

    /// Appends every destination bound with a pattern matching `routing_key`, each once.
    pub(crate) fn route(&self, routing_key: &str, out: &mut Vec<D>) {
        if self.nodes.first().is_some_and(Node::is_prunable) {
            return; // an empty root means no bindings at all
        }
        let mut run = |scratch: &mut Scratch| {
            self.collect_matches(scratch, routing_key);
            self.emit(&scratch.matched, out);
            scratch.trim();
        };
        let done = SCRATCH
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => run(&mut scratch),
                // Only reachable if a `D::clone` re-entered routing on this thread.
                Err(_) => run(&mut Scratch::default()),
            })
            .is_ok();
        if !done {
            // The thread-local is gone (thread teardown): use a throwaway scratch.
            run(&mut Scratch::default());
        }
    }

    /// Fills `scratch.matched` with the distinct nodes whose bindings match `routing_key`.
    fn collect_matches(&self, s: &mut Scratch, routing_key: &str) {
        s.split(routing_key);
        s.begin(self.nodes.len());
        let n = s.words.len();
        s.stack.push((ROOT, 0));
        while let Some((id, pos)) = s.stack.pop() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if node.is_hash && !s.first_visit(id, pos, n) {
                continue;
            }
            if pos >= n {
                if !node.dests.is_empty() {
                    s.matched.push(id);
                }
            } else {
                let word = s
                    .words
                    .get(pos)
                    .and_then(|&(a, b)| routing_key.get(a..b))
                    .unwrap_or("");
                if let Some(&next) = node.literal.get(word) {
                    s.stack.push((next, pos + 1));
                }
                if let Some(next) = node.star {
                    s.stack.push((next, pos + 1));
                }
                if node.is_hash {
                    s.stack.push((id, pos + 1)); // the `#` absorbs this word too
                }
            }
            if let Some(next) = node.hash {
                s.stack.push((next, pos)); // a `#` may match zero words
            }
        }
    }

    /// Pushes the destinations of the matched nodes. Each node's set is already distinct and
    /// each node appears once, but one destination can sit on several matched nodes.
    fn emit(&self, matched: &[usize], out: &mut Vec<D>) {
        let start = out.len();
        let mut seen: Option<HashSet<&D>> = None;
        for (i, &id) in matched.iter().enumerate() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if let Some(seen) = seen.as_mut() {
                for d in node.dests.iter() {
                    if seen.insert(d) {
                        out.push(d.clone());
                    }
                }
                continue;
            }
            let before = out.len();
            for d in node.dests.iter() {
                let dup = out.get(start..before).is_some_and(|prev| prev.contains(d));
                if !dup {
                    out.push(d.clone());
                }
            }
            if out.len().saturating_sub(start) > LINEAR_DEDUP_LIMIT && i + 1 < matched.len() {
                seen = Some(
                    matched
                        .iter()
                        .take(i + 1)
                        .filter_map(|&m| self.nodes.get(m))
                        .flat_map(|n| n.dests.iter())
                        .collect(),
                );
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-publish working memory, reused across publishes on a thread.
#[derive(Default)]
struct Scratch {
    /// Byte ranges of the routing key's words.
    words: Vec<(usize, usize)>,
    /// Pending `(node, words consumed)` states.
    stack: Vec<(usize, usize)>,
    /// Matched nodes, in discovery order.
    matched: Vec<usize>,
    /// Bumped per publish; a `hash_seen` slot is valid only if it carries the current value.
    generation: u32,
    /// Per node id: `(generation, offset into bits)` of that `#` node's visited-positions set.
    hash_seen: Vec<(u32, usize)>,
    /// Visited-position bitsets of the `#` nodes touched by this publish.
    bits: Vec<u64>,
}

impl Scratch {
    fn split(&mut self, key: &str) {
        self.words.clear();
        if key.is_empty() {
            return;
        }
        let mut start = 0;
        for (i, b) in key.bytes().enumerate() {
            if b == b'.' {
                self.words.push((start, i));
                start = i + 1;
            }
        }
        self.words.push((start, key.len()));
    }

    fn begin(&mut self, node_count: usize) {
        self.stack.clear();
        self.matched.clear();
        self.bits.clear();
        if self.hash_seen.len() < node_count {
            self.hash_seen.resize(node_count, (0, 0));
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.hash_seen.iter_mut().for_each(|slot| slot.0 = 0);
            self.generation = 1;
        }
    }

    /// Records that `#` node `id` was reached having consumed `pos` of `n` words; false if that
    /// state was already explored during this publish.
    fn first_visit(&mut self, id: usize, pos: usize, n: usize) -> bool {
        let Some(slot) = self.hash_seen.get_mut(id) else {
            return true; // unreachable; exploring again is merely slower
        };
        if slot.0 != self.generation {
            *slot = (self.generation, self.bits.len());
            self.bits.resize(self.bits.len() + n / 64 + 1, 0);
        }
        let mask = 1u64 << (pos % 64);
        match self.bits.get_mut(slot.1 + pos / 64) {
            Some(word) if *word & mask != 0 => false,
            Some(word) => {
                *word |= mask;
                true
            }
            None => true,
        }
    }

    fn trim(&mut self) {
        for cap in [
            self.words.capacity(),
            self.stack.capacity(),
            self.matched.capacity(),
            self.bits.capacity(),
        ] {
            if cap > SCRATCH_RETAIN {
                self.words.shrink_to(SCRATCH_RETAIN);
                self.stack.shrink_to(SCRATCH_RETAIN);
                self.matched.shrink_to(SCRATCH_RETAIN);
                self.bits.shrink_to(SCRATCH_RETAIN);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(bindings: &[(&str, u32)]) -> TopicTrie<u32> {
        let mut t = TopicTrie::default();
        for (k, d) in bindings {
            t.add(k, d);
        }
        t
    }

    fn routed(t: &TopicTrie<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.route(key, &mut out);
        out.sort_unstable();
        out
    }

    fn matches(pattern: &str, key: &str) -> bool {
        routed(&trie(&[(pattern, 1)]), key) == vec![1]
    }

    #[test]
    fn splitting_follows_rabbitmq() {
        assert_eq!(words("").count(), 0);
        assert_eq!(words(".").collect::<Vec<_>>(), vec!["", ""]);
        assert_eq!(words("a..b").collect::<Vec<_>>(), vec!["a", "", "b"]);
        assert_eq!(words("a.").collect::<Vec<_>>(), vec!["a", ""]);
    }

    #[test]
    fn literal_words() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b", "a"));
        assert!(!matches("a*", "ab"));
        assert!(matches("a*", "a*"));
        assert!(matches("a..b", "a..b"));
        assert!(!matches("a..b", "a.b"));
    }

    #[test]
    fn empty_keys() {
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(!matches("a", ""));
        assert!(
            !matches("*", ""),
            "the empty key has no words for * to match"
        );
        assert!(matches("#", ""));
        assert!(matches("#.#", ""));
        assert!(!matches("#.*", ""));
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
        assert!(matches("a.*", "a."), "an empty word is a word");
        assert!(!matches("a.*", "a"));
        assert!(matches("*.*", "."));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(matches("a.*.c", "a..c"));
        assert!(!matches("a.*.c", "a.b.b.c"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        for key in ["", "a", "a.b", "a.b.c", "..."] {
            assert!(matches("#", key), "{key:?}");
        }
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(!matches("a.#", "b"));
        assert!(matches("#.a", "a"));
        assert!(matches("#.a", "x.y.a"));
        assert!(!matches("#.a", "a.x"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(matches("a.#.b", "a.b.b"));
        assert!(!matches("a.#.b", "a.x"));
        assert!(!matches("a.#.b", "a"));
        assert!(matches("#.#", "a.b"));
        assert!(matches("#.*", "a"));
        assert!(matches("#.*", "a.b"));
        assert!(matches("*.#", "a"));
        assert!(!matches("*.#", ""));
        assert!(matches("#.a.#", "a"));
        assert!(matches("#.a.#", "x.a.y"));
        assert!(!matches("#.a.#", "x.y"));
        assert!(matches("a.#.#.b", "a.b"));
        assert!(matches("#.b.#.b", "b.b"));
        assert!(!matches("#.b.#.b", "b"));
    }

    #[test]
    fn wildcards_in_routing_keys_are_plain_words() {
        assert!(matches("*", "*"));
        assert!(matches("#", "#"));
        assert!(matches("a.*", "a.#"));
        assert!(!matches("a.b", "a.*"));
        assert!(!matches("a.b", "a.#"));
        assert!(!matches("a", "#"));
    }

    #[test]
    fn several_patterns_deduplicate_destinations() {
        let t = trie(&[
            ("a.b", 1),
            ("a.*", 1),
            ("#", 1),
            ("a.#", 2),
            ("#.b", 2),
            ("x", 3),
        ]);
        let mut out = vec![1, 2]; // from a previous exchange: not deduplicated against
        t.route("a.b", &mut out);
        let (prev, ours) = out.split_at(2);
        assert_eq!(prev, &[1, 2]);
        let mut ours = ours.to_vec();
        ours.sort_unstable();
        assert_eq!(ours, vec![1, 2]);
    }

    #[test]
    fn many_destinations_on_many_nodes_are_deduplicated() {
        let mut t = TopicTrie::default();
        for d in 0..200u32 {
            t.add("a.*", &d);
            t.add("#", &d);
            t.add("a.b", &(d + 100));
        }
        assert_eq!(routed(&t, "a.b"), (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn removal_prunes_the_trie() {
        let mut t = trie(&[("a.b.c", 1), ("a.#", 2), ("a.b.c", 3), ("", 4)]);
        t.remove("a.b.c", &1);
        assert_eq!(routed(&t, "a.b.c"), vec![2, 3]);
        t.remove("a.b.c", &3);
        t.remove("a.#", &2);
        assert_eq!(routed(&t, "a.b.c"), Vec::<u32>::new());
        assert_eq!(t.live_nodes(), 1);
        assert_eq!(routed(&t, ""), vec![4]);
        t.remove("", &4);
        t.remove("never.bound", &4);
        assert_eq!(routed(&t, ""), Vec::<u32>::new());
        // Recycled nodes come back with the right wildcard flag.
        t.add("x.#", &5);
        t.add("y.z", &6);
        assert_eq!(routed(&t, "x.q.r"), vec![5]);
        assert_eq!(routed(&t, "y.z"), vec![6]);
        assert_eq!(routed(&t, "y.z.z"), Vec::<u32>::new());
    }

    #[test]
    fn pathological_hash_patterns_stay_fast() {
        let pattern = vec!["#"; 20].join(".") + ".a.#.b.#.c";
        let t = trie(&[(&pattern, 1), ("#.#.#.#.#.#.#.#.z", 2)]);
        let key = vec!["x"; 255].join(".");
        let start = std::time::Instant::now();
        assert_eq!(routed(&t, &key), Vec::<u32>::new());
        assert_eq!(routed(&t, &(key.clone() + ".a.b.c")), vec![1]);
        assert_eq!(routed(&t, &(key + ".z")), vec![2]);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn huge_routing_keys_do_not_overflow_the_stack() {
        let t = trie(&[("#.end", 1), ("*.#", 2)]);
        let key = "w.".repeat(500_000) + "end";
        assert_eq!(routed(&t, &key), vec![1, 2]);
    }
}
