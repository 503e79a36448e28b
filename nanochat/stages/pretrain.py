"""Stage `pretrain`: train the base GPT on a text dataset — the heart of the speedrun.

Read it top to bottom: settings -> model -> horizon and hyperparameters (all derived from --depth) ->
optimizer -> data -> resume -> the loop (eval, sample, checkpoint, step). Every `save_every` steps
(and at the end) it writes a checkpoint; an interrupted run resumes from the latest one and, on CPU,
reproduces the uninterrupted run's losses exactly.

Data comes in "streams": one packed loader per micro-batch of an optimizer step (world size x
gradient accumulation of them). Which documents a micro-batch sees therefore depends only on the
total batch, not on how many processes share it: 2 ranks x 1 micro-batch and 1 rank x 2
micro-batches train on the same rows.
"""
import gc
import time
from dataclasses import asdict, dataclass

import torch

from nanochat import fp8, scaling
from nanochat.cpu_memory import keep_freed_memory
from nanochat.data import PackedLoader, document_source, in_steps, regroup
from nanochat.datasets import resolve
from nanochat.evaluation.bpb import evaluate_bpb
from nanochat.model import GPT, GPTConfig
from nanochat.stages import CommonSettings, StageError
from nanochat.training import (SAMPLE_PROMPTS, Checkpointer, Loop, OutOfMemory, Progress, build_optimizer,
                               grad_accum_steps, greedy_samples, loader_states, micro_streams, optimizer_step,
                               peak_memory_gib)

CHARS_PER_TOKEN = 4.8  # for planning how many shards a horizon needs (measured on FineWeb-Edu at 32K-65K vocab)


@dataclass
class PretrainSettings(CommonSettings):
    dataset: str = "climbmix"
    # the model: one dial
    depth: int = 20
    aspect_ratio: int = 64
    head_dim: int = 128
    max_seq_len: int = 2048
    window_pattern: str = "SSSL"
    # the horizon, in order of precedence: iterations, FLOPs, tokens:params ratio
    num_iterations: int = -1
    target_flops: float = -1.0
    target_param_data_ratio: float = 12.0
    # batch: total tokens per optimizer step (-1 = derived from the horizon), split into device batches
    device_batch_size: int = 32
    total_batch_size: int = -1
    # optimizer (values at the d12 reference; scaled to the batch size)
    optimizer: str = "muon"
    embedding_lr: float = 0.3
    unembedding_lr: float = 0.008
    matrix_lr: float = 0.02
    scalar_lr: float = 0.5
    weight_decay: float = 0.28
    warmup_steps: int = 40
    warmdown_ratio: float = 0.65
    final_lr_frac: float = 0.05
    # evaluation, samples and checkpoints during training (-1 = never; the last step always evaluates and
    # saves, and samples unless sample_every is -1)
    eval_every: int = 250
    eval_tokens: int = 80 * 524288
    sample_every: int = 2000
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 1  # read the loss back (a host sync) and print a line every N steps; every step keeps its record
    # execution
    dtype: str = "auto"  # auto (the backend's choice), bf16 or fp32
    fp8: bool = False  # the blocks' matmuls in float8 (CUDA capability 8.9+; emulated on CPU); see nanochat/fp8.py
    compile: str = "auto"  # auto (the backend's advice), on or off
    deterministic: bool = False  # CPU + compile: ATen deterministic algorithms for every op (repeatable_compile)
    tokenizer_threads: int = 4
    seed: int = 42


def model_config(s, vocab_size: int) -> GPTConfig:
    return GPTConfig.from_depth(s.depth, vocab_size=vocab_size, sequence_len=s.max_seq_len, head_dim=s.head_dim,
                                aspect_ratio=s.aspect_ratio, window_pattern=s.window_pattern)


def build_model(s, vocab_size: int, device, dtype) -> GPT:
    with torch.device("meta"):
        model = GPT(model_config(s, vocab_size), compute_dtype=dtype, fp8=s.fp8)
    if device == "meta" or getattr(device, "type", None) == "meta":
        return model  # shape only: for planning
    model.to_empty(device=device)
    model.init_weights()
    return model


def fp8_mode_for(s, device) -> str | None:
    """None without fp8; else how it runs here ("cuda" or "emulated"), or a StageError saying why it cannot."""
    if not s.fp8:
        return None
    try:
        return fp8.check_supported(device)
    except ValueError as exc:
        raise StageError(str(exc)) from None


def scaling_params(model) -> int:
    """Transformer matrices + lm_head: the count the horizon is a multiple of (cleanest scaling laws)."""
    counts = model.num_scaling_params()
    return counts["transformer_matrices"] + counts["lm_head"]


@dataclass
class Plan:
    num_iterations: int
    total_batch_size: int
    grad_accum: int
    lr_scale: float
    weight_decay: float
    target_tokens: int


def plan_training(s, model, world_size: int) -> Plan:
    """Horizon, batch, LR and weight-decay scaling from the depth dial (see nanochat/scaling.py)."""
    target_tokens = int(s.target_param_data_ratio * scaling_params(model))
    with torch.device("meta"):
        ref = GPT(GPTConfig.from_depth(scaling.REF_DEPTH, vocab_size=model.config.vocab_size,
                                       sequence_len=s.max_seq_len, head_dim=s.head_dim, aspect_ratio=s.aspect_ratio,
                                       window_pattern=s.window_pattern))
    ref_tokens = s.target_param_data_ratio * scaling_params(ref)
    total = s.total_batch_size if s.total_batch_size > 0 else scaling.auto_batch_size(target_tokens, ref_tokens)
    grad_accum = grad_accum_steps(total, s.device_batch_size, s.max_seq_len, world_size)
    if s.num_iterations > 0:
        iterations = s.num_iterations
    elif s.target_flops > 0:
        iterations = round(s.target_flops / (model.estimate_flops() * total))
    elif s.target_param_data_ratio > 0:
        iterations = target_tokens // total
    else:
        raise StageError("no horizon: set num_iterations, target_flops or target_param_data_ratio above 0")
    if iterations < 1:
        raise StageError(f"the horizon is {iterations} steps; raise num_iterations or the ratio, or lower the batch")
    wd = scaling.weight_decay_scaled(s.weight_decay, total, target_tokens, ref_tokens)
    return Plan(iterations, total, grad_accum, scaling.lr_scale(total), wd, target_tokens)


def check_shards(dataset, tokens: int) -> None:
    """Refuse a horizon the downloaded shards cannot feed without repeating (hub datasets only)."""
    if not getattr(dataset, "num_shards", None):
        return  # starter/local data: repeating epochs is expected and logged
    need = dataset.shards_for_chars(tokens * CHARS_PER_TOKEN)
    problem = dataset.too_few_shards(need)
    if problem:
        raise StageError(problem)


def optimizer_hparams(s, model_dim: int, lr_scale: float = 1.0, weight_decay: float | None = None) -> dict:
    """What the optimizer plugin is built with: the settings' rates scaled to the batch size."""
    return {"embedding_lr": s.embedding_lr * lr_scale, "unembedding_lr": s.unembedding_lr * lr_scale,
            "matrix_lr": s.matrix_lr * lr_scale, "scalar_lr": s.scalar_lr * lr_scale,
            "weight_decay": s.weight_decay if weight_decay is None else weight_decay, "model_dim": model_dim}


def smaller_device_batch(device_batch: int, rows_per_step: int) -> int | None:
    """About half the device batch, dividing a process's rows per step; None at 1."""
    for b in range(device_batch // 2, 0, -1):
        if rows_per_step % b == 0:
            return b
    return None


class PretrainStage:
    name = "pretrain"
    needs = ("tokenizer",)
    produces = ("base-model",)
    Settings = PretrainSettings

    def run(self, ctx):
        # -- the tokenizer and the dataset ---------------------------------------------------------------
        s, world, backend, device = ctx.settings, ctx.world, ctx.backend, ctx.device
        dtype = ctx.compute_dtype(s.dtype)
        fp8_mode = fp8_mode_for(s, device)
        torch.manual_seed(s.seed)
        tok = ctx.tokenizer()
        token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64, device=device)
        dataset = resolve(s.dataset, ctx.registry)

        # -- the model, and the plan the depth dial implies: horizon, batch, scaled LR and weight decay ----------
        model = build_model(s, tok.vocab_size, device, dtype)
        plan = plan_training(s, model, world.size)
        flops_per_token = model.estimate_flops()
        peak = backend.peak_flops(fp8.peak_dtype(device, dtype) if s.fp8 else dtype)
        check_shards(dataset, plan.num_iterations * plan.total_batch_size)
        counts = model.num_scaling_params()
        ctx.log(f"model: depth {s.depth}, width {model.config.n_embd}, {model.config.n_head} heads, "
                f"{counts['total']:,} params ({scaling_params(model):,} scaling), {flops_per_token:.3e} FLOPs/token")
        ctx.log(f"plan: {plan.num_iterations:,} steps x {plan.total_batch_size:,} tokens = "
                f"{plan.num_iterations * plan.total_batch_size:,} tokens; grad accum {plan.grad_accum} x {world.size} "
                f"process(es); LR x{plan.lr_scale:.3f}; weight decay {plan.weight_decay:.4f}; {dtype}; {backend.name}")
        if fp8_mode:
            ctx.log("fp8: the blocks' matmuls train in float8 (e4m3 weights and activations, e5m2 gradients); "
                    + ("fp8 tensor cores, MFU against the fp8 peak" if fp8_mode == "cuda" else
                       "emulated on this CPU (same numerics, slower than bf16: for testing)"))

        # -- the optimizer (a plugin), built with the scaled rates -----------------------------------------------
        hparams = optimizer_hparams(s, model.config.n_embd, plan.lr_scale, plan.weight_decay)
        optimizer = build_optimizer(ctx.registry, s.optimizer, model, hparams, world, ctx.wants_compile(s.compile))
        for group in optimizer.param_groups:
            group.setdefault("initial_weight_decay", group.get("weight_decay", 0.0))

        # -- resume ----------------------------------------------------------------------------------
        meta = {"model_config": model.config.to_dict(), "settings": asdict(s), "compute_dtype": str(dtype),
                "plan": asdict(plan), "tokenizer_vocab_size": tok.vocab_size}
        checkpointer = Checkpointer(ctx, model, optimizer, meta, keep=s.keep_checkpoints)
        resumed = checkpointer.resume()
        loop = resumed[0] if resumed else Loop()

        # -- data: a step takes the same number of rows from each of `streams` loaders (see
        # training.micro_streams). Their number is set when the stage first starts (one per micro-batch) and
        # kept on resume, and a stream's rows do not depend on the device batch: a resume with another
        # device batch, or one halved after running out of memory, trains on the same rows (data.regroup).
        streams, mine = micro_streams(world, len(resumed[1]) if resumed else plan.grad_accum)
        if plan.total_batch_size % (s.max_seq_len * streams):
            raise StageError(f"the checkpoint splits each step into {streams} data streams, which "
                             f"total_batch_size={plan.total_batch_size:,} tokens of {s.max_seq_len} per row do not "
                             f"divide; resume with the total batch the stage started with")
        rows_per_stream = plan.total_batch_size // (s.max_seq_len * streams)
        device_batch = s.device_batch_size

        def stream(v, state=None):
            source = document_source(dataset, tok, "train", rank=v, world=streams, threads=s.tokenizer_threads)
            return PackedLoader(source, batch_size=rows_per_stream, seq_len=s.max_seq_len, bos_id=tok.bos_id,
                                device=device, state=state)

        def val_batches():
            """Validation in the same streams as training, so its batches do not depend on the process count."""
            return in_steps([PackedLoader(document_source(dataset, tok, "val", rank=v, world=streams,
                                                          threads=s.tokenizer_threads),
                                          batch_size=rows_per_stream, seq_len=s.max_seq_len, bos_id=tok.bos_id,
                                          device=device) for v in mine], device_batch)

        loaders = {v: stream(v, resumed[1][str(v)] if resumed else None) for v in mine}
        train_model = ctx.maybe_compile(model, s.compile)
        keep_freed_memory(device)  # no page faults for each step's buffers on a CPU (nanochat/cpu_memory.py)
        eval_rounds = max(1, s.eval_tokens // (rows_per_stream * s.max_seq_len * streams))
        progress = Progress(ctx, loop, plan.num_iterations, plan.total_batch_size, flops_per_token, peak, s.log_every)
        first_step, oom_note = True, None

        # -- the loop ------------------------------------------------------------------------------
        val_bpb, t_start = None, time.time()
        upcoming = None  # the next step's rows, fetched while this step still runs on the device
        while True:
            step = loop.step
            last_step = step == plan.num_iterations
            evaluating = last_step or (s.eval_every > 0 and step % s.eval_every == 0)
            saving = last_step or (s.save_every > 0 and step > 0 and step % s.save_every == 0)
            if evaluating or saving:
                progress.flush()  # the loop's losses are read before anything is saved or measured
            # evaluate: validation bits per byte
            if evaluating:
                model.eval()
                eval_steps = eval_rounds * rows_per_stream * len(mine) // device_batch
                val_bpb = evaluate_bpb(train_model, val_batches(), eval_steps, token_bytes, world)
                model.train()
                ctx.log(f"step {step:,} | val bpb {val_bpb:.4f}")
                ctx.metric({"step": step, "val_bpb": val_bpb})
            # sample: what the model says so far
            if world.is_main and s.sample_every > 0 and (last_step or (step > 0 and step % s.sample_every == 0)):
                model.eval()
                for text in greedy_samples(model, tok, SAMPLE_PROMPTS):
                    ctx.log(f"  sample: {text!r}")
                model.train()
            # checkpoint: everything a resume needs
            if saving:
                checkpointer.save(loop, loader_states(loaders), val_bpb=val_bpb)
            if last_step:
                break
            # train: one optimizer step over this step's rows, at this step's scheduled LR / momentum / decay
            progress.start()
            rows = upcoming or [next(loader) for loader in loaders.values()]  # pretraining data never runs out
            upcoming = None
            lrm = scaling.apply(optimizer,
                                lr=scaling.warmup_warmdown(step, plan.num_iterations, s.warmup_steps, s.warmdown_ratio,
                                                           s.final_lr_frac),
                                momentum=scaling.pretrain_momentum(step, plan.num_iterations, s.warmdown_ratio),
                                weight_decay=scaling.cosine_decay(step, plan.num_iterations))
            while True:  # out of memory at the first step: halve the device batch and try the same rows again
                try:
                    loss = optimizer_step(train_model, regroup(rows, device_batch), optimizer, world)
                    break
                except OutOfMemory:
                    smaller = smaller_device_batch(device_batch, rows_per_stream * len(mine)) if first_step else None
                    if smaller is None:
                        raise
                oom_note = (f"out of memory at the first step with device_batch_size={device_batch}; went on with "
                            f"{smaller} and gradient accumulation {rows_per_stream * len(mine) // smaller} "
                            f"(the same total batch and rows)")
                ctx.log(oom_note)
                device_batch = smaller
                gc.collect()  # outside the handler, so the failed step's tensors are really gone
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            first_step = False
            if loop.step == 0:
                gc.collect()
                gc.freeze()  # fewer and shorter GC pauses over a long loop
            epoch = next(iter(loaders.values())).position
            following = step + 1
            if following < plan.num_iterations and not (s.save_every > 0 and following % s.save_every == 0):
                # not before a save: a checkpoint's loader states are those at the end of its step
                upcoming = [next(loader) for loader in loaders.values()]
            progress.done(loss, lrm=lrm, epoch=epoch["epoch"] if epoch else 1)  # reads the loss: a host sync
        gc.unfreeze()
        for loader in loaders.values():
            loader.close()

        # -- hand on the model and write the report ---------------------------------------------------------
        ctx.provide("base-model", checkpointer.path)
        tokens = plan.num_iterations * plan.total_batch_size
        ctx.summary.update({"val_bpb": val_bpb, "params": counts["total"], "tokens": tokens,
                            "flops": flops_per_token * tokens})
        ctx.write_report("\n".join([
            "## Base model training", "",
            f"- depth {s.depth}: width {model.config.n_embd}, {model.config.n_head} heads, window pattern "
            f"{model.config.window_pattern}, sequence length {s.max_seq_len}",
            f"- parameters: {counts['total']:,} ({scaling_params(model):,} scaling)",
            f"- FLOPs per token: {flops_per_token:.3e}; total training FLOPs: {flops_per_token * tokens:.3e}",
            f"- steps: {plan.num_iterations:,} x {plan.total_batch_size:,} tokens = {tokens:,} tokens "
            f"(tokens : scaling params = {tokens / scaling_params(model):.2f})",
            f"- dataset: {s.dataset}; optimizer: {s.optimizer}; dtype: {dtype}"
            + (f" with fp8 matmuls ({fp8_mode})" if fp8_mode else "") + f"; processes: {world.size}; "
            f"device batch: {device_batch}" + (f" ({oom_note})" if oom_note else ""),
            f"- final val bits per byte: {val_bpb:.4f}",
            f"- training time (excluding the first 10 steps): {loop.train_seconds / 60:.2f} min",
            f"- peak memory: {peak_memory_gib(backend):.2f} GiB",
        ]))
        ctx.log(f"done in {(time.time() - t_start) / 60:.1f} min; final val bpb {val_bpb:.4f}")
