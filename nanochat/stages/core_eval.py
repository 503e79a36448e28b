"""Stage `core-eval`: the CORE score of the base model (DCLM's 22 in-context-learning tasks).

Fetches the eval bundle once into the cache (`nanochat.evaluation.bundle`), loads the base model's
checkpoint, and runs `nanochat.evaluation.core` on it. Every finished task is a line in this stage's
metrics.jsonl; an interrupted stage resumes by skipping the tasks already recorded there with the
same checkpoint and settings. At the end it writes `core.csv` (one row per task) in the stage folder,
a report section with the per-task table, and CORE in the run's summary.
"""
import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass

from nanochat.checkpoint import load_model
from nanochat.evaluation import bundle as eval_bundle
from nanochat.evaluation.core import evaluate_core, load_tasks, summarize
from nanochat.atomic import atomic_write_text, file_sha256
from nanochat.stages import CommonSettings, StageError


class CoreEvalStage:
    name = "core-eval"
    needs = ("base-model", "tokenizer")
    produces = ()

    @dataclass
    class Settings(CommonSettings):
        max_per_task: int = -1    # items per task; -1 = all (the official number), e.g. 500 for a quick look
        bundle_url: str = ""      # "" = NANOCHAT_EVAL_BUNDLE(_URL) or the official bundle
        tasks: str = ""           # comma-separated task labels; "" = every task in the bundle
        max_seq_len: int = -1     # crop prompts on the left to this many tokens; -1 = the model's, 0 = never
        batch_tokens: int = 8192  # rows x longest row per forward (several items share one forward)

    def run(self, ctx):
        s, world, device = ctx.settings, ctx.world, ctx.device
        bundle_dir = eval_bundle.fetch(s.bundle_url or None, log=ctx.log)  # the lock lets one rank download
        wanted = [t.strip() for t in s.tasks.split(",") if t.strip()]
        all_tasks = load_tasks(bundle_dir)
        tasks = load_tasks(bundle_dir, wanted) if wanted else all_tasks

        tok = ctx.tokenizer()
        model, ckpt = load_model(ctx.artifact("base-model"), device, compute_dtype=ctx.compute_dtype())
        if model.config.vocab_size != tok.vocab_size:
            raise StageError(f"the base model has vocab_size {model.config.vocab_size} but the run's tokenizer has "
                             f"{tok.vocab_size}; they must come from the same run")
        max_seq_len = None if s.max_seq_len < 0 else s.max_seq_len

        # Resume: tasks recorded by an earlier attempt with the same model and settings are not redone.
        config = _config_id(ckpt, s, eval_bundle.source(bundle_dir))
        done = {}
        if world.is_main:
            # drop other settings' rows, and the summary row (written again below)
            ctx.run.keep_metrics(ctx.name, lambda r: r.get("config") == config and "task" in r)
            done = {r["task"]: r for r in ctx.run.metrics(ctx.name) if "task" in r}
        # Only rank 0 reads the file (nodes may not share a disk); everyone follows its choice.
        flags = world.all_reduce_sum([1.0 if t.label in done else 0.0 for t in tasks])
        todo = [t.label for t, flag in zip(tasks, flags) if flag < 0.5]
        if len(todo) < len(tasks):
            ctx.log(f"resuming: {len(tasks) - len(todo)} task(s) already evaluated, {len(todo)} to go")
        ctx.log(f"CORE on step {ckpt.step} of {ckpt.path.name}: {len(tasks)} task(s), "
                f"{'all' if s.max_per_task < 0 else s.max_per_task} item(s) each, bundle {bundle_dir}")

        def on_task(row):
            ctx.log(f"{row['task']:<34} {row['type']:<17} {row['shots']:>2}-shot  n={row['examples']:<6} "
                    f"accuracy {row['accuracy']:.4f}  centered {row['centered']:+.4f}  {row['seconds']:.1f}s")
            ctx.metric({**row, "config": config})

        if todo:
            evaluate_core(model, tok, bundle_dir, max_per_task=s.max_per_task, device=device, world=world,
                          tasks=todo, progress=on_task, max_seq_len=max_seq_len, batch_tokens=s.batch_tokens)
        if not world.is_main:
            return
        rows = {r["task"]: r for r in ctx.run.metrics(ctx.name) if "task" in r and r.get("config") == config}
        result = summarize([rows[t.label] for t in tasks], [t.label for t in all_tasks], s.max_per_task)
        official = result["all_tasks"] and s.max_per_task < 0
        ctx.metric({"CORE": result["CORE"], "tasks_run": result["tasks_run"], "official": official, "config": config})
        ctx.log(f"CORE {result['CORE']:.4f} over {result['tasks_run']} of {result['tasks_in_bundle']} tasks"
                + ("" if official else " (not the official number: " + _why_unofficial(result, s) + ")"))
        ctx.summary["CORE"] = result["CORE"]
        atomic_write_text(ctx.stage_dir / "core.csv", _csv(result))
        ctx.write_report(_report(result, s, ckpt, official))


def _config_id(ckpt, s, source: dict) -> str:
    """A short id of everything that changes the numbers: which weights, which data, which settings.

    The weights are named by their content (model.pt's sha256 from the checkpoint's manifest), not by their
    path, so a run folder moved elsewhere (another NANOCHAT_HOME, a copy) keeps the tasks it has evaluated."""
    weights = ckpt.meta.get("files", {}).get("model.pt", {}).get("sha256") or file_sha256(ckpt.path / "model.pt")
    key = {"weights": weights, "step": ckpt.step, "max_per_task": s.max_per_task,
           "max_seq_len": s.max_seq_len, "bundle": source.get("sha256") or source.get("url") or "local"}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _why_unofficial(result, s) -> str:
    reasons = []
    if not result["all_tasks"]:
        reasons.append(f"{result['tasks_run']} of {result['tasks_in_bundle']} tasks")
    if s.max_per_task >= 0:
        reasons.append(f"max_per_task={s.max_per_task}")
    return ", ".join(reasons)


def _csv(result) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "type", "shots", "examples", "accuracy", "baseline_percent", "centered", "seconds"])
    for r in result["tasks"].values():
        writer.writerow([r["task"], r["type"], r["shots"], r["examples"], f"{r['accuracy']:.6f}", r["baseline"],
                         f"{r['centered']:.6f}", r["seconds"]])
    writer.writerow(["CORE", "", "", "", "", "", f"{result['CORE']:.6f}", ""])
    return out.getvalue()


def _report(result, s, ckpt, official: bool) -> str:
    lines = ["## CORE (base model)", "",
             f"- checkpoint: {ckpt.path.name} (step {ckpt.step})",
             f"- CORE: **{result['CORE']:.4f}**" + ("" if official else f" (partial: {_why_unofficial(result, s)})"),
             "", "| task | type | shots | n | accuracy | baseline % | centered |", "|---|---|---|---|---|---|---|"]
    for r in result["tasks"].values():
        centered = "nan" if math.isnan(r["centered"]) else f"{r['centered']:+.4f}"
        lines.append(f"| {r['task']} | {r['type']} | {r['shots']} | {r['examples']} | {r['accuracy']:.4f} | "
                     f"{r['baseline']:g} | {centered} |")
    return "\n".join(lines)
