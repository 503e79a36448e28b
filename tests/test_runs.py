"""Runs on disk: atomic status files, damaged files named, metrics that survive a crash."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nanochat import paths
from nanochat.runs import Run, RunError, RunFileError

HAMMER = """
import sys
from nanochat.runs import Run
run = Run.create("hammer", {"preset": "x", "stages": [{"name": "s", "stage": "x", "settings": {}}]})
print("ready", flush=True)
i = 0
while True:
    i += 1
    run.set_status("s", state="running", step=i, padding="x" * 50_000)
"""


def test_status_files_are_never_half_written(tmp_path):
    """SIGKILL a process that rewrites status.json as fast as it can: every kill leaves a whole file."""
    for attempt in range(5):
        env = {**os.environ, "NANOCHAT_HOME": str(tmp_path / f"h{attempt}")}
        proc = subprocess.Popen([sys.executable, "-c", HAMMER], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2 + 0.1 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        status = Run(tmp_path / f"h{attempt}" / "runs" / "hammer").status("s")
        assert status["state"] == "running" and status["step"] >= 1 and len(status["padding"]) == 50_000


def test_damaged_run_file_is_named_never_reset():
    run = Run.create("broken", {"preset": "x", "stages": []})
    (run.dir / "run.json").write_text("{not json")
    with pytest.raises(RunFileError, match=r"run.json is damaged .* left as it is. It holds the run's plan .* "
                                           r"start a new run with `nanochat run --preset PRESET --name NEW`"):
        Run.open("broken").info
    assert (run.dir / "run.json").read_text() == "{not json"
    (run.dir / "run.json").write_bytes(b'{"preset": "\xff\xfe"}')  # not even text
    with pytest.raises(RunFileError, match=r"run.json is damaged \(not UTF-8\)"):
        Run.open("broken").info


def test_unknown_state_is_an_error():
    run = Run.create("odd", {"preset": "x", "stages": []})
    (run.stage_dir("s")).mkdir(parents=True)
    (run.stage_dir("s") / "status.json").write_text(json.dumps({"state": "sleeping"}))
    with pytest.raises(RunFileError, match="unknown state 'sleeping'"):
        run.status("s")


def test_metrics_tolerate_a_line_cut_by_a_crash_but_not_damage_in_the_middle():
    run = Run.create("m", {"preset": "x", "stages": []})
    run.append_metrics("s", {"step": 1})
    path = run.stage_dir("s") / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')
    assert run.metrics("s") == [{"step": 1}]
    path.write_text('{"step": 1}\n{bad}\n{"step": 3}\n')
    with pytest.raises(RunFileError, match="line 2 is damaged") as damaged:
        run.metrics("s")
    fix = re.search(r"\(sed -i '(\d+)d' (\S+)\)", str(damaged.value))  # the fix it names works
    subprocess.run(["sed", "-i", f"{fix[1]}d", fix[2]], check=True)
    assert run.metrics("s") == [{"step": 1}, {"step": 3}]


def test_run_names_are_checked_and_missing_runs_listed():
    with pytest.raises(RunError, match="not valid"):
        Run.create("../escape", {})
    Run.create("exists", {"preset": "x", "stages": []})
    with pytest.raises(RunError, match="existing runs: exists"):
        Run.open("nope")


def test_nanochat_home_moves_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_HOME", str(tmp_path / "h"))
    for key, path in paths.all_paths().items():
        assert str(path).startswith(str(tmp_path / "h")), key


def test_default_paths_are_platform_user_dirs(monkeypatch):
    import platformdirs
    monkeypatch.delenv("NANOCHAT_HOME")
    assert paths.runs_dir() == platformdirs.user_data_path("nanochat", appauthor=False) / "runs"
    assert paths.datasets_dir() == platformdirs.user_cache_path("nanochat", appauthor=False) / "datasets"


def test_a_line_cut_by_a_crash_is_dropped_before_the_next_append():
    run = Run.create("cut", {"preset": "x", "stages": []})
    run.append_metrics("s", {"step": 1})
    path = run.stage_dir("s") / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')
    run.append_metrics("s", {"step": 2, "loss": 1.5})  # the resumed stage writes step 2 again, whole
    assert run.metrics("s") == [{"step": 1}, {"step": 2, "loss": 1.5}]
    path.write_text('{"step": 1')  # only a cut line in the file
    run.append_metrics("s", {"step": 1})
    assert path.read_text() == '{"step": 1}\n'


def test_a_busy_run_names_its_holder_and_since_when():
    from nanochat.runs import RunBusy
    run = Run.create("held", {"preset": "x", "stages": []})
    with run.lock():
        with pytest.raises(RunBusy, match=rf"pid {os.getpid()} on \S+ since \d{{4}}-"):
            with Run.open("held").lock():
                pass
