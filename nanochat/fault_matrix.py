"""The kill matrix: kill one stage of a copy of a finished run at a fault point, resume it, compare with the original.

Used by tests/test_faults.py (tiny settings, fixed visits, expected resume points) and benchmarks/faults.py
(the cpu-tiny preset's own settings, each stage killed halfway through). A case:

    1. copy the finished run and forget the stage under test and every later one (as if the run had just
       reached it);
    2. `nanochat run --name CASE --stage STAGE` with NANOCHAT_FAULT=point@visit: the process dies by SIGKILL;
    3. the same command without the fault resumes the stage;
    4. the stage's model files, metrics, report section and summary must equal the original's, timings aside.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from nanochat.runs import Run

NANOCHAT = str(Path(sys.executable).parent / "nanochat")
# Per-step timings, not results: they differ between any two runs.
NOT_RESULTS = {"dt_ms", "tok_per_s", "mfu", "eta_s", "seconds", "train_seconds"}


def nanochat(*args, env: dict, timeout: int = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([NANOCHAT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def forget(run: Run, stage: str) -> None:
    """Make `stage` and every later one pending again: their status, metrics, logs and checkpoints go."""
    names = [s["name"] for s in run.stages()]
    for name in names[names.index(stage):]:
        shutil.rmtree(run.stage_dir(name), ignore_errors=True)
        shutil.rmtree(run.checkpoint_dir(name), ignore_errors=True)


def resumed_from(stdout: str) -> str:
    """Where the resumed attempt started, from what it printed: "step N" (a checkpoint), "N tasks kept"
    (evaluations finished before the kill), "tokenizer kept" (its files were whole), or "afresh"."""
    if m := re.search(r"resumed from step (\d+)", stdout):
        return f"step {m[1]}"
    if m := re.search(r"resuming: (\d+) task\(s\) already evaluated", stdout):
        return f"{m[1]} tasks kept"
    if kept := stdout.count("(already evaluated)"):
        return f"{kept} tasks kept"
    if "tokenizer already trained" in stdout:
        return "tokenizer kept"
    return "afresh"


def outcome(run: Run, stage: str) -> dict:
    """What a stage leaves behind, without wall-clock times and the run's own folder name."""
    import torch
    metrics = [{k: v for k, v in m.items() if k not in NOT_RESULTS} for m in run.metrics(stage)]
    report_path = run.stage_dir(stage) / "report.md"
    report = report_path.read_text(encoding="utf-8").replace(str(run.dir), "RUN") if report_path.exists() else None
    # "training time (excluding the first 10 steps): 2.63 min" too: a parenthesis may come before the figure
    report = report and re.sub(r"(time|seconds|peak memory)((?: \([^)\n]*\))?\W+)[\d.]+", r"\1\2#", report)
    status = run.status(stage)
    files = {}
    for artifact, where in (status.get("artifacts") or {}).items():
        folder = run.dir / where
        files[artifact] = Path(where).name
        for f in sorted(folder.iterdir()):
            if f.name == "model.pt":  # the weights, bit for bit (the file also holds torch's zip record names)
                state = torch.load(f, map_location="cpu")
                files[f.name] = {k: (str(v.dtype), v.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
                                 for k, v in state.items()}
            elif f.suffix in (".json", ".tiktoken") and f.name != "meta.json":
                files[f.name] = f.read_bytes()
    return {"metrics": metrics, "report": report, "summary": status.get("summary"), "files": files}


def differences(a: dict, b: dict) -> list[str]:
    """Which parts of two outcomes differ (metrics, report, summary, or a file by name)."""
    diff = [k for k in ("metrics", "report", "summary") if a[k] != b[k]]
    return diff + [f for f in sorted(set(a["files"]) | set(b["files"])) if a["files"].get(f) != b["files"].get(f)]


def run_case(original: Run, home: Path, stage: str, fault: str, env: dict) -> dict:
    """Kill `stage` of a copy of `original` (under `home`) at `fault` (point@visit), resume it, compare."""
    name = f"{stage}-{fault.replace('@', '-')}"
    shutil.copytree(original.dir, Path(home) / "runs" / name)
    run = Run(Path(home) / "runs" / name)
    forget(run, stage)
    env = {**env, "NANOCHAT_HOME": str(home)}
    env.pop("NANOCHAT_FAULT_COUNTS", None)
    killed = nanochat("run", "--name", name, "--stage", stage, env={**env, "NANOCHAT_FAULT": fault})
    state_after_kill = run.status(stage)["state"]
    resumed = nanochat("run", "--name", name, "--stage", stage, env=env)
    status = run.status(stage)
    diff = differences(outcome(run, stage), outcome(original, stage)) if status["state"] == "done" else ["not done"]
    return {"stage": stage, "fault": fault, "killed": killed.returncode == -9,
            "killed_at": f"at {fault.split('@')[0]} (visit" in killed.stderr, "state_after_kill": state_after_kill,
            "resumed": resumed.returncode == 0 and f"{stage}: resuming" in resumed.stdout,
            "resumed_from": resumed_from(resumed.stdout), "attempts": status.get("attempts"),
            "equal": not diff, "differs_in": diff,
            "output": "" if not diff and resumed.returncode == 0 else
            (killed.stderr[-1500:] + "\n---\n" + resumed.stdout[-1500:] + resumed.stderr[-1500:])}


def visits(counts_file: Path) -> dict:
    """The NANOCHAT_FAULT_COUNTS file of a process: {point: times reached} (empty if no point was reached)."""
    import json
    return json.loads(Path(counts_file).read_text()) if os.path.exists(counts_file) else {}
