//! Routing keys matched against patterns: a token trie in the style of
//! nats-server's sublist, with a cache of results per key that any change
//! clears. Keys are segments separated by `.`; in a pattern `*` matches
//! exactly one segment, `#` zero or more (AMQP), and `>` one or more, only
//! as the last segment (ActiveMQ, NATS). A lookup costs about the number of
//! trie paths that match, not the number of patterns.

use std::collections::HashMap;
use std::sync::Arc;

/// Keys whose results are kept; past this the cache starts over (a
/// publisher cycling through endless keys must not grow it without bound).
const CACHE_KEYS: usize = 4096;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `a..b`, a leading or trailing `.`, or nothing at all.
    #[error("pattern {0:?} has an empty segment (segments are separated by single dots)")]
    EmptySegment(String),
    /// `>` anywhere but last.
    #[error("pattern {0:?} has '>' before its last segment ('>' means the rest of the key)")]
    GreaterNotLast(String),
}

/// Whether a key or destination tail is a pattern: one of its segments is
/// a wildcard.
pub fn is_pattern(key: &str) -> bool {
    key.split('.').any(|s| s == "*" || s == "#" || s == ">")
}

/// Checks a pattern's shape.
pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    let segments: Vec<&str> = pattern.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(PatternError::EmptySegment(pattern.to_string()));
    }
    if segments[..segments.len() - 1].contains(&">") {
        return Err(PatternError::GreaterNotLast(pattern.to_string()));
    }
    Ok(())
}

#[derive(Debug)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    /// Entries of patterns ending in `>` here.
    rest: Vec<T>,
    /// Entries of patterns ending here.
    here: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Node<T> {
        Node {
            literal: HashMap::new(),
            star: None,
            hash: None,
            rest: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }
}

/// Patterns with an entry each (a subscriber, a binding), matched by key.
#[derive(Debug)]
pub struct Sublist<T> {
    root: Node<T>,
    cache: HashMap<Box<str>, Arc<[T]>>,
    len: usize,
}

impl<T> Default for Sublist<T> {
    fn default() -> Sublist<T> {
        Sublist {
            root: Node::default(),
            cache: HashMap::new(),
            len: 0,
        }
    }
}

impl<T: Clone + PartialEq> Sublist<T> {
    /// Adds `entry` under `pattern` (checked with [`check_pattern`]; a
    /// literal key is a pattern too).
    pub fn insert(&mut self, pattern: &str, entry: T) -> Result<(), PatternError> {
        check_pattern(pattern)?;
        let mut node = &mut self.root;
        let mut segments = pattern.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segment == ">" && segments.peek().is_none() {
                node.rest.push(entry);
                self.len += 1;
                self.cache.clear();
                return Ok(());
            }
            node = match segment {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        node.here.push(entry);
        self.len += 1;
        self.cache.clear();
        Ok(())
    }

    /// Removes the entries under `pattern` that `matches` picks; returns
    /// how many went. Emptied branches are pruned.
    pub fn remove(&mut self, pattern: &str, matches: impl Fn(&T) -> bool) -> usize {
        let segments: Vec<&str> = pattern.split('.').collect();
        let removed = remove_in(&mut self.root, &segments, &matches);
        if removed > 0 {
            self.len -= removed;
            self.cache.clear();
        }
        removed
    }

    /// Every entry whose pattern matches `key`, each once.
    pub fn matches(&mut self, key: &str) -> Arc<[T]> {
        if let Some(hit) = self.cache.get(key) {
            return hit.clone();
        }
        let found: Arc<[T]> = self.lookup(key).into();
        if self.cache.len() >= CACHE_KEYS {
            self.cache.clear();
        }
        self.cache.insert(key.into(), found.clone());
        found
    }

    /// Like [`matches`](Self::matches), without the cache (for a reader
    /// that holds the list shared).
    pub fn lookup(&self, key: &str) -> Vec<T> {
        let tokens: Vec<&str> = key.split('.').collect();
        let mut out = Vec::new();
        collect(&self.root, &tokens, &mut out);
        // A pattern with several `#` can match one key in several ways.
        let mut unique: Vec<T> = Vec::with_capacity(out.len());
        for entry in out {
            if !unique.contains(&entry) {
                unique.push(entry);
            }
        }
        unique
    }

    /// The cached result for `key`, if any.
    pub fn cached(&self, key: &str) -> Option<Arc<[T]>> {
        self.cache.get(key).cloned()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn collect<T: Clone>(node: &Node<T>, tokens: &[&str], out: &mut Vec<T>) {
    if let Some(hash) = &node.hash {
        // `#` takes none, one, … or all of the remaining segments.
        for skip in 0..=tokens.len() {
            collect(hash, &tokens[skip..], out);
        }
    }
    let Some((first, rest)) = tokens.split_first() else {
        out.extend(node.here.iter().cloned());
        return;
    };
    out.extend(node.rest.iter().cloned());
    if let Some(next) = node.literal.get(*first) {
        collect(next, rest, out);
    }
    if let Some(star) = &node.star {
        collect(star, rest, out);
    }
}

fn remove_in<T>(node: &mut Node<T>, segments: &[&str], matches: &impl Fn(&T) -> bool) -> usize {
    let Some((first, rest)) = segments.split_first() else {
        let before = node.here.len();
        node.here.retain(|e| !matches(e));
        return before - node.here.len();
    };
    if *first == ">" && rest.is_empty() {
        let before = node.rest.len();
        node.rest.retain(|e| !matches(e));
        return before - node.rest.len();
    }
    let (removed, empty) = match *first {
        "*" | "#" => {
            let slot = if *first == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            match slot {
                Some(child) => {
                    let n = remove_in(child, rest, matches);
                    (n, child.is_empty())
                }
                None => (0, false),
            }
        }
        literal => match node.literal.get_mut(literal) {
            Some(child) => {
                let n = remove_in(child, rest, matches);
                (n, child.is_empty())
            }
            None => (0, false),
        },
    };
    if empty {
        match *first {
            "*" => node.star = None,
            "#" => node.hash = None,
            literal => {
                node.literal.remove(literal);
            }
        }
    }
    removed
}

/// Whether `pattern` matches `key`, by the rules above, without a trie:
/// the reference the trie is tested against.
pub fn naive_match(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&">", [])) => !k.is_empty(),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((literal, rest)) => k.first() == Some(literal) && go(rest, &k[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> Sublist<usize> {
        let mut l = Sublist::default();
        for (i, p) in patterns.iter().enumerate() {
            l.insert(p, i).unwrap();
        }
        l
    }

    fn hits(l: &mut Sublist<usize>, key: &str) -> Vec<usize> {
        let mut v = l.matches(key).to_vec();
        v.sort();
        v
    }

    #[test]
    fn wildcard_rules_and_edges() {
        let mut l = list(&[
            "chat.*",   // 0
            "chat.#",   // 1
            "chat.>",   // 2
            "#",        // 3
            "a.#.z",    // 4
            "*.b",      // 5
            "chat.gen", // 6
        ]);
        assert_eq!(hits(&mut l, "chat.gen"), [0, 1, 2, 3, 6]);
        assert_eq!(hits(&mut l, "chat"), [1, 3], "a.# matches a; a.> does not");
        assert_eq!(hits(&mut l, "chat.a.b"), [1, 2, 3]);
        assert_eq!(hits(&mut l, "a.z"), [3, 4]);
        assert_eq!(hits(&mut l, "a.x.y.z"), [3, 4]);
        assert_eq!(hits(&mut l, "x.b"), [3, 5]);
    }

    #[test]
    fn removal_prunes_and_clears_the_cache() {
        let mut l = list(&["a.*", "a.*", "a.b"]);
        assert_eq!(hits(&mut l, "a.b"), [0, 1, 2]);
        assert_eq!(l.remove("a.*", |e| *e == 1), 1);
        assert_eq!(hits(&mut l, "a.b"), [0, 2]);
        assert_eq!(l.remove("a.*", |_| true), 1);
        assert_eq!(l.remove("a.b", |_| true), 1);
        assert!(l.is_empty());
        assert!(l.root.is_empty(), "branches pruned");
    }

    #[test]
    fn bad_patterns() {
        assert!(check_pattern("a..b").is_err());
        assert!(check_pattern("a.").is_err());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("a.>.b").is_err());
        assert!(check_pattern("a.#.b.>").is_ok());
    }

    /// The trie agrees with the naive matcher on random patterns and keys.
    #[test]
    fn trie_equals_naive_matcher() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let words = ["a", "b", "c"];
        for round in 0..200 {
            let mut patterns = Vec::new();
            for _ in 0..(1 + next() % 12) {
                let len = 1 + next() % 4;
                let mut segs: Vec<&str> = (0..len)
                    .map(|_| match next() % 6 {
                        0 => "*",
                        1 => "#",
                        n => words[(n % 3) as usize],
                    })
                    .collect();
                if next() % 5 == 0 {
                    segs.push(">");
                }
                patterns.push(segs.join("."));
            }
            let mut l = Sublist::default();
            for (i, p) in patterns.iter().enumerate() {
                l.insert(p, i).unwrap();
            }
            for _ in 0..30 {
                let len = 1 + next() % 5;
                let key: Vec<&str> = (0..len).map(|_| words[(next() % 3) as usize]).collect();
                let key = key.join(".");
                let mut expected: Vec<usize> = (0..patterns.len())
                    .filter(|i| naive_match(&patterns[*i], &key))
                    .collect();
                expected.sort();
                assert_eq!(
                    hits(&mut l, &key),
                    expected,
                    "round {round}: {patterns:?} / {key}"
                );
            }
        }
    }
}
