"""The plan of a run, resolved before anything trains (`nanochat run --dry-run`, `nanochat presets`).

Every stage with its resolved settings; for pretraining, the numbers that decide whether to rent a
machine: model shape, parameters, tokens, steps, batch and gradient accumulation per process, FLOPs,
memory per rank (nanochat/memory.py) against the device's, data shards needed against those on disk,
and the wall clock — measured over a few real steps on this machine (when the model fits it), and
estimated on a named GPU at a stated MFU. A plan that does not fit proposes the device batch that does.
"""
import math
import os
import time

from nanochat import gpus
from nanochat.errors import NanochatError
from nanochat.stages import make_settings, settings_fields, stage_class

MEASURE_STEPS = 3         # timed training steps on this machine, after one warm-up step
MEASURE_MAX_SECONDS = 60  # skip the measurement when its steps would take longer than this (by peak FLOP/s)
DEFAULT_VOCAB = 32768


# -- what a preset's pretraining costs (cheap: the model is built on the meta device) ----------------
def stage_settings(entry: dict):
    return make_settings(stage_class(entry["stage"]), entry["settings"], entry["name"])


def vocab_size(entries: list[dict]) -> int:
    """The vocabulary the pretrain stage will get: the tokenizer stage's setting."""
    for entry in entries:
        if entry["stage"] == "tokenizer":
            return stage_settings(entry).vocab_size
    return DEFAULT_VOCAB


def pretrain_figures(settings, vocab: int, world_size: int) -> dict:
    """Shape, size, horizon and batch of a pretrain stage, exactly as the stage will compute them."""
    import torch

    from nanochat.stages.pretrain import build_model, plan_training, scaling_params
    model = build_model(settings, vocab, "meta", torch.float32)
    plan = plan_training(settings, model, world_size)
    cfg, counts = model.config, model.num_scaling_params()
    tokens = plan.num_iterations * plan.total_batch_size
    flops_per_token = model.estimate_flops()
    return {"depth": cfg.n_layer, "width": cfg.n_embd, "heads": cfg.n_head, "seq_len": cfg.sequence_len,
            "window_pattern": cfg.window_pattern, "vocab_size": vocab, "padded_vocab_size": cfg.padded_vocab_size,
            "params": counts["total"],
            "scaling_params": scaling_params(model), "flops_per_token": flops_per_token,
            "steps": plan.num_iterations, "total_batch": plan.total_batch_size,
            "device_batch": settings.device_batch_size, "processes": world_size, "grad_accum": plan.grad_accum,
            "tokens": tokens, "tokens_per_param": tokens / scaling_params(model), "flops": flops_per_token * tokens,
            "lr_scale": plan.lr_scale, "weight_decay": plan.weight_decay, "fp8": settings.fp8}


def gpu_estimate(flops: float, gpu: str = "H100", count: int = 8, mfu: float | None = None, fp8: bool = False) -> dict:
    """Hours (and dollars, for H100s) to do `flops` of training on `count` GPUs at `mfu` (default: the planning
    MFU of bf16, or of fp8 against the fp8 peak when fp8 is on and the GPU has fp8 tensor cores)."""
    found = gpus.spec(gpu)
    if found is None:
        raise NanochatError(f"unknown GPU {gpu!r}; known: {', '.join(gpus.names())}")
    name, peak, memory = found
    precision = "bf16"
    if fp8 and gpus.fp8_peak(name):
        peak, precision = gpus.fp8_peak(name), "fp8"
    if mfu is None:
        mfu = gpus.PLANNING_MFU_FP8 if precision == "fp8" else gpus.PLANNING_MFU
    hours = flops / (peak * mfu * count) / 3600
    per_gpu_hour = gpus.NODE_8XH100_DOLLARS_PER_HOUR / 8 if name == "H100" else None
    return {"gpu": name, "count": count, "mfu": mfu, "peak_flops": peak, "precision": precision,
            "memory_bytes": memory, "hours": hours,
            "dollars": hours * count * per_gpu_hour if per_gpu_hour else None,
            "dollars_per_hour": count * per_gpu_hour if per_gpu_hour else None}


def preset_summary(name: str) -> dict:
    """One row of `nanochat presets`: the preset's pretraining on 8xH100 at the planning MFU."""
    from nanochat.runner import load_preset, plan
    _, data = load_preset(name)
    entries = plan(data, [])
    row = {"name": name, "description": data.get("description", ""), "stages": [e["name"] for e in entries]}
    pretrain = next((e for e in entries if e["stage"] == "pretrain"), None)
    if pretrain is not None:
        from nanochat.stages.pretrain import CHARS_PER_TOKEN
        settings = stage_settings(pretrain)
        figures = pretrain_figures(settings, vocab_size(entries), 1)  # the horizon is the same on 8
        row.update({k: figures[k] for k in ("depth", "params", "tokens", "flops")})
        row["h100x8"] = gpu_estimate(figures["flops"], fp8=figures["fp8"])
        row["data"] = shards(settings.dataset, figures["tokens"] * CHARS_PER_TOKEN, None, "the horizon")
    tokenizer = next((e for e in entries if e["stage"] == "tokenizer"), None)
    if tokenizer is not None:
        settings = stage_settings(tokenizer)
        row["tokenizer_data"] = shards(settings.dataset, settings.max_chars, None, "the tokenizer's characters")
    return row


# -- what this machine and a named GPU can hold ------------------------------------------------------
def memory_parts(settings, vocab: int, dtype, registry) -> dict:
    """memory.estimate for one process at the stage's device batch (GPU loss chunk: an upper bound on a CPU)."""
    from nanochat.distributed import World
    from nanochat.memory import estimate
    from nanochat.stages.pretrain import model_config, optimizer_hparams
    cfg = model_config(settings, vocab)
    optimizer = registry.get("optimizer", settings.optimizer)
    hparams = optimizer_hparams(settings, cfg.n_embd)
    return estimate(cfg, dtype, settings.device_batch_size, 1,
                    lambda model: optimizer.build(model, hparams, World()),
                    device_type="cuda")


def fit(parts: dict, figures: dict, world: int, limit: float | None) -> dict:
    """Per-rank bytes at `world` processes, against `limit`; when over, the largest device batch that fits.

    A smaller device batch keeps the total batch (more gradient accumulation), so it must divide the
    rows each process trains on per step.
    """
    from nanochat.memory import HEADROOM, loss_chunk_bytes
    batch, seq, vocab = figures["device_batch"], figures["seq_len"], figures["padded_vocab_size"]
    base = parts["total"] - parts["optimizer_state"] + parts["optimizer_state"] // world

    def at(b):  # activations and the loss chunk scale with the device batch; the rest does not
        return (base - parts["per_sequence"] * (batch - b) - parts["loss_chunk"]
                + loss_chunk_bytes(b, seq, vocab, "cuda"))
    out = {"bytes": base, "limit_bytes": limit, "fits": None, "proposed_device_batch": None}
    if not limit:
        return out
    out["fits"] = base <= HEADROOM * limit
    if not out["fits"]:
        rows = figures["total_batch"] // (seq * world)
        for b in range(batch - 1, 0, -1):
            if rows % b == 0 and at(b) <= HEADROOM * limit:
                out["proposed_device_batch"] = b
                break
    return out


def measure_tokens_per_second(settings, vocab: int, backend, dtype, registry, figures: dict) -> dict:
    """Time a few real training steps of the model at its shape and device batch on this machine.

    One process is timed; on GPUs the processes of a run each have their own, so the wall clock assumes
    they scale linearly; on a CPU they share the same cores, so it does not.
    """
    import torch

    from nanochat.stages.pretrain import build_model, optimizer_hparams
    step_flops = figures["flops_per_token"] * settings.device_batch_size * settings.max_seq_len
    peak = backend.peak_flops(dtype)
    predicted = (MEASURE_STEPS + 1) * step_flops / peak if peak else 0.0
    if predicted > MEASURE_MAX_SECONDS:
        return {"tok_per_s": None, "note": f"not measured: {MEASURE_STEPS + 1} steps of this model would take about "
                                           f"{predicted / 60:.0f} min here ({peak / 1e12:.2f} TFLOP/s peak)"}
    device = backend.device(0)
    torch.manual_seed(0)
    model = build_model(settings, vocab, device, dtype)
    hparams = optimizer_hparams(settings, model.config.n_embd)
    from nanochat.distributed import World
    from nanochat.training import build_optimizer
    optimizer = build_optimizer(registry, settings.optimizer, model, hparams, World(), compiled=False)
    shape = (settings.device_batch_size, settings.max_seq_len)
    x = torch.randint(0, vocab, shape, device=device)
    elapsed = 0.0
    try:
        for step in range(MEASURE_STEPS + 1):  # the first step warms up kernels and allocations
            backend.synchronize()
            t0 = time.perf_counter()
            model(x, x).backward()
            optimizer.step()
            model.zero_grad(set_to_none=True)
            backend.synchronize()
            elapsed += (time.perf_counter() - t0) if step else 0.0
    except torch.OutOfMemoryError:
        return {"tok_per_s": None, "note": f"not measured: out of memory at device batch {shape[0]}"}
    tok_per_s = MEASURE_STEPS * shape[0] * shape[1] / elapsed
    processes = figures["processes"] if backend.name != "cpu" else 1
    note = f"{MEASURE_STEPS} eager steps of one process at device batch {shape[0]}"
    if processes > 1:
        note += f", x {processes} processes"
    return {"tok_per_s": tok_per_s * processes, "hours": figures["tokens"] / (tok_per_s * processes) / 3600,
            "note": note}


def available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


# -- data ----------------------------------------------------------------------------------------
def shards(dataset_name: str, chars: float, registry, what: str) -> dict:
    """Training shards a stage reads against those on disk, and the command that fetches the rest."""
    from nanochat.datasets import resolve
    dataset = resolve(dataset_name, registry)  # registry None: the default plugin registry
    need = dataset.shards_for_chars(chars) if getattr(dataset, "num_shards", None) else None
    if need is None:
        return {"dataset": dataset_name, "what": what, "need": None, "have": None, "missing": 0, "command": None}
    have = dataset.train_shards_on_disk()
    return {"dataset": dataset_name, "what": what, "need": need, "have": have, "missing": max(need - have, 0),
            "command": dataset.download_hint(need) if have < need else None}


# -- the dry run -------------------------------------------------------------------------------------
def dry_run(entries: list[dict], world: int = 1, gpu: str = "H100", gpu_count: int | None = None,
            measure: bool = True, registry=None) -> dict:
    """The resolved plan of every stage; nothing is written and nothing trains (bar the timed steps)."""
    from nanochat import plugins
    from nanochat.stages.pretrain import CHARS_PER_TOKEN
    registry = registry or plugins.registry()
    gpu_count = gpu_count or (world if world > 1 else 8)
    vocab = vocab_size(entries)
    plan = {"world": world, "gpu": gpu, "gpu_count": gpu_count, "stages": []}
    for entry in entries:
        settings = stage_settings(entry)
        defaults = {k: d for k, (_, d) in settings_fields(stage_class(entry["stage"])).items()}
        changed = {k: v for k, v in entry["settings"].items() if defaults.get(k) != v}
        stage = {"name": entry["name"], "stage": entry["stage"], "settings": changed}
        if entry["stage"] == "tokenizer":
            stage["data"] = shards(settings.dataset, settings.max_chars, registry, "the tokenizer's characters")
        if entry["stage"] == "pretrain":
            stage.update(plan_pretrain(settings, vocab, world, gpu, gpu_count, measure, registry))
            stage["data"] = shards(settings.dataset, stage["figures"]["tokens"] * CHARS_PER_TOKEN, registry,
                                   "the horizon")
        plan["stages"].append(stage)
    return plan


def plan_pretrain(settings, vocab, world, gpu, gpu_count, measure, registry) -> dict:
    import torch
    out = {"figures": pretrain_figures(settings, vocab, world)}
    out["gpu_estimate"] = gpu_estimate(out["figures"]["flops"], gpu, gpu_count, fp8=settings.fp8)
    from nanochat.backend import select
    try:
        backend = select(settings.device, registry)
    except NanochatError as exc:
        backend, out["machine_error"] = None, str(exc)
    dtype = backend.compute_dtype() if backend else torch.bfloat16
    if settings.dtype in ("bf16", "fp32"):
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[settings.dtype]
    parts = memory_parts(settings, vocab, torch.bfloat16 if backend is None or backend.name == "cuda" else dtype,
                         registry)
    out["memory_parts"] = parts
    out["memory_gpu"] = fit(parts, out["figures"], gpu_count, out["gpu_estimate"]["memory_bytes"])
    if backend is not None:
        out["machine"] = {"backend": backend.name, "dtype": str(dtype).replace("torch.", ""),
                          **backend.describe()}
        if settings.fp8:
            from nanochat.fp8 import check_supported
            try:
                out["machine"]["fp8"] = check_supported(backend.device(0))
            except ValueError as exc:
                out["machine"]["fp8"], out["machine_error"] = None, str(exc)
        limit = backend.memory().get("total_bytes")
        out["memory_machine"] = fit(parts, out["figures"], world, limit)
        if not measure:
            out["throughput"] = {"tok_per_s": None, "note": "not measured (--no-measure)"}
        elif settings.fp8 and not out["machine"]["fp8"]:
            out["throughput"] = {"tok_per_s": None, "note": "not measured: fp8 cannot run here (above)"}
        elif out["memory_machine"]["fits"] is False or (
                backend.name == "cpu" and (available_memory() or math.inf) < out["memory_machine"]["bytes"]):
            out["throughput"] = {"tok_per_s": None, "note": "not measured: one step does not fit this machine's memory"}
        else:
            out["throughput"] = measure_tokens_per_second(settings, vocab, backend, dtype, registry, out["figures"])
    return out


# -- printing ----------------------------------------------------------------------------------------
def _gb(n) -> str:
    return f"{n / 1e9:.2f} GB"


def count_text(n) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def duration_text(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.2f} h"


def _fit_line(where: str, fit_: dict) -> list[str]:
    if not fit_.get("limit_bytes"):
        return [f"  memory per rank: {_gb(fit_['bytes'])} ({where}: memory unknown)"]
    verdict = "fits" if fit_["fits"] else "DOES NOT FIT"
    lines = [f"  memory per rank: {_gb(fit_['bytes'])} of {_gb(fit_['limit_bytes'])} on {where} (90% usable): {verdict}"]
    if fit_["fits"] is False:
        b = fit_["proposed_device_batch"]
        lines.append(f"    -> use --set device_batch_size={b} (same total batch, more gradient accumulation)" if b else
                     "    -> does not fit even at device batch 1: use more processes or a smaller depth")
    return lines


def _data_line(data: dict) -> str:
    if data["need"] is None:
        return f"  data: {data['dataset']} (no shard count to check)"
    line = f"  data: {data['dataset']}: {data['need']} training shard(s) for {data['what']}, {data['have']} on disk"
    if data["missing"]:
        line += f": {data['missing']} MISSING; fetch them with `{data['command']}`"
    return line


def render(plan: dict) -> list[str]:
    """The plan as the lines `nanochat run --dry-run` prints."""
    lines = [f"dry run: {plan['world']} process(es); nothing is written and nothing trains"]
    for stage in plan["stages"]:
        settings = ", ".join(f"{k}={v}" for k, v in stage["settings"].items())
        lines.append(f"- {stage['name']} ({stage['stage']}){': ' + settings if settings else ''}")
        if "figures" in stage:
            f = stage["figures"]
            lines += [
                f"  model: depth {f['depth']}, width {f['width']}, {f['heads']} heads, sequence {f['seq_len']}, "
                f"windows {f['window_pattern']}, vocab {f['vocab_size']:,}",
                f"  parameters: {f['params']:,} ({f['scaling_params']:,} scaling)",
                f"  horizon: {f['steps']:,} steps x {f['total_batch']:,} tokens = {f['tokens']:,} tokens "
                f"(tokens:params {f['tokens_per_param']:.1f})",
                f"  batch per process: device batch {f['device_batch']} x gradient accumulation {f['grad_accum']} "
                f"x {f['processes']} process(es)",
                f"  FLOPs: {f['flops_per_token']:.3e} per token, {f['flops']:.3e} in all",
            ]
            if "machine_error" in stage:
                lines.append(f"  this machine: {stage['machine_error']}")
            if "memory_machine" in stage:
                m = stage["machine"]
                lines += _fit_line(f"this machine ({m['backend']}, {m.get('device_name', '')})", stage["memory_machine"])
                t = stage["throughput"]
                if t["tok_per_s"]:
                    lines.append(f"  wall clock here: {t['tok_per_s']:,.0f} tok/s measured ({t['note']}) -> "
                                 f"about {duration_text(t['hours'])}")
                else:
                    lines.append(f"  wall clock here: {t['note']}")
            g = stage["gpu_estimate"]
            lines += _fit_line(f"{g['count']}x{g['gpu']}", stage["memory_gpu"])
            cost = (f", about ${g['dollars']:,.0f} at ${g['dollars_per_hour']:.0f}/h" if g["dollars"] is not None else "")
            lines.append(f"  wall clock on {g['count']}x{g['gpu']}: about {duration_text(g['hours'])} at "
                         f"{100 * g['mfu']:.0f}% MFU of {g['peak_flops'] / 1e12:.0f} TFLOP/s {g['precision']}{cost}")
        if "data" in stage:
            lines.append(_data_line(stage["data"]))
    return lines
