"""Hyperparameters that follow from the model size: horizon, batch size, learning-rate and weight-decay scaling,
and the schedules that shape them over training.

The reference point is a depth-12 model trained on 2^19-token batches, where the base values were
tuned. Bigger models get a longer horizon (tokens = ratio x scaling params), a bigger batch
(B ∝ D^0.383, Power Lines), learning rates scaled by sqrt(B/B_ref), and weight decay scaled to keep
the T_epoch = B/(lr·wd·D) of arXiv:2405.13698 constant.
"""
import math
from dataclasses import dataclass

B_REF = 2**19  # tokens per step at the d12 reference
REF_DEPTH = 12


def auto_batch_size(target_tokens: float, ref_tokens: float) -> int:
    """Power-of-two total batch (tokens/step) for a horizon, scaled from the d12 reference."""
    return 2 ** round(math.log2(B_REF * (target_tokens / ref_tokens) ** 0.383))


def lr_scale(total_batch: int) -> float:
    return math.sqrt(total_batch / B_REF)


def weight_decay_scaled(weight_decay: float, total_batch: int, target_tokens: float, ref_tokens: float) -> float:
    return weight_decay * math.sqrt(total_batch / B_REF) * (ref_tokens / target_tokens)


@dataclass(frozen=True)
class Schedule:
    """Per-step multipliers: LR warmup / constant / linear warmdown, Muon momentum, cosine weight decay."""

    num_iterations: int
    warmup_steps: int = 40
    warmdown_ratio: float = 0.65
    final_lr_frac: float = 0.05
    momentum_start: float = 0.85
    momentum_peak: float = 0.97
    momentum_warmup: int = 400
    momentum_end: float = 0.90

    @property
    def warmdown_steps(self) -> int:
        return round(self.warmdown_ratio * self.num_iterations)

    def lr(self, step: int) -> float:
        warmup, warmdown, n = self.warmup_steps, self.warmdown_steps, self.num_iterations
        if step < warmup:
            return (step + 1) / warmup
        if step <= n - warmdown:
            return 1.0
        progress = (n - step) / warmdown
        return progress + (1 - progress) * self.final_lr_frac

    def momentum(self, step: int) -> float:
        warmdown_start = self.num_iterations - self.warmdown_steps
        if step >= warmdown_start and self.warmdown_steps > 0:
            progress = (step - warmdown_start) / self.warmdown_steps
            return self.momentum_peak + (self.momentum_end - self.momentum_peak) * progress
        frac = min(step / self.momentum_warmup, 1.0) if self.momentum_warmup else 1.0
        return self.momentum_start + (self.momentum_peak - self.momentum_start) * frac

    def weight_decay(self, step: int) -> float:
        """Multiplier on the Muon weight decay: cosine from 1 to 0 over the run."""
        return 0.5 * (1 + math.cos(math.pi * step / max(self.num_iterations, 1)))


def apply(optimizer, schedule: Schedule, step: int) -> float:
    """Set this step's LR, momentum and weight decay on the optimizer's groups; returns the LR multiplier."""
    lrm = schedule.lr(step)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lrm
        if group.get("kind") == "muon":
            group["momentum"] = schedule.momentum(step)
            group["weight_decay"] = group["initial_weight_decay"] * schedule.weight_decay(step)
    return lrm
