"""Snapshots of the dashboard's screens at a fixed terminal size (pytest-textual-snapshot; Textual is pinned
in pyproject.toml because rendering changes between releases). Update with `pytest --snapshot-update`
after looking at the new pictures."""
import math
import os

import pytest
from test_app import _app, _until

from nanochat import runner
from nanochat.i18n import set_language

SIZE = (120, 36)


@pytest.fixture
def home_with_runs(tmp_path, nanochat_home):
    """Three runs with fixed content: a finished one with curves, a damaged one, a failed one."""
    preset = tmp_path / "demo.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 200\n'
                      '[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')
    done = runner.open_or_create(str(preset), "curves", [])
    for step in range(1, 201):
        done.append_metrics("count", {"step": step, "loss": 4 * math.exp(-step / 50) + 2, "tok_per_s": 3000.0 + step,
                                      "mfu": 0.02 + step / 20000})
        if step % 25 == 0:
            done.append_metrics("count", {"step": step, "val_bpb": 2 * math.exp(-step / 80) + 1})
    done.set_status("count", state="done", summary={"count": 200})
    damaged = runner.open_or_create(str(preset), "damaged", [])
    (damaged.stage_dir("count")).mkdir(parents=True)
    (damaged.stage_dir("count") / "status.json").write_text('{"state": "do')
    failed = runner.open_or_create(str(preset), "failed", [])
    failed.set_status("count", state="failed", error="StageError: out of memory with device_batch_size=32")
    for i, run in enumerate((done, damaged, failed)):  # a fixed order (the list is oldest first)
        os.utime(run.dir / "run.json", (1_700_000_000 + i, 1_700_000_000 + i))
    return nanochat_home


async def _still(app, pilot):
    """No blinking text cursor: a picture taken mid-blink would differ from one taken between blinks."""
    from textual.widgets import Input, TextArea
    for widget in [*app.screen.query(Input), *app.screen.query(TextArea)]:
        widget.cursor_blink = False
    await pilot.pause(0.2)


def _wait_for_curves(app):
    async def run_before(pilot):
        from nanochat.app.widgets.curves import Curve
        await _until(pilot, lambda: app.screen.query_one("#runs").row_count == 3, what="rows")
        await pilot.pause(0.1)
        app.screen.query_one("#runs").move_cursor(row=0)  # the run with curves (the newest is selected first)
        await _until(pilot, lambda: app.screen.query_one("#curve-loss", Curve).count == 200, what="curves")
        await pilot.pause(1.2)  # the other curves' throttled redraw
    return run_before


def test_runs_screen(snap_compare, home_with_runs):
    app = _app()
    assert snap_compare(app, terminal_size=SIZE, run_before=_wait_for_curves(app))


def test_runs_screen_in_chinese(snap_compare, home_with_runs):
    set_language("zh")
    try:
        app = _app()
        assert snap_compare(app, terminal_size=SIZE, run_before=_wait_for_curves(app))
    finally:
        set_language(None)


def test_new_run_screen(snap_compare, tmp_path):
    app = _app()

    async def run_before(pilot):
        await pilot.press("n")
        await _until(pilot, lambda: app.screen.__class__.__name__ == "NewRunScreen", what="the form")
        app.screen.query_one("#name").value = "my-run"
        app.screen.query_one("#overrides").text = "pretrain.depth=6\nnum_iterations=x"
        await _until(pilot, lambda: app.screen.problem, timeout=60, what="the --set error")
        await _still(app, pilot)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_plugins_screen(snap_compare):
    app = _app()

    async def run_before(pilot):
        await pilot.press("4")
        await _until(pilot, lambda: app.screen.query_one("#plugins").row_count > 5, what="plugins")
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_chat_screen_without_models(snap_compare):
    app = _app()

    async def run_before(pilot):
        await pilot.press("3")
        await _until(pilot, lambda: "No finished chat model" in str(app.screen.query_one("#chat-status").render()),
                     what="the hint")
        await _still(app, pilot)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
