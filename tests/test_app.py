"""`nanochat-app` under Textual's Pilot: the runs screen (live, incremental, damaged files), new run,
stop and resume of a real detached run, and the logs screen."""
import asyncio
import json
import os
import time

from nanochat import runner
from nanochat.runs import Run

PRESET = ('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = {steps}\nsleep = {sleep}\n'
          '[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')


def _preset(tmp_path, steps=2, sleep=0.0):
    path = tmp_path / f"p{steps}.toml"
    path.write_text(PRESET.format(steps=steps, sleep=sleep))
    return path


def _make_run(tmp_path, name="shown"):
    run = runner.open_or_create(str(_preset(tmp_path)), name, [])
    runner.run_pipeline(run, echo=False, only=["count"])
    return run


def _cells(table):
    """The table's text as a person reads it (cells may be markup strings or rich Text)."""
    from rich.text import Text
    return [[c.plain if isinstance(c, Text) else Text.from_markup(str(c)).plain for c in table.get_row_at(i)]
            for i in range(table.row_count)]


async def _until(pilot, condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.2)
        if condition():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _app():
    from nanochat.app.app import NanochatApp
    return NanochatApp()


def test_runs_screen_lists_runs_and_stage_states(tmp_path):
    _make_run(tmp_path)

    async def scenario():
        app = _app()
        async with app.run_test(size=(120, 40)) as pilot:
            runs = app.screen.query_one("#runs")
            await _until(pilot, lambda: runs.row_count == 1, what="the run row")
            row = _cells(runs)[0]
            assert row[:3] == ["shown", "p2", "paused"] and "1/2" in row[3]
            stages = _cells(app.screen.query_one("#stages"))
            assert stages[0][:3] == ["count", "done", "2"]
            assert stages[1][:2] == ["read", "pending"]
            assert not app.screen.query_one("#empty").display
            await pilot.press("q")
    asyncio.run(scenario())


def test_dashboard_speaks_chinese_and_switches_language(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_LANG", "zh")
    _make_run(tmp_path)
    from nanochat import i18n

    async def scenario():
        app = _app()
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.screen.query_one("#stages").row_count == 2, what="stages")
            assert [row[1] for row in _cells(app.screen.query_one("#stages"))] == ["完成", "等待中"]
            assert app.sub_title == "本机上的训练运行"
            await pilot.press("f2")
            await _until(pilot, lambda: app.screen.query_one("#stages").row_count == 2, what="stages again")
            assert [row[1] for row in _cells(app.screen.query_one("#stages"))] == ["done", "pending"]
            assert app.sub_title == "runs on this machine"
            labels = {b.binding.description for b in app.screen.active_bindings.values()}
            assert "New run" in labels and "Stop" in labels
    try:
        asyncio.run(scenario())
    finally:
        i18n.set_language(None)


def test_no_runs_says_how_to_start():
    async def scenario():
        app = _app()
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.5)
            assert app.screen.query_one("#empty").display and app.screen.query_one("#runs").row_count == 0
    asyncio.run(scenario())


def test_damaged_files_show_on_their_row_and_the_rest_works(tmp_path, nanochat_home):
    _make_run(tmp_path, "good")
    bad_status = _make_run(tmp_path, "bad-status")
    (bad_status.stage_dir("count") / "status.json").write_text('{"state": "done", "upd')
    bad_json = _make_run(tmp_path, "bad-json")
    (bad_json.dir / "run.json").write_text("{not json")
    not_a_file = _make_run(tmp_path, "not-a-file")
    (not_a_file.stage_dir("count") / "metrics.jsonl").unlink()
    (not_a_file.stage_dir("count") / "metrics.jsonl").mkdir()  # a folder where a file should be
    bad_line = _make_run(tmp_path, "bad-line")
    with open(bad_line.stage_dir("count") / "metrics.jsonl", "a") as f:
        f.write("{garbage\n" + json.dumps({"step": 7}) + "\n" + '{"step": 8, "lo')  # a damaged and a half line

    async def scenario():
        app = _app()
        async with app.run_test(size=(140, 40)) as pilot:
            runs = app.screen.query_one("#runs")
            await _until(pilot, lambda: runs.row_count == 5, what="five rows")
            rows = {r[0]: r for r in _cells(runs)}
            assert app.screen.selected_run.name == "bad-line"  # none runs: the newest is selected first
            assert rows["good"][2] == "paused" and rows["good"][5] == ""
            assert rows["bad-status"][2] == "damaged" and "status.json is damaged" in rows["bad-status"][5]
            assert rows["bad-json"][2] == "damaged" and "run.json is damaged" in rows["bad-json"][5]
            assert "damaged line" in rows["bad-line"][5]
            assert "metrics.jsonl cannot be read (Is a directory)" in rows["not-a-file"][5]
            view = next(v for v in app.screen.views if v.name == "bad-line")
            assert view.stages[0].latest["step"] == 7  # the good line after the bad one counts; the half line waits
    asyncio.run(scenario())


def test_new_metrics_show_within_seconds_while_a_run_writes(tmp_path):
    run = runner.open_or_create(str(_preset(tmp_path, steps=100)), "live", [])
    run.set_status("count", state="running", pid=os.getpid(), host=os.uname().nodename)
    for step in range(1, 51):
        run.append_metrics("count", {"step": step, "loss": 5.0 - step / 100, "tok_per_s": 1000.0 + step})

    async def scenario():
        app = _app()
        async with app.run_test(size=(140, 44)) as pilot:
            stages = app.screen.query_one("#stages")
            await _until(pilot, lambda: stages.row_count == 2 and _cells(stages)[0][2] == "50", what="step 50")
            from nanochat.app.widgets.curves import Curve
            loss = app.screen.query_one("#curve-loss", Curve)
            await _until(pilot, lambda: loss.count == 50, what="the loss curve")
            started = time.monotonic()
            for step in range(51, 61):
                run.append_metrics("count", {"step": step, "loss": 5.0 - step / 100, "tok_per_s": 1000.0 + step})
            await _until(pilot, lambda: _cells(stages)[0][2] == "60" and loss.count == 60,
                         timeout=10, what="step 60 on screen")
            assert time.monotonic() - started < 5
            assert "count 60.0%" in _cells(app.screen.query_one("#runs"))[0][3]
            # the UI thread only compares and sets cells: the file reading happens in the worker
            assert max(app.screen.refresh_ms[1:]) < 500
    asyncio.run(scenario())


def test_start_a_real_run_from_the_dashboard_stop_it_and_resume_it(tmp_path, nanochat_home):
    preset = _preset(tmp_path, steps=40, sleep=0.15)

    async def scenario():
        app = _app()
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("n")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "NewRunScreen", what="the new run screen")
            screen = app.screen
            screen.query_one("#preset").value = str(preset)
            screen.query_one("#overrides").text = "count.stepz=3"
            await _until(pilot, lambda: "no stage has a setting 'stepz'" in str(screen.problem), what="the --set error")
            await pilot.press("ctrl+s")
            assert app.screen is screen  # refused while invalid
            screen.query_one("#overrides").text = "count.steps=30"
            await _until(pilot, lambda: screen.valid, what="valid settings")
            assert "steps = 30" in screen.query_one("#resolved").text
            screen.query_one("#name").value = "from-app"
            await pilot.press("ctrl+s")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "RunsScreen", what="back on runs")
            proc = app.launched["from-app"]
            runs = app.screen.query_one("#runs")
            await _until(pilot, lambda: any(r[0] == "from-app" and r[2] == "running" for r in _cells(runs)),
                         what="the run running")
            await _until(pilot, lambda: Run.open("from-app").metrics("count")[-1:] and
                         Run.open("from-app").metrics("count")[-1]["step"] >= 3, what="a few steps")
            runs.move_cursor(row=[r[0] for r in _cells(runs)].index("from-app"))
            await pilot.press("s")
            proc.wait(timeout=30)
            await _until(pilot, lambda: any(r[0] == "from-app" and r[2] == "interrupted" for r in _cells(runs)),
                         what="interrupted")
            run = Run.open("from-app")
            stopped_at = run.metrics("count")[-1]["step"]
            assert run.status("count")["state"] == "interrupted" and 3 <= stopped_at < 30
            assert "KeyboardInterrupt" in run.status("count")["error"]
            await pilot.press("r")
            await _until(pilot, lambda: any(r[0] == "from-app" and r[2] == "done" for r in _cells(runs)),
                         timeout=60, what="done after resume")
            steps = [r["step"] for r in Run.open("from-app").metrics("count")]
            assert steps == list(range(1, 31))  # resumed exactly: every step once, in order
            assert "resuming from count" in (run.stage_dir("count") / "log.txt").read_text()
    asyncio.run(scenario())


def test_a_failing_run_started_from_the_dashboard_shows_its_state_and_last_lines(tmp_path, nanochat_home):
    preset = tmp_path / "bad.toml"
    preset.write_text('[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')  # needs a count: fails

    async def scenario():
        from nanochat.app import launch
        app = _app()
        async with app.run_test(size=(140, 44)) as pilot:
            app.launched["fails"] = launch.start("fails", str(preset))
            app.launched["fails"].wait(timeout=60)
            notes = []
            app.notify = lambda message, **kw: notes.append(message)
            runs = app.screen.query_one("#runs")
            await _until(pilot, lambda: notes, what="the failure notice")
            assert "exit code 2" in notes[0] and "needs 'count'" in notes[0]
            assert runs.row_count == 0  # refused at start (nanochat run checks the plan first): no run is left
            assert not launch.launch_log("fails").parent.exists()  # nor its launch.log once the notice is shown
    asyncio.run(scenario())


def test_logs_screen_follows_a_growing_log(tmp_path):
    run = _make_run(tmp_path)

    async def scenario():
        app = _app()
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.screen.query_one("#stages").row_count == 2, what="stages")
            app.screen.query_one("#stages").move_cursor(row=0)
            await pilot.press("l")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "LogScreen", what="the log screen")
            log = app.screen.query_one("#log")
            await _until(pilot, lambda: "count 2" in "\n".join(log.lines), what="the log")
            run.append_log("count", "a new line while we watch")
            await _until(pilot, lambda: "a new line while we watch" in "\n".join(log.lines), timeout=5,
                         what="the new line")
            await pilot.press("escape")
            assert app.screen.__class__.__name__ == "RunsScreen"
    asyncio.run(scenario())


def test_run_detail_shows_failures_with_their_last_log_lines_and_evals(tmp_path):
    run = _make_run(tmp_path, "detailed")
    run.set_status("read", state="failed", error="StageError: the reader broke")
    run.append_log("read", "reading...\nlast words of the reader")
    result = run.dir / "evals" / "20261202-1" / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"stage": "count", "step": 2, "state": "done", "finished": "2026-12-02T18:00:00",
                                  "scores": {"starter-arithmetic": 0.125}}))

    async def scenario():
        app = _app()
        async with app.run_test(size=(140, 40)) as pilot:
            stages = app.screen.query_one("#stages")
            await _until(pilot, lambda: stages.row_count == 2, what="stages")
            assert _cells(app.screen.query_one("#runs"))[0][2] == "failed"
            stages.move_cursor(row=1)
            detail = app.screen.query_one("#detail")
            await _until(pilot, lambda: "last words of the reader" in str(detail.render()), what="the log tail")
            shown = str(detail.render())
            assert "StageError: the reader broke" in shown
            assert "eval 20261202-1 (count, Step 2, done): starter-arithmetic 12.5%" in shown
    asyncio.run(scenario())
