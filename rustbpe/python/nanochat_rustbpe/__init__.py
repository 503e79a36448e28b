"""nanochat's Rust BPE trainer, from Python.

    trainer = Trainer(pattern=NANOCHAT_PATTERN, threads=2)
    for batch in batches_of_documents:      # lists of str (or UTF-8 bytes)
        trainer.add_documents(batch)        # split + counted in Rust, then dropped
    merges = trainer.train(num_merges)      # [(a, b), ...]; merge i makes token 256 + i

The Rust side has a hand-written scanner for the two patterns below (they differ only in how many
digits a number chunk holds). For any other pattern, split and count in Python and pass the counts
with `add_chunk_counts`.

The same library holds the CPU decode step's kernels (`ndec_*`, src/decode.rs), which nanochat calls
through nanochat/decode_kernels.py, and the training loss's kernel (`nloss_*`, src/loss.rs), called
through nanochat/cpu_loss.py.
"""
from __future__ import annotations

import os
from array import array
from typing import Iterable, Mapping, Sequence

from ._native import ffi, lib

__all__ = ["Trainer", "split", "char_class", "scanner_digits", "NANOCHAT_PATTERN", "GPT4_PATTERN"]

ABI_VERSION = 2
if lib.nbpe_abi_version() != ABI_VERSION:
    raise ImportError(
        f"nanochat_rustbpe: the compiled library has ABI {lib.nbpe_abi_version()}, this wrapper expects "
        f"{ABI_VERSION}; rebuild it: pip install ./rustbpe (or ./setup.sh)"
    )

NANOCHAT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
GPT4_PATTERN = NANOCHAT_PATTERN.replace(r"\p{N}{1,2}", r"\p{N}{1,3}")
_DIGITS = {NANOCHAT_PATTERN: 2, GPT4_PATTERN: 3}

_ERRORS = {-1: "bad arguments", -2: "this trainer has already trained (make a new one)",
           -3: "internal error (a panic in Rust): please report it",
           -4: "too many unique chunks for one training run (the word arena holds ~16 GB): train on less text"}


def scanner_digits(pattern: str) -> int | None:
    """The scanner's digit-group size for `pattern`, or None if the scanner cannot split it."""
    return _DIGITS.get(pattern)


def _check(rc: int) -> int:
    if rc < 0:
        raise RuntimeError(f"nanochat_rustbpe: {_ERRORS.get(rc, f'error {rc}')}")
    return rc


def _utf8(doc: str | bytes) -> bytes:
    # Lone surrogates pass through as (invalid) bytes; Rust replaces them with U+FFFD and counts them.
    return doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass")


def _pack(items: Sequence[bytes]) -> tuple[bytes, array]:
    """Many byte strings -> one buffer and the end offset of each."""
    ends = array("Q")
    total = 0
    for item in items:
        total += len(item)
        ends.append(total)
    return b"".join(items), ends


class Trainer:
    """Streams documents in, learns merges out. One trainer trains once."""

    def __init__(self, pattern: str = NANOCHAT_PATTERN, threads: int | None = None):
        """`threads`: how many threads split and count each batch (None: every core; at most 256)."""
        if threads is None:
            threads = os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise ValueError(f"threads must be an integer from 1 to 256, got {threads!r}")
        self.pattern = pattern
        self.threads = threads
        # Patterns the scanner does not know are split in Python and fed through add_chunk_counts;
        # the digit count is then unused.
        self.scans = pattern in _DIGITS
        handle = lib.nbpe_new(_DIGITS.get(pattern, 2), threads)
        if handle == ffi.NULL:
            raise ValueError(f"nanochat_rustbpe could not create a trainer with threads={threads}")
        self._t = ffi.gc(handle, lib.nbpe_free)

    def add_documents(self, docs: Iterable[str | bytes]) -> None:
        """Split and count one batch of documents (the scanner's patterns only)."""
        if not self.scans:
            raise ValueError(f"the Rust scanner does not implement pattern {self.pattern!r}; "
                             "split in Python and use add_chunk_counts")
        buf, ends = _pack([_utf8(d) for d in docs])
        _check(lib.nbpe_add_documents(self._t, ffi.from_buffer(buf), len(buf), ffi.from_buffer("uint64_t[]", ends), len(ends)))

    def add_chunk_counts(self, counts: Mapping[bytes, int]) -> None:
        """Add already split chunks with their counts (any pattern)."""
        chunks = list(counts)
        buf, ends = _pack(chunks)
        values = array("Q", (counts[c] for c in chunks))
        _check(lib.nbpe_add_chunks(self._t, ffi.from_buffer(buf), len(buf), ffi.from_buffer("uint64_t[]", ends),
                                   ffi.from_buffer("uint64_t[]", values), len(chunks)))

    def train(self, num_merges: int) -> list[tuple[int, int]]:
        """Learn up to `num_merges` merges (fewer if the text runs out of pairs)."""
        if num_merges < 0:
            raise ValueError(f"num_merges must be >= 0, got {num_merges}")
        out = ffi.new("uint32_t[]", 2 * num_merges + 2)
        n = _check(lib.nbpe_train(self._t, num_merges, out))
        flat = ffi.unpack(out, 2 * n)
        return list(zip(flat[0::2], flat[1::2]))

    @property
    def stats(self) -> dict[str, int]:
        """documents, bytes, chunks, invalid_documents, invalid_sequences, unique_chunks."""
        out = ffi.new("uint64_t[]", 6)
        lib.nbpe_stats(self._t, out, 6)
        names = ("documents", "bytes", "chunks", "invalid_documents", "invalid_sequences", "unique_chunks")
        return dict(zip(names, ffi.unpack(out, 6)))


def split(text: str | bytes, pattern: str = NANOCHAT_PATTERN) -> list[bytes]:
    """The scanner's chunks of `text`, as UTF-8 bytes (invalid UTF-8 replaced by U+FFFD first)."""
    digits = _DIGITS.get(pattern)
    if digits is None:
        raise ValueError(f"the Rust scanner does not implement pattern {pattern!r}")
    data = _utf8(text)
    cap = len(data) + 1  # never more chunks than characters, nor characters than bytes
    ends = ffi.new("uint64_t[]", cap)
    n = _check(lib.nbpe_split(digits, ffi.from_buffer(data), len(data), ends, cap))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        data = data.decode("utf-8", "replace").encode("utf-8")  # what Rust split
    offsets = [0] + ffi.unpack(ends, n)
    return [data[a:b] for a, b in zip(offsets, offsets[1:])]


def char_class(cp: int) -> int:
    """The scanner's class of a code point: 0 other, 1 letter, 2 number, 3 white space."""
    return lib.nbpe_char_class(cp)
