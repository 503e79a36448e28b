"""Stage `rl`: reinforcement learning on a task with checkable answers (GSM8K, starter-arithmetic, ...).

On-policy policy gradient, the simple form of GRPO: for each problem sample a group of completions with
the engine (calculator live), score each with the task's reward, and push up the log-probability of
the sampled tokens in proportion to (reward - the group's mean reward). No KL term, no ratio clipping;
the loss is normalised per token. Tool outputs forced by the engine carry no loss.
"""
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from nanochat import faults, scaling
from nanochat.stages import CommonSettings, StageError, needs_source_model
from nanochat.tasks import resolve
from nanochat.training import (LR_KEYS, Checkpointer, Loop, build_optimizer, inherited, load_source_model,
                               peak_memory_gib, scale_learning_rates)


@dataclass
class RLSettings(CommonSettings):
    source: str = "sft"
    task: str = "gsm8k"
    examples_per_step: int = 16  # problems per optimizer step, over all processes
    num_samples: int = 16  # completions per problem (the group)
    device_batch_size: int = 8  # completions sampled / trained per forward pass
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 50
    num_iterations: int = -1  # -1 = one pass over the task's train split
    init_lr_frac: float = 0.05
    eval_every: int = 60
    eval_examples: int = 400
    eval_samples: int = 4  # pass@k up to this k at evaluation
    save_every: int = 60
    keep_checkpoints: int = 2
    optimizer: str = "muon"
    dtype: str = "auto"
    seed: int = 42


def sample_seed(step: int, index: int, sample_pass: int) -> int:
    return random.Random(f"{step}-{index}-{sample_pass}").randrange(2**31)


@torch.no_grad()
def sample_group(engine, tok, prompt, n, batch, s, seed_of):
    """n completions of a prompt in passes of `batch`: (token ids, sampled-token masks, texts) per completion."""
    sequences, masks, texts = [], [], []
    for p in range(0, n, batch):
        seqs, ms = engine.generate_batch(prompt, num_samples=min(batch, n - p), max_tokens=s.max_new_tokens,
                                         temperature=s.temperature, top_k=s.top_k, seed=seed_of(p // batch))
        for seq, m in zip(seqs, ms):
            sequences.append(seq)
            masks.append(m)
            texts.append(tok.decode(seq[len(prompt):]))
    return sequences, masks, texts


def policy_gradient_loss(model, sequences, masks, advantages, prompt_len, pad_id, device):
    """Sum over completions of -(advantage x log p(sampled token)), normalised by the number of sampled tokens."""
    width = max(len(x) for x in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, (seq, mask) in enumerate(zip(sequences, masks)):
        ids[i, :len(seq)] = torch.tensor(seq)
        target_mask[i, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
    target_mask[:, :prompt_len] = False  # the prompt is not the policy's doing
    inputs, targets = ids[:, :-1].to(device), ids[:, 1:].to(device)
    keep = target_mask[:, 1:].to(device)
    logits = model(inputs)
    logp = -F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view_as(targets)
    adv = torch.tensor(advantages, dtype=logp.dtype, device=device)[:, None]
    return -(logp * adv * keep).sum(), keep.sum().item()


class RLStage:
    name = "rl"
    produces = ("rl-model",)
    task_settings = {"task": "train"}  # checked at run start (runner.resolve_names)
    Settings = RLSettings

    needs = staticmethod(needs_source_model)

    def run(self, ctx):
        # -- the model we start from, and the task that rewards it ---------------------------------------------
        from nanochat.engine import Engine
        s, world, backend, device = ctx.settings, ctx.world, ctx.backend, ctx.device
        dtype = ctx.compute_dtype(s.dtype)
        torch.manual_seed(s.seed)
        tok = ctx.tokenizer()
        model, source = load_source_model(ctx, f"{s.source}-model", dtype)
        task = resolve(s.task, ctx.registry)
        if not hasattr(task, "reward"):
            raise StageError(f"task {s.task!r} has no reward(); RL needs a task with checkable answers (gsm8k, ...)")
        if s.examples_per_step % world.size:
            raise StageError(f"examples_per_step={s.examples_per_step} must be a multiple of the {world.size} processes")
        train_n = task.num_examples("train")
        steps = s.num_iterations if s.num_iterations > 0 else train_n // s.examples_per_step
        if steps < 1:
            raise StageError(f"task {s.task!r} has {train_n} training problems, fewer than examples_per_step="
                             f"{s.examples_per_step}; lower it")
        # -- the optimizer at a small fraction of the inherited rates; then resume --------------------------------
        geo = inherited(source.meta)
        lrs = {k: geo[k] for k in LR_KEYS}
        optimizer = build_optimizer(ctx.registry, s.optimizer, model,  # eager: sampling-bound, the model is too
                                    {**lrs, "weight_decay": 0.0, "model_dim": model.config.n_embd}, world, False)
        scale_learning_rates(optimizer, s.init_lr_frac)  # every group: the fixed-rate scalars too
        meta = {"model_config": model.config.to_dict(), "settings": asdict(s), "compute_dtype": str(dtype),
                "lrs": lrs, "source": str(source.path), "batch": source.meta.get("batch", {})}
        checkpointer = Checkpointer(ctx, model, optimizer, meta, keep=s.keep_checkpoints)
        resumed = checkpointer.resume()
        loop = resumed[0] if resumed else Loop()
        engine = Engine(model, tok)
        pad = tok.encode_special("<|assistant_end|>")
        ctx.log(f"rl on {s.task}: {steps} steps x {s.examples_per_step} problems x {s.num_samples} samples, "
                f"from {source.path}")

        def evaluate(step):  # pass@k on the test split
            model.eval()
            n = min(s.eval_examples, task.num_examples("test"))
            passed = [0] * s.eval_samples
            for i in range(world.rank, n, world.size):
                conv = task.example("test", i)
                prompt = tok.render_for_completion(conv)
                _, _, texts = sample_group(engine, tok, prompt, s.eval_samples, s.device_batch_size, s,
                                           lambda p: sample_seed(-1, i, p))
                hits = [task.reward(conv, t) > 0 for t in texts]
                for k in range(s.eval_samples):
                    passed[k] += any(hits[:k + 1])
            totals = world.all_reduce_sum(passed + [float(len(range(world.rank, n, world.size)))])
            record = {"step": step, **{f"pass@{k + 1}": totals[k] / max(totals[-1], 1) for k in range(s.eval_samples)}}
            ctx.metric(record)
            ctx.log(f"step {step} | " + " | ".join(f"{k} {v:.3f}" for k, v in record.items() if k != "step"))
            model.train()
            return record

        # -- the loop: evaluate, checkpoint, then one policy-gradient step ----------------------------------------
        t_start, last_eval = time.time(), None
        while True:
            step = loop.step
            done = step >= steps
            if done or (s.eval_every > 0 and step % s.eval_every == 0):
                last_eval = evaluate(step)
            if done or (s.save_every > 0 and step > 0 and step % s.save_every == 0):
                checkpointer.save(loop, {})
            if done:
                break
            t0 = time.time()
            lrm = scaling.apply(optimizer, lr=scaling.linear_decay(step, steps))
            # sample a group of completions per problem, score them, and push up the better-than-average ones
            rewards_seen, tokens_seen = [], 0
            per_rank = s.examples_per_step // world.size
            for k in range(per_rank):
                index = (step * s.examples_per_step + world.rank + k * world.size) % train_n
                conv = task.example("train", index)
                prompt = tok.render_for_completion(conv)
                model.eval()
                seqs, masks, texts = sample_group(engine, tok, prompt, s.num_samples, s.device_batch_size, s,
                                                  lambda p: sample_seed(step, index, p))
                model.train()
                rewards = [task.reward(conv, t) for t in texts]
                mean = sum(rewards) / len(rewards)
                rewards_seen += rewards
                sampled = max(sum(sum(m[len(prompt):]) for m in masks), 1)  # tokens the policy chose
                for b in range(0, len(seqs), s.device_batch_size):
                    loss, n_tokens = policy_gradient_loss(model, seqs[b:b + s.device_batch_size],
                                                          masks[b:b + s.device_batch_size],
                                                          [r - mean for r in rewards[b:b + s.device_batch_size]],
                                                          len(prompt), pad, device)
                    tokens_seen += n_tokens
                    # normalise per sampled token of this problem's group, and over the problems of the step
                    (loss / sampled / per_rank).backward()
            faults.hit("step")
            optimizer.step()
            model.zero_grad(set_to_none=True)
            mean_reward = world.all_reduce_sum([sum(rewards_seen) / max(len(rewards_seen), 1)])[0] / world.size
            loop.step += 1
            record = {"step": loop.step, "reward": mean_reward, "lrm": lrm, "tokens": tokens_seen,
                      "dt_ms": (time.time() - t0) * 1000}
            ctx.metric(record)
            ctx.log(f"step {loop.step}/{steps} | reward {mean_reward:.3f} | lrm {lrm:.3f} | {record['dt_ms']:.0f} ms")

        # -- hand on the model and write the report ---------------------------------------------------------
        ctx.provide("rl-model", checkpointer.path)
        ctx.summary.update({k: v for k, v in (last_eval or {}).items() if k != "step"})
        ctx.write_report("\n".join([
            "## Reinforcement learning", "",
            f"- task: {s.task}; from {s.source} ({source.path.name}); {steps} steps x {s.examples_per_step} problems "
            f"x {s.num_samples} samples at temperature {s.temperature}",
            "- final evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in (last_eval or {}).items() if k != "step"),
            f"- time: {(time.time() - t_start) / 60:.2f} min; peak memory {peak_memory_gib(backend):.2f} GiB"]))
