"""Who am I in a torchrun job: rank, world size, local rank — and the process group around them.

The same code runs as one process (world size 1, no process group) or under torchrun, which sets
RANK / WORLD_SIZE / LOCAL_RANK. Gradient sync lives inside the optimizers, so there is no DDP wrapper.
"""
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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


def from_env() -> World:
    return World(rank=int(os.environ.get("RANK", 0)), size=int(os.environ.get("WORLD_SIZE", 1)),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def init(backend) -> World:
    """Join the process group torchrun prepared (if any) using the backend's dist backend."""
    world = from_env()
    if world.size > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            kwargs = {}
            if backend.dist_backend == "nccl":
                kwargs["device_id"] = backend.device(world.local_rank)
            dist.init_process_group(backend=backend.dist_backend, **kwargs)
    return world


def shutdown(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
