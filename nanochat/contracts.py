"""The plugin contracts a plugin meets without subclassing anything: device backends, optimizers, observers.

A plugin's object only needs these attributes and methods (duck typing); the Protocol classes say exactly
which, with types, so an editor or a type checker can check a plugin, and `isinstance(obj, Backend)`
answers at run time (names only, not signatures). Datasets and tasks subclass a base class instead,
because they inherit real behaviour: `nanochat.datasets.ShardedDataset` and `nanochat.tasks.Task`.
Each kind is registered through its hook in hookspecs.py; docs/plugins.md is the reference in prose.

No torch at import: the types below are names only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # for the annotations only; importing torch here would slow every command down
    import torch

    from nanochat.distributed import World


@runtime_checkable
class Backend(Protocol):
    """A device backend (`nanochat_backend`): which device, dtype and collective backend a process uses."""

    name: str  # "cpu", "cuda", "mps": chosen with --device NAME
    priority: int  # the highest available one wins when no device is named (cuda 30 > mps 20 > cpu 10)
    dist_backend: str  # torch.distributed backend: "nccl" or "gloo"

    def is_available(self) -> bool:
        """Whether this machine has the device (cheap: asked for every command that lists backends)."""

    def device(self, local_rank: int = 0) -> torch.device:
        """The torch.device of the process with this local rank."""

    def compute_dtype(self) -> torch.dtype:
        """The dtype matmuls run in (master weights stay fp32)."""

    def synchronize(self) -> None:
        """Wait for queued device work, so that timings are honest."""

    def memory(self) -> dict:
        """Memory figures in bytes: at least `peak_bytes`; `total_bytes` when known."""

    def peak_flops(self, dtype: torch.dtype) -> float | None:
        """Peak FLOP/s per device in `dtype`: the MFU denominator (None = unknown, no MFU shown)."""

    def compile_is_wise(self) -> bool:
        """Whether torch.compile pays off here (the `compile = "auto"` setting asks)."""

    def describe(self) -> dict:
        """Extra facts for `nanochat env`: device name, GPU count, ..."""


@runtime_checkable
class Optimizer(Protocol):
    """An optimizer (`nanochat_optimizer`): builds the torch optimizer a training stage steps."""

    name: str  # "muon", "adamw": chosen with the stages' `optimizer` setting
    description: str

    def build(self, model: torch.nn.Module, hparams: dict[str, Any], world: World) -> torch.optim.Optimizer:
        """A torch optimizer over `model`'s parameters.

        `hparams` holds `embedding_lr`, `unembedding_lr`, `matrix_lr`, `scalar_lr`, `weight_decay` and
        `model_dim`. Every param group carries `initial_lr` and `kind` ("muon" / "adamw"), which
        `nanochat.scaling.apply` reads to set each step's schedule. With `world.size > 1` the optimizer
        synchronises gradients itself inside `step()` (no DDP wrapper) and `state_dict()` is this rank's shard.
        """


@runtime_checkable
class Observer(Protocol):
    """An event observer (`nanochat_observer`): a logger such as wandb or tensorboard."""

    name: str

    def is_enabled(self, run_info: dict) -> bool:
        """Asked once per stage with `run`, `stage` and `settings`: whether to receive its events."""

    def on_event(self, event: dict) -> None:
        """One event: `type` ("stage_start", "metrics" with `record`, "checkpoint", "stage_done",
        "stage_failed"), `run` and `stage`. An observer that raises is reported and ignored."""
