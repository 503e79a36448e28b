"""Is a compiled CPU training step repeatable, and what does making it so cost? Prints JSON.

    python benchmarks/determinism.py                 # the cpu-tiny model and batch (depth 3, 16 x 256), bf16
    python benchmarks/determinism.py --batch 4 --repeats 6 --variants atomic,repeatable,deterministic

The same forward + backward on the same batch, repeated, under torch.compile, in up to three variants:
  atomic         the embeddings as plain nn.Embedding: Inductor writes their backward on CPU as a scatter of
                 atomic adds from several threads, so the token and value embeddings' gradients depend on
                 which thread adds first (the compiled default before nanochat.repeatable_embedding);
  repeatable     the model as it is (RepeatableEmbedding: the embedding backward is an opaque op that runs
                 ATen's kernel, as eager does) -- today's default;
  deterministic  atomic + torch.use_deterministic_algorithms (Inductor then calls ATen's serial index_put).
For each: how many repeats gave gradients that differ bit-wise from the first, which parameters, and the
median seconds of a step. All variants are compiled and timed in this one process, in alternating rounds, so
the ratios to `atomic` hold on a shared machine.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanochat.model import GPT, GPTConfig  # noqa: E402
from nanochat.repeatable_embedding import RepeatableEmbedding  # noqa: E402
from nanochat.stages import repeatable_compile  # noqa: E402

VARIANTS = ("atomic", "repeatable", "deterministic")


def build(dtype, depth, seq, variant="repeatable"):
    torch.manual_seed(0)
    config = GPTConfig.from_depth(depth, vocab_size=8192, sequence_len=seq, head_dim=64, window_pattern="L")
    with torch.device("meta"):
        model = GPT(config, compute_dtype=dtype)
    model.to_empty(device="cpu")
    model.init_weights()
    for p in model.parameters():  # non-zero everywhere (init zeroes some projections), so every grad is live
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)
    if variant != "repeatable":  # the same tables as plain nn.Embedding: Inductor sees (and scatters) their backward
        for module in model.modules():
            if isinstance(module, RepeatableEmbedding):
                module.__class__ = torch.nn.Embedding
    return model


def step(model, compiled, x, y):
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    compiled(x, y).backward()
    seconds = time.perf_counter() - t
    return seconds, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--repeats", type=int, default=8, help="timed, compared steps per variant")
    parser.add_argument("--variants", default="atomic,repeatable", help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    names = args.variants.split(",")
    if any(n not in VARIANTS for n in names) or "atomic" not in names:
        parser.error(f"--variants {args.variants!r}: name some of {', '.join(VARIANTS)}, atomic among them (the baseline)")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8192, (args.batch, args.seq), generator=g)
    y = torch.randint(0, 8192, (args.batch, args.seq), generator=g)

    variants = {}
    for name in names:  # compile each (the deterministic flag is read when Inductor lowers the graph)
        torch._dynamo.reset()
        model = build(dtype, args.depth, args.seq, name)
        if name == "deterministic":
            compiled = repeatable_compile(model)
        else:
            compiled = torch.compile(model, dynamic=False)
        t = time.perf_counter()
        _, first = step(model, compiled, x, y)
        variants[name] = {"model": model, "compiled": compiled, "first": first, "times": [], "differ": [],
                          "compile_seconds": time.perf_counter() - t}
        torch.use_deterministic_algorithms(False)  # the next variant compiles as by default
    for _ in range(args.repeats):  # alternate, so load on a shared machine hits both alike
        for name, v in variants.items():
            torch.use_deterministic_algorithms(name == "deterministic", warn_only=True)
            seconds, grads = step(v["model"], v["compiled"], x, y)
            v["times"].append(seconds)
            v["differ"].append(sorted(n for n in grads if not torch.equal(grads[n], v["first"][n])))
    out = {"depth": args.depth, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
           "threads": torch.get_num_threads(), "repeats": args.repeats, "torch": torch.__version__}
    for name, v in variants.items():
        out[name] = {"median_step_seconds": round(statistics.median(v["times"]), 4),
                     "compile_seconds": round(v["compile_seconds"], 1),
                     "repeats_with_other_grads": sum(bool(d) for d in v["differ"]),
                     "params_that_differed": sorted({n for d in v["differ"] for n in d})}
    for name in names:
        if name != "atomic":
            out[f"{name}_over_atomic"] = round(out[name]["median_step_seconds"]
                                               / out["atomic"]["median_step_seconds"], 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
