//! Pre-tokenization: a hand-written scanner for the GPT-4 split pattern (digits in groups of
//! `max_digits`: 2 for nanochat, 3 for GPT-4):
//!
//! ```text
//! '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+
//! ```
//!
//! `next_end` tries the alternatives in order, exactly like the regex engine (leftmost-first),
//! and returns where the chunk starting at `i` ends. Every character falls in one of four classes
//! (letter, number, white space, other) taken from `unicode_tables.rs`, which is generated from
//! tiktoken's regex engine so the two can never disagree.

use crate::unicode_tables::RANGES;

pub const OTHER: u8 = 0;
pub const LETTER: u8 = 1;
pub const NUMBER: u8 = 2;
pub const SPACE: u8 = 3;

/// Direct lookup for code points below U+0800 (ASCII, Latin, Greek, Cyrillic, Hebrew, Arabic...),
/// built at compile time from the ranges; everything else is a binary search.
const LOW_LIMIT: u32 = 0x800;
static LOW: [u8; LOW_LIMIT as usize] = build_low();

const fn build_low() -> [u8; LOW_LIMIT as usize] {
    let mut table = [OTHER; LOW_LIMIT as usize];
    let mut k = 0;
    while k < RANGES.len() {
        let (first, last, class) = RANGES[k];
        let mut cp = first;
        while cp <= last && cp < LOW_LIMIT {
            table[cp as usize] = class;
            cp += 1;
        }
        k += 1;
    }
    table
}

#[inline]
pub fn class_of(cp: u32) -> u8 {
    if cp < LOW_LIMIT {
        return LOW[cp as usize];
    }
    let k = RANGES.partition_point(|r| r.0 <= cp);
    if k > 0 && cp <= RANGES[k - 1].1 {
        RANGES[k - 1].2
    } else {
        OTHER
    }
}

/// Class and byte length of the character at `s[i]` (`s` is valid UTF-8, `i` a char boundary).
#[inline(always)]
fn class_at(s: &[u8], i: usize) -> (u8, usize) {
    let b0 = s[i];
    if b0 < 0x80 {
        return (LOW[b0 as usize], 1);
    }
    let (cp, len) = if b0 < 0xE0 {
        (((b0 as u32 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (((b0 as u32 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F), 3)
    } else {
        let cp = ((b0 as u32 & 0x07) << 18)
            | ((s[i + 1] as u32 & 0x3F) << 12)
            | ((s[i + 2] as u32 & 0x3F) << 6)
            | (s[i + 3] as u32 & 0x3F);
        (cp, 4)
    };
    (class_of(cp), len)
}

#[inline(always)]
fn is_newline(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// End of the run of characters of `class` starting at `i`.
#[inline(always)]
fn run_end(s: &[u8], mut i: usize, class: u8) -> usize {
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            if LOW[b as usize] != class {
                break;
            }
            i += 1;
        } else {
            let (c, len) = class_at(s, i);
            if c != class {
                break;
            }
            i += len;
        }
    }
    i
}

/// `'(?i:[sdmt]|ll|ve|re)` after the apostrophe at `i - 1`: the length matched, if any.
/// Case-insensitive matching folds 's' with U+017F (long s, UTF-8 C5 BF) too.
#[inline]
fn contraction(s: &[u8], i: usize) -> usize {
    let at = |k: usize| s.get(i + k).map_or(0, |b| b.to_ascii_lowercase());
    match at(0) {
        b's' | b'd' | b'm' | b't' => 1,
        b'l' if at(1) == b'l' => 2,
        b'v' | b'r' if at(1) == b'e' => 2,
        0xC5 if s.get(i + 1) == Some(&0xBF) => 2,
        _ => 0,
    }
}

/// Where the chunk that starts at `i` ends (`i < s.len()`).
pub fn next_end(s: &[u8], i: usize, max_digits: u32) -> usize {
    let n = s.len();
    let (c0, l0) = class_at(s, i);

    // '(?i:[sdmt]|ll|ve|re)
    if s[i] == b'\'' {
        let len = contraction(s, i + 1);
        if len > 0 {
            return i + 1 + len;
        }
    }
    // [^\r\n\p{L}\p{N}]?+\p{L}+
    if c0 == LETTER {
        return run_end(s, i + l0, LETTER);
    }
    if c0 != NUMBER && !is_newline(s[i]) && i + l0 < n {
        let (c1, l1) = class_at(s, i + l0);
        if c1 == LETTER {
            return run_end(s, i + l0 + l1, LETTER);
        }
    }
    // \p{N}{1,max_digits}
    if c0 == NUMBER {
        let mut j = i + l0;
        let mut digits = 1;
        while digits < max_digits && j < n {
            let (c, len) = class_at(s, j);
            if c != NUMBER {
                break;
            }
            j += len;
            digits += 1;
        }
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]++[\r\n]*` (the optional space is only taken if punctuation follows)
    let start = if s[i] == b' ' && i + 1 < n && class_at(s, i + 1).0 == OTHER { i + 1 } else { i };
    if class_at(s, start).0 == OTHER {
        let mut j = run_end(s, start, OTHER);
        while j < n && is_newline(s[j]) {
            j += 1;
        }
        return j;
    }
    // Only white space is left. Walk its run once, remembering the end of the last \r or \n
    // and where the last character starts.
    let mut j = i;
    let mut newline_end = 0;
    let mut last_start = i;
    while j < n {
        let (c, len) = class_at(s, j);
        if c != SPACE {
            break;
        }
        last_start = j;
        j += len;
        if is_newline(s[last_start]) {
            newline_end = j;
        }
    }
    // \s*[\r\n]: as far as the last newline of the run
    if newline_end > 0 {
        return newline_end;
    }
    // \s+(?!\S): the whole run at the end of the text, else all but its last character
    if j == n || last_start == i {
        return j; // (a single space before a non-space falls through to \s+: the same chunk)
    }
    last_start
}

/// Iterator over the chunks of a UTF-8 string.
pub struct Chunks<'a> {
    s: &'a [u8],
    i: usize,
    max_digits: u32,
}

impl<'a> Chunks<'a> {
    pub fn new(text: &'a str, max_digits: u32) -> Self {
        Chunks { s: text.as_bytes(), i: 0, max_digits }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.i >= self.s.len() {
            return None;
        }
        let start = self.i;
        self.i = next_end(self.s, start, self.max_digits);
        Some(&self.s[start..self.i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        Chunks::new(text, 2).map(|c| std::str::from_utf8(c).unwrap()).collect()
    }

    #[test]
    fn splits_like_gpt4() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("I'm 12345 ok"), ["I", "'m", " ", "12", "34", "5", " ok"]);
        assert_eq!(split("a  b\n\n c"), ["a", " ", " b", "\n\n", " c"]);
        assert_eq!(split("x !!\r\n\ny  "), ["x", " !!\r\n\n", "y", "  "]);
        assert_eq!(split("'S'ſ'LL'Ve"), ["'S", "'ſ", "'LL", "'Ve"]);
        assert_eq!(split(""), Vec::<&str>::new());
    }

    #[test]
    fn classes() {
        assert_eq!(class_of('a' as u32), LETTER);
        assert_eq!(class_of('中' as u32), LETTER);
        assert_eq!(class_of('٣' as u32), NUMBER);
        assert_eq!(class_of(0x3000), SPACE);
        assert_eq!(class_of('😀' as u32), OTHER);
        assert_eq!(class_of(0x1C), OTHER); // not white space for the regex engine (it is for Python)
    }
}
