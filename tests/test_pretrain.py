"""Stage `pretrain` for real on the starter corpus: exact resume after SIGKILL, 2 ranks == 1 rank x 2 micro-batches,
and the errors a user meets (another depth in the checkpoint, too few shards, a batch that does not divide)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanochat import runner
from nanochat.runs import Run
from nanochat.stages import StageError

PRESET = """
[defaults]
dataset = "starter"
[[stage]]
name = "tokenizer"
vocab_size = 512
max_chars = 1000000
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 32
window_pattern = "SL"
device_batch_size = 2
total_batch_size = 128
num_iterations = 10
eval_every = 5
eval_tokens = 256
save_every = 2
sample_every = -1
compile = "off"
dtype = "fp32"
warmup_steps = 2
tokenizer_threads = 1
"""
NANOCHAT = str(Path(sys.executable).parent / "nanochat")


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(PRESET)
    return str(path)


def curve(run):
    return [(m["step"], m.get("loss"), m.get("val_bpb")) for m in run.metrics("pretrain")]


def test_resume_after_sigkill_reproduces_the_loss_curve_exactly(preset):
    straight = runner.run_pipeline(runner.open_or_create(preset, "straight", []), echo=False)
    expected = curve(straight)
    assert [s for s, loss, _ in expected if loss is not None] == list(range(1, 11))
    assert expected[-1][2] < expected[0][2]  # it learned something

    # read back every 3 steps (one host sync per window, flushed before each checkpoint): the same losses
    proc = subprocess.Popen([NANOCHAT, "run", "--preset", preset, "--name", "killed", "--set", "pretrain.log_every=3"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = Path(os.environ["NANOCHAT_HOME"]) / "runs" / "killed" / "checkpoints" / "pretrain" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (latest.exists() and json.loads(latest.read_text())["step"] >= 4):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = Run.open("killed")
    assert killed.status("pretrain")["state"] == "running"
    resumed = subprocess.run([NANOCHAT, "run", "--name", "killed"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout
    assert curve(killed) == expected  # bit for bit, losses and validation bpb


def test_two_ranks_match_one_rank_with_two_micro_batches(preset):
    one = runner.run_pipeline(runner.open_or_create(preset, "one", ["pretrain.num_iterations=4"]), echo=False)
    two = runner.run_pipeline(runner.open_or_create(preset, "two", ["pretrain.num_iterations=4"]),
                              runner.Launch(nproc_per_node=2), echo=False)
    a, b = curve(one), curve(two)
    assert [x[0] for x in a] == [x[0] for x in b]
    for (_, la, va), (_, lb, vb) in zip(a, b):
        assert (la is None) == (lb is None) and (la is None or abs(la - lb) < 1e-4)
        assert (va is None) == (vb is None) and (va is None or abs(va - vb) < 1e-4)
    ckpt = two.checkpoint_dir("pretrain") / "step_000004"
    assert (ckpt / "rank0.pt").exists() and (ckpt / "rank1.pt").exists()
    assert json.loads((ckpt / "meta.json").read_text())["world_size"] == 2


def test_resume_across_two_ranks_continues_the_same_curve(preset):
    straight = runner.run_pipeline(runner.open_or_create(preset, "ref2", ["pretrain.num_iterations=6"]),
                                   runner.Launch(nproc_per_node=2), echo=False)
    run = runner.open_or_create(preset, "cut2", ["pretrain.num_iterations=6"])
    runner.run_pipeline(run, runner.Launch(nproc_per_node=2), echo=False, only=["tokenizer"])
    # Stop the 2-rank job after its step-4 checkpoint by killing the whole process group.
    proc = subprocess.Popen([NANOCHAT, "run", "--name", "cut2", "--nproc-per-node", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = run.checkpoint_dir("pretrain") / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (latest.exists() and json.loads(latest.read_text())["step"] >= 4):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    runner.run_pipeline(Run.open("cut2"), runner.Launch(nproc_per_node=2), echo=False)
    assert curve(run) == curve(straight)


def test_checkpoint_of_another_depth_is_refused_naming_both(preset):
    run = runner.run_pipeline(runner.open_or_create(preset, "deep", ["pretrain.num_iterations=2"]), echo=False)
    stages = run.stages()
    stages[1]["settings"]["depth"] = 3
    stages[1]["settings"]["num_iterations"] = 4
    run.update_info(stages=stages)
    run.set_status("pretrain", state="interrupted")
    with pytest.raises(StageError, match="'n_layer': 2.*but the settings ask for.*'n_layer': 3"):
        runner.run_pipeline(run, echo=False)


def test_too_few_shards_names_the_download_command(preset):
    run = runner.open_or_create(preset, "hub", ["pretrain.dataset=fineweb-edu"])
    with pytest.raises(Exception, match="nanochat data download fineweb-edu"):
        runner.run_pipeline(run, echo=False)


def test_batch_that_does_not_divide_is_explained(preset):
    run = runner.open_or_create(preset, "odd", ["pretrain.total_batch_size=100"])
    with pytest.raises(StageError, match=r"total_batch_size=100 tokens is not a multiple of .* 2 x 32 x 1 = 64"):
        runner.run_pipeline(run, echo=False)


def test_fp8_pretraining_runs_emulated_on_a_cpu_close_to_bf16(preset):
    """pretrain.fp8 on a CPU: the emulated fp8 matmuls (nanochat/fp8.py) train the same model, said in the log
    and the report; the losses stay near the bf16 run's (tests/test_fp8.py measures the curve over 200 steps)."""
    sets = ["pretrain.num_iterations=4", "pretrain.dtype=bf16"]
    plain = runner.run_pipeline(runner.open_or_create(preset, "bf16", sets), echo=False)
    run = runner.run_pipeline(runner.open_or_create(preset, "fp8", sets + ["pretrain.fp8=true"]), echo=False)
    log = (run.dir / "pretrain" / "log.txt").read_text()
    assert "fp8: the blocks' matmuls train in float8" in log and "emulated on this CPU" in log
    assert "with fp8 matmuls (emulated)" in (run.dir / "pretrain" / "report.md").read_text()
    ours, theirs = [m["loss"] for m in run.metrics("pretrain") if "loss" in m], \
        [m["loss"] for m in plain.metrics("pretrain") if "loss" in m]
    assert len(ours) == 4 and ours != theirs and max(abs(a - b) for a, b in zip(ours, theirs)) < 0.05
