"""Plugins that fail at run time, registered through the plugin manager: an observer that raises is switched off
for the rest of the run and the stage goes on; a task that raises stops its stage cleanly, naming the task, its
plugin and how to go on without it."""
import pytest

from failing_plugins import FlakyObserver, ObserverPlugin, TaskPlugin
from nanochat import plugins, runner
from nanochat.runs import Run
from nanochat.stages import StageError

COUNT_THEN_READ = """
[[stage]]
name = "count"
stage = "counting_stage:CountingStage"
steps = 4
[[stage]]
name = "read"
stage = "counting_stage:ReaderStage"
"""

MODEL_THEN_CHAT_EVAL = """
[[stage]]
name = "model"
stage = "counting_stage:RandomModelStage"
[[stage]]
name = "chat-eval"
source = "base"
device = "cpu"
dtype = "fp32"
tasks = "spellingbee[:2], flaky-task, starter-arithmetic[:2]"
max_new_tokens = 4
"""


def test_an_observer_that_raises_is_switched_off_and_the_stage_goes_on(tmp_path, capsys):
    ObserverPlugin.observer = observer = FlakyObserver(fail_on=2)
    plugins.registry().add(ObserverPlugin, name="flaky-plugins:logger", distribution="flaky-plugins")
    preset = tmp_path / "count.toml"
    preset.write_text(COUNT_THEN_READ)
    run = runner.run_pipeline(runner.open_or_create(str(preset), "observed", []), echo=False)

    assert run.status("count")["state"] == "done" and run.status("count")["summary"] == {"count": 4}
    assert [m["step"] for m in run.metrics("count")] == [1, 2, 3, 4]  # every record kept
    assert run.status("read")["state"] == "done"
    # called up to the failure, never again: not for the rest of the stage, nor in the next stage
    assert observer.events == [("stage_start", "count"), ("metrics", "count"), ("metrics", "count")]
    err = capsys.readouterr().err
    message = ("observer 'flaky-logger' of plugin 'flaky-plugins:logger' raised ConnectionError: logging server "
               "went away on a 'metrics' event; it is off for the rest of run 'observed'")
    assert message in err and "pip uninstall flaky-plugins" in err and err.count("flaky-logger") == 1
    assert any(message in note for note in run.status("count")["notes"])  # the CLI, dashboard and report show it
    assert Run.open("observed").info["quarantined"] == {"observer:flaky-logger": "ConnectionError: logging server went away"}
    row = next(r for r in plugins.registry().listing() if r["plugin"] == "flaky-plugins:logger")
    assert row["status"] == "broken" and "failed at run time: ConnectionError" in row["error"]


def test_a_task_that_raises_stops_its_stage_cleanly_naming_it_and_how_to_skip_it(tmp_path):
    plugins.registry().add(TaskPlugin, name="flaky-plugins:tasks", distribution="flaky-plugins")
    preset = tmp_path / "eval.toml"
    preset.write_text(MODEL_THEN_CHAT_EVAL)
    run = runner.open_or_create(str(preset), "evaluated", [])
    with pytest.raises(StageError) as failed:
        runner.run_pipeline(run, echo=False)
    message = str(failed.value)
    assert message.startswith("stage 'chat-eval' stopped: task 'flaky-task' of plugin 'flaky-plugins:tasks' raised "
                              "RuntimeError: row 2 of flaky.jsonl is not valid JSON")
    assert "--set chat-eval.tasks=" in message and "pip uninstall flaky-plugins" in message
    status = run.status("chat-eval")
    assert status["state"] == "failed" and status["error"] == message
    assert [m["task"] for m in run.metrics("chat-eval")] == ["spellingbee"]  # the task before it is kept

    # going on without it, as the message says: the finished task is not evaluated again
    runner.open_or_create(None, "evaluated", ["chat-eval.tasks=spellingbee[:2], starter-arithmetic[:2]"])
    runner.run_pipeline(run, echo=False)
    assert run.status("chat-eval")["state"] == "done"
    assert [m["task"] for m in run.metrics("chat-eval")] == ["spellingbee", "starter-arithmetic"]
