"""speedrun.sh on any machine: the real script, with a fake `nvidia-smi` on PATH to play 8 GPUs, 1 GPU with
MIG slices, or none; a shadow module to play a missing Rust trainer; and a real tiny run on the CPU.

What it decides (preset, process count, refusals) is checked up to the point where it would train on GPUs
this machine does not have; there it must stop loudly (torch sees no GPU), never fall back to the CPU.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY_PRESET = """
description = "two stages, seconds on a CPU: speedrun.sh's own test"
[defaults]
dataset = "starter"
[[stage]]
name = "tokenizer"
vocab_size = 1024
max_chars = 2000000
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 64
device_batch_size = 4
total_batch_size = 512
num_iterations = 3
eval_every = 2
eval_tokens = 512
save_every = 2
sample_every = -1
compile = "off"
"""

GPU_LINE = "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)"
MIG_LINE = "  MIG 1g.10gb     Device  {i}: (UUID: MIG-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)"


def fake_nvidia_smi(bin_dir: Path, lines: list[str] | None) -> None:
    """nvidia-smi that lists `lines` for -L, or fails as it does on a machine without a driver (None)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    if lines is None:
        script.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the "
                          "NVIDIA driver.' >&2\nexit 9\n")
    else:
        script.write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
    script.chmod(0o755)


def speedrun(tmp_path, *args, gpus=None, env=None, timeout=600):
    """Run ./speedrun.sh with a fake nvidia-smi first on PATH; returns (CompletedProcess, log text)."""
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, gpus)
    log = tmp_path / "speedrun.log"
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SPEEDRUN_LOG": str(log),
                **(env or {})}
    for key in ("NANOCHAT_PRESET", "NPROC_PER_NODE", "WANDB_RUN", "RUN"):
        if key not in (env or {}):
            full_env.pop(key, None)
    result = subprocess.run(["bash", str(REPO / "speedrun.sh"), *args], capture_output=True, text=True,
                            timeout=timeout, env=full_env, cwd=tmp_path)
    return result, (log.read_text() if log.exists() else "")


def test_no_gpu_announces_cpu_tiny_and_plans_it(tmp_path):
    result, log = speedrun(tmp_path, "--dry-run", "--no-measure", gpus=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NO GPU found" in result.stdout and "cpu-tiny" in result.stdout and "NOT the speedrun" in result.stdout
    assert "dry run: 1 process(es)" in result.stdout and "model: depth 3, width 192" in result.stdout
    assert "NO GPU found" in log and "model: depth 3" in log  # the log holds what the screen showed


def test_eight_gpus_pick_the_speedrun_and_fail_loudly_when_torch_cannot_see_them(tmp_path):
    result, log = speedrun(tmp_path, "--dry-run", gpus=[GPU_LINE.format(i=i) for i in range(8)])
    assert "8 GPUs found: running the speedrun (preset speedrun-d20)" in result.stdout
    assert "pretraining takes about" in result.stdout and "8xH100" in result.stdout
    # this machine's torch sees no GPU: it must stop with a reason, not train on the CPU (nor exit 127)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nvidia-smi lists 8 GPU(s) but torch" in log and "sees 0" in log and "CUDA build" in log


def test_mig_slices_are_not_gpus(tmp_path):
    lines = [GPU_LINE.format(i=0)] + [MIG_LINE.format(i=i) for i in range(3)]
    result, log = speedrun(tmp_path, "--dry-run", gpus=lines)
    assert "only 1 GPU(s) found" in result.stdout and "speedrun-d20 on 1 GPU(s)" in result.stdout
    assert "8/1 times as long" in result.stdout
    assert "nvidia-smi lists 1 GPU(s)" in log


def test_a_gpu_run_refuses_to_start_without_the_rust_trainer(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "nanochat_rustbpe.py").write_text("raise ImportError('not built (test shadow)')\n")
    env = {"PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result, log = speedrun(tmp_path, "--dry-run", gpus=[GPU_LINE.format(i=i) for i in range(8)], env=env)
    assert result.returncode == 1
    assert "Rust tokenizer trainer (nanochat_rustbpe) is not built" in log and "rustup.rs" in log
    assert "torch" not in log.split("Rust tokenizer trainer")[1]  # it stopped there


def test_bad_process_count_is_named(tmp_path):
    result, log = speedrun(tmp_path, "--dry-run", gpus=None, env={"NPROC_PER_NODE": "eight"})
    assert result.returncode == 1 and "NPROC_PER_NODE=eight is not a whole number" in log


def test_a_real_run_on_the_cpu_logs_reports_and_resumes(tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_PRESET)
    env = {"NANOCHAT_PRESET": str(preset), "RUN": "sr"}
    result, log = speedrun(tmp_path, gpus=None, env=env)
    assert result.returncode == 0, log + result.stderr
    assert f"preset {preset} (from NANOCHAT_PRESET); 0 GPU(s) found" in log
    report = Path(os.environ["NANOCHAT_HOME"]) / "runs" / "sr" / "report.md"
    assert f"Report card: {report}" in log and report.exists()
    assert "nanochat chat --run sr" in log and "nanochat-app" in log
    again, log = speedrun(tmp_path, gpus=None, env=env)
    assert again.returncode == 0
    assert "[sr] tokenizer: done, skipping" in again.stdout and "[sr] pretrain: done, skipping" in again.stdout
    assert log.count("speedrun: started") == 2  # the log is appended to, not replaced


def test_a_failing_stage_stops_the_script_with_its_status(tmp_path):
    preset = tmp_path / "broken.toml"
    preset.write_text('[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')  # needs what nothing gives
    result, log = speedrun(tmp_path, gpus=None, env={"NANOCHAT_PRESET": str(preset), "RUN": "broken"})
    assert result.returncode == 2, log
    assert "stage 'read' needs 'count'" in log and "Report card" not in log
