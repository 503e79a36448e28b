"""Time to quality: which pretraining settings reach the lowest val bits per byte in a fixed time budget.

    python benchmarks/quality.py --config "" --config "depth=6 max_seq_len=512" --budget-s 300
    python benchmarks/quality.py --config "matrix_lr=0.03" --heldout en=~/texts/en --heldout zh=~/texts/zh

Each `--config` is a list of `--set` overrides on a preset (cpu-tiny by default; a key without a stage
name applies to the pretrain stage; "" = the preset as it is). Every configuration trains with the real
`pretrain` stage of a real run (in a scratch NANOCHAT_HOME; the tokenizer is trained once and copied into
each run) and is scored with the same bits-per-byte code the stages use.

Why a token budget and not a timer: the machines this preset is tuned for have two cores, and ours are
shared by several people, so a configuration's speed moves by 3x to 20x from minute to minute. A timer
would reward whichever configuration ran at a quiet moment. Instead, for each configuration:
  1. probe: train `--probe-steps` steps and take the median tokens/s of the steps after compilation;
     around it, a bf16 matmul probe measures how fast the CPU is now (mean over ~1 s) against how fast it
     is when nothing else runs (the best single matmul, short enough to fit in a quiet time slice; or
     `--idle-gflops`, measured on this machine when idle, for a machine that has no quiet moments).
     unloaded tok/s = probed tok/s x (idle / now). On an idle machine the factor is about 1.
  2. horizon: tokens = budget x unloaded tok/s, rounded to whole optimizer steps; the run trains exactly
     those (warmup and warmdown follow the step count, as in the preset).
  3. score: the stage's final val bpb (the whole validation shard, the preset's eval tokens), val bpb
     per language (the validation shard's documents grouped by language), and bpb on held-out text
     given with `--heldout NAME=PATH` (files or folders of .txt/.jsonl/.parquet from outside the
     dataset: a guard against picking settings that fit the validation split and nothing else).
`--tokens N` skips the probe and trains every configuration on N tokens (for comparisons at equal data).
Intermediate evaluations, samples and checkpoints are switched off; the budget is training time.

Progress goes to stderr; stdout is one JSON document.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import nanochat_datasets  # noqa: F401  (the starter data's plugin)
except ImportError:  # running from a checkout without an install
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "plugins")]

QUIET = ["eval_every=-1", "sample_every=-1", "save_every=-1"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def matmul_flops(seconds: float = 1.0, n: int = 1024) -> tuple[float, float]:
    """(best, mean) bf16 matmul FLOP/s over `seconds`: the best one is the idle speed when the machine has quiet
    moments; the mean is how fast it is now."""
    import torch
    a = torch.randn(n, n).bfloat16()
    b = torch.randn(n, n).bfloat16()
    a @ b
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    return flops / min(times), flops * len(times) / sum(times)


def full_key(item: str) -> str:
    key = item.partition("=")[0]
    return item if "." in key else f"pretrain.{item}"


def new_run(name: str, preset: str, overrides: list[str], tokenizer_dir: Path | None):
    """A run of the preset with the overrides; its tokenizer copied in when one was trained already."""
    from nanochat import runner
    run = runner.open_or_create(preset, name, overrides)
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, run.checkpoint_dir("tokenizer"), dirs_exist_ok=True)
    return run


def train(name, preset, overrides, tokenizer_dir):
    """The run's tokenizer and pretrain stages, in this process (no report card: its plots take a while)."""
    from nanochat import runner
    run = new_run(name, preset, overrides, tokenizer_dir)
    for entry in run.stages():
        if entry["name"] in ("tokenizer", "pretrain"):
            runner.execute_stage(run, entry, echo=False)
    return run


def probe_speed(label, preset, overrides, tokenizer_dir, steps: int, idle_flops: float | None) -> tuple[dict, object]:
    """Tokens/s of a configuration now, and scaled to an idle machine by the matmul speed around the probe."""
    before = matmul_flops()
    run = train(f"probe-{label}", preset, overrides + QUIET + [f"pretrain.num_iterations={steps}",
                                                               "pretrain.eval_tokens=1"], tokenizer_dir)
    after = matmul_flops()
    records = [r for r in run.metrics("pretrain") if "tok_per_s" in r]
    warm = records[min(3, len(records) - 1):]  # the first steps compile
    tok_per_s = statistics.median(r["tok_per_s"] for r in warm)
    idle = idle_flops or max(before[0], after[0])
    slowdown = idle / ((before[1] + after[1]) / 2)
    return {"tok_per_s_now": round(tok_per_s), "matmul_gflops_now": round((before[1] + after[1]) / 2e9, 1),
            "matmul_gflops_idle": round(idle / 1e9, 1), "cpu_slowdown": round(slowdown, 3),
            "tok_per_s_unloaded": round(tok_per_s * slowdown), "steps": len(records)}, run


def heldout_documents(spec: str) -> tuple[str, list[str]]:
    from nanochat.textfiles import collect_files, iter_documents
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--heldout {spec!r} is not NAME=PATH (e.g. --heldout en=~/texts/en)")
    docs = [d for d in iter_documents(collect_files([Path(path).expanduser()])) if d.strip()]
    if not docs:
        raise SystemExit(f"--heldout {spec!r}: no text found in {path}")
    return name, docs


def score(run, heldout: dict, lang_tokens: int) -> dict:
    """Val bpb from the stage, then per language of the validation split and on each held-out text."""
    import torch
    from nanochat.checkpoint import load_model
    from nanochat.datasets import documents_by_language, resolve
    from nanochat.evaluation.bpb import documents_bpb
    from nanochat.stages import find_artifact
    from nanochat.tokenizer import Tokenizer
    status = run.status("pretrain")
    settings = next(s for s in run.stages() if s["name"] == "pretrain")["settings"]
    tok = Tokenizer.load(find_artifact(run, "tokenizer"))
    model, ckpt = load_model(find_artifact(run, "base-model"), "cpu", torch.bfloat16)
    token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64)
    T = model.config.sequence_len

    def bpb(docs):
        return round(documents_bpb(model, tok, docs, seq_len=T, batch_size=4, max_tokens=lang_tokens,
                                   token_bytes=token_bytes), 4)

    val = documents_by_language(resolve(settings["dataset"]).iter_documents("val"))
    counts = model.num_scaling_params()
    summary = status.get("summary") or {}
    scaling = counts["transformer_matrices"] + counts["lm_head"]
    return {"depth": settings["depth"], "width": model.config.n_embd, "params": counts["total"],
            "scaling_params": scaling, "steps": ckpt.step, "tokens": summary.get("tokens"),
            "tokens_per_param": round(summary.get("tokens", 0) / scaling, 3),
            "train_s_here": round(sum(r["dt_ms"] for r in run.metrics("pretrain") if "dt_ms" in r) / 1000, 1),
            "val_bpb": round(summary["val_bpb"], 4),
            "val_bpb_by_language": {lang: bpb(docs) for lang, docs in val.items()},
            "heldout_bpb": {name: bpb(docs) for name, docs in heldout.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", action="append", default=None, metavar="'KEY=VALUE ...'",
                    help="one configuration: space-separated --set overrides ('' = the preset); repeatable")
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--budget-s", type=float, default=300.0, help="pretraining seconds on an unloaded machine")
    ap.add_argument("--tokens", type=int, default=None, help="train every configuration on this many tokens instead")
    ap.add_argument("--probe-steps", type=int, default=12)
    ap.add_argument("--idle-gflops", type=float, default=None,
                    help="bf16 1024^3 matmul GFLOP/s of this machine when idle (default: the best seen while probing; "
                         "give it when the machine has no quiet moments)")
    ap.add_argument("--lang-tokens", type=int, default=65536, help="tokens scored per language / held-out text")
    ap.add_argument("--heldout", action="append", default=[], metavar="NAME=PATH",
                    help="held-out text from outside the dataset, scored as its own figure; repeatable")
    ap.add_argument("--home", help="NANOCHAT_HOME to train in (default: a scratch folder, removed at the end)")
    args = ap.parse_args()
    configs = args.config if args.config is not None else [""]
    heldout = dict(heldout_documents(spec) for spec in args.heldout)

    scratch = None if args.home else tempfile.mkdtemp(prefix="nanochat-quality-")
    os.environ["NANOCHAT_HOME"] = args.home or scratch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    results, tokenizer_dir = [], None
    try:
        stamp = time.strftime("%H%M%S")
        for i, config in enumerate(configs):
            overrides = [full_key(item) for item in shlex.split(config)]
            label = f"c{i}-{stamp}"
            log(f"== {label}: {' '.join(overrides) or '(the preset)'}")
            row = {"config": " ".join(overrides) or "(preset)"}
            # the tokenizer is trained once and copied into each run, unless a configuration changes it
            own_tokenizer = any(o.startswith("tokenizer.") for o in overrides)
            given = None if own_tokenizer else tokenizer_dir
            if args.tokens is None:
                row["probe"], probe_run = probe_speed(label, args.preset, overrides, given, args.probe_steps,
                                                     args.idle_gflops and args.idle_gflops * 1e9)
                given = given or probe_run.checkpoint_dir("tokenizer")
                tokens = args.budget_s * row["probe"]["tok_per_s_unloaded"]
                log(f"   probe: {row['probe']}")
            else:
                tokens = args.tokens
            steps = max(1, round(tokens / total_batch(args.preset, overrides)))
            t0 = time.time()
            run = train(label, args.preset, overrides + QUIET + [f"pretrain.num_iterations={steps}"], given)
            if not own_tokenizer and tokenizer_dir is None:
                tokenizer_dir = run.checkpoint_dir("tokenizer")
            row["wall_s_here"] = round(time.time() - t0, 1)
            row.update(score(run, heldout, args.lang_tokens))
            log(f"   {json.dumps(row)}")
            results.append(row)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"preset": args.preset, "budget_s": None if args.tokens else args.budget_s,
                      "tokens": args.tokens, "torch_threads": torch.get_num_threads(), "results": results}, indent=2))


def total_batch(preset: str, overrides: list[str]) -> int:
    """Tokens per optimizer step of the preset with these overrides (derived from the horizon when -1)."""
    import torch
    from nanochat import runner
    from nanochat.stages.pretrain import PretrainSettings, build_model, plan_training
    entries = {e["name"]: e["settings"] for e in runner.plan(runner.load_preset(preset)[1], overrides)}
    s = PretrainSettings(**entries["pretrain"])
    model = build_model(s, entries["tokenizer"]["vocab_size"], "meta", torch.float32)
    return plan_training(s, model, 1).total_batch_size


if __name__ == "__main__":
    main()
