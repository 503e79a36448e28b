"""An embedding table whose backward gives the same bits on every run on CPU, compiled or not.

Inductor (torch.compile) on CPU writes embedding backward as a scatter of atomic adds from several OpenMP
threads: which thread adds first to a row changes the last bits of that row's gradient from run to run, and a
compiled cpu-tiny run drifted from an identical one after about 12 steps. Here the backward is a custom op that
Inductor cannot see into, so it runs ATen's dense embedding backward, the very kernel eager mode runs: each
thread owns a range of rows and adds into them in token order, so the sum never depends on timing. The forward
stays a plain lookup that Inductor fuses as before. On other devices (CUDA) the table is a plain nn.Embedding,
untouched. The cost on CPU: benchmarks/determinism.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.library.custom_op("nanochat::embedding_backward", mutates_args=())
def embedding_backward(grad: torch.Tensor, indices: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The weight's gradient: grad's rows summed into the rows `indices` names (ATen's kernel, as in eager)."""
    return torch.ops.aten.embedding_dense_backward(grad, indices, num_rows, -1, False)


@embedding_backward.register_fake
def _(grad, indices, num_rows):
    return grad.new_empty((num_rows, grad.shape[-1]))


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, indices):
        ctx.save_for_backward(indices)
        ctx.num_rows = weight.shape[0]
        return F.embedding(indices, weight)

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        return embedding_backward(grad.contiguous(), indices, ctx.num_rows), None


class RepeatableEmbedding(nn.Embedding):
    """nn.Embedding (same parameters, same checkpoints) with a run-to-run repeatable backward on CPU."""

    def forward(self, indices):
        if self.weight.device.type != "cpu" or not torch.is_grad_enabled() or not self.weight.requires_grad:
            return super().forward(indices)
        return _Lookup.apply(self.weight, indices)
