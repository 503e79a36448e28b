"""kill -9 matrix on a preset's own settings (cpu-tiny: bf16, torch.compile, the machine's threads).

    python benchmarks/faults.py                                  # the whole cpu-tiny run: long on 2 cores
    python benchmarks/faults.py --set pretrain.num_iterations=20 --set midtrain.num_iterations=10 ...

One uninterrupted run, a stage per process (as a resumed stage runs), counting how often each stage reaches
each fault point (NANOCHAT_FAULT_COUNTS). Then for every stage and every point it reached: a copy of the run is
killed there halfway through (visit = half the count, at least 1; `status` at its second visit, just before
"done"), resumed, and compared with the uninterrupted run (nanochat.fault_matrix). Prints JSON: the settings,
the wall time, and one row per case: stage, fault, resumed from, equal yes/no (and what differs).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanochat import faults, runner  # noqa: E402
from nanochat.fault_matrix import nanochat, run_case, visits  # noqa: E402
from nanochat.runs import Run  # noqa: E402

EVALS_AND_TRAINING = ("tokenizer", "pretrain", "base-eval", "core-eval", "midtrain", "sft", "rl", "chat-eval")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for nanochat run")
    parser.add_argument("--stages", help="comma-separated stage names to kill (default: every training and "
                        "evaluation stage)")
    parser.add_argument("--points", default=",".join(faults.POINTS), help="comma-separated fault points")
    parser.add_argument("--workdir", help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="nanochat-faults-"))
    env = {**os.environ, "NANOCHAT_HOME": str(work / "straight-home")}
    env.pop("NANOCHAT_FAULT", None)
    t0 = time.time()
    sets = [x for kv in args.set for x in ("--set", kv)]
    planned = runner.plan(runner.load_preset(args.preset)[1], args.set)
    wanted = set(args.stages.split(",")) if args.stages else None
    chosen = [e["name"] for e in planned if (e["name"] in wanted if wanted else e["stage"] in EVALS_AND_TRAINING)]
    names = [e["name"] for e in planned][:[e["name"] for e in planned].index(chosen[-1]) + 1]  # up to the last one
    counts = {}
    for i, name in enumerate(names):  # a stage per process, counting the fault points it reaches
        counts_file = work / f"visits-{name}.json"
        first = ["--preset", args.preset, *sets] if i == 0 else []
        done = nanochat("run", "--name", "straight", "--stage", name, *first,
                        env={**env, "NANOCHAT_FAULT_COUNTS": str(counts_file)})
        if done.returncode:
            sys.exit(f"stage {name} of the uninterrupted run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        counts[name] = visits(counts_file)
    straight_seconds = time.time() - t0
    original = Run(work / "straight-home" / "runs" / "straight")

    rows = []
    for name in chosen:
        for point in args.points.split(","):
            reached = counts[name].get(point, 0)
            if not reached:
                continue
            visit = 2 if point == "status" else max(1, reached // 2)
            t = time.time()
            case = run_case(original, work / "cases", name, f"{point}@{visit}", env)
            case["seconds"] = round(time.time() - t, 1)
            case["reached"] = reached
            output = case.pop("output")
            rows.append(case)
            print(f"{name} {point}@{visit}/{reached}: resumed from {case['resumed_from']}, "
                  f"equal {'yes' if case['equal'] else 'no ' + ', '.join(case['differs_in'])}", file=sys.stderr,
                  flush=True)
            if output and not case["equal"]:
                print(output, file=sys.stderr)
    print(json.dumps({"preset": args.preset, "set": args.set, "straight_seconds": round(straight_seconds, 1),
                      "total_seconds": round(time.time() - t0, 1), "cpu_count": os.cpu_count(),
                      "visits": counts, "all_equal": all(r["equal"] and r["killed"] and r["resumed"] for r in rows),
                      "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
