"""Inference throughput of the engine: prefill and decode tok/s per batch size, and naive generation.

    python benchmarks/infer.py --depth 4 --vocab-size 8192 --prompt-tokens 32 --new-tokens 256 --batch-sizes 1,8

A random-init model on the current device, greedy decoding, through Engine.generate:
- prefill: the batch-1 pass over the prompt, up to the first sampled token (prompt tokens / time);
- decode: every later step, all rows (rows x steps / time), and the time of one step;
- naive: generation without a cache at batch 1 (the whole sequence through the model for every new
  token), the baseline a KV cache has to beat.
The special tokens' rows of lm_head are zeroed so greedy decoding never stops early on a random model.
Each figure is the median of --repeats runs; a shared machine's speed moves, so compare medians taken
in one sitting. Progress goes to stdout; the last line is one JSON document.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import nanochat_backends  # noqa: F401  (the backends plugin picks the device and dtype)
except ImportError:  # running from a checkout without an install
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "plugins")]
from nanochat.engine import Engine
from nanochat.model import GPT, GPTConfig
from nanochat.tokenizer import SPECIAL_TOKENS


def log(msg):
    print(msg, flush=True)


class SpecialTokens:
    """What the engine asks a tokenizer for, with the specials at the top of the vocab (as trained)."""

    def __init__(self, vocab_size):
        self.ids = {name: vocab_size - len(SPECIAL_TOKENS) + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.bos_id = self.ids["<|bos|>"]

    def encode_special(self, name):
        return self.ids[name]

    def encode(self, text):
        return []

    def decode(self, ids):
        return ""


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generate(engine, prompt, batch, new_tokens, device):
    """(seconds to the first token, seconds of the remaining steps, steps after the first, their CPU seconds)."""
    sync(device)
    t0 = time.perf_counter()
    stream = engine.generate(prompt, num_samples=batch, max_tokens=new_tokens, temperature=0.0)
    next(stream)
    sync(device)
    t1, c1 = time.perf_counter(), time.process_time()
    steps = sum(1 for _ in stream)
    sync(device)
    return t1 - t0, time.perf_counter() - t1, steps, time.process_time() - c1


@torch.inference_mode()
def time_naive(model, prompt, new_tokens, device):
    """Generation without a cache: every step runs the whole sequence."""
    ids = torch.tensor([prompt], device=device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat((ids, nxt), dim=1)
    ids.tolist()
    sync(device)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--sequence-len", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,8", help="comma-separated decode batch sizes")
    ap.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--device", default="auto", help="backend name (cpu, cuda, mps) or auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-naive", action="store_true", help="skip generation without a cache")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from nanochat.backend import select
    backend = select(args.device)
    device = backend.device(0)
    dtype = {"auto": backend.compute_dtype(), "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    config = GPTConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.sequence_len)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(config, compute_dtype=dtype)
    model.to_empty(device=device)
    model.init_weights()
    model.eval()
    tokenizer = SpecialTokens(args.vocab_size)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.bos_id:] = 0.0
    engine = Engine(model, tokenizer)
    g = torch.Generator().manual_seed(0)
    prompt = [tokenizer.bos_id] + torch.randint(0, tokenizer.bos_id, (args.prompt_tokens - 1,), generator=g).tolist()
    params = sum(p.numel() for p in model.parameters())
    log(f"depth {args.depth}, width {config.n_embd}, vocab {args.vocab_size:,}, {params:,} params, {dtype}, "
        f"{device}, {torch.get_num_threads()} threads; prompt {args.prompt_tokens}, {args.new_tokens} new tokens")

    for b in batch_sizes:  # warm up kernels and the allocator at the very sizes timed below
        time_generate(engine, prompt, b, args.new_tokens, device)
    runs = {b: [] for b in batch_sizes}
    naive = []
    for rep in range(args.repeats):
        for b in batch_sizes:
            first, rest, steps, cpu = time_generate(engine, prompt, b, args.new_tokens, device)
            if steps != args.new_tokens - 1:
                raise SystemExit(f"generation stopped after {steps + 1} of {args.new_tokens} tokens")
            runs[b].append((first, rest, steps, cpu))
            log(f"  run {rep + 1}: batch {b:3d}: prefill {args.prompt_tokens / first:9,.0f} tok/s | "
                f"decode {b * steps / rest:9,.0f} tok/s, {1000 * rest / steps:6.2f} ms/step")
        if not args.no_naive:
            naive.append(time_naive(model, prompt, args.new_tokens, device))
            log(f"  run {rep + 1}: naive (no cache, batch 1): {args.new_tokens / naive[-1]:9,.0f} tok/s")

    result = {"benchmark": "infer", "device": str(device), "backend": backend.name, "dtype": str(dtype).split(".")[-1],
              "threads": torch.get_num_threads(), "torch": torch.__version__, "depth": args.depth,
              "width": config.n_embd, "vocab_size": args.vocab_size, "params": params,
              "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "batch": {}}
    for b, rs in runs.items():
        result["batch"][str(b)] = {
            "prefill_tok_s": round(statistics.median(args.prompt_tokens / r[0] for r in rs), 1),
            "ttft_ms": round(1000 * statistics.median(r[0] for r in rs), 3),
            "decode_tok_s": round(statistics.median(b * steps / rest for _, rest, steps, _ in rs), 1),
            "ms_per_step": round(1000 * statistics.median(rest / steps for _, rest, steps, _ in rs), 3),
            # CPU time of this process per step: on a shared machine it moves less than wall time
            "cpu_ms_per_step": round(1000 * statistics.median(cpu / steps for _, _, steps, cpu in rs), 3)}
    result["prefill_tok_s"] = result["batch"][str(batch_sizes[0])]["prefill_tok_s"]
    if naive:
        result["naive_tok_s"] = round(args.new_tokens / statistics.median(naive), 1)
        if 1 in runs:
            whole = statistics.median(r[0] + r[1] for r in runs[1])
            result["batch1_speedup_vs_naive"] = round(statistics.median(naive) / whole, 2)
    for b, r in result["batch"].items():
        log(f"batch {b}: prefill {r['prefill_tok_s']:,.0f} tok/s, decode {r['decode_tok_s']:,.0f} tok/s "
            f"({r['ms_per_step']:.2f} ms/step)")
    if naive:
        log(f"naive: {result['naive_tok_s']:,.0f} tok/s; the engine is {result.get('batch1_speedup_vs_naive')}x "
            f"faster at batch 1 (whole generation)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
