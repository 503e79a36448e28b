//! Learning merges from counted chunks ("words").
//!
//! Every unique chunk becomes a word: its bytes as token ids, stored back to back in one arena,
//! with its count. We keep, for every adjacent pair, its total count (summed over words, weighted
//! by word count) and the words it occurs in. Each step takes the best pair from a lazy max-heap
//! (higher count first, then the smaller pair), rewrites only the words that contain it, and
//! updates the counts of just the pairs around each rewrite. Heap entries are never updated in
//! place: a popped entry whose count is stale is pushed back with the true count.

use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash for u64 pair keys, with a final rotation so the low bits (the ones a hash map uses for
/// the bucket) depend on both halves of the pair.
#[derive(Default)]
pub struct PairHasher(u64);

impl Hasher for PairHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type PairMap<V> = HashMap<u64, V, BuildHasherDefault<PairHasher>>;

#[inline(always)]
fn pair(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

#[derive(Default)]
struct PairStats {
    count: i64,
    words: Vec<u32>, // words this pair occurs (or occurred) in; may hold stale entries
}

/// Heap order: higher count first, then the smaller pair.
#[derive(PartialEq, Eq)]
struct Candidate {
    count: i64,
    pair: u64,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.count.cmp(&other.count).then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// All words, back to back: word `w` is `ids[start[w]..start[w] + len[w]]`.
pub struct Words {
    ids: Vec<u32>,
    start: Vec<usize>,
    len: Vec<u32>,
    count: Vec<i64>,
}

impl Words {
    pub fn new() -> Self {
        Words { ids: Vec::new(), start: Vec::new(), len: Vec::new(), count: Vec::new() }
    }

    /// Add a chunk; single bytes are skipped (they hold no pair and never change).
    pub fn push(&mut self, chunk: &[u8], count: u64) {
        if chunk.len() < 2 || count == 0 {
            return;
        }
        self.start.push(self.ids.len());
        self.len.push(chunk.len() as u32);
        self.count.push(count as i64);
        self.ids.extend(chunk.iter().map(|&b| b as u32));
    }

    pub fn len(&self) -> usize {
        self.count.len()
    }
}

struct Trainer {
    words: Words,
    pairs: PairMap<PairStats>,
    heap: BinaryHeap<Candidate>,
}

impl Trainer {
    fn new(words: Words) -> Self {
        let mut pairs: PairMap<PairStats> = PairMap::default();
        for w in 0..words.len() {
            let (s, n, c) = (words.start[w], words.len[w] as usize, words.count[w]);
            for k in s..s + n - 1 {
                let st = pairs.entry(pair(words.ids[k], words.ids[k + 1])).or_default();
                st.count += c;
                if st.words.last() != Some(&(w as u32)) {
                    st.words.push(w as u32);
                }
            }
        }
        let heap = pairs.iter().map(|(&p, st)| Candidate { count: st.count, pair: p }).collect();
        Trainer { words, pairs, heap }
    }

    /// Pop the best pair whose count is up to date; None when no pair is left.
    fn best(&mut self) -> Option<u64> {
        while let Some(top) = self.heap.pop() {
            let now = self.pairs.get(&top.pair).map_or(0, |st| st.count);
            if now == top.count && now > 0 {
                return Some(top.pair);
            }
            if now > 0 {
                self.heap.push(Candidate { count: now, pair: top.pair });
            } else {
                self.pairs.remove(&top.pair);
            }
        }
        None
    }

    /// Change the count of `p` by `delta`; a pair that gains is recorded as occurring in word `w`
    /// (only pairs containing the new token gain, and they are all born in this step).
    #[inline]
    fn bump(&mut self, p: u64, delta: i64, w: u32, born: &mut Vec<u64>) {
        match self.pairs.entry(p) {
            Entry::Occupied(mut e) => {
                let st = e.get_mut();
                st.count += delta;
                if delta > 0 && st.words.last() != Some(&w) {
                    st.words.push(w);
                }
            }
            Entry::Vacant(e) => {
                born.push(p);
                e.insert(PairStats { count: delta, words: vec![w] });
            }
        }
    }

    /// Replace pair (a, b) by `new` in word `w`, left to right, updating the neighbouring pairs.
    fn merge_word(&mut self, w: u32, a: u32, b: u32, new: u32, born: &mut Vec<u64>) {
        let (s, n, c) = (self.words.start[w as usize], self.words.len[w as usize] as usize, self.words.count[w as usize]);
        let (mut read, mut write) = (s, s);
        let end = s + n;
        while read < end {
            let x = self.words.ids[read];
            if x == a && read + 1 < end && self.words.ids[read + 1] == b {
                if write > s {
                    let prev = self.words.ids[write - 1]; // already rewritten: may be `new`
                    self.bump(pair(prev, a), -c, w, born);
                    self.bump(pair(prev, new), c, w, born);
                }
                if read + 2 < end {
                    let next = self.words.ids[read + 2];
                    self.bump(pair(b, next), -c, w, born);
                    self.bump(pair(new, next), c, w, born);
                }
                self.words.ids[write] = new;
                read += 2;
            } else {
                self.words.ids[write] = x;
                read += 1;
            }
            write += 1;
        }
        self.words.len[w as usize] = (write - s) as u32;
    }

    fn step(&mut self, new: u32) -> Option<(u32, u32)> {
        let p = self.best()?;
        let (a, b) = ((p >> 32) as u32, p as u32);
        let stats = self.pairs.remove(&p).expect("the best pair has stats");
        let mut born = Vec::new();
        for &w in &stats.words {
            self.merge_word(w, a, b, new, &mut born); // a word listed twice is a no-op the 2nd time
        }
        for q in born {
            let count = self.pairs.get(&q).map_or(0, |st| st.count);
            if count > 0 {
                self.heap.push(Candidate { count, pair: q });
            } else {
                self.pairs.remove(&q);
            }
        }
        // Occurrences of (a, b) are all gone; drop the count the loop above put back for it.
        self.pairs.remove(&p);
        Some((a, b))
    }
}

/// Learn up to `num_merges` merges; merge i creates token 256 + i.
pub fn train(words: Words, num_merges: usize) -> Vec<(u32, u32)> {
    let mut t = Trainer::new(words);
    let mut merges = Vec::with_capacity(num_merges);
    for i in 0..num_merges {
        match t.step(256 + i as u32) {
            Some(m) => merges.push(m),
            None => break,
        }
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[(&str, u64)], n: usize) -> Vec<(u32, u32)> {
        let mut words = Words::new();
        for (c, k) in chunks {
            words.push(c.as_bytes(), *k);
        }
        train(words, n)
    }

    #[test]
    fn ties_go_to_the_smaller_pair() {
        // "ab" and "cd" both occur 3 times: (a, b) first.
        assert_eq!(run(&[("cd", 3), ("ab", 3)], 1), vec![(b'a' as u32, b'b' as u32)]);
    }

    #[test]
    fn overlapping_pairs() {
        // "aaaa" -> (a,a) x3; merge -> [A, A] -> (A, A).
        assert_eq!(run(&[("aaaa", 1)], 5), vec![(97, 97), (256, 256)]);
        // "aaa" -> [A, a]; then (A, a).
        assert_eq!(run(&[("aaa", 1)], 5), vec![(97, 97), (256, 97)]);
    }

    #[test]
    fn stops_when_no_pairs_left() {
        assert_eq!(run(&[("ab", 2), ("x", 9)], 10), vec![(97, 98)]);
        assert_eq!(run(&[], 10), vec![]);
    }
}
