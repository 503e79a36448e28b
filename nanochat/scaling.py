"""Hyperparameters that follow from the model size: horizon, batch size, learning-rate and weight-decay scaling,
and every schedule that shapes them over training (pretraining, midtraining / SFT, RL).

The reference point is a depth-12 model trained on 2^19-token batches, where the base values were
tuned. Bigger models get a longer horizon (tokens = ratio x scaling params), a bigger batch
(B ∝ D^0.383, Power Lines), learning rates scaled by sqrt(B/B_ref), and weight decay scaled to keep
the T_epoch = B/(lr·wd·D) of arXiv:2405.13698 constant.
"""
import math

B_REF = 2**19  # tokens per step at the d12 reference
REF_DEPTH = 12


def auto_batch_size(target_tokens: float, ref_tokens: float) -> int:
    """Power-of-two total batch (tokens/step) for a horizon, scaled from the d12 reference."""
    return 2 ** round(math.log2(B_REF * (target_tokens / ref_tokens) ** 0.383))


def lr_scale(total_batch: int) -> float:
    return math.sqrt(total_batch / B_REF)


def weight_decay_scaled(weight_decay: float, total_batch: int, target_tokens: float, ref_tokens: float) -> float:
    return weight_decay * math.sqrt(total_batch / B_REF) * (ref_tokens / target_tokens)


# -- schedules: what a multiplier is at a step -------------------------------------------------------------
# Every stage computes its multipliers with these functions and sets them with `apply`, the one place that
# touches the optimizer's groups. A multiplier scales a group's `initial_lr` / `initial_weight_decay`.

def warmup_warmdown(step: int, num_iterations: int, warmup_steps: int, warmdown_ratio: float,
                    final_lr_frac: float) -> float:
    """Pretraining's learning rate: linear warmup over `warmup_steps`, constant, then a linear warmdown over
    the last `warmdown_ratio` of the steps to `final_lr_frac` (a long flat top, then a cool-down, trains
    better than a cosine at the same budget)."""
    warmdown = round(warmdown_ratio * num_iterations)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step <= num_iterations - warmdown:
        return 1.0
    progress = (num_iterations - step) / warmdown
    return progress + (1 - progress) * final_lr_frac


def warmup_warmdown_by_progress(progress: float, warmup_ratio: float, warmdown_ratio: float,
                                final_lr_frac: float) -> float:
    """Midtraining / SFT's learning rate, by the fraction of the pass done (a pass over a task mixture has
    no step count known in advance): warmup, constant, then a linear decay to `final_lr_frac`."""
    if progress < warmup_ratio:
        return (progress + 1e-8) / warmup_ratio
    if progress <= 1 - warmdown_ratio:
        return 1.0
    decay = min((progress - (1 - warmdown_ratio)) / warmdown_ratio, 1.0)
    return (1 - decay) + decay * final_lr_frac


def linear_decay(step: int, num_iterations: int) -> float:
    """RL's learning rate: from 1 straight down to 0 at the last step (on-policy updates get gentler)."""
    return 1.0 - step / num_iterations


def momentum_ramp(step: int, start: float, rise: float, ramp_steps: int) -> float:
    """Muon's momentum rising linearly from `start` by `rise` over `ramp_steps`, then held: a low momentum
    while the gradients still turn fast, a high one after. Midtraining / SFT use it as it is."""
    return start + rise * (min(step / ramp_steps, 1.0) if ramp_steps else 1.0)


def pretrain_momentum(step: int, num_iterations: int, warmdown_ratio: float, start: float = 0.85,
                      peak: float = 0.97, ramp_steps: int = 400, end: float = 0.90) -> float:
    """Pretraining's Muon momentum: `momentum_ramp` up to `peak`, then down to `end` during the LR warmdown."""
    warmdown = round(warmdown_ratio * num_iterations)
    warmdown_start = num_iterations - warmdown
    if step >= warmdown_start and warmdown > 0:
        progress = (step - warmdown_start) / warmdown
        return peak + (end - peak) * progress
    return momentum_ramp(step, start, peak - start, ramp_steps)


def cosine_decay(step: int, num_iterations: int) -> float:
    """Pretraining's Muon weight decay: cosine from 1 to 0 over the run (decoupled decay matters early)."""
    return 0.5 * (1 + math.cos(math.pi * step / max(num_iterations, 1)))


def apply(optimizer, lr: float, momentum: float | None = None, weight_decay: float | None = None) -> float:
    """Set this step's values on the optimizer's groups; returns `lr`.

    `lr` multiplies every group's `initial_lr`; `momentum` (a value) and `weight_decay` (a multiplier of
    `initial_weight_decay`) go to the Muon groups, when given.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr
        if group.get("kind") == "muon":
            if momentum is not None:
                group["momentum"] = momentum
            if weight_decay is not None:
                group["weight_decay"] = group.get("initial_weight_decay", 0.0) * weight_decay
    return lr
