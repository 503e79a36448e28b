//! nanochat's byte-level BPE trainer, standard library only, behind a small C ABI.
//!
//! Python (see python/nanochat_rustbpe/__init__.py) creates a trainer, streams batches of
//! documents into it (each batch is split and counted on several threads, then dropped: only the
//! chunk counts stay in memory), and finally asks for the merges:
//!
//! ```text
//! t = nbpe_new(max_digits, threads)
//! nbpe_add_documents(t, bytes, ends, n)      // many times
//! nbpe_train(t, num_merges, out_pairs)       // once
//! nbpe_free(t)
//! ```
//!
//! The same library carries the CPU decode step's fused kernels (`decode`, `ndec_*`), so one
//! native build serves both.
//!
//! Every entry point catches panics and reports them as a negative return value: a bug must
//! never unwind into (or abort) the Python process.

pub mod count;
pub mod decode;
pub mod loss;
pub mod merge;
pub mod scan;
mod unicode_tables;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::slice;

/// Bumped whenever a signature below changes; the Python binding checks it.
pub const ABI_VERSION: u32 = 2;

pub const OK: i64 = 0;
pub const ERR_ARGS: i64 = -1; // a null pointer, or document ends that do not fit the buffer
pub const ERR_TRAINED: i64 = -2; // the trainer was already used for training
pub const ERR_PANIC: i64 = -3; // a bug: please report it
pub const ERR_TOO_BIG: i64 = -4; // more unique chunks than one training run can hold (~16 GB)

/// A trainer: chunk counts so far, one table per thread.
pub struct Trainer {
    max_digits: u32,
    tables: Vec<count::ChunkTable>,
    stats: count::Stats,
    unique_chunks: u64,
    trained: bool,
}

fn guard(f: impl FnOnce() -> i64) -> i64 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ERR_PANIC)
}

/// Documents `k` of a batch are `buf[ends[k-1]..ends[k]]` (with `ends[-1] = 0`).
fn split_batch<'a>(buf: &'a [u8], ends: &[u64]) -> Option<Vec<&'a [u8]>> {
    let mut docs = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for &end in ends {
        let end = usize::try_from(end).ok()?;
        if end < start || end > buf.len() {
            return None;
        }
        docs.push(&buf[start..end]);
        start = end;
    }
    Some(docs)
}

/// # Safety
/// `ptr` must be null or point to `len` readable items.
unsafe fn view<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        Some(&[])
    } else if ptr.is_null() {
        None
    } else {
        Some(slice::from_raw_parts(ptr, len))
    }
}

#[no_mangle]
pub extern "C" fn nbpe_abi_version() -> u32 {
    ABI_VERSION
}

pub const MAX_THREADS: u32 = 256;

/// A new trainer. `max_digits`: 2 for nanochat's pattern, 3 for GPT-4's (1..=255).
/// `threads`: 0 = all available cores, at most `MAX_THREADS`. Returns null for bad arguments.
#[no_mangle]
pub extern "C" fn nbpe_new(max_digits: u32, threads: u32) -> *mut Trainer {
    if max_digits == 0 || max_digits > 255 || threads > MAX_THREADS {
        return std::ptr::null_mut();
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS as usize))
    } else {
        threads as usize
    };
    let tables = (0..threads).map(|_| count::ChunkTable::default()).collect();
    let t = Trainer { max_digits, tables, stats: count::Stats::default(), unique_chunks: 0, trained: false };
    Box::into_raw(Box::new(t))
}

/// # Safety
/// `t` must come from `nbpe_new` and not be used afterwards (null is ignored).
#[no_mangle]
pub unsafe extern "C" fn nbpe_free(t: *mut Trainer) {
    if !t.is_null() {
        drop(Box::from_raw(t));
    }
}

/// Split and count a batch of `n` UTF-8 documents (invalid UTF-8 is replaced, and counted).
///
/// # Safety
/// `t` from `nbpe_new`; `buf` readable for `buf_len` bytes; `ends` readable for `n` u64s.
#[no_mangle]
pub unsafe extern "C" fn nbpe_add_documents(
    t: *mut Trainer,
    buf: *const u8,
    buf_len: usize,
    ends: *const u64,
    n: usize,
) -> i64 {
    let (Some(t), Some(buf), Some(ends)) = (t.as_mut(), view(buf, buf_len), view(ends, n)) else {
        return ERR_ARGS;
    };
    guard(|| {
        if t.trained {
            return ERR_TRAINED;
        }
        let Some(docs) = split_batch(buf, ends) else { return ERR_ARGS };
        count::count_batch(&docs, t.max_digits, &mut t.tables, &mut t.stats);
        OK
    })
}

/// Add pre-split chunks with their counts (for split patterns the scanner does not implement).
///
/// # Safety
/// As `nbpe_add_documents`, and `counts` readable for `n` u64s.
#[no_mangle]
pub unsafe extern "C" fn nbpe_add_chunks(
    t: *mut Trainer,
    buf: *const u8,
    buf_len: usize,
    ends: *const u64,
    counts: *const u64,
    n: usize,
) -> i64 {
    let (Some(t), Some(buf), Some(ends), Some(counts)) =
        (t.as_mut(), view(buf, buf_len), view(ends, n), view(counts, n))
    else {
        return ERR_ARGS;
    };
    guard(|| {
        if t.trained {
            return ERR_TRAINED;
        }
        let Some(chunks) = split_batch(buf, ends) else { return ERR_ARGS };
        for (chunk, &k) in chunks.iter().zip(counts) {
            t.tables[0].add(chunk, k);
            t.stats.chunks += k;
        }
        OK
    })
}

/// Learn up to `num_merges` merges into `out` (2 u32 per merge: the pair's ids; merge i makes
/// token 256 + i). Returns how many merges were learned (fewer when the text runs out of pairs).
/// A trainer trains once: its chunk counts are consumed.
///
/// # Safety
/// `t` from `nbpe_new`; `out` writable for `2 * num_merges` u32s.
#[no_mangle]
pub unsafe extern "C" fn nbpe_train(t: *mut Trainer, num_merges: u32, out: *mut u32) -> i64 {
    let Some(t) = t.as_mut() else { return ERR_ARGS };
    if out.is_null() && num_merges > 0 {
        return ERR_ARGS;
    }
    let out = if num_merges == 0 { &mut [][..] } else { slice::from_raw_parts_mut(out, 2 * num_merges as usize) };
    guard(|| {
        if t.trained {
            return ERR_TRAINED;
        }
        t.trained = true;
        let mut tables = std::mem::take(&mut t.tables).into_iter();
        let mut all = tables.next().unwrap_or_default();
        for table in tables {
            all.absorb(table);
        }
        t.unique_chunks = all.len() as u64;
        let mut words = merge::Words::default();
        let mut fits = true;
        all.for_each(|chunk, k| fits &= words.push(chunk, k));
        drop(all);
        if !fits {
            return ERR_TOO_BIG;
        }
        let merges = merge::train(words, num_merges as usize);
        for (k, &(a, b)) in merges.iter().enumerate() {
            out[2 * k] = a;
            out[2 * k + 1] = b;
        }
        merges.len() as i64
    })
}

/// Counters so far: documents, bytes, chunks, invalid UTF-8 documents, invalid sequences
/// replaced, unique chunks (known after training). Writes min(n, 6) values; returns 6.
///
/// # Safety
/// `t` from `nbpe_new`; `out` writable for `n` u64s.
#[no_mangle]
pub unsafe extern "C" fn nbpe_stats(t: *const Trainer, out: *mut u64, n: usize) -> i64 {
    let Some(t) = t.as_ref() else { return ERR_ARGS };
    let s = &t.stats;
    let values = [s.documents, s.bytes, s.chunks, s.invalid_documents, s.invalid_sequences, t.unique_chunks];
    if n > 0 && out.is_null() {
        return ERR_ARGS;
    }
    for (k, v) in values.iter().take(n).enumerate() {
        *out.add(k) = *v;
    }
    values.len() as i64
}

/// Split one text (invalid UTF-8 replaced first) and write the end offset of each chunk into
/// `out_ends` (offsets into the text as split, i.e. after replacement). Returns the number of
/// chunks; if it is larger than `cap`, only `cap` were written: call again with more room.
/// For tests and tools; training does not go through here.
///
/// # Safety
/// `buf` readable for `len` bytes; `out_ends` writable for `cap` u64s.
#[no_mangle]
pub unsafe extern "C" fn nbpe_split(
    max_digits: u32,
    buf: *const u8,
    len: usize,
    out_ends: *mut u64,
    cap: usize,
) -> i64 {
    let Some(bytes) = view(buf, len) else { return ERR_ARGS };
    if (cap > 0 && out_ends.is_null()) || max_digits == 0 {
        return ERR_ARGS;
    }
    guard(|| {
        let text = String::from_utf8_lossy(bytes);
        let mut n = 0usize;
        let mut end = 0u64;
        for chunk in scan::Chunks::new(&text, max_digits) {
            end += chunk.len() as u64;
            if n < cap {
                *out_ends.add(n) = end;
            }
            n += 1;
        }
        n as i64
    })
}

/// The scanner's class of a code point: 0 other, 1 letter, 2 number, 3 white space.
/// (Tests compare it with tiktoken's regex engine over every code point.)
#[no_mangle]
pub extern "C" fn nbpe_char_class(cp: u32) -> u8 {
    scan::class_of(cp)
}
