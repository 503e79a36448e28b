"""The tokenizer: train byte-level BPE (Rust), encode with tiktoken, render chats with loss masks.

    tok = Tokenizer.train(documents, vocab_size=32768)   # merges learned by nanochat_rustbpe
    tok.save(directory); tok = Tokenizer.load(directory)
    ids = tok.encode("hello", prepend="<|bos|>")
    ids, mask = tok.render_conversation({"messages": [...]})

Token ids: 0-255 are the single bytes, then one token per merge in merge order (rank == id, the
tiktoken convention), then the 9 special tokens (BOS is the first of them). All text is encoded
with encode_ordinary, so a special token's string inside text is just text.

On disk (see docs/tokenizer.md): `vocab.tiktoken` (tiktoken's format: base64 token bytes, space,
rank; one per line) and `tokenizer.json` (pattern, special tokens with ids, vocab size).
This module must not import torch.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import tiktoken

from nanochat import bpe
from nanochat.atomic import atomic_write_json, atomic_write_text
from nanochat.bpe import SPLIT_PATTERN
from nanochat.errors import NanochatError

SPECIAL_TOKENS = [
    "<|bos|>",  # begins every document (and every conversation)
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",  # the assistant calls the python tool
    "<|output_start|>", "<|output_end|>",  # the tool's output, written back into the conversation
]

VOCAB_FILE = "vocab.tiktoken"
CONFIG_FILE = "tokenizer.json"
FORMAT = "nanochat-tokenizer/1"
BATCH_BYTES = 8 << 20  # documents are handed to the trainer in batches of about this many bytes
BUILD_HINT = "build it, run ./setup.sh (needs cargo, from https://rustup.rs) or: pip install ./rustbpe"

__all__ = ["Tokenizer", "TokenizerError", "TokenizerFileMissing", "SPECIAL_TOKENS", "SPLIT_PATTERN"]


class TokenizerError(NanochatError, ValueError):
    """Bad input to the tokenizer (a value, a conversation, a file): the message says what and how to fix it."""


class TokenizerFileMissing(TokenizerError, FileNotFoundError):
    """A tokenizer directory lacks one of its files: the message says how to recreate it."""


class Tokenizer:
    """A trained BPE vocabulary wrapped in a tiktoken.Encoding."""

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str = SPLIT_PATTERN,
                 special_tokens: Sequence[str] = SPECIAL_TOKENS):
        n = len(mergeable_ranks)
        if sorted(mergeable_ranks.values()) != list(range(n)):
            raise TokenizerError(f"mergeable_ranks must hold ranks 0..{n - 1} exactly once each")
        _check_pattern(pattern)
        self._pattern = pattern
        self._specials = {name: n + i for i, name in enumerate(special_tokens)}
        self._enc = tiktoken.Encoding("nanochat", pat_str=pattern, mergeable_ranks=mergeable_ranks,
                                      special_tokens=self._specials)
        self._token_bytes = [len(b) for b, _ in sorted(mergeable_ranks.items(), key=lambda kv: kv[1])]
        self._token_bytes += [0] * len(self._specials)
        self.train_stats: dict[str, Any] = {}  # filled by train()

    # ------------------------------------------------------------------------------------------
    # training

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int, *, threads: int | None = None,
              pattern: str = SPLIT_PATTERN, progress: Callable[[dict], None] | None = None) -> "Tokenizer":
        """Learn a vocabulary of `vocab_size` tokens (byte tokens + merges + the 9 specials).

        `docs` is streamed in batches, so it can be a generator over a corpus far larger than
        memory. `progress`, if given, is called after each batch with the running counts.
        """
        num_merges = _merges_for(vocab_size)
        if isinstance(docs, (str, bytes)):
            raise TypeError("docs must be an iterable of documents (str), got a single "
                            f"{type(docs).__name__}: wrap it in a list")
        if threads is None:
            threads = os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise TokenizerError(f"threads must be a positive integer, got {threads!r}")
        _check_pattern(pattern)
        t0 = time.time()
        merges, stats = _learn_merges(docs, num_merges, pattern, threads, progress)
        if len(merges) < num_merges:
            got = 256 + len(merges) + len(SPECIAL_TOKENS)
            warnings.warn(f"the corpus ({stats['bytes']:,} bytes) only has room for {len(merges)} merges: "
                          f"the vocabulary has {got} tokens instead of vocab_size={vocab_size}; "
                          "train on more text for the full size", RuntimeWarning, stacklevel=2)
        tok = cls({b: i for i, b in enumerate(bpe.token_bytes_from_merges(merges))}, pattern)
        tok.train_stats = {**stats, "merges": len(merges), "seconds": round(time.time() - t0, 3)}
        return tok

    # ------------------------------------------------------------------------------------------
    # saving and loading

    def save(self, directory: str | os.PathLike) -> None:
        """Write vocab.tiktoken and tokenizer.json into `directory` (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        n = self.bpe_vocab_size
        lines = (base64.b64encode(self._enc.decode_single_token_bytes(i)).decode("ascii") + f" {i}\n" for i in range(n))
        atomic_write_text(directory / VOCAB_FILE, "".join(lines))
        config = {"format": FORMAT, "pattern": self._pattern, "special_tokens": self._specials,
                  "vocab_size": self.vocab_size, "bpe_vocab_size": n}
        atomic_write_json(directory / CONFIG_FILE, config)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Read a tokenizer written by save(). Errors name the file and how to recreate it."""
        directory = Path(directory)
        redo = (f"re-create it by training the tokenizer again (Tokenizer.train(...).save({str(directory)!r}), "
                "or re-run the tokenizer stage)")
        for name in (CONFIG_FILE, VOCAB_FILE):
            if not (directory / name).is_file():
                raise TokenizerFileMissing(f"no tokenizer at {directory}: {directory / name} is missing; {redo}")
        config_path, vocab_path = directory / CONFIG_FILE, directory / VOCAB_FILE
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            assert config.get("format") == FORMAT, f"format is {config.get('format')!r}, expected {FORMAT!r}"
            pattern, specials = config["pattern"], config["special_tokens"]
            assert isinstance(pattern, str) and isinstance(specials, dict), "bad pattern or special_tokens"
        except (ValueError, KeyError, AssertionError, AttributeError) as e:
            raise TokenizerError(f"{config_path} is corrupt ({e}); {redo}") from None
        ranks = _read_vocab(vocab_path, redo)
        n = len(ranks)
        expected = {name: n + i for i, name in enumerate(specials)}
        if specials != expected or config.get("vocab_size") != n + len(specials):
            raise TokenizerError(f"{config_path} does not match {vocab_path} ({n} BPE tokens, so special tokens "
                                 f"should be {expected} and vocab_size {n + len(specials)}); {redo}")
        return cls(ranks, pattern, list(specials))

    # ------------------------------------------------------------------------------------------
    # encoding and decoding

    @property
    def encoding(self) -> tiktoken.Encoding:
        return self._enc

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def vocab_size(self) -> int:
        """All tokens, special tokens included."""
        return self._enc.n_vocab

    @property
    def bpe_vocab_size(self) -> int:
        """Byte tokens + merges (the special tokens come right after)."""
        return self.vocab_size - len(self._specials)

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def bos_id(self) -> int:
        """The first special token (<|bos|>): it begins every document."""
        return self.bpe_vocab_size

    def encode_special(self, name: str) -> int:
        try:
            return self._specials[name]
        except (KeyError, TypeError):
            raise TokenizerError(f"unknown special token {name!r}; the special tokens are {list(self._specials)}") from None

    def _token_id(self, token: str | int, what: str) -> int:
        if isinstance(token, str):
            return self.encode_special(token)
        if isinstance(token, int) and not isinstance(token, bool) and 0 <= token < self.vocab_size:
            return token
        raise TokenizerError(f"{what} must be a special token name or a token id in 0..{self.vocab_size - 1}, got {token!r}")

    def encode(self, text: str | Sequence[str], prepend: str | int | None = None, append: str | int | None = None,
               num_threads: int = 8) -> list[int] | list[list[int]]:
        """Text -> ids (special-token strings in the text stay text). A list of texts is encoded
        in parallel and gives a list of id lists. `prepend`/`append`: a special name or an id."""
        pre = None if prepend is None else self._token_id(prepend, "prepend")
        post = None if append is None else self._token_id(append, "append")
        if isinstance(text, str):
            rows = [self._enc.encode_ordinary(text)]
        elif isinstance(text, (list, tuple)):
            for i, t in enumerate(text):
                if not isinstance(t, str):
                    raise TypeError(f"encode: item {i} of the list is {type(t).__name__}, expected str")
            rows = self._enc.encode_ordinary_batch(list(text), num_threads=num_threads)
        else:
            raise TypeError(f"encode takes a str or a list of str, got {type(text).__name__}")
        for row in rows:
            if pre is not None:
                row.insert(0, pre)
            if post is not None:
                row.append(post)
        return rows[0] if isinstance(text, str) else rows

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (bytes that are not valid UTF-8 on their own decode to U+FFFD)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        try:
            return self._enc.decode(ids)
        except (KeyError, OverflowError, TypeError):
            bad = next((i for i in ids if not (isinstance(i, int) and 0 <= i < self.vocab_size)), ids)
            raise TokenizerError(f"cannot decode token id {bad!r}: ids run from 0 to {self.vocab_size - 1}") from None

    def decode_token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a special token gives its name)."""
        try:
            return self._enc.decode_single_token_bytes(token_id)
        except (KeyError, OverflowError, TypeError):
            raise TokenizerError(f"no token with id {token_id!r}: ids run from 0 to {self.vocab_size - 1}") from None

    def token_bytes(self) -> list[int]:
        """Byte length of every token from its raw bytes (0 for special tokens): for bits per byte."""
        return list(self._token_bytes)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bpe_vocab_size={self.bpe_vocab_size})"

    # ------------------------------------------------------------------------------------------
    # chat rendering

    def render_conversation(self, conversation: dict | list, max_tokens: int = 2048) -> tuple[list[int], list[int]]:
        """A conversation -> (ids, mask); mask 1 marks the tokens the assistant is trained on.

        <|bos|> <|user_start|> text <|user_end|> <|assistant_start|> reply <|assistant_end|> ...
        Supervised (1): the assistant's text and python calls (with their python_start/end tokens)
        and <|assistant_end|>. Everything else is 0, tool output included (the tool writes it).
        A leading system message is merged into the first user message as system + "\\n\\n" + user.
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise TokenizerError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        ids: list[int] = []
        mask: list[int] = []
        sp = {name: self.encode_special(name) for name in SPECIAL_TOKENS[1:]}

        def add(tokens: int | list[int], supervised: int) -> None:
            tokens = [tokens] if isinstance(tokens, int) else tokens
            ids.extend(tokens)
            mask.extend([supervised] * len(tokens))

        add(self.bos_id, 0)
        for index, role, content in _checked_messages(conversation):
            if role == "user":
                add(sp["<|user_start|>"], 0)
                add(self._enc.encode_ordinary(content), 0)
                add(sp["<|user_end|>"], 0)
                continue
            add(sp["<|assistant_start|>"], 0)
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                tokens = self._enc.encode_ordinary(part["text"])
                if part["type"] == "text":
                    add(tokens, 1)
                elif part["type"] == "python":
                    add(sp["<|python_start|>"], 1)
                    add(tokens, 1)
                    add(sp["<|python_end|>"], 1)
                else:  # python_output: comes from the tool at inference time, never learned
                    add(sp["<|output_start|>"], 0)
                    add(tokens, 0)
                    add(sp["<|output_end|>"], 0)
            add(sp["<|assistant_end|>"], 1)
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, conversation: dict | list) -> list[int]:
        """The prompt for the assistant's next reply: the conversation without its final assistant
        message (if it ends with one), then <|assistant_start|>. For RL and evaluation."""
        messages = _message_list(conversation)
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        ids, _ = self.render_conversation({"messages": messages})
        return ids + [self.encode_special("<|assistant_start|>")]


# ----------------------------------------------------------------------------------------------
# helpers: vocabulary size, pattern, training backends, files, conversations

def _merges_for(vocab_size: Any) -> int:
    floor = 256 + len(SPECIAL_TOKENS)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= floor:
        raise TokenizerError(f"vocab_size must be an integer above {floor} (256 byte tokens + {len(SPECIAL_TOKENS)} "
                             f"special tokens, plus at least one merge), got {vocab_size!r}")
    return vocab_size - floor


def _check_pattern(pattern: Any) -> None:
    """The pattern must compile in tiktoken's regex engine (the one that splits at inference)."""
    if not isinstance(pattern, str) or not pattern:
        raise TokenizerError(f"the split pattern must be a non-empty regular expression string, got {pattern!r}")
    try:
        tiktoken.Encoding("pattern-check", pat_str=pattern, mergeable_ranks={bytes([i]): i for i in range(256)},
                          special_tokens={})
    except ValueError as e:
        raise TokenizerError(f"split pattern {pattern!r} does not compile: {e}") from None


def _rust_trainer():
    """The nanochat_rustbpe module, or None (with a warning) when it is not built."""
    try:
        import nanochat_rustbpe
        return nanochat_rustbpe
    except ImportError as e:
        warnings.warn(f"nanochat_rustbpe is not available ({e}); training with the pure-Python reference "
                      f"trainer, which is far slower. To {BUILD_HINT}", RuntimeWarning, stacklevel=4)
        return None


def _batches(docs: Iterable[str], stats: dict) -> Iterable[list[bytes]]:
    """Documents -> batches of UTF-8 bytes (lone surrogates replaced the way tiktoken does)."""
    batch: list[bytes] = []
    size = 0
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise TypeError(f"document {i} is {type(doc).__name__}, expected str")
        data, replaced = bpe.to_utf8(doc)
        stats["documents"] += 1
        stats["bytes"] += len(data)
        stats["replaced_surrogate_documents"] += replaced
        batch.append(data)
        size += len(data)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _learn_merges(docs, num_merges, pattern, threads, progress) -> tuple[list[tuple[int, int]], dict]:
    stats = {"documents": 0, "bytes": 0, "replaced_surrogate_documents": 0}
    rust = _rust_trainer()
    scans = rust is not None and rust.scanner_digits(pattern) is not None
    stats["backend"] = "rust" if rust is not None else "python"
    if not scans:
        try:
            bpe.compile_pattern(pattern)  # the documents are split in Python: can it?
        except ValueError as e:
            raise TokenizerError(str(e)) from None
    counts = None
    trainer = rust.Trainer(pattern, threads=threads) if rust is not None else None
    # The trainer counts batch k (GIL released) while this thread reads and encodes batch k + 1.
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in _batches(docs, stats):
            if scans:
                work = (trainer.add_documents, batch)
            else:
                counts = bpe.count_chunks(batch, pattern, None if trainer else counts)
                work = (trainer.add_chunk_counts, counts) if trainer else None
            if pending is not None:
                pending.result()
            pending = pool.submit(*work) if work else None
            if progress is not None:
                progress(dict(stats))
        if pending is not None:
            pending.result()
    if stats["bytes"] == 0:
        raise TokenizerError(f"empty corpus: got {stats['documents']} documents with no text; "
                             "give Tokenizer.train an iterable of non-empty strings")
    if trainer is not None:
        merges = trainer.train(num_merges)
        stats["unique_chunks"] = trainer.stats["unique_chunks"]
    else:
        merges = bpe.train_merges(counts, num_merges)
        stats["unique_chunks"] = len(counts)
    return merges, stats


def _read_vocab(path: Path, redo: str) -> dict[bytes, int]:
    """Parse tiktoken's format and check it is a byte-level BPE vocabulary (bytes 0-255 first)."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise TokenizerError(f"{path} is corrupt at line {lineno} ({line[:60]!r}); {redo}") from None
    n = len(ranks)
    if n < 256 or sorted(ranks.values()) != list(range(n)) or any(ranks.get(bytes([i])) != i for i in range(256)):
        raise TokenizerError(f"{path} is corrupt: expected ranks 0..n-1 with the 256 single bytes first, each token "
                             f"once ({n} tokens read); {redo}")
    return ranks


def _message_list(conversation: Any) -> list:
    if isinstance(conversation, dict):
        conversation = conversation.get("messages")
    if not isinstance(conversation, list):
        raise TokenizerError("a conversation is a list of messages or a dict with a 'messages' list, "
                             f"got {type(conversation).__name__}")
    return conversation


def _checked_messages(conversation: Any) -> list[tuple[int, str, Any]]:
    """Validate a conversation; return (original index, role, content) with system merged into user."""
    messages = _message_list(conversation)
    if not messages:
        raise TokenizerError("the conversation has no messages")
    out: list[tuple[int, str, Any]] = []
    system = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise TokenizerError(f"message {i}: expected a dict with 'role' and 'content', got {m!r:.80}")
        role, content = m["role"], m["content"]
        if role == "system":
            if i != 0:
                raise TokenizerError(f"message {i}: a system message may only come first")
            if not isinstance(content, str) or not content:
                raise TokenizerError(f"message {i} (system): content must be a non-empty string, got {content!r:.80}")
            system = content
            continue
        expected = "user" if len(out) % 2 == 0 else "assistant"
        if role != expected:
            raise TokenizerError(f"message {i}: role is {role!r} but should be {expected!r} "
                                 "(an optional system message, then user and assistant alternating, user first)")
        if content == "" or content == []:
            raise TokenizerError(f"message {i} ({role}): empty content")
        if role == "user":
            if not isinstance(content, str):
                raise TokenizerError(f"message {i} (user): content must be a string, got {type(content).__name__}")
            if system is not None and not out:  # only the first user message gets the system text
                content = system + "\n\n" + content
        else:
            _check_parts(i, content)
        out.append((i, role, content))
    if system is not None and not out:
        raise TokenizerError("message 0: a system message must be followed by a user message")
    return out


def _check_parts(i: int, content: Any) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise TokenizerError(f"message {i} (assistant): content must be a string or a list of parts, "
                         f"got {type(content).__name__}")
    for k, part in enumerate(content):
        where = f"message {i} (assistant), part {k}"
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise TokenizerError(f"{where}: expected a dict with a string 'text', got {part!r:.80}")
        kind = part.get("type")
        if kind not in ("text", "python", "python_output"):
            raise TokenizerError(f"{where}: unknown part type {kind!r} (expected 'text', 'python' or 'python_output')")
        prev = content[k - 1].get("type") if k else None
        if kind == "python_output" and prev != "python":
            raise TokenizerError(f"{where}: a python_output part must directly follow a python part")
        following = content[k + 1] if k + 1 < len(content) else None
        if kind == "python" and not (isinstance(following, dict) and following.get("type") == "python_output"):
            raise TokenizerError(f"{where}: a python part must be directly followed by its python_output part")
