"""`nanochat tokenizer train | info | encode`: tokenizers for your own data, outside any run."""
import json
import statistics
import time
from pathlib import Path

from nanochat.errors import NanochatError
from nanochat.table import print_table
from nanochat.textfiles import collect_files, iter_documents
from nanochat.tokenizer import Tokenizer


def _documents(paths, stats, max_chars, doc_cap):
    total = 0
    for doc in iter_documents(collect_files([Path(p) for p in paths]), errors="replace", stats=stats):
        doc = doc[:doc_cap] if doc_cap else doc
        stats["docs"] = stats.get("docs", 0) + 1
        yield doc
        total += len(doc)
        if max_chars is not None and total >= max_chars:
            return


def output_dir(args) -> Path:
    """--output, else <data>/tokenizers/<--name, or the first input's name and the vocabulary size>."""
    if args.output:
        return Path(args.output)
    from nanochat import paths
    name = args.name or f"{Path(args.input[0]).expanduser().resolve().stem}-{args.vocab_size}"
    if Path(name).name != name or name in (".", ".."):
        raise NanochatError(f"--name {name!r} must be a plain folder name (no '/'); for a path use --output DIR")
    return paths.tokenizers_dir() / name


def tokenizer_dir(given: str) -> Path:
    """A tokenizer folder as given, or the one of that name under <data>/tokenizers."""
    from nanochat import paths
    path = Path(given)
    named = paths.tokenizers_dir() / given
    return named if not path.exists() and named.exists() else path


def train(args) -> int:
    args.output = output_dir(args)
    stats: dict = {}
    t0 = time.time()
    tok = Tokenizer.train(_documents(args.input, stats, args.max_chars, args.doc_cap), args.vocab_size,
                          threads=args.threads)
    seconds = time.time() - t0
    tok.save(args.output)
    nbytes = tok.train_stats.get("bytes", 0)
    print(f"trained {tok.vocab_size:,} tokens ({tok.train_stats.get('merges', 0):,} merges) on {stats.get('docs', 0):,} "
          f"documents, {nbytes:,} bytes in {seconds:.1f}s ({nbytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)")
    if stats.get("replaced"):
        print(f"note: {stats['replaced']:,} invalid UTF-8 byte sequence(s) were replaced with U+FFFD")
    print(f"saved to {args.output}")
    return 0


def info(args) -> int:
    tok = Tokenizer.load(tokenizer_dir(args.dir))
    lengths = [n for n in tok.token_bytes() if n > 0]
    longest = sorted(range(tok.bpe_vocab_size), key=lambda i: -len(tok.decode_token_bytes(i)))[:10]
    facts = {"path": str(tokenizer_dir(args.dir).resolve()), "vocab_size": tok.vocab_size, "bpe_tokens": tok.bpe_vocab_size,
             "special_tokens": tok.special_ids, "pattern": tok.pattern,
             "bytes_per_token_mean": round(statistics.mean(lengths), 3), "bytes_per_token_max": max(lengths),
             "longest_tokens": [tok.decode_token_bytes(i).decode("utf-8", "replace") for i in longest]}
    if args.json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
    else:
        for key, value in facts.items():
            print(f"{key:22} {value}")
    return 0


def encode(args) -> int:
    tok = Tokenizer.load(tokenizer_dir(args.dir))
    ids = tok.encode(args.text)
    rows = [{"id": i, "bytes": len(tok.decode_token_bytes(i)), "token": _shown(tok.decode_token_bytes(i))} for i in ids]
    print_table(rows, ["id", "bytes", "token"])
    print(f"{len(ids)} tokens for {len(args.text.encode('utf-8'))} bytes")
    return 0


def _shown(piece: bytes) -> str:
    """A token as text when it is whole UTF-8, else its raw bytes (part of a multi-byte character)."""
    try:
        return repr(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(piece)


def main(args) -> int:
    return {"train": train, "info": info, "encode": encode}[args.tokenizer_command](args)
