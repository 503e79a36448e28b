"""The Rust trainer (nanochat_rustbpe) against its oracles.

The chain of trust: tiktoken itself splits text (bpe.tiktoken_split, exact but slow) -> the
pure-Python pre-tokenizer (bpe.compile_pattern) -> the Rust scanner; the Python reference
trainer (bpe.train_merges) -> the Rust merges. Plus the Unicode classes over every code point.
"""
from __future__ import annotations

import random
import shutil
from collections import Counter

import pytest

from nanochat import bpe

if shutil.which("cargo"):  # setup.sh builds it wherever cargo is: a missing build is a failure, not a skip
    import nanochat_rustbpe as rb
else:
    rb = pytest.importorskip("nanochat_rustbpe", reason="not built (no cargo): pip install ./rustbpe (or ./setup.sh)")

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Pieces chosen to poke every branch of the pattern: contractions in odd cases (and the long s,
# which case-folds to s), every kind of white space (and \x1c, which Python calls space and the
# regex engine does not), digit runs in several scripts, combining marks, emoji with joiners,
# letters from several scripts including ones newer than Python 3.11's Unicode tables.
PIECES = (
    list("abcXYZ'") + ["'s", "'t", "'ll", "'ve", "'re", "'S", "'LL", "'Ve", "'rE", "'ſ", "'d", "'M", "K", "İı"]
    + [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x85", "\x1c",
       "\u200b", " \n ", "\t\n"]
    + [".", ",", "!", "?!", "(", ")", "-", "—", "…", "«", "»", "$", "€", "_", "\\", "/", "@#", "\x00", "\x7f"]
    + list("0123456789") + ["123", "4567", "٣٤", "Ⅻ", "½", "²", "①", "𝟗"]
    + ["é", "ß", "Ω", "жизнь", "中文", "日本語", "한국어", "العربية", "ภาษา", "e\u0301", "\u0301", "ñ"]
    + ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸", "\U000105c0", "\U00031350", "\U0002ebf0"]
    + [" hello", " world", "Hello", "the", " the", "don't", "it's", "12:30", "3.14"]
)


def random_text(rng: random.Random, max_pieces: int = 25) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, max_pieces)))


def real_texts() -> list[str]:
    """English documentation that ships with Python, plus a few multilingual lines."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)[:40]] + [
        "Привет, мир! Как дела? 2024年12月31日 — 東京は晴れ。 안녕하세요, 세계!",
        "def f(x):\r\n    return x**2  # square\r\n\r\n\tprint(f(12345))\n",
        "Ünïcödé façade naïve coöperate — “quotes” ‘single’ «guillemets» 😀👍🏽🇫🇷",
    ]


# ---------------------------------------------------------------------------------------------
# Unicode classes and the scanner

def test_char_classes_match_the_regex_engine_on_every_code_point():
    expected = bytearray(0x110000)
    for name, cls in (("L", 1), ("N", 2), ("S", 3)):
        for a, b in bpe.char_class_ranges()[name]:
            expected[a : b + 1] = bytes([cls]) * (b - a + 1)
    got = bytearray(map(rb.lib.nbpe_char_class, range(0x110000)))
    bad = [hex(cp) for cp in range(0x110000) if got[cp] != expected[cp] and not 0xD800 <= cp <= 0xDFFF]
    assert not bad, f"{len(bad)} code points differ, e.g. {bad[:10]}: run python rustbpe/gen_unicode_tables.py"


def test_contractions_are_exactly_what_the_engine_folds():
    """'(?i:[sdmt]|ll|ve|re) matches the ASCII letters in either case and U+017F (long s) - nothing else."""
    import tiktoken

    enc = tiktoken.Encoding("c", pat_str=r"'(?i:[sdmt]|ll|ve|re)", mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={})
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c != ord("'")]

    def matched(cases: list[str], length: int = 1) -> set[str]:
        out = enc.decode_bytes(enc.encode_ordinary("\x00".join(cases))).decode()
        return {m for m in out.split("'") if len(m) == length}

    assert matched(["'" + c for c in chars]) == set("sdmtSDMTſ")
    for first, second in (("lL", "lL"), ("vV", "eE"), ("rR", "eE")):
        assert matched(["'" + f + c for f in first for c in chars], 2) == {f + s for f in first for s in second}
    for second, firsts in (("lL", "lL"), ("eE", "vVrR")):
        assert matched(["'" + c + s for s in second for c in chars], 2) == {f + s for f in firsts for s in second}
    # and the scanner agrees on every one of them
    for case in ["'" + c for c in "sdmtSDMTſ"] + ["'ll", "'LL", "'lL", "'ve", "'VE", "'re", "'Re"]:
        assert rb.split(case + "z") == [case.encode(), b"z"]


@pytest.mark.parametrize("pattern", [bpe.SPLIT_PATTERN, bpe.GPT4_PATTERN])
def test_python_pretokenizer_matches_tiktoken_exactly(pattern):
    rng = random.Random(1)
    split = bpe.compile_pattern(pattern)
    for _ in range(300):
        text = random_text(rng, 12)
        assert [c.encode() for c in split(text)] == bpe.tiktoken_split(text, pattern), repr(text)


def test_python_pretokenizer_handles_other_patterns():
    rng = random.Random(2)
    split = bpe.compile_pattern(GPT2_PATTERN)
    for _ in range(100):
        text = random_text(rng, 12)
        assert [c.encode() for c in split(text)] == bpe.tiktoken_split(text, GPT2_PATTERN), repr(text)


@pytest.mark.parametrize("pattern", [bpe.SPLIT_PATTERN, bpe.GPT4_PATTERN])
def test_scanner_matches_tiktoken_exactly(pattern):
    rng = random.Random(3)
    for _ in range(400):
        text = random_text(rng, 12)
        assert rb.split(text, pattern) == bpe.tiktoken_split(text, pattern), repr(text)


def test_scanner_matches_the_python_pretokenizer_on_long_texts():
    rng = random.Random(4)
    split = bpe.compile_pattern(bpe.SPLIT_PATTERN)
    texts = real_texts() + [random_text(rng, 3000) for _ in range(20)] + [" " * 1000 + "x", "\n" * 500, "7" * 1001, ""]
    for text in texts:
        assert rb.split(text) == [c.encode() for c in split(text)], text[:80]


def test_scanner_replaces_invalid_utf8_like_python():
    rng = random.Random(5)
    for _ in range(300):
        data = bytes(rng.choice([rng.randrange(256), rng.randrange(0x80, 0x100), 0x20, 0x61]) for _ in range(rng.randint(1, 40)))
        expected = [c.encode() for c in bpe.compile_pattern(bpe.SPLIT_PATTERN)(data.decode("utf-8", "replace"))]
        assert rb.split(data) == expected, data


def test_patterns_are_the_same_strings():
    assert rb.NANOCHAT_PATTERN == bpe.SPLIT_PATTERN and rb.GPT4_PATTERN == bpe.GPT4_PATTERN
    assert rb.scanner_digits(bpe.SPLIT_PATTERN) == 2 and rb.scanner_digits(GPT2_PATTERN) is None


# ---------------------------------------------------------------------------------------------
# Training: Rust == Python reference (== brute force)

def brute_force_merges(counts: dict[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Recount every pair of every word before each merge: the definition, nothing clever."""
    words = [(list(chunk), n) for chunk, n in counts.items()]
    merges = []
    for i in range(num_merges):
        pairs = Counter()
        for ids, n in words:
            for p in zip(ids, ids[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = [(bpe.merge_word(ids, best, 256 + i), n) for ids, n in words]
    return merges


def test_reference_trainer_is_the_brute_force_definition():
    rng = random.Random(7)
    for _ in range(15):
        counts = bpe.count_chunks([random_text(rng, 30) for _ in range(rng.randint(1, 10))])
        n = rng.choice([5, 60, 250])
        assert bpe.train_merges(counts, n) == brute_force_merges(counts, n)


def rust_train(docs, num_merges, threads=2, pattern=bpe.SPLIT_PATTERN, batch=7):
    t = rb.Trainer(pattern, threads=threads)
    for i in range(0, len(docs), batch):  # several batches, as Tokenizer.train streams them
        t.add_documents(docs[i : i + batch])
    return t.train(num_merges), t.stats


@pytest.mark.parametrize("seed", range(12))
def test_random_corpora_give_the_reference_merges(seed):
    rng = random.Random(seed)
    docs = [random_text(rng, rng.choice([0, 5, 40])) for _ in range(rng.randint(1, 40))]
    pattern = bpe.GPT4_PATTERN if seed % 3 == 0 else bpe.SPLIT_PATTERN
    num_merges = rng.choice([1, 10, 100, 400])
    expected = bpe.train(docs, num_merges, pattern)
    got, stats = rust_train(docs, num_merges, threads=1 + seed % 3, pattern=pattern)
    assert got == expected
    assert stats["documents"] == len(docs)


def test_real_text_gives_the_reference_merges():
    docs = [t[:2000] for t in real_texts()]
    expected = bpe.train(docs, 300)
    got, stats = rust_train(docs, 300)
    assert got == expected and len(got) == 300
    assert stats["bytes"] == sum(len(d.encode()) for d in docs)


def test_ties_and_overlaps():
    # equal counts: the smaller pair wins; runs of one byte merge left to right without overlap
    assert rust_train(["cd", "ab"], 1)[0] == bpe.train(["cd", "ab"], 1) == [(ord("a"), ord("b"))]
    for text in ["aaaaaaa", "aaa aaaa aaaaa", "abababab aba", "zzz zz z"]:
        assert rust_train([text], 50)[0] == bpe.train([text], 50)


def test_stops_when_pairs_run_out_and_handles_empty_input():
    assert rust_train(["ab ab"], 100)[0] == [(97, 98), (32, 256)]
    assert rust_train(["", "", "x"], 10)[0] == []
    assert rust_train([], 10)[0] == []
    assert rust_train(["hello"], 0)[0] == []


def test_thread_count_and_big_documents_do_not_change_the_result():
    text = " ".join(real_texts()[:20])
    big = (text + "\n") * (2_500_000 // len(text))  # > 1 MB: cut into pieces between threads
    one, s1 = rust_train([big, text], 500, threads=1)
    four, s4 = rust_train([big, text], 500, threads=4)
    assert one == four and s1 == s4 and s1["documents"] == 2
    counts = Counter(bpe.compile_pattern(bpe.SPLIT_PATTERN)(big))
    assert s1["chunks"] == sum(counts.values()) + len(bpe.compile_pattern(bpe.SPLIT_PATTERN)(text))


def test_invalid_utf8_is_replaced_and_counted():
    docs = [b"caf\xc3\xa9 ok", b"bad \xff\xfe bytes \xc3", "lone \ud800 surrogate".encode("utf-8", "surrogatepass"), b"\xed\xa0\x80"]
    got, stats = rust_train(docs, 40)
    assert got == bpe.train(docs, 40)  # the reference decodes bytes with errors="replace" too
    assert stats["invalid_documents"] == 3 and stats["invalid_sequences"] == 3 + 3 + 3
    # a str with a lone surrogate goes in as (invalid) bytes, never crashes
    t = rb.Trainer(threads=1)
    t.add_documents(["x\udcff y"])
    assert t.stats["invalid_documents"] == 1


def test_custom_patterns_go_through_chunk_counts():
    rng = random.Random(6)
    docs = [random_text(rng, 30) for _ in range(30)]
    counts = bpe.count_chunks(docs, GPT2_PATTERN)
    t = rb.Trainer(GPT2_PATTERN, threads=2)
    with pytest.raises(ValueError, match="does not implement"):
        t.add_documents(docs)
    half = dict(list(counts.items())[: len(counts) // 2])
    t.add_chunk_counts(half)
    t.add_chunk_counts(counts - Counter(half))  # counts are summed across calls
    assert t.train(200) == bpe.train_merges(counts, 200)


def test_a_trainer_trains_once():
    t = rb.Trainer(threads=1)
    t.add_documents(["hello hello"])
    t.train(3)
    with pytest.raises(RuntimeError, match="already trained"):
        t.train(3)
    with pytest.raises(RuntimeError, match="already trained"):
        t.add_documents(["more"])


def test_same_vocabulary_as_the_pypi_rustbpe_wheel():
    import rustbpe as pypi  # in the test extra: ./setup.sh --test installs it
    if not hasattr(pypi, "Tokenizer"):  # the repo's rustbpe/ folder imports as an empty namespace package
        pytest.fail("the PyPI rustbpe wheel is not installed: ./setup.sh --test (or pip install rustbpe)")
    docs = real_texts()
    tok = pypi.Tokenizer()
    tok.train_from_iterator(iter(docs), 256 + 1000, pattern=bpe.SPLIT_PATTERN)
    theirs = [b for b, _ in sorted(tok.get_mergeable_ranks(), key=lambda kv: kv[1])]
    ours = bpe.token_bytes_from_merges(rust_train(docs, 1000)[0])
    assert ours == theirs
