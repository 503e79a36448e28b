"""First-party optimizer plugins: `muon` (Muon for matrices + AdamW for the rest) and `adamw`.

This module must stay cheap to import (no torch): `nanochat plugins` lists it without torch.
The torch code lives in `groups.py` (which parameters go where, with which hyperparameters)
and `optim.py` (the optimizer, including the gradient sync when distributed).

Each plugin has `build(model, hparams, world)`. `hparams` holds embedding_lr, unembedding_lr,
matrix_lr, scalar_lr, weight_decay, model_dim and optionally compile (bool, default False:
compile the update kernels). `world` has .rank and .size. Every param group of the optimizer
carries `kind` ("muon"/"adamw"), `role` and `initial_lr`; schedules set `lr` (and, on muon
groups, `momentum` and `weight_decay`) before each step.
"""
from nanochat import hookimpl


class MuonAdamW:
    name = "muon"
    description = ("Muon (Polar Express, MuonEq, Muon+, NorMuon, cautious weight decay) for the block "
                   "matrices, AdamW for embeddings, lm_head and scalars; ZeRO-2 sharded when distributed")

    def build(self, model, hparams, world):
        from nanochat_optimizers.groups import muon_param_groups
        from nanochat_optimizers.optim import MuonAdamWOptimizer
        return MuonAdamWOptimizer(muon_param_groups(model, hparams), rank=world.rank, world_size=world.size,
                                  compile=bool(hparams.get("compile", False)), polar_dtype=_polar_dtype(model))


class AdamWOnly:
    name = "adamw"
    description = "AdamW for every parameter (a simple baseline); ZeRO-2 sharded when distributed"

    def build(self, model, hparams, world):
        from nanochat_optimizers.groups import adamw_param_groups
        from nanochat_optimizers.optim import MuonAdamWOptimizer
        return MuonAdamWOptimizer(adamw_param_groups(model, hparams), rank=world.rank, world_size=world.size,
                                  compile=bool(hparams.get("compile", False)))


def _polar_dtype(model):
    # Polar Express runs in bf16 when the model computes in bf16 (fast, and precise enough)
    import torch
    return torch.bfloat16 if getattr(model, "compute_dtype", None) == torch.bfloat16 else torch.float32


@hookimpl
def nanochat_optimizer(register):
    register(MuonAdamW())
    register(AdamWOnly())
