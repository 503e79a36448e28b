"""`nanochat eval`: score any finished model on any installed tasks, without a run stage.

    nanochat eval --run R [--stage S] --tasks "capitals, arc-easy@test[:200]" [--max-problems N]
    nanochat eval --checkpoint PATH [--tokenizer DIR] --tasks ...

It runs the same loop as the chat-eval stage (`evaluation.chat.evaluate_tasks`), in one process or under
torchrun (`--nproc-per-node`), and records the result in the run (`evals.py` describes the files). Running
the same command again after an interruption resumes: tasks already scored are not run again.
"""
import argparse
import dataclasses
import json
import os
import socket
import subprocess
from pathlib import Path

from nanochat import evals
from nanochat.errors import NanochatError
from nanochat.runs import file_lock, now, read_json


def add_arguments(p) -> None:
    which = p.add_argument_group("which model")
    which.add_argument("--run", help="a run; its last stage with a model unless --stage")
    which.add_argument("--stage", help="the stage whose model to score (sft, rl, midtrain, pretrain, ...)")
    which.add_argument("--checkpoint", metavar="PATH", help="a checkpoint folder instead of --run")
    which.add_argument("--tokenizer", metavar="DIR", help="its tokenizer, for a checkpoint outside any run")
    p.add_argument("--tasks", required=True, help='tasks to score, e.g. "capitals, arc-easy@test[:200]" '
                   '(each on its test split unless @SPLIT; [START:STOP] takes a slice)')
    p.add_argument("--max-problems", type=int, default=-1, help="at most this many problems per task (-1 = all)")
    p.add_argument("--num-samples", type=int, default=1, help="generative tasks: samples per problem (pass@k)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generative tasks: reply length limit")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=None, help="categorical tasks: prompts per forward pass")
    p.add_argument("--device", default="auto", help="device backend (cpu, cuda, mps, auto)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes (torchrun when > 1)")
    p.add_argument("--json", action="store_true", help="print the result record as JSON")


def main(args) -> int:
    from nanochat import model_source, plugins
    from nanochat.stages import StageError, make_settings
    from nanochat.stages.chat_eval import ChatEvalStage
    from nanochat.tasks import scored_views

    if args.checkpoint and (args.run or args.stage):
        raise NanochatError("give either --run [--stage] or --checkpoint, not both")
    if args.checkpoint:
        source = model_source.from_path(args.checkpoint, args.tokenizer)
    elif args.run:
        source = model_source.from_run(args.run, args.stage)
    else:
        raise NanochatError("which model? give --run RUN [--stage STAGE] or --checkpoint PATH "
                            "(`nanochat runs` lists runs and their stages)")
    scored_views(args.tasks, plugins.registry())  # unknown or unscorable tasks: an error now, with the valid names
    if args.nproc_per_node < 1:
        raise NanochatError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    values = {"source": source.stage or "checkpoint", "tasks": args.tasks, "max_problems": args.max_problems,
              "num_samples": args.num_samples, "temperature": args.temperature, "device": args.device}
    values.update({k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("batch_size", args.batch_size))
                   if v is not None})
    try:
        settings = dataclasses.asdict(make_settings(ChatEvalStage, values, "eval"))
    except StageError as exc:
        raise NanochatError(str(exc)) from None

    root = evals.evals_dir(source.run)
    folder = resumable(root, source, settings)
    if folder is None:
        folder = evals.new_folder(root, source.stage)
        evals.write(folder, stage=source.stage, run=source.run.name if source.run else None,
                    checkpoint=str(source.checkpoint), step=source.step, tokenizer=str(source.tokenizer),
                    tasks=args.tasks, settings=settings, state="running", started=now(), finished=None,
                    error=None, scores={}, results={}, chatcore=None, world_size=args.nproc_per_node,
                    host=socket.gethostname())
        print(f"evaluating {source.label()} on {args.tasks}; results in {folder}", flush=True)
    else:
        done = len(evals.task_results(folder))
        print(f"resuming evaluation {folder.name} ({done} task(s) already scored); results in {folder}", flush=True)
    with file_lock(folder / "eval.lock", f"evaluation {folder.name}"):
        evals.write(folder, state="running", finished=None, error=None, pid=os.getpid(), world_size=args.nproc_per_node)
        if args.nproc_per_node > 1:
            from nanochat.runner import Launch, torchrun_prefix
            cmd = torchrun_prefix(Launch(args.nproc_per_node)) + ["-m", "nanochat.eval_cli", "--worker", str(folder)]
            code = subprocess.call(cmd)
            if code != 0:
                if evals.read(folder)["state"] in ("running", "interrupted"):
                    evals.write(folder, state="failed", finished=now(), error=f"torchrun exited with {code}")
                raise NanochatError(f"the evaluation failed under torchrun (exit code {code}); see {folder / 'log.txt'}")
        else:
            execute(folder)
    record = evals.read(folder)
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print_result(record, folder)
    return 0


def resumable(root: Path, source, settings: dict) -> Path | None:
    """The newest unfinished evaluation of this checkpoint with these settings, to carry on with."""
    same = [r for r in evals.records_in(root) if r.get("checkpoint") == str(source.checkpoint)
            and r.get("settings") == settings and r.get("state") in ("interrupted", "failed")]
    return root / same[-1]["id"] if same else None


def execute(folder: Path) -> None:
    """Score the tasks of one evaluation folder (as the only process, or as one torchrun rank)."""
    from nanochat import distributed, plugins
    from nanochat.backend import select
    from nanochat.checkpoint import load_model
    from nanochat.evaluation.chat import chatcore_summary, evaluate_tasks
    from nanochat.stages import compute_dtype
    from nanochat.stages.chat_eval import ChatEvalStage
    from nanochat.tasks import scored_views
    from nanochat.tokenizer import Tokenizer

    record = read_json(folder / "result.json")
    s = ChatEvalStage.Settings(**record["settings"])
    registry = plugins.registry()
    backend = select(s.device, registry)
    world = distributed.init(backend)

    def log(message):
        if world.is_main:
            print(message, flush=True)
            evals.append_log(folder, message)

    def keep(result):
        if world.is_main:
            evals.add_task_result(folder, result)

    try:
        dtype = compute_dtype(backend, s.dtype)
        device = backend.device(world.local_rank)
        model, ckpt = load_model(Path(record["checkpoint"]), device, dtype)
        tok = Tokenizer.load(Path(record["tokenizer"]))
        log(f"model {ckpt.path} (step {ckpt.step}) on {device}, {world.size} process(es)")
        done = evals.task_results(folder)
        results = evaluate_tasks(model, tok, scored_views(s.tasks, registry), settings=s, world=world, device=device,
                                 done=done, log=log, record=keep)
        if world.is_main:
            headline = chatcore_summary(results)
            if headline:
                log(f"{headline[0]}: {headline[1]:.4f}")
            evals.write(folder, state="done", finished=now(), results=results, chatcore=list(headline) if headline else None,
                        scores={k: r["accuracy"] for k, r in results.items()}, error=None)
    except BaseException as exc:
        if world.is_main:
            state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            evals.write(folder, state=state, finished=now(), error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        distributed.shutdown(world)


def print_result(record: dict, folder: Path) -> None:
    from nanochat.table import print_table
    rows = [{"task": k, "kind": r["kind"], "problems": r["problems"], "accuracy": f"{r['accuracy']:.4f}",
             "random": f"{r['baseline']:.3f}"} for k, r in record.get("results", {}).items()]
    print_table(rows, ["task", "kind", "problems", "accuracy", "random"])
    if record.get("chatcore"):
        print(f"{record['chatcore'][0]}: {record['chatcore'][1]:.4f}")
    print(f"saved: {folder / 'result.json'}")


def _worker_main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nanochat.eval_cli")
    parser.add_argument("--worker", required=True, metavar="EVAL_DIR")
    execute(Path(parser.parse_args(argv).worker))


if __name__ == "__main__":
    _worker_main()
