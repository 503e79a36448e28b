"""Pieces the training stages share (pretrain, midtrain, SFT, RL, and base-eval's samples): micro-batch
streams, checkpoints that resume exactly, one optimizer step over accumulated micro-batches, the progress
line, the settings a post-training stage inherits, and the prompts models are sampled with.

Each stage keeps its own loop, top to bottom in its own file, and imports no other stage; these helpers are
the parts that must behave the same everywhere. The schedules (learning rate, momentum, weight decay) are
in scaling.py.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nanochat import checkpoint, faults
from nanochat.stages import StageError

LR_KEYS = ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr")  # the optimizer's learning-rate settings
# what a base model is asked to continue (pretrain's samples, base-eval's report) and a chat model is asked
SAMPLE_PROMPTS = ["The capital of France is", "The opposite of hot is", "If yesterday was Friday, then tomorrow will be",
                  "The chemical symbol of gold is", "In the beginning", "床前明月光，", "学而时习之，"]
CHAT_PROMPTS = ["What is the capital of France?", "Why is the sky blue?", "你好！你是谁？", "What is 12 * 34?"]


def micro_streams(world, grad_accum: int) -> tuple[int, list[int]]:
    """Data streams = micro-batches per optimizer step; this process owns streams rank, rank+W, ...

    Which rows a micro-batch holds then depends only on the total batch, not on how many processes
    share it: 2 processes x 1 micro-batch and 1 process x 2 micro-batches see the same data.
    """
    streams = world.size * grad_accum
    return streams, [world.rank + world.size * m for m in range(grad_accum)]


class OutOfMemory(StageError):
    """The device ran out of memory in a training step; `device_batch` is the micro-batch that did not fit."""

    def __init__(self, message: str, device_batch: int):
        super().__init__(message)
        self.device_batch = device_batch


def grad_accum_steps(total_batch: int, device_batch: int, seq_len: int, world_size: int) -> int:
    per_step = device_batch * seq_len * world_size
    if total_batch % per_step:
        raise StageError(f"total_batch_size={total_batch:,} tokens is not a multiple of device_batch_size x max_seq_len x "
                         f"processes = {device_batch} x {seq_len} x {world_size} = {per_step:,}; "
                         f"change --set total_batch_size or device_batch_size")
    return total_batch // per_step


@dataclass
class Loop:
    """What a training loop carries across a resume besides weights and optimizer state."""

    step: int = 0
    smooth_loss: float = 0.0
    train_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Checkpointer:
    """Saves and resumes a training stage: model (rank 0), optimizer shard, loaders, RNG and loop per rank."""

    def __init__(self, ctx, model, optimizer, meta: dict, keep: int = 2):
        self.ctx, self.model, self.optimizer, self.meta, self.keep = ctx, model, optimizer, meta, keep
        self.resumed_at = None
        self.path = None

    def resume(self):
        """(Loop, loader states by stream) from the latest checkpoint of this stage, or None to start fresh."""
        ctx = self.ctx
        ckpt = None
        if (Path(ctx.checkpoint_dir) / "latest.json").exists():
            ckpt = checkpoint.load(ctx.checkpoint_dir)  # falls back past a damaged newest checkpoint
            if ckpt.skipped:
                ctx.log(f"warning: {ckpt.skipped}; resuming from the previous checkpoint, step {ckpt.step}")
        if not ctx.world.shared_home:
            ckpt = self._common(ckpt)
        if ckpt is None:
            # killed before its first checkpoint: the fresh start writes every record again
            ctx.run.keep_metrics(ctx.name, lambda r: False)
            return None
        saved, wanted = ckpt.meta.get("model_config"), self.meta["model_config"]
        if saved != wanted:
            raise StageError(f"checkpoint {ckpt.path} holds a model with config {saved}, but the settings ask for "
                             f"{wanted}; resume with the same settings or start a new run")
        device = next(self.model.parameters()).device
        self.model.load_state_dict(ckpt.model_state(map_location=device))
        state = ckpt.rank_state(ctx.world.rank, ctx.world.size)
        self.optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        loop = Loop(**state["loop"])
        self.resumed_at, self.path = loop.step, ckpt.path
        # keep what led up to the checkpoint; evaluations at its step run again
        ctx.run.keep_metrics(ctx.name, lambda r: r.get("step", 0) < loop.step or
                             (r.get("step") == loop.step and "loss" in r))
        ctx.log(f"resumed from step {loop.step} ({ckpt.path})")
        return loop, state["loaders"]

    def _common(self, ckpt):
        """Nodes with a disk each may have got to different saves when one died: all resume from the newest
        step every node has (two are kept), or all start afresh."""
        steps = self.ctx.world.gather_all(ckpt and ckpt.step)
        if None in steps:
            return None
        step = min(steps)
        if step != ckpt.step:
            self.ctx.log(f"another node's newest checkpoint is step {step}: resuming every node from there")
            ckpt = checkpoint.load(checkpoint.step_dir(self.ctx.checkpoint_dir, step))
        return ckpt

    def save(self, loop: Loop, loader_states: dict, **meta):
        """Every rank calls this, with each stream's loader state as of the end of step `loop.step`.

        The checkpoint we resumed from is never rewritten.
        """
        if loop.step == self.resumed_at:
            return self.path
        rank_state = {"optimizer": self.optimizer.state_dict(), "rng": checkpoint.rng_state(),
                      "loop": loop.__dict__, "loaders": {str(k): v for k, v in loader_states.items()}}
        self.path = checkpoint.save(self.ctx.checkpoint_dir, loop.step, world=self.ctx.world, model=self.model,
                                    rank_state=rank_state, meta={**self.meta, **meta}, keep=self.keep)
        self.ctx.event("checkpoint", step=loop.step, path=str(self.path))
        return self.path


def build_optimizer(registry, name: str, model, hparams: dict, world, compiled: bool):
    """The optimizer plugin `name` for `model`, as every stage and the training benchmark build it: its update
    kernels compiled exactly when the model's step is (`compiled`), so a benchmark times what a run runs."""
    return registry.get("optimizer", name).build(model, {**hparams, "compile": compiled}, world)


def next_micro_batches(loaders: list, world):
    """One batch from each of this process's streams, or None when any process ran out of data.

    All processes must agree to stop together, or the others would wait forever in a collective.
    """
    batches = [next(loader, None) for loader in loaders]
    have = float(all(b is not None for b in batches))
    if world.size > 1:
        have = float(world.all_reduce_sum([have])[0] == world.size)
    return batches if have else None


def optimizer_step(train_model, batches, optimizer, world) -> torch.Tensor:
    """Forward/backward each micro-batch (losses averaged), step, zero grads; the batch loss over all processes.

    The loss stays on the device (a 0-d float64 tensor): reading it is a host sync, which Progress does
    once per `log_every` steps, after the next batch is on its way.
    """
    total = None
    for x, y in batches:
        try:
            loss = train_model(x, y)
            (loss / len(batches)).backward()
        except torch.OutOfMemoryError:
            train_model.zero_grad(set_to_none=True)  # free what the failed step holds, for a retry
            raise OutOfMemory(f"out of memory with device_batch_size={x.shape[0]}: lower it, e.g. --set "
                             f"device_batch_size={max(x.shape[0] // 2, 1)}; gradient accumulation keeps the total "
                             f"batch (and the results) the same", x.shape[0]) from None
        total = loss.detach() if total is None else total + loss.detach()
    faults.hit("step")
    optimizer.step()
    train_model.zero_grad(set_to_none=True)
    value = (total / len(batches)).double()  # float64 as the sum over ranks has always been taken
    if world.size > 1:
        import torch.distributed as dist
        dist.all_reduce(value)  # on the device: no host round trip
        value = value / world.size
    return value


class Progress:
    """The per-step record and console line: loss (and its debiased EMA), speed, MFU, ETA.

    Steps are read back every `log_every` steps (and on flush()): one host sync for the window, whose
    steps each get the window's mean time. Every step still gets its record; the console gets the
    window's last line. Flush before anything that saves the loop (a checkpoint).
    """

    def __init__(self, ctx, loop: Loop, total_steps: int | None, tokens_per_step: int, flops_per_token: float,
                 peak_flops: float | None, log_every: int = 1):
        self.ctx, self.loop, self.total = ctx, loop, total_steps
        self.tokens_per_step, self.flops_per_token, self.peak = tokens_per_step, flops_per_token, peak_flops
        self.log_every = max(1, log_every)
        self.t0, self.pending = None, []

    def start(self):
        if self.t0 is None:  # a window opens: time it from an idle device
            self.ctx.backend.synchronize()
            self.t0 = time.time()

    def done(self, loss, **extra) -> dict | None:
        """Count the step; `loss` a float or a device tensor. The record of the window's last step when it flushed."""
        self.loop.step += 1
        self.pending.append((loss, extra))
        if self.loop.step % self.log_every == 0 or self.loop.step == self.total:
            return self.flush()
        return None

    def flush(self) -> dict | None:
        if not self.pending:
            return None
        losses = torch.stack([torch.as_tensor(loss, dtype=torch.float64) for loss, _ in self.pending]).tolist()  # the sync
        dt = (time.time() - self.t0) / len(self.pending)
        first = self.loop.step - len(self.pending) + 1
        for i, (loss, (_, extra)) in enumerate(zip(losses, self.pending)):
            record = self._record(first + i, loss, dt, extra, say=i == len(losses) - 1)
        self.pending, self.t0 = [], None
        return record

    def _record(self, step: int, loss: float, dt: float, extra: dict, say: bool) -> dict:
        loop = self.loop
        if step > 10:  # the first steps include compilation and warm-up
            loop.train_seconds += dt
        loop.smooth_loss = 0.9 * loop.smooth_loss + 0.1 * loss
        smooth = loop.smooth_loss / (1 - 0.9 ** step)
        tok_per_s = self.tokens_per_step / dt
        mfu = self.flops_per_token * self.tokens_per_step / dt / (self.peak * self.ctx.world.size) if self.peak else None
        per_step = loop.train_seconds / (step - 10) if step > 10 else dt
        eta = (self.total - step) * per_step if self.total else None
        record = {"step": step, "loss": loss, "smooth_loss": smooth, "dt_ms": dt * 1000, "tok_per_s": tok_per_s,
                  "mfu": mfu, "eta_s": eta, **extra}
        self.ctx.metric(record)
        if not say:
            return record
        parts = [f"step {step:,}" + (f"/{self.total:,}" if self.total else ""), f"loss {loss:.4f} (smooth {smooth:.4f})"]
        parts += [f"{k} {v:.3f}" for k, v in extra.items() if isinstance(v, float)]
        parts += [f"{dt * 1000:.0f} ms", f"{tok_per_s:,.0f} tok/s"]
        parts += [f"mfu {100 * mfu:.1f}%"] if mfu is not None else []
        parts += [f"eta {eta / 60:.1f} min"] if eta is not None else []
        self.ctx.log(" | ".join(parts))
        return record


def load_source_model(ctx, artifact: str, dtype):
    """The model a post-training stage starts from, plus its checkpoint (for inherited settings)."""
    device = ctx.backend.device(ctx.world.local_rank)
    model, ckpt = checkpoint.load_model(ctx.artifact(artifact), device, dtype, for_training=True)
    return model, ckpt


def loader_states(loaders: dict) -> dict:
    """Each stream's loader state, for Checkpointer.save."""
    return {v: loader.state_dict() for v, loader in loaders.items()}


def scale_learning_rates(optimizer, frac: float) -> None:
    """Multiply every group's learning rate by frac, including groups whose rate is not derived from
    the stage's lr settings (the smear / backout scalars have a fixed one)."""
    for group in optimizer.param_groups:
        group["lr"] *= frac
        group["initial_lr"] *= frac


def warm_start_optimizer(ctx, optimizer, ckpt) -> bool:
    """Load the source stage's optimizer shard (momentum buffers) when it fits; LRs stay ours."""
    if ckpt.meta.get("world_size", 1) != ctx.world.size:
        ctx.log(f"optimizer not warm-started: {ckpt.path} was saved by {ckpt.meta.get('world_size')} process(es), "
                f"this stage runs {ctx.world.size}")
        return False
    try:
        state = ckpt.rank_state(ctx.world.rank, ctx.world.size)["optimizer"]
        lrs = [(g["lr"], g["initial_lr"], g.get("weight_decay")) for g in optimizer.param_groups]
        optimizer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        ctx.log(f"optimizer not warm-started from {ckpt.path}: {exc}")
        return False
    for group, (lr, initial, wd) in zip(optimizer.param_groups, lrs):
        group["lr"], group["initial_lr"] = lr, initial
        if wd is not None:
            group["weight_decay"] = wd
    return True


def peak_memory_gib(backend) -> float:
    return backend.memory().get("peak_bytes", 0) / 2**30


@torch.no_grad()
def greedy_samples(model, tok, prompts, max_tokens: int = 16) -> list[str]:
    """Each prompt with the model's greedy continuation: a quick look at what a base model learned."""
    from nanochat.engine import Engine
    engine = Engine(model, tok)
    return [prompt + engine.complete(prompt, max_tokens=max_tokens, temperature=0.0) for prompt in prompts]


def inherited(source_meta: dict, *, max_seq_len: int = 0, device_batch_size: int = 0, total_batch_size: int = 0,
              lrs: dict | None = None) -> dict:
    """Batch geometry and raw learning rates: the values given (0 / -1 = not given), else the source stage's."""
    src_settings = source_meta.get("settings", {})
    src_batch = source_meta.get("batch", {})
    values = {
        "max_seq_len": max_seq_len or source_meta["model_config"]["sequence_len"],
        "device_batch_size": device_batch_size or src_batch.get("device_batch_size")
        or src_settings.get("device_batch_size", 32),
        "total_batch_size": total_batch_size or src_batch.get("total_batch_size")
        or source_meta.get("plan", {}).get("total_batch_size") or 524288,
    }
    src_lrs = source_meta.get("lrs", {})
    for key in LR_KEYS:
        given = (lrs or {}).get(key, -1.0)
        values[key] = given if given > 0 else src_lrs.get(key, src_settings.get(key))
        if values[key] is None:
            raise StageError(f"{key} is not set and the source checkpoint does not record one; set --set {key}=...")
    return values
