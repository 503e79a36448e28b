"""The wandb observer: silent unless a run name is given and wandb is importable; then it logs each stage."""
import sys
from pathlib import Path

from nanochat import plugins, runner

FAKE = str(Path(__file__).parent / "fixtures" / "fake_wandb")


def _run(tmp_path, name):
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 2\n')
    runner.run_pipeline(runner.open_or_create(str(preset), name, []), echo=False)


def test_wandb_observer_logs_each_step_when_a_run_name_is_given(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(FAKE)
    monkeypatch.setenv("WANDB_RUN", "exp1")
    sys.modules.pop("wandb", None)
    import wandb
    wandb.calls.clear()
    _run(tmp_path, "logged")
    kinds = [c[0] for c in wandb.calls]
    assert kinds == ["init", "log", "log", "finish"]
    assert wandb.calls[0][1]["name"] == "exp1-count" and wandb.calls[0][1]["group"] == "logged"
    assert wandb.calls[1][1:] == ({"step": 1}, 1)
    sys.modules.pop("wandb", None)


def test_wandb_observer_is_off_without_a_run_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(FAKE)
    monkeypatch.delenv("WANDB_RUN", raising=False)
    sys.modules.pop("wandb", None)
    import wandb
    wandb.calls.clear()
    _run(tmp_path, "quiet")
    assert wandb.calls == []
    assert not plugins.registry().get("observer", "wandb").is_enabled({})
    monkeypatch.setenv("WANDB_RUN", "dummy")
    assert not plugins.registry().get("observer", "wandb").is_enabled({})
    sys.modules.pop("wandb", None)
