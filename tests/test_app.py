"""`nanochat-app` under Textual's Pilot: it shows the runs on disk and each stage's state, in English or Chinese."""
import asyncio

from nanochat import runner


def _make_run(tmp_path, name="shown"):
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 2\n'
                      '[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')
    run = runner.open_or_create(str(preset), name, [])
    runner.run_pipeline(run, echo=False, only=["count"])
    return run


def _cells(table):
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_dashboard_lists_runs_and_stage_states(tmp_path):
    _make_run(tmp_path)
    from nanochat.app.dashboard import Dashboard

    async def scenario():
        app = Dashboard()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert _cells(app.query_one("#runs")) == [["shown", str(tmp_path / "p.toml"), "1/2"]]
            stages = _cells(app.query_one("#stages"))
            assert stages[0][:2] == ["count", "done"] and "step=2" in stages[0][2]
            assert stages[1][:2] == ["read", "pending"]
            assert not app.query_one("#empty").display
            await pilot.press("q")
    asyncio.run(scenario())


def test_dashboard_speaks_chinese(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_LANG", "zh")
    _make_run(tmp_path)
    from nanochat.app.dashboard import Dashboard

    async def scenario():
        app = Dashboard()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert [row[1] for row in _cells(app.query_one("#stages"))] == ["完成", "等待中"]
            assert app.sub_title == "本机上的训练运行"
    asyncio.run(scenario())


def test_dashboard_with_no_runs_says_how_to_start():
    from nanochat.app.dashboard import Dashboard

    async def scenario():
        app = Dashboard()
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            assert app.query_one("#empty").display and app.query_one("#runs").row_count == 0
    asyncio.run(scenario())
