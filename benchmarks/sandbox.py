"""Executions per second of `nanochat.sandbox.execute` on a small HumanEval-style program, three ways in one
process, in alternating rounds so that a noisy machine slows all alike:

- before:   the sandbox as it was before the kernel boundary (nanochat/sandbox.py at --before-ref, via git);
- guards:   today's sandbox with NANOCHAT_SANDBOX=guards (the Python guards alone, the fallback);
- boundary: today's sandbox with the kernel boundary (NANOCHAT_SANDBOX=auto where the kernel allows it).

`--workers` threads call execute at once, as an evaluation on that many cores does. Prints progress, then one
JSON document as the last line; "slowdown" is before / boundary.

    python benchmarks/sandbox.py [--workers 2] [--runs 40] [--rounds 3] [--before-ref 5812a9d]
"""
import argparse
import atexit
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nanochat import sandbox

# A HumanEval-shaped check: a prompt's function, its completion, and the task's `check(candidate)`.
PROGRAM = '''
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i != j and abs(a - b) < threshold:
                return True
    return False


def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True


check(has_close_elements)
'''


def sandbox_before(ref: str):
    """nanochat/sandbox.py as it was at `ref`, imported from a temporary copy (its child runs that copy too)."""
    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{ref}:nanochat/sandbox.py"], cwd=repo, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="nanochat-bench-")) / "sandbox_before.py"
    atexit.register(shutil.rmtree, path.parent, True)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sandbox_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def execs_per_second(execute, setting: str, runs: int, workers: int) -> float:
    os.environ[sandbox.SETTING] = setting
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda _: execute(PROGRAM, timeout=10.0), range(runs)))
        elapsed = time.perf_counter() - start
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise SystemExit(f"the benchmark program failed ({sandbox.SETTING}={setting}): {bad[0]}")
    return runs / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40, help="executions per round and way")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-ref", default="5812a9d", help="the git commit whose sandbox is 'before'")
    args = parser.parse_args()
    reason = sandbox.boundary_unavailable_reason()
    if reason is not None:
        print(f"no kernel boundary here ({reason}): 'boundary' measures the guards-only fallback", flush=True)
    ways = {"guards": (sandbox.execute, "guards"), "boundary": (sandbox.execute, "auto")}
    try:
        ways = {"before": (sandbox_before(args.before_ref).execute, "guards"), **ways}
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"no 'before' (git show {args.before_ref} failed: {e}); comparing with 'guards' instead", flush=True)
    rates = {name: [] for name in ways}
    for execute, setting in ways.values():  # warm the page cache and the probe before timing
        execs_per_second(execute, setting, args.workers, args.workers)
    for round_ in range(args.rounds):
        for name, (execute, setting) in ways.items():
            rates[name].append(execs_per_second(execute, setting, args.runs, args.workers))
            print(f"round {round_ + 1}: {name:9} {rates[name][-1]:6.1f} execs/s", flush=True)
    result = {name: {"execs_per_s": round(statistics.median(r), 1), "rounds": [round(x, 1) for x in r]}
              for name, r in rates.items()}
    before = result["before" if "before" in result else "guards"]["execs_per_s"]
    result.update(workers=args.workers, runs_per_round=args.runs, kernel_boundary=reason is None,
                  boundary_unavailable_reason=reason,
                  slowdown=round(before / result["boundary"]["execs_per_s"], 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
