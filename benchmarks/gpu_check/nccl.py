"""GPU check, part "nccl": two processes over NCCL (gloo with --cpu), as a 2-GPU run trains. The distributed
optimizer's step (reduce-scatter of gradients, sharded update, all-gather of weights) against one process
accumulating the same two micro-batches; then a checkpoint saved by both ranks (nanochat.checkpoint, the
stages' own save) and a fresh model + optimizer resumed from it, continuing exactly as the run did.
Launched by benchmarks/gpu_check.sh when two GPUs exist; well under a minute.

    python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/gpu_check/nccl.py DIR [--cpu]
"""
import sys
from types import SimpleNamespace

from common import Part, build, parse

import torch
import torch.distributed as dist

sys.argv, folder = [sys.argv[0]] + sys.argv[2:], sys.argv[1]
args = parse(__doc__.split("\n")[0])
if args.cpu:
    torch.set_num_threads(1)
dist.init_process_group("gloo" if args.cpu else "nccl")
rank, size = dist.get_rank(), dist.get_world_size()
assert size == 2, f"run with --nproc-per-node 2, got world size {size}"
dev = torch.device("cpu") if args.cpu else torch.device("cuda", rank)
if dev.type == "cuda":
    torch.cuda.set_device(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
part = Part("nccl", args)

from nanochat import checkpoint  # noqa: E402
from nanochat.distributed import World  # noqa: E402
from nanochat.plugins import registry  # noqa: E402
from nanochat.training import build_optimizer  # noqa: E402

HPARAMS = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28)
SEQ = 32 if args.cpu else 256
world = World(rank=rank, size=size, local_rank=rank)


def fresh(ranks):
    model = build(dev, depth=2, seq=SEQ, dtype=torch.float32, vocab=512)
    opt = build_optimizer(registry(), "muon", model, {**HPARAMS, "model_dim": model.config.n_embd},
                          SimpleNamespace(rank=rank if ranks == 2 else 0, size=ranks), compiled=False)
    return model, opt


g = torch.Generator().manual_seed(1)
x = torch.randint(0, 512, (4, SEQ + 1), generator=g).to(dev)
x, y = x[:, :-1], x[:, 1:]


def steps(model, opt, n, rows):
    losses = []
    for _ in range(n):
        total = 0.0
        for r in rows:
            loss = model(x[r], y[r]) / len(rows)
            loss.backward()
            total = total + loss.detach()
        opt.step()
        model.zero_grad(set_to_none=True)
        if opt.world_size > 1:
            dist.all_reduce(total)
            total /= size
        losses.append(total.item())
    return losses


model, opt = fresh(2)


@part.check("optimizer_step")
def _():
    mine = steps(model, opt, 3, [slice(2 * rank, 2 * rank + 2)])
    twin, twin_opt = fresh(1)
    ref = steps(twin, twin_opt, 3, [slice(0, 2), slice(2, 4)])
    drift = max((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters()))
    assert max(abs(a - b) for a, b in zip(mine, ref)) < 1e-4 and drift < 1e-3, (mine, ref, drift)
    return {"losses": mine, "accumulated": ref, "max_weight_drift": drift}


@part.check("save_resume")
def _():
    checkpoint.save(folder, 3, world=world, model=model, rank_state={"optimizer": opt.state_dict()},
                    meta={"check": "gpu_check nccl"})
    continued = steps(model, opt, 2, [slice(2 * rank, 2 * rank + 2)])
    ckpt = checkpoint.load(folder)
    resumed_model, resumed_opt = fresh(2)
    resumed_model.load_state_dict(ckpt.model_state(map_location=dev))
    resumed_opt.load_state_dict(ckpt.rank_state(rank, size)["optimizer"])
    resumed = steps(resumed_model, resumed_opt, 2, [slice(2 * rank, 2 * rank + 2)])
    same = all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed_model.parameters()))
    assert continued == resumed and same, (continued, resumed, same)
    return {"losses": resumed}


# a check that failed on either rank fails the part (rank 0 prints it)
ok = torch.tensor([float(all(v for k, v in part.out.items() if k.endswith("_ok")))], device=dev)
dist.all_reduce(ok, op=dist.ReduceOp.MIN)
part.out["all_ranks_ok"] = bool(ok.item())
dist.destroy_process_group()
if rank == 0:
    part.finish()
