"""Fault injection, for tests and for anyone chasing a resume bug: SIGKILL this process at a named point.

    NANOCHAT_FAULT=checkpoint@2 nanochat run ...   # die the 2nd time a checkpoint is half written

Points: step (between backward and the optimizer update), checkpoint (between a checkpoint's files),
status (before a stage's status.json is written), metrics (before a metrics line is written),
loader (while the data loader makes a batch). `@N` (default 1) picks the N-th time this process
reaches the point. Unset, `hit` costs two dictionary lookups.

    NANOCHAT_FAULT_COUNTS=visits.json nanochat run ...   # at exit, how often each point was reached

(benchmarks/faults.py uses the counts to kill each stage halfway through.)
"""
import atexit
import json
import os
import signal
import sys

POINTS = ("step", "checkpoint", "status", "metrics", "loader")
_seen: dict[str, int] = {}


def _wanted() -> tuple[str, int] | None:
    spec = os.environ.get("NANOCHAT_FAULT")
    if not spec:
        return None
    name, _, count = spec.partition("@")
    if name not in POINTS or not (count or "1").isdigit() or int(count or "1") < 1:
        raise ValueError(f"NANOCHAT_FAULT={spec!r} is not valid: use <point>[@<n>] with a point in "
                         f"{', '.join(POINTS)} and n >= 1 (e.g. checkpoint@2), or unset it")
    return name, int(count or "1")


def hit(point: str) -> None:
    """Die here (SIGKILL, no cleanup) if NANOCHAT_FAULT names this point and this is its N-th visit."""
    if os.environ.get("NANOCHAT_FAULT_COUNTS"):
        _count(point)
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == wanted[1]:
        print(f"NANOCHAT_FAULT: killing pid {os.getpid()} at {point} (visit {wanted[1]})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def passing(point: str, items):
    """`items`, with the fault point `point` visited before each one (for loops that read data)."""
    for item in items:
        hit(point)
        yield item


_counts: dict[str, int] = {}


def _count(point: str) -> None:
    if not _counts:
        atexit.register(_write_counts, os.environ["NANOCHAT_FAULT_COUNTS"])
    _counts[point] = _counts.get(point, 0) + 1


def _write_counts(path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_counts, f)
