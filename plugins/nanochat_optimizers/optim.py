"""One optimizer for two update rules: Muon for "muon" groups, AdamW for "adamw" groups.

Distributed (world_size > 1) there is no DDP: step() syncs the gradients itself, ZeRO-2 style.
  1. launch every reduction: a large AdamW grad is reduce-scattered (AVG) along dim 0, a small one
     (< 1024 elements, or rows not divisible by the world size) all-reduced; a Muon group stacks
     its K same-shape grads, zero-pads to a multiple of the world size and reduce-scatters, so each
     rank owns ceil(K/world) matrices
  2. per group: wait, update what this rank owns, launch the all-gather of the result
  3. wait for the gathers and copy the Muon matrices back
Optimizer state exists only for the owned slices, so state_dict() is per rank and a resume
needs the same world size (checked on load).
"""
import math

import torch
import torch.distributed as dist

SMALL_PARAM = 1024  # below this many elements a grad is all-reduced and the state replicated

# Polar Express (arXiv 2505.16932): per-iteration quintic coefficients for 5 iterations
# (safety factor 2e-2, cushion 2).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def polar_express(G, steps=5):
    """Approximately orthogonalize each matrix of a (K, rows, cols) stack (singular values -> ~1)."""
    X = G / (G.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
    tall = X.size(-2) > X.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        # work with the smaller Gram matrix: X^T X for tall matrices, X X^T for wide ones
        A = X.mT @ X if tall else X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b*A + c*A@A
        X = torch.baddbmm(X, X, B, beta=a) if tall else torch.baddbmm(X, B, X, beta=a)
    return X


def muon_update(grads, params, momentum_buf, variance_buf, momentum, lr, wd, beta2, polar_dtype, ns_steps):
    """Muon on a stack of same-shape matrices, in place on params and the two buffers."""
    # Nesterov momentum
    momentum_buf.lerp_(grads, 1 - momentum)
    g = grads.lerp(momentum_buf, momentum)
    X = g.to(polar_dtype)
    # MuonEq: give every row the mean row norm, so the spectrum is better conditioned
    target = X.float().norm(dim=(-2, -1), keepdim=True) / math.sqrt(X.size(-2))
    X = X * (target / X.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)).to(X.dtype)
    g = polar_express(X, ns_steps).float()
    # Muon+: snap the Frobenius norm to that of an exactly semi-orthogonal matrix
    g = g * (math.sqrt(min(g.size(-2), g.size(-1))) / g.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-6))
    # NorMuon: per-row (or per-column) second moment, rescaled to keep the total norm
    red = -1 if g.size(-2) >= g.size(-1) else -2
    v_mean = g.square().mean(dim=red, keepdim=True)
    variance_buf.lerp_(v_mean, 1 - beta2)
    scale = variance_buf.clamp_min(1e-10).rsqrt()
    norm_before = (v_mean.sum(dim=(-2, -1), keepdim=True) * g.size(red)).sqrt()
    norm_after = (v_mean * scale.square()).sum(dim=(-2, -1), keepdim=True).mul(g.size(red)).sqrt()
    g = g * (scale * (norm_before / norm_after.clamp_min(1e-10)))
    # cautious weight decay: only decay where the update and the weight agree in sign
    mask = (g * params) >= 0
    params.sub_(lr * g + (lr * wd) * params * mask)


def adamw_update(p, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, wd):
    """Decoupled AdamW with bias correction, math in fp32, in place."""
    p32, g = p.float(), grad.float()
    p32.mul_(1 - lr * wd)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.lerp_(g.square(), 1 - beta2)
    denom = (exp_avg_sq / (1 - beta2 ** step)).sqrt() + eps
    p32.add_(exp_avg / denom * (-lr / (1 - beta1 ** step)))
    if p32 is not p:
        p.copy_(p32)


class _Kernels:
    """Runs the two update functions, eager or compiled.

    Compiled kernels get their hyperparameters as 0-D CPU tensors, so a new learning rate does
    not trigger a recompile; small AdamW params always run eager (not worth a compile each).
    """

    def __init__(self, compile):
        self.compile = compile
        if compile:
            self._muon = torch.compile(muon_update, dynamic=False, fullgraph=True)
            self._adamw = torch.compile(adamw_update, dynamic=False, fullgraph=True)
            self._slots = {}

    def _tensors(self, kind, values):
        out = {}
        for k, v in values.items():
            t = self._slots.setdefault((kind, k), torch.tensor(0.0, dtype=torch.float32))
            t.fill_(v)
            out[k] = t
        return out

    def adamw(self, p, grad, exp_avg, exp_avg_sq, **hyper):
        if self.compile and p.numel() >= SMALL_PARAM:
            self._adamw(p, grad, exp_avg, exp_avg_sq, **self._tensors("adamw", hyper))
        else:
            adamw_update(p, grad, exp_avg, exp_avg_sq, **hyper)

    def muon(self, grads, params, momentum_buf, variance_buf, polar_dtype, ns_steps, **hyper):
        if self.compile:
            self._muon(grads, params, momentum_buf, variance_buf, polar_dtype=polar_dtype, ns_steps=ns_steps,
                       **self._tensors("muon", hyper))
        else:
            muon_update(grads, params, momentum_buf, variance_buf, polar_dtype=polar_dtype, ns_steps=ns_steps, **hyper)


def _reduce_scatter():
    # renamed in newer torch; same signature
    return getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _all_gather():
    return getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class _Comm:
    """The three collectives, each async, returning a handle with wait().

    If the backend lacks reduce_scatter (older gloo), fall back to an all-reduce of a copy and
    keep this rank's slice: the same result and the same sharded state, just more traffic.
    """

    def __init__(self, rank, world_size, force_fallback=False):
        self.rank, self.world_size = rank, world_size
        self.scatter_ok = not force_fallback

    def all_reduce_avg(self, t):
        return dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)

    def reduce_scatter_avg(self, out, inp):
        if self.scatter_ok:
            try:
                return _reduce_scatter()(out, inp, op=dist.ReduceOp.AVG, async_op=True)
            except (RuntimeError, NotImplementedError, ValueError):
                self.scatter_ok = False
        full = inp.clone()
        work = dist.all_reduce(full, op=dist.ReduceOp.AVG, async_op=True)
        n = out.size(0)
        return _Deferred(work, lambda: out.copy_(full[self.rank * n:(self.rank + 1) * n]))

    def all_gather(self, out, inp):
        return _all_gather()(out, inp, async_op=True)


class _Deferred:
    def __init__(self, work, then):
        self.work, self.then = work, then

    def wait(self):
        self.work.wait()
        self.then()


class MuonAdamWOptimizer(torch.optim.Optimizer):
    """param_groups: dicts with `kind` ("muon" or "adamw"), `params`, `lr`, `weight_decay` and
    - adamw: `betas`, `eps`
    - muon: `momentum`, `beta2`, `ns_steps`; all params of a muon group share one shape.
    """

    def __init__(self, param_groups, *, rank=0, world_size=1, compile=False, polar_dtype=torch.float32,
                 force_comm_fallback=False):
        super().__init__(param_groups, defaults={})
        for g in self.param_groups:
            if g.get("kind") not in ("muon", "adamw"):
                raise ValueError(f"param group kind={g.get('kind')!r}; use 'muon' or 'adamw'")
            g.setdefault("initial_lr", g["lr"])
            if g["kind"] == "muon" and len({tuple(p.shape) for p in g["params"]}) != 1:
                raise ValueError("a muon group must hold matrices of one shape; group them by shape")
        if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(f"world_size={world_size} but torch.distributed is not initialized; "
                               "call init_process_group first")
        self.rank, self.world_size = rank, world_size
        self.polar_dtype = polar_dtype
        self.kernels = _Kernels(compile)
        self.comm = _Comm(rank, world_size, force_comm_fallback) if world_size > 1 else None

    # -- state dict: per rank, checked against the world size ----------------------------------

    def state_dict(self):
        sd = super().state_dict()
        sd["sharding"] = {"rank": self.rank, "world_size": self.world_size}
        return sd

    def load_state_dict(self, state_dict):
        sharding = state_dict.get("sharding", {"rank": 0, "world_size": 1})
        if sharding["world_size"] != self.world_size or sharding["rank"] != self.rank:
            raise ValueError(f"optimizer state was saved by rank {sharding['rank']} of {sharding['world_size']} "
                             f"but this is rank {self.rank} of {self.world_size}; resume with the same number "
                             "of processes, or start the optimizer fresh")
        state_dict = {k: v for k, v in state_dict.items() if k != "sharding"}
        super().load_state_dict(state_dict)

    # -- the step -------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self):
        pending = [self._reduce_muon(g) if g["kind"] == "muon" else self._reduce_adamw(g)
                   for g in self.param_groups]
        gathers = []
        for group, info in zip(self.param_groups, pending):
            if group["kind"] == "muon":
                self._update_muon(group, info, gathers)
            else:
                self._update_adamw(group, info, gathers)
        for work, finish in gathers:
            if work is not None:
                work.wait()
            if finish is not None:
                finish()

    @staticmethod
    def _grad(p):
        return p.grad if p.grad is not None else torch.zeros_like(p)

    def _shardable(self, p):
        return p.numel() >= SMALL_PARAM and p.dim() > 0 and p.size(0) % self.world_size == 0

    def _reduce_adamw(self, group):
        infos = []
        for p in group["params"]:
            grad = self._grad(p)
            if self.comm is None:
                infos.append((None, grad, False))
            elif not self._shardable(p):
                infos.append((self.comm.all_reduce_avg(grad), grad, False))
            else:
                shard = torch.empty_like(grad[:grad.size(0) // self.world_size])
                infos.append((self.comm.reduce_scatter_avg(shard, grad.contiguous()), shard, True))
        return infos

    def _update_adamw(self, group, infos, gathers):
        beta1, beta2 = group["betas"]
        for p, (work, grad, sharded) in zip(group["params"], infos):
            if work is not None:
                work.wait()
            if sharded:
                n = p.size(0) // self.world_size
                p_own = p[self.rank * n:(self.rank + 1) * n]
            else:
                p_own = p
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p_own, dtype=torch.float32)
                state["exp_avg_sq"] = torch.zeros_like(p_own, dtype=torch.float32)
            state["step"] += 1
            self.kernels.adamw(p_own, grad, state["exp_avg"], state["exp_avg_sq"], step=state["step"],
                               lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], wd=group["weight_decay"])
            if sharded:
                gathers.append((self.comm.all_gather(p, p_own.clone()), None))

    def _reduce_muon(self, group):
        params = group["params"]
        grads = torch.stack([self._grad(p) for p in params])
        if self.comm is None:
            return None, grads, None
        chunk = math.ceil(len(params) / self.world_size)
        if chunk * self.world_size > len(params):  # zero-pad so every rank gets a full chunk
            pad = grads.new_zeros((chunk * self.world_size - len(params), *grads.shape[1:]))
            grads = torch.cat((grads, pad))
        owned = grads.new_empty((chunk, *grads.shape[1:]))
        return self.comm.reduce_scatter_avg(owned, grads), owned, grads

    def _update_muon(self, group, info, gathers):
        work, owned_grads, stacked = info
        if work is not None:
            work.wait()
        params = group["params"]
        chunk = owned_grads.size(0)
        start = self.rank * chunk
        n_own = max(0, min(chunk, len(params) - start))
        rows, cols = params[0].shape[-2:]
        state = self.state[params[0]]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(owned_grads, dtype=torch.float32)
            var_shape = (chunk, rows, 1) if rows >= cols else (chunk, 1, cols)
            state["variance_buffer"] = owned_grads.new_zeros(var_shape, dtype=torch.float32)
        updated = owned_grads.new_zeros(owned_grads.shape) if stacked is not None else None
        if n_own > 0:
            own_params = torch.stack(params[start:start + n_own])
            self.kernels.muon(owned_grads[:n_own].float(), own_params, state["momentum_buffer"][:n_own],
                              state["variance_buffer"][:n_own], self.polar_dtype, group["ns_steps"],
                              momentum=group["momentum"], lr=group["lr"] * max(1.0, rows / cols) ** 0.5,
                              wd=group["weight_decay"], beta2=group["beta2"])
            if stacked is None:
                torch._foreach_copy_(params, list(own_params.unbind(0)))
                return
            updated[:n_own] = own_params
        # everyone's matrices come back into the (no longer needed) stacked-grad buffer
        finish = (lambda: torch._foreach_copy_(params, list(stacked[:len(params)].unbind(0))))
        gathers.append((self.comm.all_gather(stacked, updated), finish))
