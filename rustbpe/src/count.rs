//! Counting chunks: documents -> {chunk bytes: count}, in parallel, with bounded memory.
//!
//! Each thread owns one `ChunkTable` for the whole run and counts its share of every batch into
//! it; the tables are summed once, when training starts. A chunk table is an open-addressing hash
//! table whose keys live in one byte arena, and chunks of up to 8 bytes (most English chunks)
//! live inside the slot itself, so counting a chunk is one hash and usually one compare.

use crate::scan::Chunks;

const K: u64 = 0x517c_c1b7_2722_0a95; // FxHash's multiplier

#[inline(always)]
fn pack8(bytes: &[u8]) -> [u8; 8] {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    buf
}

#[inline(always)]
fn hash_chunk(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(pack8(rest))).wrapping_mul(K);
    }
    // Final mix so both the top bits (slot index) and the low bits (tag) depend on every byte.
    h ^= h >> 31;
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,     // low hash bits, or 0 for an empty slot
    len: u32,     // chunk length in bytes
    key: [u8; 8], // the bytes themselves if len <= 8, else the arena offset (little-endian)
    count: u64,
}

pub struct ChunkTable {
    slots: Vec<Slot>,
    arena: Vec<u8>,
    used: usize,
    shift: u32, // slot index = hash >> shift
}

impl Default for ChunkTable {
    fn default() -> Self {
        Self::with_capacity_log2(12)
    }
}

impl ChunkTable {
    fn with_capacity_log2(bits: u32) -> Self {
        ChunkTable { slots: vec![Slot::default(); 1 << bits], arena: Vec::new(), used: 0, shift: 64 - bits }
    }

    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    #[inline(always)]
    fn key_bytes<'a>(&'a self, slot: &'a Slot) -> &'a [u8] {
        let len = slot.len as usize;
        if len <= 8 {
            &slot.key[..len]
        } else {
            let off = u64::from_le_bytes(slot.key) as usize;
            &self.arena[off..off + len]
        }
    }

    /// Add `count` to `chunk`.
    #[inline]
    pub fn add(&mut self, chunk: &[u8], count: u64) {
        let h = hash_chunk(chunk);
        let tag = (h as u32) | 1;
        let mask = self.slots.len() - 1;
        let mut i = (h >> self.shift) as usize;
        let small = chunk.len() <= 8;
        let packed = if small { pack8(chunk) } else { [0; 8] };
        loop {
            let slot = &self.slots[i];
            if slot.tag == 0 {
                break;
            }
            if slot.tag == tag && slot.len as usize == chunk.len() {
                let same = if small {
                    slot.key == packed
                } else {
                    let off = u64::from_le_bytes(slot.key) as usize;
                    &self.arena[off..off + chunk.len()] == chunk
                };
                if same {
                    self.slots[i].count += count;
                    return;
                }
            }
            i = (i + 1) & mask;
        }
        let key = if small {
            packed
        } else {
            self.arena.extend_from_slice(chunk);
            ((self.arena.len() - chunk.len()) as u64).to_le_bytes()
        };
        self.slots[i] = Slot { tag, len: chunk.len() as u32, key, count };
        self.used += 1;
        if self.used * 4 > self.slots.len() * 3 {
            self.grow();
        }
    }

    fn grow(&mut self) {
        let bits = 64 - self.shift + 1;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); 1 << bits]);
        self.shift = 64 - bits;
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.tag != 0) {
            let mut i = (hash_chunk(self.key_bytes(&slot)) >> self.shift) as usize;
            while self.slots[i].tag != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Every (chunk, count), in table order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], u64)) {
        for slot in self.slots.iter().filter(|s| s.tag != 0) {
            f(self.key_bytes(slot), slot.count);
        }
    }

    /// Add every entry of `other` into `self` (consumes `other` to free its memory).
    pub fn absorb(&mut self, other: ChunkTable) {
        other.for_each(|chunk, count| self.add(chunk, count));
    }
}

/// Statistics of what was counted, reported back to Python.
#[derive(Clone, Copy, Default, Debug)]
pub struct Stats {
    pub documents: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub invalid_documents: u64, // documents that were not valid UTF-8
    pub invalid_sequences: u64, // invalid byte sequences replaced by U+FFFD
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.documents += o.documents;
        self.bytes += o.bytes;
        self.chunks += o.chunks;
        self.invalid_documents += o.invalid_documents;
        self.invalid_sequences += o.invalid_sequences;
    }
}

/// Count the chunks of one document (or one piece of a big one; see `count_batch`). Invalid UTF-8
/// is replaced by U+FFFD (one per invalid sequence, as `String::from_utf8_lossy` and Python's
/// `errors="replace"` both do).
fn count_document(doc: &[u8], max_digits: u32, table: &mut ChunkTable, stats: &mut Stats) {
    let fixed;
    let text = match std::str::from_utf8(doc) {
        Ok(text) => text,
        Err(_) => {
            fixed = replace_invalid(doc, stats);
            &fixed
        }
    };
    for chunk in Chunks::new(text, max_digits) {
        table.add(chunk, 1);
        stats.chunks += 1;
    }
}

fn replace_invalid(doc: &[u8], stats: &mut Stats) -> String {
    stats.invalid_documents += 1;
    stats.invalid_sequences += doc.utf8_chunks().filter(|c| !c.invalid().is_empty()).count() as u64;
    String::from_utf8_lossy(doc).into_owned()
}

/// Documents larger than this are cut into pieces so threads share the work evenly. Cuts go only
/// between "\n" and an ASCII letter: no chunk of the split pattern ever spans such a place.
const PIECE: usize = 1 << 20;

fn pieces(doc: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while doc.len() - start > PIECE {
        let from = start + PIECE;
        let cut = (from..doc.len() - 1).find(|&k| doc[k] == b'\n' && doc[k + 1].is_ascii_alphabetic());
        match cut {
            Some(k) => {
                out.push(&doc[start..k + 1]);
                start = k + 1;
            }
            None => break,
        }
    }
    out.push(&doc[start..]);
    out
}

/// Count a batch of documents on `tables.len()` threads, each into its own table.
pub fn count_batch(docs: &[&[u8]], max_digits: u32, tables: &mut [ChunkTable], stats: &mut Stats) {
    let total: usize = docs.iter().map(|d| d.len()).sum();
    stats.documents += docs.len() as u64;
    stats.bytes += total as u64;
    let threads = tables.len().max(1);
    if threads == 1 || total < (64 << 10) {
        for doc in docs {
            count_document(doc, max_digits, &mut tables[0], stats);
        }
        return;
    }
    // Big documents are cut into pieces; those that are not valid UTF-8 are repaired first, whole,
    // so a cut never lands inside an invalid sequence and each is counted once.
    let repaired: Vec<Option<String>> = docs
        .iter()
        .map(|d| (d.len() > PIECE && std::str::from_utf8(d).is_err()).then(|| replace_invalid(d, stats)))
        .collect();
    let mut units: Vec<&[u8]> = Vec::with_capacity(docs.len());
    for (doc, fixed) in docs.iter().zip(&repaired) {
        let doc = fixed.as_ref().map_or(*doc, |s| s.as_bytes());
        if doc.len() > PIECE {
            units.extend(pieces(doc));
        } else {
            units.push(doc);
        }
    }
    // Then `threads` runs of units of about equal bytes.
    let mut left: usize = units.iter().map(|u| u.len()).sum();
    let mut groups: Vec<&[&[u8]]> = Vec::with_capacity(threads);
    let mut rest = &units[..];
    for t in 0..threads {
        let target = left / (threads - t);
        let (mut k, mut sum) = (0, 0);
        while k < rest.len() && (sum < target || t == threads - 1) {
            sum += rest[k].len();
            k += 1;
        }
        groups.push(&rest[..k]);
        rest = &rest[k..];
        left -= sum;
    }
    let mut thread_stats = vec![Stats::default(); threads];
    std::thread::scope(|scope| {
        for ((group, table), st) in groups.iter().zip(tables.iter_mut()).zip(thread_stats.iter_mut()) {
            scope.spawn(move || {
                for unit in group.iter() {
                    count_document(unit, max_digits, table, st);
                }
            });
        }
    });
    for st in &thread_stats {
        stats.add(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(t: &ChunkTable) -> Vec<(Vec<u8>, u64)> {
        let mut v = Vec::new();
        t.for_each(|c, n| v.push((c.to_vec(), n)));
        v.sort();
        v
    }

    #[test]
    fn table_counts_and_grows() {
        let mut t = ChunkTable::default();
        for i in 0..20_000u32 {
            let key = format!("chunk-{}", i % 5000);
            t.add(key.as_bytes(), 1);
            t.add(&key.as_bytes()[..3], 2);
        }
        assert_eq!(t.len(), 5001);
        let all = collect(&t);
        assert_eq!(all.iter().find(|(c, _)| c == b"chu").unwrap().1, 40_000);
        assert_eq!(all.iter().find(|(c, _)| c == b"chunk-42").unwrap().1, 4);
        assert_eq!(all.iter().find(|(c, _)| c == b"chunk-4242").unwrap().1, 4);
    }

    #[test]
    fn threads_count_the_same() {
        // Many small documents plus one big enough to be cut into pieces.
        let text = "Hello world, hello again!\nNumbers 12345 and 'quotes' too.\n".repeat(20_000);
        let mut docs: Vec<&[u8]> = text.as_bytes()[..300_000].chunks(997).collect();
        docs.push(text.as_bytes());
        let mut one = vec![ChunkTable::default()];
        let mut four: Vec<ChunkTable> = (0..4).map(|_| ChunkTable::default()).collect();
        let (mut s1, mut s4) = (Stats::default(), Stats::default());
        count_batch(&docs, 2, &mut one, &mut s1);
        count_batch(&docs, 2, &mut four, &mut s4);
        let mut merged = four.pop().unwrap();
        for t in four {
            merged.absorb(t);
        }
        assert_eq!(collect(&one[0]), collect(&merged));
        assert_eq!((s1.documents, s1.bytes, s1.chunks), (s4.documents, s4.bytes, s4.chunks));
    }

    #[test]
    fn a_big_invalid_document_is_repaired_once() {
        let mut text = "word and more words\n".repeat(120_000).into_bytes(); // 2.4 MB
        text[1_500_000] = 0xFF;
        text[2_000_000] = 0xC3;
        let docs: Vec<&[u8]> = vec![&text];
        let mut one = vec![ChunkTable::default()];
        let mut two: Vec<ChunkTable> = (0..2).map(|_| ChunkTable::default()).collect();
        let (mut s1, mut s2) = (Stats::default(), Stats::default());
        count_batch(&docs, 2, &mut one, &mut s1);
        count_batch(&docs, 2, &mut two, &mut s2);
        let mut merged = two.pop().unwrap();
        merged.absorb(two.pop().unwrap());
        assert_eq!(collect(&one[0]), collect(&merged));
        assert_eq!((s2.documents, s2.invalid_documents, s2.invalid_sequences), (1, 1, 2));
        assert_eq!((s1.chunks, s1.invalid_documents), (s2.chunks, 1));
    }
}
