"""Byte-level BPE in plain Python: the readable reference (and fallback) for the Rust trainer.

Three pieces, each small enough to trust:

1. Character classes. The split pattern uses \\p{L}, \\p{N} and \\s. The tokenizer splits text with
   tiktoken's regex engine at inference time, so we take the classes from that very engine (probing
   every code point once) instead of from `unicodedata`, whose Unicode version follows the Python
   release (3.11 ships Unicode 14; tiktoken's engine is newer and knows ~9,000 more letters).
2. Pre-tokenization. The pattern is rewritten for the standard `re` module by spelling those three
   classes out as explicit ranges (`re` has no \\p{..} and its \\s differs). Patterns using other
   Unicode properties need the third-party `regex` module.
3. Training. `train_merges` is the slow, obviously correct version of the Rust loop: each step
   scans every pair count for the best one (higher count first, then the smaller pair (a, b)),
   and every word that contains it is taken out of the counts whole, rewritten left to right
   without overlaps, and put back whole. It is the oracle the Rust trainer is tested against.
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Callable, Iterable

# GPT-4's pattern with numbers in groups of 1-2 digits (nanochat's choice; 1-3 in GPT-4).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


# ---------------------------------------------------------------------------------------------
# 1. Character classes, straight from tiktoken's regex engine

def _all_code_points() -> str:
    # Surrogates cannot be encoded to UTF-8 and belong to no class anyway.
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))


def _ranges(chars: Iterable[str]) -> list[tuple[int, int]]:
    """Sorted code points -> inclusive (first, last) ranges."""
    out: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if out and out[-1][1] + 1 == cp:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [(a, b) for a, b in out]


@functools.lru_cache(maxsize=1)
def char_class_ranges() -> dict[str, list[tuple[int, int]]]:
    """{"L": ranges, "N": ranges, "S": ranges} for \\p{L}, \\p{N} and \\s as tiktoken's engine sees them.

    tiktoken only emits the text its pattern matches, so encoding every code point with the
    pattern `\\p{L}` (and a byte-level vocabulary) and decoding gives back exactly the letters.
    """
    import tiktoken

    byte_ranks = {bytes([i]): i for i in range(256)}
    text = _all_code_points()
    classes = {}
    for name, pattern in (("L", r"\p{L}"), ("N", r"\p{N}"), ("S", r"\s")):
        enc = tiktoken.Encoding(f"probe-{name}", pat_str=pattern, mergeable_ranks=byte_ranks, special_tokens={})
        members = enc.decode_bytes(enc.encode_ordinary(text)).decode("utf-8")
        classes[name] = _ranges(members)
    return classes


def _class_body(ranges: list[tuple[int, int]]) -> str:
    """Ranges -> the inside of a `re` character class, e.g. 'A-Za-z'."""
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )


# ---------------------------------------------------------------------------------------------
# 2. Pre-tokenization

def _translate(pattern: str) -> str | None:
    """Rewrite \\p{L}, \\p{N}, \\s, \\S for the stdlib `re`; None if the pattern needs more than that."""
    if re.search(r"\\[pP]\{(?![LN]\})", pattern) or r"\P{" in pattern:
        return None
    cls = char_class_ranges()
    body = {"L": _class_body(cls["L"]), "N": _class_body(cls["N"]), "S": _class_body(cls["S"])}
    out, i, depth = [], 0, 0  # depth > 0 while inside [...]
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            tok = pattern[i : i + 5] if pattern[i + 1] == "p" else pattern[i : i + 2]
            if tok in (r"\p{L}", r"\p{N}"):
                b = body[tok[3]]
                out.append(b if depth else f"[{b}]")
                i += 5
                continue
            if tok == r"\s":
                out.append(body["S"] if depth else f"[{body['S']}]")
            elif tok == r"\S":
                if depth:
                    return None  # [\S...] would need set subtraction; not used by our patterns
                out.append(f"[^{body['S']}]")
            else:
                out.append(tok)
            i += 2
            continue
        if ch == "[" and not depth:
            depth = 1
            out.append(ch)
            i += 1
            if i < len(pattern) and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < len(pattern) and pattern[i] == "]":  # a literal ']' first in a class
                out.append(r"\]")
                i += 1
            continue
        if ch == "]" and depth:
            depth = 0
        out.append(ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=8)
def compile_pattern(pattern: str) -> Callable[[str], list[str]]:
    """A function text -> list of pre-tokens (chunks) that splits exactly as tiktoken would.

    Raises ValueError if the pattern needs the `regex` module and it is not installed. (Check that
    the pattern compiles at all with tiktoken first: this function assumes it does.)
    """
    translated = _translate(pattern)
    if translated is not None:
        try:
            compiled = re.compile(translated)  # possessive quantifiers need Python >= 3.11
        except re.error:
            compiled = None
        if compiled is not None and compiled.groups == 0:
            return compiled.findall
    try:
        import regex  # third-party; knows every \p{...}, but its Unicode version may differ from tiktoken's
    except ImportError:
        raise ValueError(
            f"split pattern {pattern!r} uses Unicode properties other than \\p{{L}}/\\p{{N}}; "
            "the pure-Python pre-tokenizer needs the `regex` module for it: pip install regex"
        ) from None
    compiled = regex.compile(pattern)
    return lambda text: [m.group(0) for m in compiled.finditer(text)]


def tiktoken_split(text: str, pattern: str = SPLIT_PATTERN) -> list[bytes]:
    """The chunks tiktoken itself cuts `text` into: the exact oracle for tests (short texts only).

    tiktoken looks each chunk up whole before running BPE on it; with a vocabulary holding every
    substring of the text, every chunk comes back as one token, and decoding the tokens one by one
    gives the chunks. The cost is quadratic in the text's length.
    """
    import tiktoken

    data = text.encode("utf-8")
    subs = {data[i:j] for i in range(len(data)) for j in range(i + 1, len(data) + 1)} | {bytes([b]) for b in range(256)}
    enc = tiktoken.Encoding("oracle", pat_str=pattern, mergeable_ranks={s: r for r, s in enumerate(subs)}, special_tokens={})
    return [enc.decode_single_token_bytes(t) for t in enc.encode_ordinary(text)]


def to_utf8(text: str) -> tuple[bytes, bool]:
    """UTF-8 bytes of `text`, and whether lone surrogates had to be replaced.

    Replacement follows tiktoken's encode exactly (a UTF-16 round trip with 'replace'), so training
    sees the same characters the tokenizer will see.
    """
    try:
        return text.encode("utf-8"), False
    except UnicodeEncodeError:
        fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return fixed.encode("utf-8"), True


def count_chunks(docs: Iterable[str | bytes], pattern: str = SPLIT_PATTERN, counts: Counter | None = None) -> Counter:
    """Count the pre-tokens (as UTF-8 bytes) of every document. Bytes documents that are not valid
    UTF-8 are decoded with U+FFFD replacement (as the Rust trainer does)."""
    split = compile_pattern(pattern)
    counts = Counter() if counts is None else counts
    for doc in docs:
        text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else to_utf8(doc)[0].decode("utf-8")
        counts.update(chunk.encode("utf-8") for chunk in split(text))
    return counts


# ---------------------------------------------------------------------------------------------
# 3. Training

def merge_word(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, left to right, without overlaps."""
    a, b = pair
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(chunk_counts: dict[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges from {chunk bytes: count}; merge i creates token id 256 + i.

    Stops early when no pair is left (every chunk is a single token).
    """
    words = [list(chunk) for chunk in chunk_counts]
    counts = list(chunk_counts.values())
    pair_counts: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = {}  # pair -> words it was ever seen in

    def tally(w: int, sign: int) -> None:  # add (or remove) every pair of word w
        for pair in zip(words[w], words[w][1:]):
            pair_counts[pair] += sign * counts[w]
            where.setdefault(pair, set()).add(w)

    for w in range(len(words)):
        tally(w, +1)
    merges: list[tuple[int, int]] = []
    for i in range(num_merges):
        top = max(pair_counts.values(), default=0)
        if top <= 0:
            break
        best = min(p for p, n in pair_counts.items() if n == top)
        merges.append(best)
        for w in sorted(where.pop(best)):
            if best in zip(words[w], words[w][1:]):
                tally(w, -1)
                words[w] = merge_word(words[w], best, 256 + i)
                tally(w, +1)
        pair_counts = +pair_counts  # drop pairs whose count fell to zero
    return merges


def train(docs: Iterable[str | bytes], num_merges: int, pattern: str = SPLIT_PATTERN) -> list[tuple[int, int]]:
    """Pre-tokenize, count and train in one call (small inputs only: this is the slow reference)."""
    return train_merges(count_chunks(docs, pattern), num_merges)


def token_bytes_from_merges(merges: Iterable[tuple[int, int]]) -> list[bytes]:
    """The bytes of every BPE token in id order: 256 single bytes, then one token per merge."""
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab
