"""Fault injection (NANOCHAT_FAULT): SIGKILL at each named point of the pretrain stage, resume, same curve."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanochat import faults, runner
from nanochat.runs import Run
from test_pretrain import PRESET, curve

NANOCHAT = str(Path(sys.executable).parent / "nanochat")


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(PRESET.replace("num_iterations = 10", "num_iterations = 6"))
    return str(path)


def test_a_bad_fault_spec_is_named(monkeypatch):
    for bad in ("nowhere", "step@0", "step@x"):
        monkeypatch.setenv("NANOCHAT_FAULT", bad)
        with pytest.raises(ValueError, match=rf"NANOCHAT_FAULT='{bad}' is not valid.*checkpoint@2"):
            faults.hit("step")
    monkeypatch.delenv("NANOCHAT_FAULT")
    faults.hit("step")  # unset: nothing happens


# point@visit -> the pretrain step a resume must start after (None: killed before the first checkpoint)
MATRIX = {"step@4": 2, "checkpoint@2": 2, "metrics@5": None, "status@3": None, "loader@9": 2}


def test_kill_at_each_point_then_resume_gives_the_uninterrupted_run(preset):
    expected = curve(runner.run_pipeline(runner.open_or_create(preset, "straight", []), echo=False))
    table = []
    for spec in MATRIX:
        name = "killed-" + spec.replace("@", "-")
        env = {**os.environ, "NANOCHAT_FAULT": spec}
        killed = subprocess.run([NANOCHAT, "run", "--preset", preset, "--name", name], capture_output=True,
                                text=True, timeout=300, env=env)
        assert killed.returncode == -9, (spec, killed.returncode, killed.stderr[-2000:])
        assert f"at {spec.split('@')[0]}" in killed.stderr
        resumed = subprocess.run([NANOCHAT, "run", "--name", name], capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, (spec, resumed.stderr[-2000:])
        resumed_line = [l for l in resumed.stdout.splitlines() if "resumed from step" in l]
        got = curve(Run.open(name))
        table.append((spec, resumed_line[0].split("resumed from step")[1].split()[0] if resumed_line else "-",
                      "same" if got == expected else [(a, b) for a, b in zip(got, expected) if a != b]))
    print("\nfault x pretrain -> resumed from step, curve:", table)
    assert all(same == "same" for _, _, same in table), table
    assert any(step != "-" for _, step, _ in table)  # some resumes really came from a checkpoint


def test_a_truncated_latest_checkpoint_is_named_and_the_previous_one_used(preset):
    expected = curve(runner.run_pipeline(runner.open_or_create(preset, "straight", []), echo=False))
    env = {**os.environ, "NANOCHAT_FAULT": "step@6"}  # after the step-4 checkpoint
    killed = subprocess.run([NANOCHAT, "run", "--preset", preset, "--name", "cut"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    model = Run.open("cut").checkpoint_dir("pretrain") / "step_000004" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    resumed = subprocess.run([NANOCHAT, "run", "--name", "cut"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{model} is truncated" in resumed.stdout + resumed.stderr
    assert "resumed from step 2" in resumed.stdout
    assert curve(Run.open("cut")) == expected
