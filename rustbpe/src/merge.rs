//! Learning merges from counted chunks ("words").
//!
//! Every unique chunk becomes a word: its bytes as token ids, with its count. For every adjacent
//! pair we keep its total count (summed over words, weighted by word count) and the words it
//! occurs in. Each step takes the best pair from a lazy queue (higher count first, then the
//! smaller pair), rewrites only the words listed for it, and updates the counts of just the pairs
//! around each rewrite. Queue entries are never updated in place: a popped entry whose count is
//! stale is filed again with the true count.
//!
//! Speed comes from memory layout: a word is one contiguous run `[len, count_lo, count_hi, ids...]`
//! in a single arena (one cache miss per visit, and the next words are prefetched), and the count
//! changes of a step are summed in flat arrays indexed by the neighbouring token before they touch
//! the pair hash map.

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
    words: WordList, // handles of the words this pair occurs (or occurred) in, ascending
}

/// A list of word handles. Most pairs occur in only a few words, so up to `INLINE` handles live
/// inside the list itself: the hundreds of thousands of rare pairs cost no allocation (and no free).
enum WordList {
    Inline(u8, [u32; INLINE]),
    Heap(Vec<u32>),
}

const INLINE: usize = 4;

impl Default for WordList {
    fn default() -> Self {
        WordList::Inline(0, [0; INLINE])
    }
}

impl WordList {
    fn as_slice(&self) -> &[u32] {
        match self {
            WordList::Inline(n, items) => &items[..*n as usize],
            WordList::Heap(v) => v,
        }
    }

    /// Append `h` unless it is already the last handle.
    #[inline]
    fn push_new(&mut self, h: u32) {
        match self {
            WordList::Inline(n, items) => {
                let len = *n as usize;
                if len > 0 && items[len - 1] == h {
                    return;
                }
                if len < INLINE {
                    items[len] = h;
                    *n += 1;
                } else {
                    let mut v = Vec::with_capacity(2 * INLINE);
                    v.extend_from_slice(items);
                    v.push(h);
                    *self = WordList::Heap(v);
                }
            }
            WordList::Heap(v) => {
                if v.last() != Some(&h) {
                    v.push(h);
                }
            }
        }
    }

    /// Take the handles out of `v`: copied inline if few (`v` keeps its memory for reuse), else moved.
    fn take_from(v: &mut Vec<u32>) -> Self {
        if v.len() <= INLINE {
            let mut items = [0; INLINE];
            items[..v.len()].copy_from_slice(v);
            let list = WordList::Inline(v.len() as u8, items);
            v.clear();
            list
        } else {
            WordList::Heap(std::mem::take(v))
        }
    }
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

/// Candidates for the next merge: a lazy max-heap, plus plain buckets for low counts.
///
/// A pair's count never grows once it is filed, and the best count never grows either (a new pair
/// (x, new) cannot occur more often than the pair it came from). So a pair with a low count can
/// wait in a bucket until the best count comes down to it; most pairs are rare, and the heap stays
/// small. Entries may be stale (the count dropped since): `pop` files those again.
struct Queue {
    heap: BinaryHeap<Candidate>,
    buckets: Vec<Vec<u64>>, // buckets[c]: pairs filed with count c < LOW
    top_bucket: usize,      // every bucket above this one is empty
}

const LOW: usize = 1024;

impl Queue {
    fn new() -> Self {
        Queue { heap: BinaryHeap::new(), buckets: vec![Vec::new(); LOW], top_bucket: 0 }
    }

    /// File `pair` with `count` (> 0).
    fn push(&mut self, count: i64, pair: u64) {
        if (count as u64) < LOW as u64 {
            self.buckets[count as usize].push(pair);
            self.top_bucket = self.top_bucket.max(count as usize);
        } else {
            self.heap.push(Candidate { count, pair });
        }
    }

    /// The best pair whose filed count is its current count; None when no pair is left.
    /// Pairs found with count 0 are dropped from `pairs`.
    fn pop(&mut self, pairs: &mut PairMap<PairStats>) -> Option<u64> {
        loop {
            // Move into the heap every bucket that may hold the best pair (ties included).
            let mut heap_top = self.heap.peek().map_or(0, |c| c.count);
            while self.top_bucket > 0 && self.top_bucket as i64 >= heap_top {
                let k = self.top_bucket;
                for pair in std::mem::take(&mut self.buckets[k]) {
                    self.heap.push(Candidate { count: k as i64, pair });
                    heap_top = k as i64;
                }
                self.top_bucket -= 1;
            }
            let top = self.heap.pop()?;
            let now = pairs.get(&top.pair).map_or(0, |st| st.count);
            if now == top.count && now > 0 {
                return Some(top.pair);
            }
            if now > 0 {
                self.push(now, top.pair);
            } else {
                pairs.remove(&top.pair);
            }
        }
    }
}

const HEADER: usize = 3; // len, count (low 32 bits), count (high 32 bits)

/// All words in one arena; a word's handle is the index of its header.
#[derive(Default)]
pub struct Words {
    data: Vec<u32>,
    handles: Vec<u32>,
}

impl Words {
    /// Add a chunk; single bytes are skipped (they hold no pair and never change).
    /// False if the arena is full (handles are u32: about 16 GB of words).
    pub fn push(&mut self, chunk: &[u8], count: u64) -> bool {
        if chunk.len() < 2 || count == 0 {
            return true;
        }
        if self.data.len() + HEADER + chunk.len() > u32::MAX as usize {
            return false;
        }
        self.handles.push(self.data.len() as u32);
        self.data.extend([chunk.len() as u32, count as u32, (count >> 32) as u32]);
        self.data.extend(chunk.iter().map(|&b| b as u32));
        true
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

#[inline(always)]
fn prefetch(data: &[u32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if at < data.len() {
        // SAFETY: a prefetch is only a hint; the address is in bounds anyway.
        unsafe { std::arch::x86_64::_mm_prefetch(data.as_ptr().add(at) as *const i8, std::arch::x86_64::_MM_HINT_T0) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at); // elsewhere: no hint, same result
}

/// The changes of one step, gathered per neighbouring token before they reach the hash map:
/// a merge site `x a b y -> x new y` moves the word's count from (x, a) to (x, new) and from
/// (b, y) to (new, y). `left[x]` / `right[y]` sum those counts and list the words (ascending, as
/// they are visited) where the new pairs (x, new) / (new, y) were born.
struct Side {
    sum: Vec<i64>,
    words: Vec<Vec<u32>>,
    touched: Vec<u32>,
}

impl Side {
    fn new(vocab: usize) -> Self {
        Side { sum: vec![0; vocab], words: vec![Vec::new(); vocab], touched: Vec::new() }
    }

    #[inline(always)]
    fn add(&mut self, token: u32, c: i64, h: u32) {
        let t = token as usize;
        if self.sum[t] == 0 {
            self.touched.push(token);
        }
        self.sum[t] += c;
        if self.words[t].last() != Some(&h) {
            self.words[t].push(h);
        }
    }
}

struct Trainer {
    data: Vec<u32>,
    pairs: PairMap<PairStats>,
    queue: Queue,
    left: Side,
    right: Side,
}

impl Trainer {
    fn new(words: Words, vocab: usize) -> Self {
        let Words { data, handles } = words;
        let mut pairs: PairMap<PairStats> = PairMap::default();
        for &h in &handles {
            let at = h as usize;
            let (n, c) = (data[at] as usize, count(&data, at));
            for k in at + HEADER..at + HEADER + n - 1 {
                let st = pairs.entry(pair(data[k], data[k + 1])).or_default();
                st.count += c;
                st.words.push_new(h);
            }
        }
        let mut queue = Queue::new();
        for (&p, st) in &pairs {
            queue.push(st.count, p);
        }
        Trainer { data, pairs, queue, left: Side::new(vocab), right: Side::new(vocab) }
    }

    /// Replace pair (a, b) by `new` in the word at `h`, left to right, recording the count changes.
    #[inline]
    fn merge_word(&mut self, h: u32, a: u32, b: u32, new: u32) {
        let at = h as usize;
        let (n, c) = (self.data[at] as usize, count(&self.data, at));
        let ids = &mut self.data[at + HEADER..at + HEADER + n];
        let Some(first) = ids.windows(2).position(|w| w[0] == a && w[1] == b) else {
            return; // a stale entry: an earlier merge took this occurrence
        };
        let (mut read, mut write) = (first, first);
        while read < n {
            let x = ids[read];
            if x == a && read + 1 < n && ids[read + 1] == b {
                if write > 0 {
                    self.left.add(ids[write - 1], c, h); // already rewritten: may be `new`
                }
                if read + 2 < n {
                    self.right.add(ids[read + 2], c, h); // not rewritten yet: never `new`
                }
                ids[write] = new;
                read += 2;
            } else {
                ids[write] = x;
                read += 1;
            }
            write += 1;
        }
        self.data[at] = write as u32;
    }

    #[inline]
    fn bump(&mut self, p: u64, delta: i64) {
        self.pairs.entry(p).or_default().count += delta;
    }

    fn step(&mut self, new: u32) -> Option<(u32, u32)> {
        let p = self.queue.pop(&mut self.pairs)?;
        let (a, b) = ((p >> 32) as u32, p as u32);
        let stats = self.pairs.remove(&p).expect("the best pair has stats");
        const AHEAD: usize = 8;
        let words = stats.words.as_slice();
        for (k, &h) in words.iter().enumerate() {
            if let Some(&later) = words.get(k + AHEAD) {
                prefetch(&self.data, later as usize);
            }
            self.merge_word(h, a, b, new);
        }
        // Move the summed counts: (x, a) -> (x, new) and (b, y) -> (new, y).
        let mut born = Vec::with_capacity(self.left.touched.len() + self.right.touched.len());
        for x in std::mem::take(&mut self.left.touched) {
            let c = std::mem::take(&mut self.left.sum[x as usize]);
            self.bump(pair(x, a), -c);
            born.push((pair(x, new), c, WordList::take_from(&mut self.left.words[x as usize])));
        }
        for y in std::mem::take(&mut self.right.touched) {
            let c = std::mem::take(&mut self.right.sum[y as usize]);
            self.bump(pair(b, y), -c);
            born.push((pair(new, y), c, WordList::take_from(&mut self.right.words[y as usize])));
        }
        // Every occurrence of (a, b) is gone (the sums above may have put a count back on it).
        self.pairs.remove(&p);
        // The new pairs are all distinct ((new, new) can only come from the left) and did not
        // exist before, except that a left sum may already have taken some count off (new, y).
        for (q, c, words) in born {
            let count = c + self.pairs.remove(&q).map_or(0, |st| st.count);
            if count > 0 {
                self.pairs.insert(q, PairStats { count, words });
                self.queue.push(count, q);
            }
        }
        Some((a, b))
    }
}

#[inline(always)]
fn count(data: &[u32], at: usize) -> i64 {
    (data[at + 1] as u64 | (data[at + 2] as u64) << 32) as i64
}

/// Learn up to `num_merges` merges; merge i creates token 256 + i.
pub fn train(words: Words, num_merges: usize) -> Vec<(u32, u32)> {
    let mut t = Trainer::new(words, 256 + num_merges);
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
        let mut words = Words::default();
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
    fn ties_across_the_heap_and_the_buckets() {
        let got = run(&[("cd", LOW as u64), ("ab", LOW as u64), ("ef", LOW as u64 - 1), ("zy", LOW as u64 + 1)], 4);
        assert_eq!(got, vec![(b'z' as u32, b'y' as u32), (97, 98), (99, 100), (101, 102)]);
    }

    #[test]
    fn overlapping_pairs() {
        // "aaaa" -> (a,a) x3; merge -> [A, A] -> (A, A).
        assert_eq!(run(&[("aaaa", 1)], 5), vec![(97, 97), (256, 256)]);
        // "aaa" -> [A, a]; then (A, a).
        assert_eq!(run(&[("aaa", 1)], 5), vec![(97, 97), (256, 97)]);
        // "abab" x2 and "ba" x3: (b, a) = 5 wins, then "a" "ba" "b" -> ...
        assert_eq!(run(&[("abab", 2), ("ba", 3)], 1), vec![(98, 97)]);
    }

    #[test]
    fn big_counts_survive_the_arena() {
        assert_eq!(run(&[("ab", 5_000_000_000), ("cd", 4_999_999_999), ("cd", 2)], 2), vec![(99, 100), (97, 98)]);
    }

    #[test]
    fn word_lists_spill_to_the_heap() {
        let mut list = WordList::default();
        for h in [1, 1, 2, 3, 4, 4, 5, 6] {
            list.push_new(h);
        }
        assert_eq!(list.as_slice(), &[1, 2, 3, 4, 5, 6]);
        assert!(std::mem::size_of::<WordList>() <= 32);
    }

    #[test]
    fn stops_when_no_pairs_left() {
        assert_eq!(run(&[("ab", 2), ("x", 9)], 10), vec![(97, 98)]);
        assert_eq!(run(&[], 10), vec![]);
    }
}
