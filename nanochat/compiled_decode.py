"""The decode step (one new token per row, through the KV cache) compiled with torch.compile.

    step = CompiledDecode(model)
    step.prepare()                          # once per generation: picks up changed weights
    logits = step(ids, cache)               # same as model(ids, kv_cache=cache), ids (B, 1)

Why: decoding a small model is mostly per-op overhead (a few hundred small ops a step in eager
mode); compiled, a step is a handful of fused kernels and the matmuls. That pays on GPUs, where
each op is a kernel launch. On CPUs the eager step's oneDNN-packed matmuls (see model.inference_matmul)
are faster than the compiled step's plain ones for a few rows: measured on 2 cores (d4, bf16), the
compiled step is about 1.2x the eager one at batch 1 and slower at batch 8. Shapes are dynamic (the
cache position, its length and the batch change without a recompile; batch 1 gets its own graph).
The compiled step runs on a copy of the model whose matrices and tables are already in the compute
dtype, so no weight is cast per step (the fp32 master weights would otherwise be read and cast
every step: more memory traffic than the matmuls themselves). prepare() refreshes the copy when a
weight of the model has changed since. Compiling costs tens of seconds on a CPU (cached on disk for
later processes), so the engine does it only when asked (Engine(..., compile=True)).
"""
import copy

import torch


class CompiledDecode:
    def __init__(self, model):
        self.model = model
        self.weights_key = None
        self.copy = None
        self.step = None

    def _weights_key(self):
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    @torch.no_grad()
    def prepare(self):
        key = self._weights_key()
        if key == self.weights_key:
            return
        if self.copy is None:
            self.copy = copy.deepcopy(self.model)
            for p in self.copy.parameters():
                if p.dim() == 2:  # matmul weights and embedding tables: cast once here, not per step
                    p.data = p.data.to(self.model.compute_dtype)
            self.step = torch.compile(self.copy, dynamic=True)
        else:  # same shapes and dtypes: the compiled step stays valid
            for mine, theirs in zip(self.copy.parameters(), self.model.parameters()):
                mine.copy_(theirs)
        self.weights_key = key

    def __call__(self, ids, cache):
        return self.step(ids, kv_cache=cache)
