"""Inference throughput of the engine: prefill and decode tok/s per batch size, and naive generation.

    python benchmarks/infer.py --depth 4 --vocab-size 8192 --prompt-tokens 32 --new-tokens 256 --batch-sizes 1,8
    python benchmarks/infer.py --reference ../nanochat     # also time the reference nanochat, same process
    python benchmarks/infer.py --with-forward              # also decode through GPT.forward (CPU: before CpuDecode)
    python benchmarks/infer.py --with-torch-step           # also CpuDecode on torch ops (CPU: before the Rust kernels)

A random-init model on the current device, greedy decoding, through Engine.generate:
- prefill: the batch-1 pass over the prompt, up to the first sampled token (prompt tokens / time);
- decode: every later step, all rows (rows x steps / time), and the time of one step;
- naive: generation without a cache at batch 1 (the whole sequence through the model for every new
  token), the baseline a KV cache has to beat.
The special tokens' rows of lm_head are zeroed so greedy decoding never stops early on a random model.

Memory-bandwidth utilisation: a decode step reads every matmul weight (in the compute dtype) and
each row's keys and values in every layer's window; those bytes over the step's time, over the
machine's bandwidth: measured here with a large tensor copy on a CPU, the datasheet's on a GPU.

--reference PATH (a checkout of the reference nanochat, fetched by you, never committed here) builds
the reference's GPT with the same shape, dtype and weights, and times its Engine beside ours in
the same process, runs interleaved; the JSON then holds both and their ratios (ours / reference).
--with-forward adds our engine with cpu_step=False (every decode step through GPT.forward, as
before nanochat/cpu_decode.py) the same way: "forward" per batch size, decode_ratio_vs_forward,
and forward_same_tokens (how many greedy tokens the two paths share; all of them, by design).
--with-torch-step adds our engine with fused=False (CpuDecode on torch ops, before the Rust kernels
of rustbpe/src/decode.rs): "torch_step", decode_ratio_vs_torch_step, torch_step_same_tokens.
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

    def get_bos_token_id(self):  # the reference's name for bos_id
        return self.bos_id


# datasheet memory bandwidth per GPU, bytes/s (the first name found in the device's name wins)
GPU_BANDWIDTH = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "B200": 8.0e12,
                 "A100-SXM4-80GB": 2.039e12, "A100 80GB PCIe": 1.935e12, "A100": 1.555e12, "L40S": 0.864e12,
                 "A10": 0.6e12, "L4": 0.3e12, "4090": 1.008e12}


def memory_bandwidth(device):
    """(bytes/s, how it was found): the datasheet's on a GPU, a large copy's best of 5 on a CPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, bw in GPU_BANDWIDTH.items():
            if key in name:
                return bw, f"datasheet ({key})"
        return None, f"unknown GPU {name!r}: add its bandwidth to GPU_BANDWIDTH"
    a = torch.ones(1 << 26)  # 256 MiB: far beyond any cache
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * a.element_size() / best, "measured (256 MiB copy: read + write)"


def decode_bytes_per_step(model, batch, prompt_tokens, new_tokens, dtype, kv_dtype):
    """Bytes one decode step reads, averaged over the timed steps: every matmul weight in the compute
    dtype (embedding tables give only a row per token: left out), and each row's keys and values
    within every layer's window."""
    cfg = model.config
    weights = model.num_matmul_params() * torch.finfo(dtype).bits // 8
    per_position = 2 * cfg.n_kv_head * cfg.head_dim * torch.finfo(kv_dtype).bits // 8  # k and v
    steps = range(prompt_tokens + 1, prompt_tokens + new_tokens)  # cache length at each timed step
    kv = statistics.mean(sum(min(n, w + 1) for w in model.windows) for n in steps) * per_position * batch
    return weights + kv


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


def build_reference(ref, model, device, dtype):
    """The reference's GPT with our model's shape and weights (the two share parameter names)."""
    cfg = model.config
    ref_cfg = ref.GPTConfig(sequence_len=cfg.sequence_len, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                            n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, n_embd=cfg.n_embd,
                            window_pattern=cfg.window_pattern)
    with torch.device("meta"):
        theirs = ref.GPT(ref_cfg)
    theirs.to_empty(device=device)
    theirs.init_weights()
    mine = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name not in mine or mine[name].numel() != p.numel():
                raise SystemExit(f"the reference's parameter {name} has no match in our model: "
                                 f"is {ref.path} a nanochat checkout of this architecture?")
            p.copy_(mine[name].view_as(p))
    if theirs.cos.dtype != dtype:
        raise SystemExit(f"the reference computes in {theirs.cos.dtype}, not {dtype}: it was imported before?")
    return theirs.eval()


def main(argv=None):
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
    ap.add_argument("--compile", choices=["on", "off"], default="off",
                    help="on: our decode steps through torch.compile (Engine(compile=True)); off: eager")
    ap.add_argument("--reference", metavar="PATH", help="a checkout of the reference nanochat to time beside ours")
    ap.add_argument("--with-forward", action="store_true",
                    help="also time our engine decoding through GPT.forward (cpu_step=False), same process")
    ap.add_argument("--with-torch-step", action="store_true",
                    help="also time our CPU decode step on torch ops, without the Rust kernels (fused=False)")
    args = ap.parse_args(argv)
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
    engines = {"ours": Engine(model, tokenizer, compile=args.compile == "on")}
    if args.with_forward:
        engines["forward"] = Engine(model, tokenizer, cpu_step=False)
    if args.with_torch_step:
        engines["torch_step"] = Engine(model, tokenizer, fused=False)
    if args.reference:
        from reference import load_reference
        ref = load_reference(args.reference, dtype)
        engines["reference"] = ref.Engine(build_reference(ref, model, device, dtype), tokenizer)
    g = torch.Generator().manual_seed(0)
    prompt = [tokenizer.bos_id] + torch.randint(0, tokenizer.bos_id, (args.prompt_tokens - 1,), generator=g).tolist()
    params = sum(p.numel() for p in model.parameters())
    log(f"depth {args.depth}, width {config.n_embd}, vocab {args.vocab_size:,}, {params:,} params, {dtype}, "
        f"{device}, {torch.get_num_threads()} threads; prompt {args.prompt_tokens}, {args.new_tokens} new tokens"
        + (f"; reference: {args.reference}" if args.reference else ""))

    for engine in engines.values():  # warm up kernels, compilation and the allocator at the very sizes timed
        for b in batch_sizes:
            time_generate(engine, prompt, b, args.new_tokens, device)
    runs = {(who, b): [] for who in engines for b in batch_sizes}
    naive = []
    for rep in range(args.repeats):
        for b in batch_sizes:
            for who, engine in engines.items():  # interleaved: both meet the same machine load
                first, rest, steps, cpu = time_generate(engine, prompt, b, args.new_tokens, device)
                if steps != args.new_tokens - 1:
                    raise SystemExit(f"{who}: generation stopped after {steps + 1} of {args.new_tokens} tokens")
                runs[who, b].append((first, rest, steps, cpu))
                log(f"  run {rep + 1}: {who:10s} batch {b:3d}: prefill {args.prompt_tokens / first:9,.0f} tok/s | "
                    f"decode {b * steps / rest:9,.0f} tok/s, {1000 * rest / steps:6.2f} ms/step")
        if not args.no_naive:
            naive.append(time_naive(model, prompt, args.new_tokens, device))
            log(f"  run {rep + 1}: naive (no cache, batch 1): {args.new_tokens / naive[-1]:9,.0f} tok/s")

    bandwidth, bandwidth_source = memory_bandwidth(device)
    result = {"benchmark": "infer", "device": str(device), "backend": backend.name, "dtype": str(dtype).split(".")[-1],
              "threads": torch.get_num_threads(), "torch": torch.__version__, "compile": args.compile,
              "depth": args.depth,
              "width": config.n_embd, "vocab_size": args.vocab_size, "params": params,
              "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "memory_bandwidth_gb_s": bandwidth and round(bandwidth / 1e9, 1),
              "memory_bandwidth_source": bandwidth_source, "batch": {}}

    def summary(rs, b):
        return {
            "prefill_tok_s": round(statistics.median(args.prompt_tokens / r[0] for r in rs), 1),
            "ttft_ms": round(1000 * statistics.median(r[0] for r in rs), 3),
            "decode_tok_s": round(statistics.median(b * steps / rest for _, rest, steps, _ in rs), 1),
            "ms_per_step": round(1000 * statistics.median(rest / steps for _, rest, steps, _ in rs), 3),
            # CPU time of this process per step: on a shared machine it moves less than wall time
            "cpu_ms_per_step": round(1000 * statistics.median(cpu / steps for _, _, steps, cpu in rs), 3)}

    for b in batch_sizes:
        r = result["batch"][str(b)] = summary(runs["ours", b], b)
        step_bytes = decode_bytes_per_step(model, b, args.prompt_tokens, args.new_tokens, dtype, model.kv_cache_dtype)
        r["bytes_per_step"] = step_bytes
        if bandwidth:
            r["bandwidth_utilisation"] = round(step_bytes / (r["ms_per_step"] / 1000) / bandwidth, 4)
        for before_name in ("forward", "torch_step"):
            if before_name in engines:
                before = r[before_name] = summary(runs[before_name, b], b)
                r[f"decode_ratio_vs_{before_name}"] = round(r["decode_tok_s"] / before["decode_tok_s"], 2)
                r[f"decode_cpu_ratio_vs_{before_name}"] = round(before["cpu_ms_per_step"] / r["cpu_ms_per_step"], 2)
        if "reference" in engines:
            theirs = r["reference"] = summary(runs["reference", b], b)
            for key in ("prefill_tok_s", "decode_tok_s"):
                r[key.replace("_tok_s", "_ratio")] = round(r[key] / theirs[key], 2)
            # the same ratio by this process's CPU time per step: steadier when other jobs share the cores
            r["decode_cpu_ratio"] = round(theirs["cpu_ms_per_step"] / r["cpu_ms_per_step"], 2)
    result["prefill_tok_s"] = result["batch"][str(batch_sizes[0])]["prefill_tok_s"]
    if naive:
        result["naive_tok_s"] = round(args.new_tokens / statistics.median(naive), 1)
        if 1 in batch_sizes:
            whole = statistics.median(r[0] + r[1] for r in runs["ours", 1])
            result["batch1_speedup_vs_naive"] = round(statistics.median(naive) / whole, 2)
    def greedy(who):
        return [c[0] for c, _ in engines[who].generate(prompt, max_tokens=args.new_tokens, temperature=0.0)]

    for who in ("reference", "forward", "torch_step"):  # same weights: the reference's tokens equal in fp32, close in bf16
        if who in engines:
            a, z = greedy("ours"), greedy(who)
            result[f"{who}_same_tokens"] = next((i for i, (x, y) in enumerate(zip(a, z)) if x != y), len(a))
    for b, r in result["batch"].items():
        mbu = f", {100 * r['bandwidth_utilisation']:.1f}% of memory bandwidth" if "bandwidth_utilisation" in r else ""
        log(f"batch {b}: prefill {r['prefill_tok_s']:,.0f} tok/s, decode {r['decode_tok_s']:,.0f} tok/s "
            f"({r['ms_per_step']:.2f} ms/step{mbu})")
        for before_name, label in (("forward", "GPT.forward decoding"), ("torch_step", "the step on torch ops")):
            if before_name in r:
                log(f"  vs {label}: {r[f'decode_ratio_vs_{before_name}']}x "
                    f"(by CPU time {r[f'decode_cpu_ratio_vs_{before_name}']}x)")
        if "reference" in r:
            log(f"  vs reference: prefill {r['prefill_ratio']}x, decode {r['decode_ratio']}x "
                f"(by CPU time {r['decode_cpu_ratio']}x) "
                f"(reference: {r['reference']['decode_tok_s']:,.0f} tok/s)")
    if naive:
        log(f"naive: {result['naive_tok_s']:,.0f} tok/s; the engine is {result.get('batch1_speedup_vs_naive')}x "
            f"faster at batch 1 (whole generation)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
