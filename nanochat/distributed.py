"""Who am I in a torchrun job: rank, world size, local rank, node — and the process group around them.

The same code runs as one process (world size 1, no process group) or under torchrun, which sets
RANK / WORLD_SIZE / LOCAL_RANK / GROUP_RANK. Gradient sync lives inside the optimizers, so there is no
DDP wrapper. Nodes may or may not share a disk (`shared_home`, found out by `nodes.py`): without one,
local rank 0 of every node writes that node's copy of the run's files.
"""
import datetime
import os
from dataclasses import dataclass

# Python objects (plans, stage outcomes, files) travel over a gloo group even on NCCL runs; its timeout is
# long because the other ranks wait in it while rank 0 alone runs a one-process stage (the tokenizer).
OBJECT_TIMEOUT = datetime.timedelta(hours=12)
_object_group = None


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    node: int = 0
    shared_home: bool = True  # every process sees the same run folder (one node, or a shared disk)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_home_main(self) -> bool:
        """The process that writes this node's copy of run files: rank 0, or each node's local rank 0
        when the nodes have a disk each."""
        return self.is_main if self.shared_home else self.local_rank == 0

    def barrier(self):
        if self.size > 1:
            import torch.distributed as dist
            dist.barrier()

    def all_reduce_sum(self, values):
        """Sum a list of floats over ranks (used for eval totals); a no-op with one process."""
        if self.size == 1:
            return list(values)
        import torch
        import torch.distributed as dist
        t = torch.tensor(list(values), dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def from_main(self, obj):
        """Rank 0's `obj` on every rank (what the others pass is ignored)."""
        if self.size == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=_object_group)
        return box[0]

    def gather_all(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.size
        dist.all_gather_object(out, obj, group=_object_group)
        return out


def from_env() -> World:
    return World(rank=int(os.environ.get("RANK", 0)), size=int(os.environ.get("WORLD_SIZE", 1)),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)), node=int(os.environ.get("GROUP_RANK", 0)))


def init(backend) -> World:
    """Join the process group torchrun prepared (if any) using the backend's dist backend."""
    global _object_group
    world = from_env()
    if world.size > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            kwargs = {}
            if backend.dist_backend == "nccl":
                kwargs["device_id"] = backend.device(world.local_rank)
            dist.init_process_group(backend=backend.dist_backend, **kwargs)
        _object_group = dist.new_group(backend="gloo", timeout=OBJECT_TIMEOUT)
    return world


def shutdown(world: World) -> None:
    global _object_group
    if world.size > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
        _object_group = None
