"""Stages `tokenizer` (train the BPE vocabulary) and `tokenizer-eval` (how well it compresses held-out text).

The tokenizer is the first artifact of every run: `checkpoints/tokenizer/` holds vocab.tiktoken and
tokenizer.json. Training is one pass over the corpus (seconds to minutes), so an interrupted stage
simply trains again; a finished tokenizer on disk is reused.
"""
import statistics
import time
from dataclasses import dataclass

from nanochat import faults
from nanochat.fetch import offline
from nanochat.stages import CommonSettings, StageError
from nanochat.tokenizer import Tokenizer

# Held-out probes of different kinds of text (written for nanochat; not from any corpus).
PROBES = {
    "news-en": ("The city council voted on Tuesday to extend the library's weekend hours through the winter, "
                "citing a 14% rise in visitors since March. Officials said the change would cost about $120,000 "
                "a year and would be paid for by savings in the parks budget."),
    "science-en": ("Photosynthesis turns light into chemical energy: chlorophyll absorbs mostly red and blue light, "
                   "water is split, oxygen is released, and the captured energy builds sugars from carbon dioxide."),
    "modern-zh": "今天早上下了一场小雨，街道上的行人不多。图书馆从下个月开始延长周末开放时间，方便学生复习功课。",
    "classical-zh": "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？温故而知新，可以为师矣。",
    "code": ("def merge_counts(a: dict, b: dict) -> dict:\n    out = dict(a)\n    for key, value in b.items():\n"
             "        out[key] = out.get(key, 0) + value\n    return out\n"),
    "math": r"For $n \ge 1$, $\sum_{k=1}^{n} k^3 = \left(\frac{n(n+1)}{2}\right)^2$, which we prove by induction on $n$.",
}


REFERENCES = ("gpt2", "cl100k_base")
OFFLINE_REASON = "offline (tiktoken could not fetch its file)"


class _NoFetch(ConnectionError):
    """Raised instead of a download while offline (nanochat.fetch.offline): tiktoken's cache is all there is."""


def _refuse_fetch(blobpath):
    raise _NoFetch(blobpath)


def reference_encodings() -> tuple[dict, dict]:
    """tiktoken's gpt2 and cl100k_base when they can be loaded (from tiktoken's cache, or downloaded once
    when the network allows), else why not, in words a person can act on."""
    import tiktoken
    import tiktoken.load
    found, skipped = {}, {}
    no_fetch = offline("https://openaipublic.blob.core.windows.net") is not None  # where tiktoken fetches from
    real_read_file = tiktoken.load.read_file
    for name in REFERENCES:
        if no_fetch:  # a cached file is still read; only the fetch is refused
            tiktoken.load.read_file = _refuse_fetch
        try:
            found[name] = tiktoken.get_encoding(name)
        except Exception as exc:  # offline, or e.g. a damaged file in tiktoken's cache
            skipped[name] = (OFFLINE_REASON if _is_network_error(exc)
                             else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        finally:
            tiktoken.load.read_file = real_read_file
    return found, skipped


def skipped_notes(skipped: dict) -> list[str]:
    """'comparison with gpt2 / cl100k_base skipped: offline (...)': one line per reason."""
    by_reason: dict[str, list[str]] = {}
    for name, why in skipped.items():
        by_reason.setdefault(why, []).append(name)
    return [f"comparison with {' / '.join(names)} skipped: {why}" for why, names in by_reason.items()]


def _is_network_error(exc: BaseException) -> bool:
    import http.client
    while exc is not None:
        if isinstance(exc, (ConnectionError, TimeoutError, http.client.HTTPException)) or \
                type(exc).__module__.startswith(("requests", "urllib", "socket")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_shards(ctx, dataset, max_chars: int) -> None:
    """Shards missing for max_chars: none on disk is an error, fewer than that a warning (it trains on less)."""
    need = dataset.shards_for_chars(max_chars) if getattr(dataset, "num_shards", None) else None
    problem = dataset.too_few_shards(need, f"the tokenizer's {max_chars:,} characters") if need else None
    if problem and dataset.train_shards_on_disk() == 0:
        raise StageError(problem)
    if problem:
        ctx.log(f"warning: {problem}; training on the characters that are there")


class TokenizerStage:
    name = "tokenizer"
    distributed = False  # one process trains it, even when the run uses torchrun
    needs = ()
    produces = ("tokenizer",)

    @dataclass
    class Settings(CommonSettings):
        dataset: str = "starter"
        vocab_size: int = 32768
        max_chars: int = 2_000_000_000
        doc_cap: int = 10_000
        threads: int = 0  # 0 = all cores

    def run(self, ctx):
        s = ctx.settings
        out = ctx.checkpoint_dir
        if (out / "tokenizer.json").exists():  # saved last: the files are whole, and its training record is kept
            tok = Tokenizer.load(out)
            ctx.run.keep_metrics(ctx.name, lambda r: "train_seconds" in r)
            trained = next((r for r in ctx.run.metrics(ctx.name) if "train_seconds" in r), {})
            tok.train_stats = {k: v for k, v in trained.items() if k != "train_seconds"}
            ctx.log(f"tokenizer already trained ({tok.vocab_size:,} tokens) in {out}; keeping it")
        else:
            ctx.run.keep_metrics(ctx.name, lambda r: False)  # an attempt killed before its files were saved
            from nanochat.datasets import resolve
            dataset = resolve(s.dataset, ctx.registry)
            check_shards(ctx, dataset, s.max_chars)
            ctx.log(f"training a {s.vocab_size:,}-token BPE vocabulary on {s.dataset} "
                    f"(up to {s.max_chars:,} chars, {s.doc_cap:,} per document)")
            t0 = time.time()
            docs = dataset.iter_documents("train", max_chars=s.max_chars, doc_cap=s.doc_cap)
            tok = Tokenizer.train(faults.passing("loader", docs), s.vocab_size, threads=s.threads or None)
            seconds = time.time() - t0
            stats = tok.train_stats
            ctx.log(f"trained in {seconds:.1f}s: {stats.get('documents', 0):,} documents, {stats.get('bytes', 0):,} bytes "
                    f"({stats.get('bytes', 0) / 1e6 / max(seconds, 1e-9):.1f} MB/s), {stats.get('merges', 0):,} merges")
            ctx.metric({"train_seconds": round(seconds, 3), **{k: v for k, v in stats.items() if isinstance(v, (int, float, str))}})
            tok.save(out)  # after its record: a resume that finds the files also finds the record
        sample = "Hello world! 123 + 4,567 = 4,690. 你好，世界。 <|bos|> 🙂"
        if tok.decode(tok.encode(sample)) != sample:
            raise StageError("the trained tokenizer does not round-trip text; this is a bug, please report it")
        lengths = [n for n in tok.token_bytes() if n > 0]
        stats = {"vocab_size": tok.vocab_size, "bytes_per_token_min": min(lengths), "bytes_per_token_max": max(lengths),
                 "bytes_per_token_mean": round(statistics.mean(lengths), 3),
                 "bytes_per_token_std": round(statistics.pstdev(lengths), 3)}
        ctx.metric(stats)
        ctx.summary["vocab_size"] = tok.vocab_size
        ctx.provide("tokenizer", out)
        ctx.write_report("## Tokenizer training\n\n" + "\n".join(
            [f"- dataset: {s.dataset}", f"- max chars: {s.max_chars:,}, doc cap: {s.doc_cap:,}"] +
            [f"- {k}: {v}" for k, v in {**tok.train_stats, **stats}.items()]))


class TokenizerEvalStage:
    name = "tokenizer-eval"
    distributed = False
    needs = ("tokenizer",)
    produces = ()

    @dataclass
    class Settings(CommonSettings):
        dataset: str = "starter"
        max_docs: int = 2000  # validation documents per language

    def run(self, ctx):
        from nanochat.datasets import documents_by_language, resolve
        tok = Tokenizer.load(ctx.artifact("tokenizer"))
        texts = dict(PROBES)
        val = resolve(ctx.settings.dataset, ctx.registry).iter_documents("val")
        for lang, docs in documents_by_language(val, ctx.settings.max_docs).items():
            texts[f"{ctx.settings.dataset}-val-{lang}"] = "\n\n".join(docs)
        references, skipped = reference_encodings()
        encoders = {"ours": lambda t: tok.encode(t)}
        encoders.update({name: (lambda t, e=enc: e.encode_ordinary(t)) for name, enc in references.items()})
        rows = []
        for label, text in texts.items():
            nbytes = len(text.encode("utf-8"))
            row = {"text": label, "bytes": nbytes}
            for name, encode in encoders.items():
                row[f"{name}_tokens"] = len(encode(text))
                row[f"{name}_bytes_per_token"] = round(nbytes / max(row[f"{name}_tokens"], 1), 3)
            rows.append(row)
            ctx.metric(row)
            ctx.log("  ".join(f"{k}={v}" for k, v in row.items()))
        notes = skipped_notes(skipped)
        for note in notes:
            ctx.log(note)
        for row in rows:
            if row["text"].startswith(f"{ctx.settings.dataset}-val-"):
                ctx.summary[f"bytes_per_token_{row['text'].rsplit('-', 1)[1]}"] = row["ours_bytes_per_token"]
        names = list(encoders)
        table = ["| text | bytes | " + " | ".join(f"{n} tokens | {n} bytes/token" for n in names) + " |",
                 "|---|---|" + "---|---|" * len(names)]
        for r in rows:
            table.append(f"| {r['text']} | {r['bytes']:,} | " + " | ".join(
                f"{r[f'{n}_tokens']:,} | {r[f'{n}_bytes_per_token']}" for n in names) + " |")
        ctx.write_report("## Tokenizer evaluation\n\n" + "\n".join(table + ([""] + notes if notes else [])))
