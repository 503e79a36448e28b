"""tokenizer-eval's comparison with tiktoken's gpt2 / cl100k_base: used from tiktoken's cache when it holds
them, skipped in plain words when offline (never a raw ConnectionError with a host name)."""
import base64
import hashlib

import tiktoken
import tiktoken.load
import tiktoken.registry

from nanochat.stages.tokenizer import reference_encodings, skipped_notes

URL = "https://example.invalid/gpt2-like.tiktoken"  # never fetched: the cache has it


def test_offline_with_an_empty_cache_says_why_in_plain_words(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    found, skipped = reference_encodings()
    assert found == {}
    assert skipped_notes(skipped) == [
        "comparison with gpt2 / cl100k_base skipped: offline (tiktoken could not fetch its file)"]


def test_an_encoding_in_tiktokens_cache_is_used_offline(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    ranks = {bytes([i]): i for i in range(256)} | {b"th": 256, b"the": 257}
    (cache / hashlib.sha1(URL.encode()).hexdigest()).write_bytes(
        b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def cached_gpt2():
        return {"name": "gpt2", "pat_str": r"\S+|\s+", "special_tokens": {},
                "mergeable_ranks": tiktoken.load.load_tiktoken_bpe(URL)}

    if tiktoken.registry.ENCODING_CONSTRUCTORS is None:
        tiktoken.registry._find_constructors()
    monkeypatch.setitem(tiktoken.registry.ENCODING_CONSTRUCTORS, "gpt2", cached_gpt2)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    found, skipped = reference_encodings()  # NANOCHAT_OFFLINE is set for every test
    assert list(found) == ["gpt2"] and found["gpt2"].encode_ordinary("the") == [257]
    assert skipped_notes(skipped) == ["comparison with cl100k_base skipped: offline (tiktoken could not fetch its file)"]
