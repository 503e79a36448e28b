"""Will a training configuration fit? Estimated peak memory per rank of one step (nanochat/memory.py).

    python benchmarks/memory.py --depth 20 --seq-len 2048 --device-batch 32 --world-size 8 --compiled

Runs on a CPU: the state is sized on the meta device, the activations measured on forwards of the
real width at 2 and 4 layers (a d20: about 1.5 minutes, 2.5 with --compiled, and up to 10 GB of
RAM on a 2-core machine). The last line is one JSON document (bytes, and `fits` against 90% of
--gpu-memory-gb).
"""
import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

try:
    import nanochat_optimizers
except ImportError:  # running from a checkout without an install
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "plugins")]
    import nanochat_optimizers
from nanochat.memory import HEADROOM, estimate
from nanochat.model import GPTConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--device-batch", type=int, default=32)
    ap.add_argument("--world-size", type=int, default=8)
    ap.add_argument("--vocab-size", type=int, default=32768, help="default: the speedrun preset's")
    ap.add_argument("--window-pattern", default="SSSL")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--optimizer", default="muon", help="optimizer plugin name")
    ap.add_argument("--device-type", choices=["cuda", "cpu"], default="cuda", help="sets the loss chunk size")
    ap.add_argument("--gpu-memory-gb", type=float, default=80.0)
    ap.add_argument("--compiled", action="store_true",
                    help="measure the activations of the compiled model, as a run keeps them (slower: 4 compiles)")
    args = ap.parse_args()

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    cfg = GPTConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len,
                               window_pattern=args.window_pattern)
    found = []
    nanochat_optimizers.nanochat_optimizer(register=found.append)
    plugin = {p.name: p for p in found}[args.optimizer]
    hparams = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28,
                   model_dim=cfg.n_embd)
    t0 = time.time()
    parts = estimate(cfg, dtype, args.device_batch, args.world_size,
                     lambda model: plugin.build(model, hparams, SimpleNamespace(rank=0, size=1)), args.device_type, args.compiled)
    limit = args.gpu_memory_gb * 1e9
    for k, v in parts.items():
        print(f"{k:>16}: {v / 1e9:7.2f} GB", flush=True)
    print(json.dumps({**vars(args), **parts, "fits": parts["total"] <= HEADROOM * limit,
                      "limit_bytes": limit, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
