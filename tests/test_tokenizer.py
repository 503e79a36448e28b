"""nanochat.tokenizer: training, files, encode/decode, chat rendering and its masks, errors."""
from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
import warnings

import pytest

from nanochat import bpe
from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

VOCAB = 1000


def corpus() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)[:60]] + ["Hello 世界 😀 12345 don't", "Привет, мир!\r\n\tx = 3.14"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(corpus(), VOCAB, threads=2)


def conv(*messages):
    return {"messages": [{"role": r, "content": c} for r, c in messages]}


# ---------------------------------------------------------------------------------------------
# vocabulary

def test_layout_of_ids(tok):
    assert tok.vocab_size == VOCAB and tok.bpe_vocab_size == VOCAB - 9
    assert tok.special_ids == {name: VOCAB - 9 + i for i, name in enumerate(SPECIAL_TOKENS)}
    assert tok.bos_id == VOCAB - 9 == tok.encode_special("<|bos|>")
    assert [tok.decode_token_bytes(i) for i in range(256)] == [bytes([i]) for i in range(256)]
    assert tok.decode_token_bytes(tok.bos_id) == b"<|bos|>"
    sizes = tok.token_bytes()
    assert len(sizes) == VOCAB and sizes[-9:] == [0] * 9 and sizes[:256] == [1] * 256
    assert all(sizes[i] == len(tok.decode_token_bytes(i)) for i in range(VOCAB - 9))
    assert tok.train_stats["merges"] == VOCAB - 265 and tok.train_stats["documents"] == len(corpus())


def test_same_merges_as_the_reference_trainer():
    docs = [d[:1500] for d in corpus()[:25]]
    merged = Tokenizer.train(docs, 265 + 120)
    expected = bpe.token_bytes_from_merges(bpe.train(docs, 120))
    assert [merged.decode_token_bytes(i) for i in range(merged.bpe_vocab_size)] == expected


def test_no_torch_import():
    code = "import sys, nanochat.tokenizer; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------------------------
# encode / decode

def random_text(rng: random.Random) -> str:
    alphabet = ["a", "Z", " ", "  ", "\n", "\r\n", "\t", "'s", "1", "42", ".", "!", "é", "中", "😀", "\u0301", "\x00",
                "<|bos|>", "<|assistant_end|>", "<|endoftext|>", "<|", "|>", "\u3000", "ſ", "\U000105c0", " the"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))


def test_encode_decode_is_the_identity(tok):
    rng = random.Random(0)
    texts = [random_text(rng) for _ in range(300)] + corpus()[:5] + [""]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode(texts) == [tok.encode(t) for t in texts]  # the batch path agrees


def test_special_strings_in_text_are_text(tok):
    ids = tok.encode("<|bos|>hi<|assistant_end|>")
    assert not set(ids) & set(tok.special_ids.values())
    assert tok.decode(ids) == "<|bos|>hi<|assistant_end|>"


def test_prepend_and_append(tok):
    body = tok.encode("hello")
    assert tok.encode("hello", prepend="<|bos|>") == [tok.bos_id] + body
    assert tok.encode("hello", prepend=tok.bos_id, append="<|assistant_end|>") == [tok.bos_id] + body + [tok.special_ids["<|assistant_end|>"]]
    assert tok.encode(["a", "b"], prepend="<|bos|>") == [[tok.bos_id] + tok.encode("a"), [tok.bos_id] + tok.encode("b")]
    with pytest.raises(ValueError, match="<|nope|>"):
        tok.encode("x", prepend="<|nope|>")
    with pytest.raises(ValueError, match="123456"):
        tok.encode("x", append=123456)


def test_lone_surrogates_encode_like_tiktoken(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"


def test_decode_errors_name_the_id(tok):
    with pytest.raises(ValueError, match="99999"):
        tok.decode([1, 99999])
    with pytest.raises(ValueError, match="-1"):
        tok.decode_token_bytes(-1)
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")


# ---------------------------------------------------------------------------------------------
# files

def test_save_and_load(tok, tmp_path):
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "vocab.tiktoken"]  # no temp files left
    lines = (tmp_path / "vocab.tiktoken").read_text().splitlines()
    assert len(lines) == tok.bpe_vocab_size
    assert lines[65] == base64.b64encode(b"A").decode() + " 65"
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    assert config["pattern"] == SPLIT_PATTERN and config["vocab_size"] == VOCAB
    assert config["special_tokens"] == tok.special_ids
    again = Tokenizer.load(tmp_path)
    text = corpus()[3]
    assert again.encode(text) == tok.encode(text) and again.special_ids == tok.special_ids
    assert again.token_bytes() == tok.token_bytes()


def test_load_errors_say_what_and_how_to_fix(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing.*Tokenizer.train"):
        Tokenizer.load(tmp_path / "nowhere")
    tok.save(tmp_path)
    vocab, config = tmp_path / "vocab.tiktoken", tmp_path / "tokenizer.json"
    good_vocab, good_config = vocab.read_bytes(), config.read_text()

    config.write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer.json is corrupt.*re-create"):
        Tokenizer.load(tmp_path)
    config.write_text(good_config.replace(f'"vocab_size": {VOCAB}', '"vocab_size": 7'))
    with pytest.raises(ValueError, match="does not match"):
        Tokenizer.load(tmp_path)
    config.write_text(good_config)

    vocab.write_bytes(good_vocab + b"garbage\n")
    with pytest.raises(ValueError, match=f"vocab.tiktoken is corrupt at line {tok.bpe_vocab_size + 1}"):
        Tokenizer.load(tmp_path)
    vocab.write_bytes(good_vocab[: len(good_vocab) // 2])
    with pytest.raises(ValueError, match="corrupt|does not match"):
        Tokenizer.load(tmp_path)
    vocab.unlink()
    with pytest.raises(FileNotFoundError, match="vocab.tiktoken is missing"):
        Tokenizer.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# training errors and the Python fallback

def test_bad_training_input():
    for bad in (265, 100, 0, "4096", 4096.0, True):
        with pytest.raises(ValueError, match="vocab_size must be an integer above 265"):
            Tokenizer.train(["some text"], bad)
    with pytest.raises(ValueError, match="empty corpus"):
        Tokenizer.train([], 1000)
    with pytest.raises(ValueError, match="empty corpus"):
        Tokenizer.train(["", ""], 1000)
    with pytest.raises(ValueError, match=r"split pattern '\(abc' does not compile"):
        Tokenizer.train(["text"], 1000, pattern="(abc")
    with pytest.raises(TypeError, match="single str"):
        Tokenizer.train("a whole corpus as one string", 1000)
    with pytest.raises(TypeError, match="document 1 is int"):
        Tokenizer.train(["ok", 3], 1000)
    with pytest.raises(ValueError, match="threads"):
        Tokenizer.train(["ok"], 1000, threads=0)


def test_small_corpus_warns_and_shrinks_the_vocabulary():
    with pytest.warns(RuntimeWarning, match="only has room for 3 merges"):  # ab, abc, " abc"
        small = Tokenizer.train(["abc abc"], 1000)
    assert small.vocab_size == 256 + 3 + 9


@pytest.mark.skipif(not shutil.which("cargo"), reason="without cargo the Python trainer is the one that runs")
def test_the_rust_trainer_is_what_these_tests_compare_against():
    # Tests here compare Tokenizer.train with the Python reference; without the build they'd compare it with itself.
    assert Tokenizer.train(["hello world"], 270).train_stats["backend"] == "rust", "nanochat_rustbpe is not built: ./setup.sh"


def test_python_fallback_warns_and_agrees(monkeypatch):
    docs = ["hello world, hello there", "lone \ud800 surrogate", "", "数字 12345 678"]
    with_rust = Tokenizer.train(docs, 300)
    if shutil.which("cargo"):  # else a missing build would compare the Python trainer with itself
        assert with_rust.train_stats["backend"] == "rust", "nanochat_rustbpe is not built: ./setup.sh"
    monkeypatch.setitem(sys.modules, "nanochat_rustbpe", None)  # makes `import nanochat_rustbpe` fail
    with pytest.warns(RuntimeWarning, match="nanochat_rustbpe is not available.*pip install ./rustbpe"):
        pure = Tokenizer.train(docs, 300)
    assert pure.train_stats["backend"] == "python"
    assert pure.train_stats["replaced_surrogate_documents"] == with_rust.train_stats["replaced_surrogate_documents"] == 1
    assert [pure.decode_token_bytes(i) for i in range(pure.vocab_size)] == \
        [with_rust.decode_token_bytes(i) for i in range(with_rust.vocab_size)]


def test_custom_patterns_train_too():
    gpt2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    docs = corpus()[:10]
    tok = Tokenizer.train(docs, 400, pattern=gpt2)
    assert tok.pattern == gpt2
    expected = bpe.token_bytes_from_merges(bpe.train(docs, 400 - 265, gpt2))
    assert [tok.decode_token_bytes(i) for i in range(tok.bpe_vocab_size)] == expected


def test_progress_is_reported():
    seen = []
    Tokenizer.train(corpus()[:3], 300, progress=seen.append)
    assert seen and seen[-1]["documents"] == 3 and seen[-1]["bytes"] > 0


# ---------------------------------------------------------------------------------------------
# chat rendering (layout and masks as in the reference: assistant text, python calls and
# <|assistant_end|> are supervised; everything else, tool output included, is not)

def test_render_conversation_layout_and_mask(tok):
    s = tok.special_ids
    e = tok.encode
    convo = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "python", "text": "2+2"},
            {"type": "python_output", "text": "4"},
            {"type": "text", "text": "It is 4."},
        ]},
        {"role": "user", "content": "<|assistant_end|> thanks"},
        {"role": "assistant", "content": "Welcome."},
    ]}
    ids, mask = tok.render_conversation(convo)
    expected = [
        ([tok.bos_id, s["<|user_start|>"]] + e("Be brief.\n\n2+2?") + [s["<|user_end|>"], s["<|assistant_start|>"]], 0),
        (e("Let me check.") + [s["<|python_start|>"]] + e("2+2") + [s["<|python_end|>"]], 1),
        ([s["<|output_start|>"]] + e("4") + [s["<|output_end|>"]], 0),
        (e("It is 4.") + [s["<|assistant_end|>"]], 1),
        ([s["<|user_start|>"]] + e("<|assistant_end|> thanks") + [s["<|user_end|>"], s["<|assistant_start|>"]], 0),
        (e("Welcome.") + [s["<|assistant_end|>"]], 1),
    ]
    assert ids == [t for part, _ in expected for t in part]
    assert mask == [m for part, m in expected for _ in part]
    assert convo["messages"][1]["content"] == "2+2?"  # the input is not modified


def test_render_truncates_and_accepts_a_plain_list(tok):
    msgs = [{"role": "user", "content": "word " * 500}, {"role": "assistant", "content": "ok " * 500}]
    ids, mask = tok.render_conversation(msgs, max_tokens=100)
    assert len(ids) == len(mask) == 100
    assert tok.render_conversation(msgs) == tok.render_conversation({"messages": msgs})


def test_render_for_completion(tok):
    c = conv(("user", "hi"), ("assistant", "hello"))
    prompt = tok.render_for_completion(c)
    ids, _ = tok.render_conversation(conv(("user", "hi")))
    assert prompt == ids + [tok.special_ids["<|assistant_start|>"]]
    assert tok.render_for_completion(conv(("user", "hi"))) == prompt  # nothing to drop
    assert len(c["messages"]) == 2


@pytest.mark.parametrize("messages, error", [
    ([], "no messages"),
    ([("assistant", "hi")], "message 0: role is 'assistant' but should be 'user'"),
    ([("user", "a"), ("user", "b")], "message 1: role is 'user' but should be 'assistant'"),
    ([("user", "a"), ("system", "b")], "message 1: a system message may only come first"),
    ([("system", "s")], "must be followed by a user message"),
    ([("system", "s"), ("assistant", "x")], "message 1: role is 'assistant'"),
    ([("user", "")], r"message 0 \(user\): empty content"),
    ([("user", "a"), ("assistant", [])], r"message 1 \(assistant\): empty content"),
    ([("user", ["a"])], "must be a string"),
    ([("user", "a"), ("assistant", [{"type": "image", "text": "x"}])], "part 0: unknown part type 'image'"),
    ([("user", "a"), ("assistant", [{"type": "python", "text": "1"}])], "part 0: a python part must be directly followed"),
    ([("user", "a"), ("assistant", [{"type": "python_output", "text": "1"}])], "must directly follow a python part"),
    ([("user", "a"), ("assistant", [{"type": "text"}])], "part 0: expected a dict with a string 'text'"),
    ([("user", "a"), ("assistant", 42)], "string or a list of parts"),
])
def test_invalid_conversations(tok, messages, error):
    with pytest.raises(ValueError, match=error):
        tok.render_conversation(conv(*messages))


def test_invalid_conversation_shapes(tok):
    with pytest.raises(ValueError, match="list of messages"):
        tok.render_conversation("hello")
    with pytest.raises(ValueError, match="message 0: expected a dict"):
        tok.render_conversation([{"content": "no role"}])
    with pytest.raises(ValueError, match="max_tokens"):
        tok.render_conversation(conv(("user", "a")), max_tokens=0)
