"""Stage `chat-eval`: how well a chat model does on its tasks, and ChatCORE.

The standard set is ARC-Easy, ARC-Challenge, MMLU, GSM8K, HumanEval (their data comes from the Hugging
Face hub: `nanochat tasks download ...`) and SpellingBee (offline), as in the reference report card; any
task of any kind can be listed instead, e.g. the offline starter tasks in the cpu-tiny preset. ChatCORE is reported over the tasks that ran, and the
report says whether that was the standard set.
"""
from dataclasses import dataclass

from nanochat.checkpoint import load_model
from nanochat.evaluation.chat import STANDARD, centered, chatcore_summary, evaluate_tasks
from nanochat.stages import CommonSettings, needs_source_model
from nanochat.tasks import scored_views


class ChatEvalStage:
    name = "chat-eval"
    produces = ()
    task_settings = {"tasks": "scored"}  # checked at run start (runner.resolve_names)

    @dataclass
    class Settings(CommonSettings):
        source: str = "sft"  # which model: mid, sft, rl, base (or from: the model a run was started --from)
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
        s = ctx.settings
        tok = ctx.tokenizer()
        model, ckpt = load_model(ctx.artifact(f"{s.source}-model"), ctx.device, ctx.compute_dtype(s.dtype))
        # resume: keep finished tasks. Only rank 0 reads them (other nodes may have no copy of the metrics, or
        # read while it appends): every rank must run the same tasks, or their collectives would not match
        done = ctx.world.from_main({m["task"]: m for m in ctx.run.metrics(ctx.name) if "task" in m}
                                   if ctx.world.is_main else None)
        results = evaluate_tasks(model, tok, scored_views(s.tasks, ctx.registry), settings=s, world=ctx.world,
                                 device=ctx.device, done=done, log=ctx.log, record=ctx.metric)
        for label, r in results.items():
            ctx.summary[label] = r["accuracy"]
        headline = chatcore_summary(results)
        if headline:
            ctx.summary[headline[0]] = headline[1]
            ctx.log(f"{headline[0]}{'' if headline[0] == 'ChatCORE' else ' over ' + ', '.join(results)}: "
                    f"{headline[1]:.4f}")
        standard = headline is not None and headline[0] == "ChatCORE"
        rows = [f"| {k} | {r['kind']} | {r['problems']} | {r['accuracy']:.4f} | {r['baseline']:.3f} | "
                f"{centered(r['accuracy'], r['baseline']):.4f} |" for k, r in results.items()]
        ctx.write_report("\n".join([
            f"## Chat evaluation ({s.source})", "",
            f"- model: {ckpt.path} (step {ckpt.step}); samples per problem {s.num_samples}, temperature {s.temperature}",
            "", "| task | kind | problems | accuracy | random | centred |", "|---|---|---|---|---|---|", *rows, "",
            f"- ChatCORE: {headline[1] if headline else float('nan'):.4f}"
            + ("" if standard else f" (over {', '.join(results)}; the standard set is {', '.join(STANDARD)})")]))
