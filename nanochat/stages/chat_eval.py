"""Stage `chat-eval`: how well a chat model does on its tasks, and ChatCORE.

The standard set is ARC-Easy, ARC-Challenge, MMLU, GSM8K, HumanEval (their data comes from the Hugging
Face hub: `nanochat tasks download ...`) and SpellingBee (offline), as in the reference report card; any
task of any kind can be listed instead, e.g. the offline starter tasks in the cpu-tiny preset. ChatCORE is reported over the tasks that ran, and the
report says whether that was the standard set.
"""
from dataclasses import dataclass

from nanochat.checkpoint import load_model
from nanochat.evaluation.chat import centered, chatcore, evaluate_categorical, evaluate_generative
from nanochat.stages import CommonSettings, needs_source_model
from nanochat.tasks import views

STANDARD = ("arc-easy", "arc-challenge", "mmlu", "gsm8k", "humaneval", "spellingbee")


class ChatEvalStage:
    name = "chat-eval"
    produces = ()

    @dataclass
    class Settings(CommonSettings):
        source: str = "sft"  # which model: mid, sft, rl (or base)
        tasks: str = ", ".join(STANDARD)  # each on its test split unless @SPLIT
        max_problems: int = -1  # per task; -1 = all
        batch_size: int = 8  # categorical prompts per forward pass
        num_samples: int = 1  # generative: samples per problem (pass@k)
        max_new_tokens: int = 512
        temperature: float = 0.0
        top_k: int = 50
        dtype: str = "auto"

    needs = staticmethod(needs_source_model)

    def run(self, ctx):
        from nanochat.engine import Engine
        s, world, device = ctx.settings, ctx.world, ctx.device
        tok = ctx.tokenizer()
        model, ckpt = load_model(ctx.artifact(f"{s.source}-model"), device, ctx.compute_dtype(s.dtype))
        engine = Engine(model, tok)
        done = {m["task"]: m for m in ctx.run.metrics(ctx.name) if "task" in m}  # resume: keep finished tasks
        results = {}
        for view in views(s.tasks, split="test", registry=ctx.registry):
            label = view.task.name if view.split == "test" else f"{view.task.name}@{view.split}"
            if label in done:
                results[label] = done[label]
                ctx.log(f"{label}: {done[label]['accuracy']:.4f} (already evaluated)")
                continue
            if view.task.kind == "categorical":
                r = evaluate_categorical(model, tok, view, batch_size=s.batch_size, device=device, world=world,
                                         max_problems=s.max_problems)
            elif view.task.kind == "generative":
                r = evaluate_generative(engine, tok, view, num_samples=s.num_samples, max_new_tokens=s.max_new_tokens,
                                        temperature=s.temperature, top_k=s.top_k, world=world,
                                        max_problems=s.max_problems, progress=ctx.log)
            else:
                ctx.log(f"{label}: skipped ({view.task.kind} tasks have no evaluation)")
                continue
            results[label] = {"task": label, "kind": view.task.kind, **r}
            ctx.metric(results[label])
            ctx.log(f"{label}: accuracy {r['accuracy']:.4f} on {r['problems']} problems "
                    f"(random {r['baseline']:.3f}, centred {centered(r['accuracy'], r['baseline']):.4f})")
        for label, r in results.items():
            ctx.summary[label] = r["accuracy"]
        standard = set(STANDARD) <= set(results)
        if results:
            score = chatcore({k: results[k] for k in STANDARD} if standard else results)
            ctx.summary["ChatCORE" if standard else "ChatCORE (these tasks)"] = score
            ctx.log(f"ChatCORE{'' if standard else ' over ' + ', '.join(results)}: {score:.4f}")
        rows = [f"| {k} | {r['kind']} | {r['problems']} | {r['accuracy']:.4f} | {r['baseline']:.3f} | "
                f"{centered(r['accuracy'], r['baseline']):.4f} |" for k, r in results.items()]
        ctx.write_report("\n".join([
            f"## Chat evaluation ({s.source})", "",
            f"- model: {ckpt.path} (step {ckpt.step}); samples per problem {s.num_samples}, temperature {s.temperature}",
            "", "| task | kind | problems | accuracy | random | centred |", "|---|---|---|---|---|---|", *rows, "",
            f"- ChatCORE: {ctx.summary.get('ChatCORE', ctx.summary.get('ChatCORE (these tasks)', float('nan'))):.4f}"
            + ("" if standard else f" (over {', '.join(results)}; the standard set is {', '.join(STANDARD)})")]))
