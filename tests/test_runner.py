"""The stage runner: presets, --set, needs, skip/resume, SIGKILL recovery, locking, torchrun launch."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanochat import runner
from nanochat.runs import Run, RunBusy, RunError, RunFileError
from nanochat.stages import StageError

COUNT_THEN_READ = """
description = "count, then read the count"
[defaults]
steps = 3
[[stage]]
name = "count"
stage = "counting_stage:CountingStage"
[[stage]]
name = "read"
stage = "counting_stage:ReaderStage"
"""


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "count.toml"
    path.write_text(COUNT_THEN_READ)
    return str(path)


def test_pipeline_runs_skips_done_and_writes_files(preset):
    run = runner.open_or_create(preset, "r1", [])
    runner.run_pipeline(run, echo=False)
    assert run.status("count")["state"] == "done"
    assert run.status("read")["summary"] == {"read": 3}
    assert [m["step"] for m in run.metrics("count")] == [1, 2, 3]
    assert "counted to 3" in (run.dir / "report.md").read_text()
    first_finish = run.status("count")["finished"]
    runner.run_pipeline(Run.open("r1"), echo=False)  # everything done: nothing runs again
    assert run.status("count")["finished"] == first_finish
    assert run.status("count")["attempts"] == 1


def test_set_overrides_global_and_per_stage(preset):
    entries = runner.plan(runner.load_preset(preset)[1], ["steps=7", "count.sleep=0.5", "device=cpu"])
    count = entries[0]["settings"]
    assert count["steps"] == 7 and count["sleep"] == 0.5 and count["device"] == "cpu"
    assert entries[1]["settings"] == {"device": "cpu"}


@pytest.mark.parametrize("override, message", [
    ("steps", "is not key=value"),
    ("nope.steps=1", "no stage named 'nope'"),
    ("colour=red", "valid settings: device, sleep, steps"),
    ("steps=many", "steps='many' is not a valid int"),
])
def test_bad_overrides_say_what_is_valid(preset, override, message):
    with pytest.raises(StageError, match=message):
        runner.plan(runner.load_preset(preset)[1], [override])


def test_unknown_preset_lists_valid_names():
    with pytest.raises(StageError) as err:
        runner.load_preset("no-such-preset")
    assert "cpu-tiny" in str(err.value)


def test_existing_run_with_other_preset_is_refused(preset, tmp_path):
    runner.open_or_create(preset, "r2", [])
    other = tmp_path / "other.toml"
    other.write_text(COUNT_THEN_READ)
    with pytest.raises(RunError, match="exists with preset .*nanochat run --name r2"):
        runner.open_or_create(str(other), "r2", [])


def test_needs_are_checked_before_a_stage_starts(preset):
    run = runner.open_or_create(preset, "r3", [])
    with pytest.raises(StageError, match="needs 'count', which stage 'count' of run 'r3' provides, but that stage is pending"):
        runner.run_pipeline(run, echo=False, only=["read"])
    assert run.status("read")["state"] == "pending"


def test_needs_without_any_provider_name_the_stage_type(tmp_path):
    path = tmp_path / "lonely.toml"
    path.write_text('[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')
    with pytest.raises(StageError, match="needs 'count' but no earlier stage of preset .* provides it; "
                                         "no built-in stage type makes it"):
        runner.open_or_create(str(path), "r4", [])
    assert not Run.exists("r4")  # a refused start leaves nothing behind


def test_override_on_resume_changes_only_unfinished_stages(preset):
    run = runner.open_or_create(preset, "r5", [])
    runner.run_pipeline(run, echo=False, only=["count"])
    with pytest.raises(StageError, match=r"Stages already done \(count\) keep their settings"):
        runner.open_or_create(None, "r5", ["steps=9"])
    assert Run.open("r5").stages()[0]["settings"]["steps"] == 3
    runner.open_or_create(None, "r5", ["device=cpu"])  # applies to the stage not yet done
    assert [s["settings"]["device"] for s in Run.open("r5").stages()] == ["auto", "cpu"]


def test_corrupt_status_is_named_and_left_alone(preset):
    run = runner.open_or_create(preset, "r6", [])
    status = run.stage_dir("count") / "status.json"
    status.parent.mkdir(parents=True)
    status.write_text('{"state": "runn')
    with pytest.raises(RunFileError, match="status.json is damaged") as damaged:
        runner.run_pipeline(run, echo=False)
    assert status.read_text() == '{"state": "runn'
    assert f"Delete it (rm {status})" in str(damaged.value)
    status.unlink()  # the fix it names: the stage runs again
    runner.run_pipeline(run, echo=False)
    assert run.status("count")["state"] == "done" and run.status("read")["summary"] == {"read": 3}


def test_only_one_driver_per_run(preset):
    run = runner.open_or_create(preset, "r7", [])
    with run.lock():
        with pytest.raises(RunBusy, match="being driven by pid"):
            runner.run_pipeline(Run.open("r7"), echo=False)


def _start(cli_args, env):
    exe = Path(sys.executable).parent / "nanochat"
    return subprocess.Popen([str(exe), *cli_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)


def test_sigkill_mid_stage_then_resume_completes(preset):
    env = dict(os.environ)
    proc = _start(["run", "--preset", preset, "--name", "killed", "--set", "steps=40", "--set", "count.sleep=0.05"], env)
    ckpt = None
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the stage has checkpointed a few steps
        ckpt = Run.open("killed").checkpoint_dir("count") / "state.json" if Run.exists("killed") else None
        if ckpt and ckpt.exists() and json.loads(ckpt.read_text())["count"] >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = Run.open("killed")
    reached = json.loads(ckpt.read_text())["count"]
    assert 5 <= reached < 40
    assert run.status("count")["state"] == "running"  # what a power cut leaves behind

    result = subprocess.run([str(Path(sys.executable).parent / "nanochat"), "run", "--name", "killed"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming from count {reached}" in result.stdout
    assert run.status("count")["state"] == "done" and run.status("count")["attempts"] == 2
    steps = [m["step"] for m in run.metrics("count")]
    assert steps == list(range(1, 41))  # no duplicate or missing steps across the kill
    assert run.status("read")["summary"] == {"read": 40}


def test_sigterm_mid_stage_leaves_it_interrupted_and_resume_completes(preset):
    env = dict(os.environ)
    proc = _start(["run", "--preset", preset, "--name", "termed", "--set", "steps=40", "--set", "count.sleep=0.05"], env)
    deadline = time.time() + 60
    ckpt = None
    while time.time() < deadline:
        ckpt = Run.open("termed").checkpoint_dir("count") / "state.json" if Run.exists("termed") else None
        if ckpt and ckpt.exists() and json.loads(ckpt.read_text())["count"] >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what `kill PID` or a job scheduler sends
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    run = Run.open("termed")
    status = run.status("count")
    assert status["state"] == "interrupted" and "SIGTERM" in status["error"], status
    reached = json.loads(ckpt.read_text())["count"]
    result = subprocess.run([str(Path(sys.executable).parent / "nanochat"), "run", "--name", "termed"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming from count {reached}" in result.stdout
    assert [m["step"] for m in run.metrics("count")] == list(range(1, 41))


def test_a_run_started_with_sigint_ignored_is_still_stopped_by_stop(preset):
    """A script's background job (`nanochat run ... &`) starts with SIGINT ignored; Stop sends SIGINT."""
    from nanochat.runs import stop_stage
    proc = subprocess.Popen([str(Path(sys.executable).parent / "nanochat"), "run", "--preset", preset, "--name",
                             "bg", "--set", "steps=200", "--set", "count.sleep=0.05"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 60
    while not (Run.exists("bg") and Run.open("bg").status("count")["state"] == "running"
               and len(Run.open("bg").metrics("count")) >= 2):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    assert stop_stage(Run.open("bg")) == ("count", proc.pid)
    assert proc.wait(timeout=30) == 130
    assert Run.open("bg").status("count")["state"] == "interrupted"


def test_distributed_stage_runs_under_torchrun(tmp_path):
    path = tmp_path / "dist.toml"
    path.write_text('[[stage]]\nname = "sum"\nstage = "counting_stage:AllReduceStage"\n')
    run = runner.open_or_create(str(path), "dist", [])
    runner.run_pipeline(run, runner.Launch(nproc_per_node=2), echo=False)
    assert run.status("sum")["state"] == "done"
    assert run.metrics("sum") == [{"world_size": 2, "sum": 3.0}]  # written once, by rank 0


def test_two_runs_at_once_both_finish_and_a_busy_one_is_refused_with_its_holder(preset):
    env = dict(os.environ)
    args = ["--set", "steps=60", "--set", "count.sleep=0.05"]  # 3 s: time for the refused third process
    a = _start(["run", "--preset", preset, "--name", "load-a", *args], env)
    b = _start(["run", "--preset", preset, "--name", "load-b", *args], env)
    deadline = time.time() + 60
    while time.time() < deadline and not (Run.exists("load-a") and Run.open("load-a").status("count")["state"] == "running"):
        time.sleep(0.05)
    again = subprocess.run([str(Path(sys.executable).parent / "nanochat"), "run", "--name", "load-a"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode != 0
    assert re.search(rf"being driven by pid {a.pid} on \S+ since \d{{4}}-", again.stdout + again.stderr), again.stderr
    assert a.wait(timeout=120) == 0 and b.wait(timeout=120) == 0, a.stdout.read() + b.stdout.read()
    for name in ("load-a", "load-b"):
        assert [m["step"] for m in Run.open(name).metrics("count")] == list(range(1, 61))
