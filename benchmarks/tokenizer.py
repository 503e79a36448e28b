"""Tokenizer training and encoding speed: nanochat (Rust) vs the PyPI `rustbpe` wheel vs HF `tokenizers`.

    .venv/bin/python benchmarks/tokenizer.py [--input FILE ...] [--english] [--vocab 8192 32768] [--threads 2]
                                             [--repeat N]

Same text, same vocabulary size, same thread count for every trainer, all in one run (so the
ratios are fair even on a busy machine). Each trainer runs in its own child process, which reports
its wall time and peak RSS. Text: the --input files (.txt, .jsonl with a "text" field, .parquet
with a "text" column), else the embedded starter corpus, topped up to --mb megabytes with English
text found on this machine (--english: that text only). --repeat N keeps each trainer's fastest
of N runs. Progress goes to stdout; the last line is one JSON document.

The references are optional: `pip install rustbpe tokenizers`; a missing one is reported, not fatal.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
STARTER = REPO / "plugins" / "nanochat_datasets" / "starter"
DOC_CHARS = 2000  # plain-text files are cut into documents of about this size, at blank lines


# ---------------------------------------------------------------------------------------------
# the text

def paragraphs_to_docs(text: str) -> list[str]:
    docs, cur = [], ""
    for para in text.split("\n\n"):
        if cur and len(cur) + len(para) > DOC_CHARS:
            docs.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    if cur.strip():
        docs.append(cur)
    return docs


def read_file(path: str) -> list[str]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return paragraphs_to_docs(f.read())


def machine_english() -> Iterator[str]:
    """English prose that ships with Python and common packages (documentation, licences)."""
    from pydoc_data.topics import topics

    yield from (topics[k] for k in sorted(topics))
    for pattern in ("/usr/share/vim/vim*/doc/*.txt", "/usr/share/doc/*/*.txt", "/usr/share/doc/*/README*",
                    "/usr/share/doc/*/changelog*.gz", "/usr/share/common-licenses/*"):
        for path in sorted(glob.glob(pattern)):
            try:
                yield from read_file(path)
            except (OSError, UnicodeError, EOFError):
                pass


def load_corpus(inputs: list[str], mb: float, english: bool = False) -> tuple[list[str], str]:
    if inputs:
        docs = [d for path in inputs for d in read_file(path)]
        return docs, "files: " + ", ".join(inputs)
    docs, sources = [], []
    shards = [] if english else sorted(glob.glob(str(STARTER / "shard_*.parquet")))
    if shards:
        docs = [d for s in shards for d in read_file(s)]
        sources.append(f"starter corpus ({len(shards)} shards)")
    size = sum(len(d.encode("utf-8", "surrogatepass")) for d in docs)
    if size < mb * 1e6:
        sources.append("English documentation found on this machine")
        for d in machine_english():
            docs.append(d)
            size += len(d.encode("utf-8", "surrogatepass"))
            if size >= mb * 1e6:
                break
    return docs, " + ".join(sources)


# ---------------------------------------------------------------------------------------------
# children: one trainer (or the encode test) per process, so peak RSS is its own

def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(args) -> dict:
    with open(args.data, encoding="utf-8") as f:
        docs = json.load(f)
    mb = sum(len(d.encode("utf-8", "surrogatepass")) for d in docs) / 1e6
    args.vocab = args.vocab[0]
    before = rss_mb()
    out = {}
    t0 = time.perf_counter()
    if args.child == "ours":
        from nanochat.tokenizer import Tokenizer

        tok = Tokenizer.train(docs, args.vocab, threads=args.threads)
        vocab = [tok.decode_token_bytes(i) for i in range(tok.bpe_vocab_size)]
        seconds = time.perf_counter() - t0
        if args.save:
            tok.save(args.save)
    elif args.child == "rustbpe":
        import rustbpe
        from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN

        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(iter(docs), args.vocab - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        vocab = [b for b, _ in sorted(tok.get_mergeable_ranks(), key=lambda kv: kv[1])]
        seconds = time.perf_counter() - t0
    elif args.child == "hf":
        from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
        from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN

        tok = HFTokenizer(models.BPE(byte_fallback=True, unk_token=None, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern=Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab, show_progress=False, min_frequency=0,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=SPECIAL_TOKENS)
        tok.train_from_iterator(docs, trainer)
        vocab = None
        seconds = time.perf_counter() - t0
        if args.save:
            tok.save(args.save)
    else:  # encode: our saved tokenizer (tiktoken) vs the saved HF one, batch encoding
        from nanochat.tokenizer import Tokenizer

        ours = Tokenizer.load(args.save)
        t0 = time.perf_counter()
        ids = ours.encode(docs, num_threads=args.threads)
        out["tiktoken_ours"] = speed(mb, time.perf_counter() - t0, sum(map(len, ids)))
        if args.hf and os.path.exists(args.hf):
            from tokenizers import Tokenizer as HFTokenizer

            hf = HFTokenizer.from_file(args.hf)
            t0 = time.perf_counter()
            enc = hf.encode_batch(docs, add_special_tokens=False)
            out["hf_tokenizers"] = speed(mb, time.perf_counter() - t0, sum(len(e.ids) for e in enc))
        else:
            out["hf_tokenizers"] = {"missing": "pip install tokenizers"}
        return out
    out = {"seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 2), "peak_rss_mb": round(rss_mb(), 1),
           "rss_before_training_mb": round(before, 1)}
    if vocab is not None:
        out["vocab_sha256"] = hashlib.sha256(b"\0".join(vocab)).hexdigest()[:16]
    return out


def speed(mb: float, seconds: float, tokens: int) -> dict:
    return {"seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 2), "tokens": tokens,
            "bytes_per_token": round(mb * 1e6 / tokens, 3)}


def run_child(kind: str, data: str, vocab: int, threads: int, save: str = "", hf: str = "") -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RAYON_RS_NUM_CPUS=str(threads), TOKENIZERS_PARALLELISM="true")
    cmd = [sys.executable, __file__, "--child", kind, "--data", data, "--vocab", str(vocab), "--threads", str(threads),
           "--save", save, "--hf", hf]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "No module named" in tail:
            return {"missing": tail.split("No module named")[-1].strip(" '") + " is not installed: pip install rustbpe tokenizers"}
        return {"error": tail}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="*", default=[], help="text files (.txt/.gz, .jsonl, .parquet)")
    ap.add_argument("--vocab", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mb", type=float, default=10.0, help="at least this much text when no --input is given")
    ap.add_argument("--english", action="store_true",
                    help="only English documentation found on this machine (the starter corpus is part Chinese)")
    ap.add_argument("--repeat", type=int, default=1, help="train each this many times, keep the fastest (busy machines)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--save", default="", help=argparse.SUPPRESS)
    ap.add_argument("--hf", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    docs, source = load_corpus(args.input, args.mb, args.english)
    mb = sum(len(d.encode("utf-8", "surrogatepass")) for d in docs) / 1e6
    print(f"corpus: {len(docs):,} documents, {mb:.1f} MB ({source}); threads={args.threads}", flush=True)
    if mb < args.mb and not args.input:
        print(f"warning: only {mb:.1f} MB of text found (wanted {args.mb}); pass --input FILE for more", flush=True)
    result = {"corpus": {"source": source, "documents": len(docs), "mb": round(mb, 2)}, "threads": args.threads,
              "repeat": args.repeat,
              "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                          "python": platform.python_version()}, "train": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "docs.json")
        with open(data, "w", encoding="utf-8") as f:
            json.dump(docs, f)
        del docs
        ours_dir, hf_file = os.path.join(tmp, "ours"), os.path.join(tmp, "hf.json")
        for vocab in args.vocab:
            row = {}
            last = vocab == args.vocab[-1]
            for name, kind in (("ours", "ours"), ("rustbpe", "rustbpe"), ("hf_tokenizers", "hf")):
                print(f"train vocab={vocab}: {name} ...", end=" ", flush=True)
                save = (ours_dir if kind == "ours" else hf_file if kind == "hf" else "") if last else ""
                runs = [run_child(kind, data, vocab, args.threads, save=save) for _ in range(max(1, args.repeat))]
                row[name] = r = min(runs, key=lambda x: x.get("seconds", float("inf")))
                print(f"{r['seconds']:.2f} s, {r['mb_per_s']:.1f} MB/s, peak RSS {r['peak_rss_mb']:.0f} MB"
                      if "seconds" in r else r, flush=True)
            for name in ("rustbpe", "hf_tokenizers"):
                if "seconds" in row[name] and "seconds" in row["ours"]:
                    row[f"speedup_vs_{name}"] = round(row[name]["seconds"] / row["ours"]["seconds"], 2)
            if "vocab_sha256" in row["rustbpe"] and "vocab_sha256" in row["ours"]:
                row["same_vocab_as_rustbpe"] = row["rustbpe"]["vocab_sha256"] == row["ours"]["vocab_sha256"]
            result["train"][str(vocab)] = row
        if os.path.exists(ours_dir):
            print(f"encode (batch, vocab={args.vocab[-1]}): tiktoken with our ranks vs HF tokenizers ...", end=" ", flush=True)
            result["encode"] = {"vocab": args.vocab[-1], **run_child("encode", data, args.vocab[-1], args.threads,
                                                                     save=ours_dir, hf=hf_file)}
            print("done", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
