"""What the GPU check's parts share: the --cpu mode, the device, named checks, and one JSON line per part.

Each part is a script that prints one JSON line when it finishes ({"part": ..., "ok": ..., checks...}), so
benchmarks/gpu_check.sh can give each its own time limit and a limit hit loses one part, not all. With
--cpu a part runs the same code at tiny shapes on the CPU (tests/test_gpu_check.py), so it cannot rot on
machines without a GPU; its figures then say nothing about speed.
"""
import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "benchmarks", ROOT / "plugins", ROOT):  # a checkout without an install
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402


def parse(description: str, setup=None):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--cpu", action="store_true", help="the same code at tiny shapes on the CPU (for tests)")
    if setup:
        setup(ap)
    return ap.parse_args()


def device(args) -> torch.device:
    if args.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this checks the GPU paths (use --cpu to run it at tiny shapes here)")
    torch.backends.cuda.matmul.allow_tf32 = False  # exact comparisons in the checks
    return torch.device("cuda")


class Part:
    """Named checks of one part; finish() prints the part's JSON line and exits 1 if any check failed."""

    def __init__(self, name: str, args):
        self.name, self.out = name, {"part": name, "cpu_mode": args.cpu, "torch": torch.__version__}
        if torch.cuda.is_available() and not args.cpu:
            self.out.update(device_name=torch.cuda.get_device_name(),
                            capability=list(torch.cuda.get_device_capability()))

    def check(self, name: str):
        def run(fn):
            t0 = time.time()
            try:
                extra = fn() or {}
                self.out[name + "_ok"] = True
                self.out.update({f"{name}_{k}": v for k, v in extra.items()})
            except Exception as e:  # a failed check is a result: record it and go on to the next
                self.out[name + "_ok"] = False
                self.out[name + "_error"] = f"{type(e).__name__}: {e}"[:500]
                traceback.print_exc(file=sys.stderr)
            self.out[name + "_seconds"] = round(time.time() - t0, 1)
            print(f"{self.name}.{name}: {self.out[name + '_ok']} ({time.time() - t0:.1f} s)", file=sys.stderr)
        return run

    def finish(self):
        self.out["ok"] = all(v for k, v in self.out.items() if k.endswith("_ok"))
        print(json.dumps(self.out), flush=True)
        sys.exit(0 if self.out["ok"] else 1)


def build(dev, depth=2, seq=256, dtype=torch.bfloat16, pattern="SSSL", vocab=1000, seed=0, fp8=False, **kw):
    """A GPT with every weight non-zero (projections and smear included), so every path matters."""
    from nanochat.model import GPT, GPTConfig
    torch.manual_seed(seed)
    cfg = GPTConfig.from_depth(depth, vocab_size=vocab, sequence_len=seq, window_pattern=pattern, **kw)
    with torch.device("meta"):
        m = GPT(cfg, compute_dtype=dtype, fp8=fp8)
    m.to_empty(device=dev)
    m.init_weights()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
        m.smear_lambda.fill_(0.5)
    return m
