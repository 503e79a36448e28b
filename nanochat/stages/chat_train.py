"""Stages `midtrain` and `sft`: teach a base model to chat — the conversation format, tool calls, answers.

Both read a task mixture (e.g. "smoltalk, mmlu*3, gsm8k*4"), render each conversation with the
tokenizer (special tokens + loss mask) and pack whole conversations into rows (best-fit, padded,
never cut). They differ in defaults: midtraining starts from the base model and learns from every
token at the full learning rate; SFT starts from the midtrained model and learns only from the
assistant's tokens. The batch, sequence length and learning rates are inherited from the stage they
start from unless set; by default a stage makes one pass over its mixture.
"""
import re
import time
from dataclasses import asdict, dataclass

import torch

from nanochat import scaling
from nanochat.cpu_memory import keep_freed_memory
from nanochat.data import PackedLoader, conversation_source, in_steps, regroup
from nanochat.evaluation.bpb import evaluate_bpb
from nanochat.stages import CommonSettings, StageError, needs_source_model
from nanochat.tasks import mixture
from nanochat.training import (CHAT_PROMPTS, LR_KEYS, Checkpointer, Loop, Progress, build_optimizer,
                               grad_accum_steps, inherited, load_source_model, loader_states, micro_streams,
                               next_micro_batches, optimizer_step, peak_memory_gib, scale_learning_rates,
                               warm_start_optimizer)



@dataclass
class ChatTrainSettings(CommonSettings):
    source: str = "base"  # the model to start from: base, mid or sft (its "<source>-model" artifact)
    tasks: str = "smoltalk, mmlu*3, gsm8k*4"  # training mixture, TASK[@SPLIT][[START:STOP]][*TIMES], ...
    val_tasks: str = "smoltalk@test, mmlu@test[:5200], gsm8k@test[:420]"
    loss_on: str = "assistant"  # assistant: learn from the assistant's tokens only; all: from every token
    num_iterations: int = -1  # -1 = one pass over the mixture
    max_seq_len: int = 0  # 0 = inherit from the source model
    device_batch_size: int = 0  # 0 = inherit from the source stage
    total_batch_size: int = 0  # 0 = inherit from the source stage
    init_lr_frac: float = 0.8  # x the source stage's (unscaled) learning rates
    embedding_lr: float = -1.0  # -1 = inherit
    unembedding_lr: float = -1.0
    matrix_lr: float = -1.0
    scalar_lr: float = -1.0
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.5
    final_lr_frac: float = 0.0
    load_optimizer: bool = True  # warm-start the optimizer state from the source checkpoint
    optimizer: str = "muon"
    eval_every: int = 200
    eval_tokens: int = 40 * 524288
    save_every: int = 200
    keep_checkpoints: int = 2
    dtype: str = "auto"
    compile: str = "auto"
    deterministic: bool = False  # CPU + compile: ATen deterministic algorithms for every op (repeatable_compile)
    seed: int = 42


class ChatTrainStage:
    produces: tuple = ()
    Settings = ChatTrainSettings
    task_settings = {"tasks": "train", "val_tasks": "train"}  # checked at run start (runner.resolve_names)

    needs = staticmethod(needs_source_model)

    def run(self, ctx):
        # -- the model we start from, and the batch and learning rates it hands on ---------------------------------
        s, world, backend, device = ctx.settings, ctx.world, ctx.backend, ctx.device
        dtype = ctx.compute_dtype(s.dtype)
        torch.manual_seed(s.seed)
        tok = ctx.tokenizer()
        token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64, device=device)
        model, source = load_source_model(ctx, f"{s.source}-model", dtype)
        geo = inherited(source.meta, max_seq_len=s.max_seq_len, device_batch_size=s.device_batch_size,
                        total_batch_size=s.total_batch_size, lrs={k: getattr(s, k) for k in LR_KEYS})
        T, B = geo["max_seq_len"], geo["device_batch_size"]
        grad_accum = grad_accum_steps(geo["total_batch_size"], B, T, world.size)
        # -- the task mixtures ----------------------------------------------------------------------------------
        train_mix = mixture(s.tasks, split="train", registry=ctx.registry)
        val_mix = mixture(s.val_tasks, split="train", registry=ctx.registry) if s.val_tasks else None
        streams, mine = micro_streams(world, grad_accum)
        if len(train_mix) < streams:
            raise StageError(f"the training mixture has {len(train_mix)} conversations but each step needs at least "
                             f"{streams} (one per micro-batch); use more data or a smaller total_batch_size")
        ctx.log(f"{self.name}: from {source.path} (step {source.step}); {len(train_mix):,} training conversations "
                f"({s.tasks}); {grad_accum} micro-batch(es) of {B} x {T} per process; loss on {s.loss_on} tokens")

        # -- the optimizer, at a fraction of the inherited rates, warm-started from the source's state ------------
        lrs = {k: geo[k] for k in LR_KEYS}
        hparams = {**lrs, "weight_decay": 0.0, "model_dim": model.config.n_embd}
        optimizer = build_optimizer(ctx.registry, s.optimizer, model, hparams, world, ctx.wants_compile(s.compile))
        scale_learning_rates(optimizer, s.init_lr_frac)
        if s.load_optimizer and warm_start_optimizer(ctx, optimizer, source):
            ctx.log("optimizer warm-started from the source checkpoint (momentum buffers; learning rates are ours)")

        # -- data: packed conversation rows, one loader per micro-batch stream; then resume ----------------------
        def stream(v, state=None, conversations=train_mix, epochs=1):
            source_fn = conversation_source(conversations, tok, rank=v, world=streams, max_tokens=T + 1,
                                            loss_on=s.loss_on, epochs=epochs)
            return PackedLoader(source_fn, batch_size=rows_per_stream, seq_len=T, bos_id=tok.bos_id, device=device,
                                mode="pad", buffer_size=100, state=state)

        meta = {"model_config": model.config.to_dict(), "settings": asdict(s), "compute_dtype": str(dtype),
                "lrs": lrs, "source": str(source.path),
                "batch": {"device_batch_size": B, "total_batch_size": geo["total_batch_size"], "max_seq_len": T}}
        checkpointer = Checkpointer(ctx, model, optimizer, meta, keep=s.keep_checkpoints)
        resumed = checkpointer.resume()
        loop = resumed[0] if resumed else Loop()
        if resumed:  # the streams the stage started with, whatever the device batch is now (see data.regroup)
            streams, mine = micro_streams(world, len(resumed[1]))
        if geo["total_batch_size"] % (T * streams):
            raise StageError(f"the checkpoint splits each step into {streams} data streams, which total_batch_size="
                             f"{geo['total_batch_size']:,} does not divide into rows of {T}; resume with the total "
                             f"batch the stage started with")
        rows_per_stream = geo["total_batch_size"] // (T * streams)
        loaders = {v: stream(v, resumed[1][str(v)] if resumed else None) for v in mine}

        def val_bpb():
            if val_mix is None:
                return None
            batches = in_steps([stream(v, conversations=val_mix, epochs=1) for v in mine], B)
            rounds = max(1, s.eval_tokens // (rows_per_stream * T * streams))
            steps = rounds * (rows_per_stream * len(mine) // B)
            model.eval()
            value = evaluate_bpb(train_model, batches, steps, token_bytes, world)
            model.train()
            return value

        # -- the loop: evaluate, checkpoint, one optimizer step; until the pass (or num_iterations) is done --------
        train_model = ctx.maybe_compile(model, s.compile)
        keep_freed_memory(ctx.device)  # no page faults for each step's buffers on a CPU (nanochat/cpu_memory.py)
        total = s.num_iterations if s.num_iterations > 0 else None
        progress = Progress(ctx, loop, total, geo["total_batch_size"], model.estimate_flops(), backend.peak_flops(dtype))
        t_start, bpb = time.time(), None
        while True:
            step = loop.step
            save_due = s.save_every > 0 and step > 0 and step % s.save_every == 0
            # the loader states as of the end of this step: taken before the next batches are fetched
            states = loader_states(loaders) if save_due else None
            batches = None if total is not None and step >= total else next_micro_batches(list(loaders.values()), world)
            done = batches is None
            if done or (s.eval_every > 0 and step % s.eval_every == 0):
                bpb = val_bpb()
                if bpb is not None:
                    ctx.log(f"step {step:,} | val bpb {bpb:.4f}")
                    ctx.metric({"step": step, "val_bpb": bpb})
            if done or save_due:
                checkpointer.save(loop, states or loader_states(loaders), val_bpb=bpb)
            if done:
                break
            # train: the fraction of the pass done sets the learning rate
            if total is not None:
                frac = step / total
            else:
                frac = sum(l.position["progress"] for l in loaders.values()) / len(loaders)
                frac = world.all_reduce_sum([frac])[0] / world.size if world.size > 1 else frac
            progress.start()
            lrm = scaling.apply(optimizer,
                                lr=scaling.warmup_warmdown_by_progress(frac, s.warmup_ratio, s.warmdown_ratio,
                                                                       s.final_lr_frac),
                                momentum=scaling.momentum_ramp(step, start=0.85, rise=0.10, ramp_steps=300),
                                weight_decay=0.0)  # no weight decay after pretraining
            loss = optimizer_step(train_model, regroup(batches, B), optimizer, world)
            progress.done(loss, lrm=lrm, progress=min(frac, 1.0))
        for loader in loaders.values():
            loader.close()
        if total is not None and loop.step < total:
            first = re.split(r"[@\[*]", s.tasks.split(",")[0].strip())[0]
            ctx.note(f"stopped at step {loop.step:,} of num_iterations={total:,}: the training mixture ran out after "
                     f"one pass ({len(train_mix):,} conversations, {geo['total_batch_size']:,} tokens a step). To "
                     f"train longer, repeat tasks in the mixture with *N (--set {ctx.name}.tasks=\"{first}*4, ...\"), "
                     f"add data, or lower total_batch_size")

        # -- sample a few chats, hand on the model, write the report --------------------------------------------
        samples = []
        if world.is_main:
            from nanochat.engine import Engine
            engine = Engine(model, tok)
            for prompt in CHAT_PROMPTS:
                reply = "".join(engine.chat([{"role": "user", "content": prompt}], max_tokens=48, temperature=0.0))
                samples.append(f"- {prompt!r} -> {reply!r}")
                ctx.log(f"  sample: {prompt!r} -> {reply!r}")
        ctx.provide(self.produces[0], checkpointer.path)
        ctx.summary.update({"val_bpb": bpb, "steps": loop.step})
        ctx.write_report("\n".join([
            f"## {self.title}", "",
            f"- from: {s.source} model ({source.path if s.source == 'from' else source.path.name}); mixture: {s.tasks} "
            f"({len(train_mix):,} conversations)",
            f"- steps: {loop.step:,} of {geo['total_batch_size']:,} tokens; loss on {s.loss_on} tokens",
            *[f"- note: {n}" for n in ctx.notes],
            "- learning rates: " + ", ".join(f"{k} {v * s.init_lr_frac:.4g}" for k, v in lrs.items()),
            f"- final val bits per byte: {bpb:.4f}" if bpb is not None else "- no validation mixture",
            f"- time: {(time.time() - t_start) / 60:.2f} min; peak memory {peak_memory_gib(backend):.2f} GiB",
            "", "Samples:", *samples]))


class MidtrainStage(ChatTrainStage):
    name = "midtrain"
    title = "Midtraining"
    produces = ("mid-model",)

    @dataclass
    class Settings(ChatTrainSettings):
        source: str = "base"
        tasks: str = "smoltalk, mmlu, gsm8k, identity*2"
        loss_on: str = "all"
        init_lr_frac: float = 1.0
        warmdown_ratio: float = 0.2


class SFTStage(ChatTrainStage):
    name = "sft"
    title = "Supervised finetuning"
    produces = ("sft-model",)

    @dataclass
    class Settings(ChatTrainSettings):
        source: str = "mid"
