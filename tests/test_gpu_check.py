"""benchmarks/gpu_check.sh --cpu: every part of the GPU check runs its code at tiny shapes here, so the script
cannot rot between the days a GPU is at hand; each part prints its own JSON line, and a part that runs out of
time loses only itself."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["kernels", "step_d20", "memory", "fp8_d20", "fp8_d24", "nccl", "evals", "decode"]


def gpu_check(*args, timeout=1500, **env):
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHON": sys.executable, **env})


def part_log(stderr, name):
    """What one part wrote (the script heads each part's output with "== NAME"), its last 4000 characters."""
    section = stderr.split(f"== {name}\n", 1)[-1]
    return section.split("\n== ", 1)[0][-4000:]


def test_every_part_runs_on_the_cpu_and_prints_its_json_line():
    out = gpu_check()
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    parts = {line["part"]: line for line in lines if "part" in line}
    assert list(parts) == PARTS, out.stderr[-3000:]
    for name, line in parts.items():
        # a string message: pytest prints it whole (a tuple's repr is cut to a few hundred characters)
        assert line["ok"] and line["rc"] == 0, f"part {name}: {line}\n{part_log(out.stderr, name)}"
    assert parts["kernels"]["result"]["fp8_kernel_mode"] == "emulated"
    assert parts["fp8_d24"]["result"]["fp8_ok"] and "ratio_fp8_speedup" in parts["fp8_d24"]["result"]
    assert parts["nccl"]["result"]["all_ranks_ok"] and parts["nccl"]["result"]["save_resume_ok"]
    assert parts["step_d20"]["result"]["depth"] == 2  # the tiny shapes, not the d20 itself
    assert lines[-1] == {"summary": True, "ok": True, "parts": {name: "0" for name in PARTS}}


def test_a_part_out_of_time_loses_only_itself():
    out = gpu_check("kernels", "memory", PART_TIMEOUT="1")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line.get("part") for line in lines[:-1]] == ["kernels", "memory"]
    assert all(line["note"] == "timed out" and not line["ok"] for line in lines[:-1])
    assert lines[-1]["summary"] and not lines[-1]["ok"] and lines[-1]["parts"] == {"kernels": "124", "memory": "124"}
