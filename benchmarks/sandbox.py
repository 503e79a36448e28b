"""Executions per second of `nanochat.sandbox.execute` on a small HumanEval-style program: the kernel boundary
(NANOCHAT_SANDBOX=auto where the kernel allows it) against the Python guards alone (NANOCHAT_SANDBOX=guards,
the code path from before the boundary), measured in one process, in alternating rounds so that a noisy
machine slows both alike. `--workers` threads call execute at once, as an evaluation on that many cores does.
Prints progress, then one JSON document as the last line.

    python benchmarks/sandbox.py [--workers 2] [--runs 40] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

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


def execs_per_second(setting: str, runs: int, workers: int) -> float:
    os.environ[sandbox.SETTING] = setting
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda _: sandbox.execute(PROGRAM, timeout=10.0), range(runs)))
        elapsed = time.perf_counter() - start
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"the benchmark program failed under {sandbox.SETTING}={setting}: {bad[0]}")
    return runs / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40, help="executions per round and setting")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reason = sandbox.boundary_unavailable_reason()
    if reason is not None:
        print(f"no kernel boundary here ({reason}): 'after' measures the guards-only fallback", flush=True)
    settings = {"before_guards_only": "guards", "after_kernel_boundary": "auto"}
    rates = {name: [] for name in settings}
    for execs in settings.values():  # warm the page cache and the probe before timing
        execs_per_second(execs, args.workers, args.workers)
    for round_ in range(args.rounds):
        for name, setting in settings.items():
            rates[name].append(execs_per_second(setting, args.runs, args.workers))
            print(f"round {round_ + 1}: {name:22} {rates[name][-1]:6.1f} execs/s", flush=True)
    result = {name: {"execs_per_s": round(statistics.median(r), 1), "rounds": [round(x, 1) for x in r]}
              for name, r in rates.items()}
    before, after = (result[name]["execs_per_s"] for name in settings)
    result.update(workers=args.workers, runs_per_round=args.runs, boundary=reason is None,
                  boundary_unavailable_reason=reason, slowdown=round(before / after, 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
