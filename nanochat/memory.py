"""Memory per rank of one training step, estimated before renting the machine.

- parameters and gradients: exact, from the model built on the meta device;
- optimizer state: exact for a single process, by one optimizer step on the meta device (so it
  holds for any optimizer plugin), then divided by the world size (ZeRO-2: each rank keeps the
  state of its share);
- activations, what autograd keeps for the backward: measured by running the forward of the real
  width and sequence length on the CPU, at batch 1 and 2 (which separates the per-sequence part
  from the fixed part, e.g. bf16 weight copies) and at 2 and 4 layers (the per-layer part is then
  extrapolated to the full depth). Uncompiled: torch.compile recomputes cheap ops instead of
  keeping them, so this tends to be an upper bound;
- the loss chunk in flight: HeadLoss's logits and their gradient for one chunk of rows.

Not counted: allocator fragmentation and the CUDA context (a few GB); hence the headroom.
"""
import weakref
from dataclasses import replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from nanochat.model import GPT, LOSS_CHUNK_ELEMENTS

LOSS_CHUNK_BYTES_PER_LOGIT = 16  # bf16 logits and gradient, fp32 softcapped logits and their exp
HEADROOM = 0.9                   # a run "fits" when the estimate stays under 90% of the memory


def _nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(config, compute_dtype, build_optimizer):
    """(parameters, gradients, optimizer state) in bytes for one process, without allocating."""
    with torch.device("meta"):
        model = GPT(config, compute_dtype=compute_dtype)
    optimizer = build_optimizer(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    params = _nbytes(model.parameters())
    state = _nbytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return params, params, state


class _AliveTensors(TorchDispatchMode):
    """Remembers (weakly) every tensor an op creates; after the forward, the ones still alive are
    what the backward keeps, however it keeps them (autograd, checkpoint caches, custom Functions)."""

    def __init__(self):
        super().__init__()
        self.created = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.created.extend(weakref.ref(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out

    def alive_bytes(self):
        storages = {}
        for ref in self.created:
            t = ref()
            if t is not None:
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())


def saved_activation_bytes(config, compute_dtype, batch, compiled=False):
    """Bytes the backward keeps after one training forward on the CPU (parameters excluded).

    Eager, every tensor created by the forward and still alive after it counts. Compiled, the
    graph saves its tensors through autograd, so the saved-tensor hooks see them all.
    """
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(config, compute_dtype=compute_dtype)
    model.to_empty(device="cpu")
    model.init_weights()
    idx = torch.randint(0, config.vocab_size, (batch, config.sequence_len))
    if not compiled:
        tracker = _AliveTensors()
        with tracker:
            loss = model(idx, idx)  # held, so the graph (and all it keeps) is alive when counted
        return tracker.alive_bytes()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.compile(model, dynamic=False)(idx, idx)
    del loss
    return sum(kept.values())


def activation_bytes(config, compute_dtype, device_batch, compiled=False, layers=(2, 4)):
    """Activations kept for the backward at the full depth and device batch (see the module doc)."""
    per_seq, fixed = activation_parts(config, compute_dtype, compiled, layers)
    return int(per_seq * device_batch + fixed)


def activation_parts(config, compute_dtype, compiled=False, layers=(2, 4)):
    """(bytes per sequence of the device batch, fixed bytes) of the activations at the full depth."""
    per_seq, fixed = {}, {}
    for n in layers:
        small = replace(config, n_layer=n)
        one, two = (saved_activation_bytes(small, compute_dtype, b, compiled) for b in (1, 2))
        per_seq[n], fixed[n] = two - one, 2 * one - two
    a, b = layers

    def at_depth(values):
        return values[a] + (config.n_layer - a) * (values[b] - values[a]) / (b - a)
    return at_depth(per_seq), at_depth(fixed)


def loss_chunk_bytes(device_batch, sequence_len, padded_vocab_size, device_type="cuda"):
    """HeadLoss's logits in flight: one chunk of rows, or all of them when they are fewer."""
    chunk = min(LOSS_CHUNK_ELEMENTS[device_type == "cpu"], device_batch * sequence_len * padded_vocab_size)
    return chunk * LOSS_CHUNK_BYTES_PER_LOGIT


def estimate(config, compute_dtype, device_batch, world_size, build_optimizer, device_type="cuda", compiled=False):
    """Estimated peak bytes per rank of a training step, and its parts."""
    params, grads, state = state_bytes(config, compute_dtype, build_optimizer)
    per_sequence, fixed = activation_parts(config, compute_dtype, compiled)
    activations = int(per_sequence * device_batch + fixed)
    loss_chunk = loss_chunk_bytes(device_batch, config.sequence_len, config.padded_vocab_size, device_type)
    parts = {"parameters": params, "gradients": grads, "optimizer_state": state // world_size,
             "activations": activations, "loss_chunk": loss_chunk}
    # per_sequence is not a part: it is what one sequence less in the device batch saves (plan.py uses it)
    return {**parts, "total": sum(parts.values()), "per_sequence": int(per_sequence)}
