"""Training-step throughput and MFU on random tokens: forward + backward + optimizer step.

    python benchmarks/train.py --depth 4 --seq-len 512 --batch 8 --dtype bf16
    python benchmarks/train.py --preset cpu-tiny               # the shape of a preset's pretrain stage
    python benchmarks/train.py --reference ../nanochat         # also time the reference nanochat, same process

On a CPU the peak is measured here, in the same process (fp32 and bf16 matmuls), because a
shared machine's speed moves from minute to minute; MFU is against the peak of the dtype used.
On CUDA the peak comes from the card's datasheet (dense bf16 / tf32). Progress goes to stdout,
and the last line is one JSON document.

--reference PATH (a checkout of the reference nanochat, fetched by you, never committed here) builds
the reference's GPT at the same shape (depth, width, heads, sequence length, vocab, window pattern)
and compute dtype, with its own optimizer (`GPT.setup_optimizer`: its MuonAdamW, whose update
kernels it always compiles) and, as its base_train does on every device, its model under
`torch.compile(dynamic=False)`; it then trains on the same tokens. The two steps are timed in
turns (`--repeats` rounds of `--steps` steps each, who goes first alternating), so both meet the
same machine; the JSON's `reference` holds its figures, and `ratio` ours / reference: tok/s (the
median step's wall time; the same peak, so also tok/s per unit of peak) and process CPU time per
step (which a neighbour's load moves less).
"""
import argparse
import gc
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

try:
    import nanochat_optimizers  # noqa: F401  (the first-party plugins are importable: an install or PYTHONPATH)
except ImportError:  # running from a checkout without an install
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "plugins")]
from nanochat import fp8 as fp8_matmuls
from nanochat import gpus
from nanochat.cpu_memory import keep_freed_memory
from nanochat.model import GPT, GPTConfig
from nanochat.plugins import registry
from nanochat.training import build_optimizer

def log(msg):
    print(msg, flush=True)


def matmul_peak(dtype, device, n=2048, reps=6):
    """Best FLOP/s of an n x n x n matmul: the ceiling a training step can reach."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_peak(dtype):
    """The card's datasheet peak for this dtype (nanochat/gpus.py, the table a run's MFU uses too)."""
    name = torch.cuda.get_device_name()
    if dtype == torch.bfloat16:
        found = gpus.spec(name)
        return found[1] if found else None
    return gpus.tf32_peak(name)


def preset_shape(name):
    """depth, head_dim, seq_len, batch, vocab_size and window pattern of a preset's pretrain stage."""
    from nanochat.runner import load_preset, plan
    _, preset = load_preset(name)
    stages = {e["stage"]: e["settings"] for e in plan(preset, [])}
    if "pretrain" not in stages:
        raise SystemExit(f"--preset {name}: it has no pretrain stage; name a preset that pretrains (e.g. cpu-tiny)")
    pre = stages["pretrain"]
    vocab = stages.get("tokenizer", {}).get("vocab_size")
    return dict(depth=pre["depth"], head_dim=pre["head_dim"], seq_len=pre["max_seq_len"],
                batch=pre["device_batch_size"], window_pattern=pre["window_pattern"],
                **({"vocab_size": vocab} if vocab else {}))


def build_ours(args, cfg, dtype, device, compiled):
    """Our GPT and optimizer as a pretraining run builds them; returns (model, step function)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(cfg, compute_dtype=dtype, fp8=args.fp8)
    model.to_empty(device=device)
    model.init_weights()
    hparams = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28,
                   model_dim=cfg.n_embd)
    opt = build_optimizer(registry(), args.optimizer, model, hparams, SimpleNamespace(rank=0, size=1), compiled)
    run = torch.compile(model, dynamic=False) if compiled else model
    return model, training_step(run, model, opt)


def build_reference(path, cfg, dtype, device):
    """The reference's GPT at our shape, its optimizer, compiled as its base_train does."""
    from reference import load_reference, reference_modules
    ref = load_reference(path, dtype)
    rcfg = ref.GPTConfig(sequence_len=cfg.sequence_len, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                         n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, n_embd=cfg.n_embd,
                         window_pattern=cfg.window_pattern)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = ref.GPT(rcfg)
    model.to_empty(device=device)
    model.init_weights()
    opt = model.setup_optimizer(unembedding_lr=0.008, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.28,
                                scalar_lr=0.5)
    step = training_step(torch.compile(model, dynamic=False), model, opt)

    def reference_step(x, y):
        with reference_modules(ref):  # a dict swap of a few entries: microseconds in a step of many ms
            return step(x, y)
    return model, reference_step


def training_step(run, model, opt):
    def step(x, y):
        loss = run(x, y)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        return loss
    return step


def timed_steps(step, x, y, n, device):
    """(wall seconds, process CPU seconds) of each of n steps, and the last loss."""
    walls, cpus = [], []
    for _ in range(n):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step(x, y)
        sync(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus, loss.item()


def figures(walls, cpus, tokens, flops_per_token, peak):
    dt = statistics.median(walls)
    tok_per_s = tokens / dt
    mfu = flops_per_token * tok_per_s / peak if peak else None  # None: an fp8 GPU missing from the table
    return {"tok_per_s": round(tok_per_s, 1), "mfu": round(mfu, 4) if mfu is not None else None,
            "step_ms_median": round(dt * 1000, 2), "step_ms_min": round(min(walls) * 1000, 2),
            "cpu_ms_median": round(statistics.median(cpus) * 1000, 2), "steps_timed": len(walls),
            "achieved_flops": flops_per_token * tok_per_s}


def main(argv=None) -> dict:
    """Run the benchmark with these command-line arguments; print progress and the JSON line, return the result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", help="take depth, head dim, sequence length, batch, vocab and windows from this "
                                     "preset's pretrain stage (the flags below then override)")
    ap.add_argument("--depth", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--batch", type=int, help="rows per step (device batch)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after the warmup), per repeat")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation happens here)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of --steps steps (with --reference: turns "
                                                           "taken with the reference)")
    ap.add_argument("--vocab-size", type=int)
    ap.add_argument("--window-pattern")
    ap.add_argument("--head-dim", type=int)
    ap.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--fp8", action="store_true", help="the blocks' matmuls in fp8 (nanochat/fp8.py); MFU against "
                                                        "the fp8 peak on CUDA")
    ap.add_argument("--optimizer", default="muon", help="optimizer plugin name")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--reference", metavar="PATH", help="a checkout of the reference nanochat: time its training "
                                                        "step beside ours, in turns")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="have malloc keep freed blocks, as nanochat's training stages do on a CPU (process-wide: the "
                         "reference's steps too, which it does not do when run as itself); default: glibc's defaults")
    args = ap.parse_args(argv)
    if args.reference and args.fp8:
        raise SystemExit("--reference builds the reference in the compute dtype, not fp8; drop --fp8 to compare")
    shape = dict(depth=4, head_dim=128, seq_len=512, batch=8, vocab_size=8192, window_pattern="L")
    if args.preset:
        shape.update(preset_shape(args.preset))
    for key in shape:
        if getattr(args, key) is None:
            setattr(args, key, shape[key])

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.keep_freed_memory:
        keep_freed_memory(device)  # as the training stages do on a CPU; process-wide, so for the reference too

    # the ceiling: measured on CPU, from the datasheet on CUDA
    peaks = {}
    if device.type == "cpu":
        peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
        log(f"measured matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    if args.dtype == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float32
        else:  # bf16 only where the CPU has fast bf16 matmuls (AVX-512 BF16 / AMX)
            dtype = torch.bfloat16 if peaks["bf16"] > 1.3 * peaks["fp32"] else torch.float32
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    dname = "bf16" if dtype == torch.bfloat16 else "fp32"
    if args.fp8:
        fp8_matmuls.check_supported(device)  # a clear refusal on a GPU without fp8 tensor cores
    if device.type == "cuda":
        peak = gpu_peak(dtype) or matmul_peak(dtype, device, n=8192)
        if args.fp8:
            peak = gpus.fp8_peak(torch.cuda.get_device_name())
    else:
        peak = peaks[dname]  # the emulated fp8 multiplies in the compute dtype
    compiled = args.compile == "on" or (args.compile == "auto" and device.type in ("cpu", "cuda"))

    cfg = GPTConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len,
                               head_dim=args.head_dim, window_pattern=args.window_pattern)
    model, step = build_ours(args, cfg, dtype, device, compiled)
    flops_per_token = model.estimate_flops()
    log(f"depth {args.depth}: width {cfg.n_embd}, {cfg.n_head} heads, windows {model.windows}, "
        f"{sum(p.numel() for p in model.parameters()):,} params, {flops_per_token:.3e} FLOPs/token, "
        f"dtype {dname}{' + fp8' if args.fp8 else ''}, compile {compiled}, optimizer {args.optimizer}")
    sides = {"ours": step}
    if args.reference:
        ref_model, sides["reference"] = build_reference(args.reference, cfg, dtype, device)
        log(f"reference {args.reference}: {sum(p.numel() for p in ref_model.parameters()):,} params, compiled")

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, args.vocab_size, (args.batch, args.seq_len), generator=g).to(device)
    y = torch.randint(0, args.vocab_size, (args.batch, args.seq_len), generator=g).to(device)

    for name, side in sides.items():
        t0 = time.perf_counter()
        for i in range(args.warmup):
            loss = side(x, y)
            log(f"{name} warmup {i + 1}/{args.warmup}: loss {loss.item():.4f} ({time.perf_counter() - t0:.1f} s)")
    gc.collect()
    gc.freeze()
    gc.disable()  # no collector pauses inside timed steps
    walls = {name: [] for name in sides}
    cpus = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # who goes first alternates
            w, c, loss = timed_steps(sides[name], x, y, args.steps, device)
            walls[name] += w
            cpus[name] += c
            log(f"{name} round {r + 1}/{args.repeats}: median {statistics.median(w) * 1000:.1f} ms/step, "
                f"loss {loss:.4f}")
    gc.enable()

    tokens = args.batch * args.seq_len
    ours = figures(walls["ours"], cpus["ours"], tokens, flops_per_token, peak)
    if device.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated()
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    result = {
        **ours, "peak_flops": peak, "dtype": dname,
        "compiled": compiled, "fp8": args.fp8, "flops_per_token": flops_per_token, "peak_memory": peak_memory,
        "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "keep_freed_memory": args.keep_freed_memory, "depth": args.depth,
        "seq_len": args.seq_len, "batch": args.batch,
        "head_dim": args.head_dim, "vocab_size": args.vocab_size, "window_pattern": cfg.window_pattern,
        "optimizer": args.optimizer, "preset": args.preset,
        "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
    }
    if peaks:
        result["measured_peak_fp32"] = peaks["fp32"]
        result["measured_peak_bf16"] = peaks["bf16"]
    if args.reference:
        # the same FLOPs per token for both (ours counts them), so MFU compares like tok/s
        ref = figures(walls["reference"], cpus["reference"], tokens, flops_per_token, peak)
        ref["params"] = sum(p.numel() for p in ref_model.parameters())
        result["reference"] = ref
        result["ratio"] = {"tok_per_s": round(ours["tok_per_s"] / ref["tok_per_s"], 3),
                           "cpu_time": round(ref["cpu_ms_median"] / ours["cpu_ms_median"], 3)}
        log(f"ours / reference: {result['ratio']['tok_per_s']:.3f}x tok/s, "
            f"{result['ratio']['cpu_time']:.3f}x by CPU time per step")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
