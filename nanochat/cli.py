"""`nanochat ...`: the command line.

Each command is a small function; heavy modules (torch, the model) are imported inside the commands
that need them, so `nanochat --help`, `plugins`, `paths` and `runs` answer instantly.
"""
import argparse
import json
import os
import sys

from nanochat import __version__
from nanochat.errors import NanochatError


# -- commands --------------------------------------------------------------------------------------
def cmd_plugins(args) -> int:
    from nanochat import plugins_cli
    return plugins_cli.main(args)


def cmd_paths(args) -> None:
    from nanochat import paths
    found = {k: str(v) for k, v in paths.all_paths().items()}
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for key, value in found.items():
            print(f"{key:12} {value}")


def cmd_env(args) -> None:
    from nanochat import backend
    info = backend.environment(backend.select(args.device))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        if key == "peak_flops" and value:
            value = f"{value / 1e12:.3f} TFLOP/s ({info['compute_dtype']})"
        print(f"{key:18} {value}")


def cmd_runs(args) -> None:
    if getattr(args, "runs_command", None) == "rm":
        return cmd_runs_rm(args)
    from nanochat import evals
    from nanochat.runs import list_runs
    rows = []
    for run in list_runs():
        notes = {}
        try:
            statuses = {s["name"]: run.status(s["name"]) for s in run.stages()}
            states = {name: st["state"] for name, st in statuses.items()}
            notes = {name: st["notes"] for name, st in statuses.items() if st.get("notes")}
            preset = run.info.get("preset")
            source = run.info.get("from")
            found = [{k: r.get(k) for k in ("id", "stage", "step", "state", "tasks", "scores")} for r in evals.records(run)]
        except NanochatError as exc:  # one damaged run must not hide the others
            states, preset, source, found = {"error": str(exc)}, "?", None, []
        rows.append({"name": run.name, "preset": preset, "stages": states, "path": str(run.dir),
                     "from": source, "notes": notes, "evals": found})
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        print("no runs yet; start one with: nanochat run --preset cpu-tiny")
        return
    for row in rows:
        origin = row["from"] or {}
        source = (f", from {origin['run']}:{origin['stage']}" if origin.get("run") else
                  f", from {origin['checkpoint']}" if origin else "")
        print(f"{row['name']}  ({row['preset']}{source})")
        for stage, state in row["stages"].items():
            print(f"  {stage:16} {state}")
            for note in row["notes"].get(stage, []):
                print(f"  {'':16} note: {note}")
        for e in row["evals"]:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in (e.get("scores") or {}).items())
            print(f"  eval {e['id']}: {e.get('state')}; {e.get('stage')} step {e.get('step')}; {scores or e.get('tasks')}")


def cmd_runs_rm(args) -> int:
    """Remove a run's folder (checkpoints, logs, evaluations) after confirmation; never while it runs."""
    import shutil
    from nanochat import evals
    from nanochat.runs import Run, RunBusy, list_runs
    run = Run.open(args.name)
    users = [r.name for r in list_runs() if r.name != run.name and (r.info.get("from") or {}).get("run") == run.name]
    if users and not args.force:
        raise NanochatError(f"run(s) {', '.join(users)} were started --from a model of run {run.name!r} and read it "
                            f"from its folder; remove them first, or add --force")
    with run.lock():
        busy = [e["id"] for e in evals.records(run) if e.get("state") == "running"]
        if busy:
            raise RunBusy(f"evaluation {busy[0]} of run {run.name!r} is running; wait for it or stop it first")
        size = sum(f.stat().st_size for f in run.dir.rglob("*") if f.is_file())
        if not args.yes:
            if not sys.stdin.isatty():
                raise NanochatError(f"removing run {run.name!r} needs confirmation: add --yes")
            answer = input(f"remove run {run.name!r} ({size / 2**20:,.1f} MiB) at {run.dir}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("kept")
                return 1
        shutil.rmtree(run.dir)
    print(f"removed run {run.name!r} ({size / 2**20:,.1f} MiB)")
    return 0


def cmd_presets(args) -> None:
    from nanochat import gpus
    from nanochat.plan import count_text, duration_text, preset_summary
    from nanochat.runner import preset_names
    rows = [preset_summary(name) for name in (args.names or preset_names())]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        print(f"{row['name']:14} {row['description']}\n{'':14} {' -> '.join(row['stages'])}")
        if "h100x8" in row:
            est = row["h100x8"]
            print(f"{'':14} d{row['depth']}, {count_text(row['params'])} params, {count_text(row['tokens'])} tokens, "
                  f"{row['flops']:.2e} FLOPs; pretraining on 8xH100 in {est['precision']}: ~{duration_text(est['hours'])}, "
                  f"~${est['dollars']:,.2f}")
    print(f"\n(estimates: {100 * gpus.PLANNING_MFU:.0f}% MFU of 989 TFLOP/s bf16 per H100, or with fp8 "
          f"{100 * gpus.PLANNING_MFU_FP8:.0f}% of its 1979 TFLOP/s fp8 peak (the record's +17% over bf16), "
          f"${gpus.NODE_8XH100_DOLLARS_PER_HOUR:.0f}/h per 8xH100 node; pretraining only, the bulk of a run; "
          f"`nanochat run --preset NAME --dry-run` for the full plan)")


def cmd_dry_run(args, overrides) -> None:
    from nanochat import plan, runner
    from nanochat.runs import Run
    if args.preset:
        entries = runner.plan(runner.load_preset(args.preset)[1], overrides)
    elif args.name and Run.exists(args.name):
        entries = Run.open(args.name).stages()
        if overrides:
            raise runner.StageError("--set with --dry-run needs --preset (a run's settings are in its run.json)")
    else:
        raise runner.RunError("give --preset (or --name of a run that exists) to plan it")
    world = args.nproc_per_node * args.nnodes
    result = plan.dry_run(entries, world, gpu=args.gpu, gpu_count=args.gpus, measure=not args.no_measure)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(plan.render(result)))


def cmd_run(args) -> None:
    from nanochat import runner
    from nanochat.runs import Run
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"device={args.device}")
    if args.wandb_run:
        os.environ["WANDB_RUN"] = args.wandb_run  # read by the wandb observer, here and in torchrun workers
    if args.dry_run:
        return cmd_dry_run(args, overrides)
    launch = runner.Launch(args.nproc_per_node, args.nnodes, args.node_rank, args.master_addr, args.master_port,
                           tuple(overrides))
    runner.check_launch(launch, args.name)
    source = None
    if args.from_model:
        from nanochat import model_source
        source = model_source.parse(args.from_model, args.tokenizer)
    existed = bool(args.name) and Run.exists(args.name)
    run = runner.open_or_create(args.preset, args.name, overrides, source=source)
    print(f"run {run.name!r} in {run.dir}" + (f", starting from {source.label()}" if source else ""), flush=True)
    try:
        runner.run_pipeline(run, launch, only=args.stage)
    except NanochatError:
        if not existed and all(run.status(s["name"])["state"] == "pending" for s in run.stages()):
            import shutil
            shutil.rmtree(run.dir)  # refused before any stage started: leave nothing behind
            print(f"run {run.name!r} was not started, so it was removed", file=sys.stderr)
        raise
    if launch.node_rank:
        print(f"run {run.name!r} finished on node {launch.node_rank}; node 0 has its report")
    else:
        print(f"run {run.name!r} finished; report: {run.dir / 'report.md'}")


def cmd_report(args) -> None:
    import time
    from nanochat import report
    from nanochat.runs import Run, RunError, list_runs
    if args.hourly_cost is not None and args.hourly_cost < 0:
        raise RunError(f"--hourly-cost {args.hourly_cost} is negative; give the machine's price in US$ per hour")
    if args.run:
        run = Run.open(args.run)
    else:
        runs = list_runs()
        if not runs:
            raise RunError("no runs yet, so there is no report; start one with: nanochat run --preset cpu-tiny")
        run = runs[-1]
    start = time.perf_counter()
    path = report.write(run, plots=not args.no_plots, hourly_cost=args.hourly_cost)
    if args.print:
        print(path.read_text(encoding="utf-8"), end="")
    else:
        print(f"report of run {run.name!r}: {path} ({time.perf_counter() - start:.1f} s)")


def cmd_eval(args) -> int:
    from nanochat import eval_cli
    return eval_cli.main(args)


def cmd_data(args) -> int:
    from nanochat import data_cli
    if args.data_command == "download":
        return data_cli.cmd_download(args.dataset, args.num_shards, args.workers)
    return data_cli.cmd_list(args.json)


def cmd_tasks(args) -> int:
    from nanochat import tasks_cli
    if args.tasks_command == "download":
        return tasks_cli.cmd_download(args.names)
    return tasks_cli.cmd_list(args.json)


def cmd_chat(args) -> int:
    from nanochat import chat_cli
    return chat_cli.main(args)


def cmd_serve(args) -> int:
    from nanochat.web.serve import main  # the core's one door into web/ (see tests/test_house_rules.py)
    return main(args)


def cmd_tokenizer(args) -> int:
    from nanochat import tokenizer_cli
    return tokenizer_cli.main(args)


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanochat", description="Train your own ChatGPT-like model end to end.")
    parser.add_argument("--version", action="version", version=f"nanochat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a pipeline of stages (resumes a run that exists)")
    p.add_argument("--preset", help="preset name (see `nanochat presets`) or a path to a .toml file")
    p.add_argument("--name", help="run name; an existing run is resumed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting: key=value for every stage that has it, or stage.key=value")
    p.add_argument("--device", help="device backend for every stage (cpu, cuda, mps, auto)")
    p.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    p.add_argument("--from", dest="from_model", metavar="RUN:STAGE",
                   help="start a new run from another run's model and tokenizer (RUN:STAGE, RUN, or a checkpoint "
                        "folder); use with --preset finetune")
    p.add_argument("--tokenizer", metavar="DIR", help="with --from PATH outside any run: the model's tokenizer")
    p.add_argument("--wandb-run", help="log metrics to Weights & Biases under this name (needs `pip install wandb`)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per node (torchrun when > 1)")
    p.add_argument("--nnodes", type=int, default=1, help="nodes (machines); run the same command on each")
    p.add_argument("--node-rank", type=int, default=0, help="this node's number, 0 .. nnodes-1 (0 leads)")
    p.add_argument("--master-addr", default="127.0.0.1", help="with --nnodes > 1: node 0's address")
    p.add_argument("--master-port", type=int, default=29500,
                   help="with --nnodes > 1: stage i meets on this port + i (open the range between the nodes)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved plan (model, tokens, steps, batch, FLOPs, memory, shards, wall clock); train nothing")
    p.add_argument("--gpu", default="H100", help="with --dry-run: the GPU to estimate memory and wall clock on")
    p.add_argument("--gpus", type=int, help="with --dry-run: how many of them (default: the process count, or 8)")
    p.add_argument("--no-measure", action="store_true", help="with --dry-run: skip timing a few steps on this machine")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="download and list pretraining datasets")
    data = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    d = data.add_parser("download", help="download the first N training shards (+ the validation shard)")
    d.add_argument("dataset", help="dataset name (see `nanochat data list`), or local:PATH")
    d.add_argument("-n", "--num-shards", type=int, default=None, help="training shards to fetch (-1 = all)")
    d.add_argument("-w", "--workers", type=int, default=4, help="parallel downloads")
    d = data.add_parser("list", help="datasets, and how many shards of each are on disk")
    d.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("tasks", help="list tasks (chat data and evaluations) and fetch their data")
    tk = p.add_subparsers(dest="tasks_command", metavar="TASKS_COMMAND", required=True)
    t = tk.add_parser("download", help="fetch the data of hub tasks (e.g. gsm8k arc-easy mmlu smoltalk)")
    t.add_argument("names", nargs="+", metavar="NAME")
    t = tk.add_parser("list", help="tasks, their kind and splits")
    t.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("tokenizer", help="train a tokenizer on your own files, inspect one, encode text")
    tk = p.add_subparsers(dest="tokenizer_command", metavar="TOKENIZER_COMMAND", required=True)
    t = tk.add_parser("train", help="train a BPE tokenizer on .txt / .jsonl / .parquet files or folders")
    t.add_argument("--input", nargs="+", required=True, metavar="PATH")
    t.add_argument("--vocab-size", type=int, required=True, help="tokens in all, the 9 special tokens included")
    t.add_argument("--output", metavar="DIR", help="where to save it (default: <data>/tokenizers/NAME)")
    t.add_argument("--name", help="its folder name under <data>/tokenizers (default: the first input's name "
                                  "and the vocabulary size, e.g. mytexts-8192)")
    t.add_argument("--threads", type=int, default=None, help="trainer threads (default: all cores)")
    t.add_argument("--max-chars", type=int, default=None, help="stop reading after this many characters")
    t.add_argument("--doc-cap", type=int, default=10_000, help="use at most this many characters of each document")
    t = tk.add_parser("info", help="describe a tokenizer folder")
    t.add_argument("dir", help="a tokenizer folder, or the NAME of one under <data>/tokenizers")
    t.add_argument("--json", action="store_true")
    t = tk.add_parser("encode", help="show the tokens of a text")
    t.add_argument("dir", help="a tokenizer folder, or the NAME of one under <data>/tokenizers")
    t.add_argument("text")
    p.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser("chat", help="talk to a model you trained (streaming; -p for one question)")
    from nanochat.chat_cli import add_arguments
    add_arguments(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="the local chat page and an OpenAI-compatible API (http://127.0.0.1:8000)")
    from nanochat.web.serve import add_arguments as serve_arguments
    serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("runs", help="list runs, the state of each stage and their evaluations; `runs rm NAME`")
    p.add_argument("--json", action="store_true")
    rs = p.add_subparsers(dest="runs_command", metavar="RUNS_COMMAND")
    r = rs.add_parser("rm", help="remove a run (its checkpoints, logs and evaluations) after confirmation")
    r.add_argument("name")
    r.add_argument("-y", "--yes", action="store_true", help="do not ask")
    r.add_argument("--force", action="store_true", help="even if other runs were started --from its models")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("eval", help="score a finished model on any installed tasks (results kept in its run)")
    from nanochat.eval_cli import add_arguments as add_eval_arguments
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)


    p = sub.add_parser("report", help="render a run's report card (report.md and PNG plots in the run folder)")
    p.add_argument("--run", help="run name (default: the newest run, the last one `nanochat runs` lists)")
    p.add_argument("--hourly-cost", type=float, help="US$ per hour of the machine, for the cost estimate "
                                                      "(default: the run's report.hourly_cost setting)")
    p.add_argument("--no-plots", action="store_true", help="the markdown only (no matplotlib)")
    p.add_argument("--print", action="store_true", help="print the markdown too")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("presets", help="list the pipeline presets, with model size, tokens, FLOPs, time and cost")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these presets (names or .toml paths)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("plugins", help="list installed plugins (-v: tracebacks); new, install, uninstall")
    from nanochat.plugins_cli import add_arguments as add_plugins_arguments
    add_plugins_arguments(p)
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("env", help="show the device backend, dtype, threads and peak FLOP/s")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", help="backend to describe (default: the best available)")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("paths", help="show where runs, checkpoints, datasets and tokenizers live")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_paths)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except NanochatError as exc:
        print(f"nanochat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnanochat: interrupted; resume with the same command", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`nanochat runs | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
