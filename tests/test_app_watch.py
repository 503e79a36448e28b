"""What the dashboard reads, without a screen: new metric lines only, half and damaged lines, rewritten
files, evals, which stages need a checkpoint, and every UI string in both languages."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanochat import i18n, runner
from nanochat.app.watch import HomeWatcher, read_evals
from nanochat.runs import RunError, disk_usage, process_alive, read_new_records, stop_stage

APP = Path(__file__).resolve().parents[1] / "nanochat" / "app"


def test_read_new_records_reads_only_what_was_appended(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_new_records(path, 0) == ([], 0, None)  # not there yet
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # the last line is being written
    records, offset, problem = read_new_records(path, 0)
    assert records == [{"step": 1}, {"step": 2}] and problem is None and offset == len('{"step": 1}\n{"step": 2}\n')
    with open(path, "a") as f:
        f.write('ss": 2.5}\nnot json\n{"step": 4}\n')
    records, offset2, problem = read_new_records(path, offset)
    assert records == [{"step": 3, "loss": 2.5}, {"step": 4}]
    assert "damaged line at byte" in problem and str(path) in problem
    assert read_new_records(path, offset2) == ([], offset2, None)
    path.write_text('{"step": 1}\n')  # trimmed by a resumed stage: read again from the start
    assert read_new_records(path, offset2)[0] == [{"step": 1}]


def test_watcher_follows_appends_and_a_rewritten_file(tmp_path, nanochat_home):
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 10\n')
    run = runner.open_or_create(str(preset), "watched", [])
    run.set_status("count", state="running", pid=os.getpid(), host=os.uname().nodename)
    for step in range(1, 4):
        run.append_metrics("count", {"step": step, "loss": 4.0 - step})
    watcher = HomeWatcher()
    view = watcher.scan(("watched", "count"))[0]
    assert view.state == "running" and view.stages[0].latest["step"] == 3
    assert view.stages[0].progress == 0.3
    assert watcher.series("watched", "count")["loss"] == ([1, 2, 3], [3.0, 2.0, 1.0])
    run.append_metrics("count", {"step": 4, "loss": 0.5})
    watcher.scan(("watched", "count"))
    assert watcher.series("watched", "count")["loss"] == ([1, 2, 3, 4], [3.0, 2.0, 1.0, 0.5])
    run.keep_metrics("count", lambda r: r["step"] <= 2)  # a resume trims the file (a new file, renamed in)
    run.append_metrics("count", {"step": 3, "loss": 9.0})
    watcher.scan(("watched", "count"))
    assert watcher.series("watched", "count")["loss"] == ([1, 2, 3], [3.0, 2.0, 9.0])
    run.set_status("count", pid=2 ** 22 + 12345)  # a pid that does not exist: the process is gone
    assert watcher.scan()[0].stages[0].state == "stale"


def test_first_look_at_a_long_file_reads_only_its_end(tmp_path, nanochat_home):
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 10\n')
    run = runner.open_or_create(str(preset), "long", [])
    run.set_status("count", state="done")
    lines = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 5001))
    (run.stage_dir("count") / "metrics.jsonl").write_text('{"broken\n' + lines)  # damage far from the end
    view = HomeWatcher().scan()[0]
    assert view.stages[0].latest["step"] == 5000 and view.problem is None  # the first KB is never read


def test_evals_are_read_defensively(tmp_path):
    good = tmp_path / "evals" / "e1"
    good.mkdir(parents=True)
    (good / "result.json").write_text(json.dumps({"stage": "sft", "step": 10, "state": "done", "finished": "2026-12-02",
                                                  "scores": {"gsm8k": 0.25, "bad": "x"}}))
    bad = tmp_path / "evals" / "e2"
    bad.mkdir()
    (bad / "result.json").write_text("{half")
    rows = {r["id"]: r for r in read_evals(tmp_path)}
    assert rows["e1"]["scores"] == {"gsm8k": 0.25} and rows["e1"]["stage"] == "sft"
    assert "is damaged" in rows["e2"]["problem"]
    assert read_evals(tmp_path / "nothing") == []


def test_checkpoint_users_and_disk_usage(tmp_path, nanochat_home):
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 2\n'
                      '[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')
    run = runner.open_or_create(str(preset), "users", [])
    runner.run_pipeline(run, echo=False, only=["count"])
    assert runner.checkpoint_users(run, "count") == [("read", "pending", "count")]
    assert runner.checkpoint_users(run, "read") == []
    assert disk_usage(run.checkpoint_dir("count")) == (run.checkpoint_dir("count") / "state.json").stat().st_size
    assert disk_usage(tmp_path / "missing") == 0


def test_stop_stage_refuses_what_it_cannot_stop_and_stops_a_real_run(tmp_path, nanochat_home):
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 200\n'
                      'sleep = 0.1\n')
    run = runner.open_or_create(str(preset), "stoppable", [])
    with pytest.raises(RunError, match="has no running stage to stop"):
        stop_stage(run)
    run.set_status("count", state="running", pid=2 ** 22 + 12345, host=os.uname().nodename)
    with pytest.raises(RunError, match="is gone"):
        stop_stage(run)
    run.set_status("count", host="elsewhere")
    with pytest.raises(RunError, match="stop it there"):
        stop_stage(run)
    run.set_status("count", state="pending")
    proc = subprocess.Popen([sys.executable, "-m", "nanochat.cli", "run", "--name", "stoppable"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (run.status("count")["state"] == "running" and len(run.metrics("count")) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    assert process_alive(run.status("count")) is True
    assert stop_stage(run) == ("count", proc.pid)
    assert proc.wait(timeout=30) == 130  # the CLI's answer to Ctrl-C
    assert run.status("count")["state"] == "interrupted"


def test_every_dashboard_string_exists_in_both_languages():
    keys = set()
    for path in APP.rglob("*.py"):
        keys |= set(re.findall(r"""\bt\(\s*f?["']([a-z_.]+)["']""", path.read_text()))
    keys |= {f"key.{k}" for k in ("runs", "checkpoints", "chat", "plugins", "back")}
    keys |= {f"palette.{k}" for k in ("runs", "checkpoints", "chat", "plugins", "new_run", "stop", "resume", "logs",
                                      "delete", "chat_with", "new_chat", "stop_reply", "toggle_follow", "back", "start",
                                      "refresh")}
    keys |= {f"state.{s}" for s in ("pending", "running", "interrupted", "failed", "done", "damaged", "stale", "paused")}
    keys |= {f"curve.{c}" for c in ("loss", "val_bpb", "tok_per_s", "mfu")}
    keys = {k for k in keys if not k.endswith(".")}  # t(f"state.{state}"): the families are listed above
    missing = sorted(k for k in keys if k not in i18n.MESSAGES or set(i18n.MESSAGES[k]) != set(i18n.LANGUAGES))
    assert not missing, f"UI strings without both languages: {missing}"


def test_a_run_launched_from_a_process_that_ignores_ctrl_c_still_stops(tmp_path, nanochat_home):
    import signal

    from nanochat.app import launch
    from nanochat.runs import Run
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 200\n'
                      'sleep = 0.1\n')
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job of a script
    try:
        proc = launch.start("ignored", str(preset))
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 60
    while not (Run.exists("ignored") and Run.open("ignored").status("count")["state"] == "running"
               and len(Run.open("ignored").metrics("count")) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None, launch.launch_log("ignored").read_text()
        time.sleep(0.1)
    stop_stage(Run.open("ignored"))
    assert proc.wait(timeout=30) == 130
    assert Run.open("ignored").status("count")["state"] == "interrupted"
    assert "interrupted; resume with the same command" in launch.launch_log("ignored").read_text()
