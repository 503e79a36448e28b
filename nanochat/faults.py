"""Fault injection, for tests and for anyone chasing a resume bug: SIGKILL this process at a named point.

    NANOCHAT_FAULT=checkpoint@2 nanochat run ...   # die the 2nd time a checkpoint is half written

Points: step (between backward and the optimizer update), checkpoint (between a checkpoint's files),
status (before a stage's status.json is written), metrics (before a metrics line is written),
loader (while the data loader makes a batch). `@N` (default 1) picks the N-th time this process
reaches the point. Unset, `hit` costs one dictionary lookup.
"""
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
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == wanted[1]:
        print(f"NANOCHAT_FAULT: killing pid {os.getpid()} at {point} (visit {wanted[1]})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
