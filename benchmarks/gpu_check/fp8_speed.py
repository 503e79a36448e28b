"""GPU check, part "fp8_d20" / "fp8_d24": one training step of the model in bf16, then with fp8 matmuls
(nanochat/fp8.py), compiled, at the preset's sequence length and vocabulary, in one process: step time, tok/s,
MFU (bf16 against the bf16 peak, fp8 against the fp8 peak) and peak memory, and their ratios. About
2-4 minutes per depth on one H100 (two compiles).

    python benchmarks/gpu_check/fp8_speed.py --depth 24 --batch 16 [--cpu]
"""
import gc

from common import Part, device, parse

import torch

args = parse(__doc__.split("\n")[0], lambda ap: (ap.add_argument("--depth", type=int, default=20),
                                                   ap.add_argument("--batch", type=int, default=16)))
dev = device(args)
part = Part(f"fp8_d{args.depth}", args)
import train  # noqa: E402  (benchmarks/train.py)

shape = (["--depth", "2", "--seq-len", "64", "--vocab-size", "512", "--batch", "2", "--steps", "1", "--warmup", "1",
          "--compile", "off", "--window-pattern", "SSSL", "--device", "cpu"] if args.cpu else
         ["--depth", str(args.depth), "--seq-len", "2048", "--vocab-size", "32768", "--batch", str(args.batch),
          "--steps", "6", "--warmup", "3", "--window-pattern", "SSSL", "--device", "cuda", "--dtype", "bf16"])
results = {}
for name, extra in (("bf16", []), ("fp8", ["--fp8"])):
    @part.check(name)
    def _():
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = train.main(shape + extra)
        results[name] = r
        return {k: r[k] for k in ("step_ms_median", "tok_per_s", "mfu", "peak_flops", "peak_memory")}
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


@part.check("ratio")
def _():
    bf16, f8 = results["bf16"], results["fp8"]
    return {"fp8_speedup": bf16["step_ms_median"] / f8["step_ms_median"],
            "fp8_memory_ratio": f8["peak_memory"] / bf16["peak_memory"]}


part.finish()
