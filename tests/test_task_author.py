"""A task author's path through the real CLI: `plugins new` -> `plugins install` -> listed -> `nanochat eval`
on a tiny trained model -> a `--from` fine-tune on a mixture with the new task -> evaluated again; broken
plugins in every listing with their traceback; early checks, refused starts that leave nothing, `runs rm`."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nanochat import evals, model_source, runner
from nanochat.runs import Run, file_lock

NANOCHAT = str(Path(sys.executable).parent / "nanochat")
TINY = """
[defaults]
dataset = "starter"
device_batch_size = 4
total_batch_size = 256
compile = "off"
dtype = "fp32"
eval_tokens = 256
[[stage]]
name = "tokenizer"
vocab_size = 600
max_chars = 1500000
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 64
num_iterations = 2
sample_every = -1
[[stage]]
name = "sft"
source = "base"
tasks = "starter-chat[:100], starter-arithmetic[:50]"
val_tasks = ""
num_iterations = 2
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run (tokenizer, pretrain, sft) trained once through the CLI; tests copy it into their own home."""
    home = tmp_path_factory.mktemp("trained-home")
    preset = home / "tiny.toml"
    preset.write_text(TINY)
    subprocess.run([NANOCHAT, "run", "--preset", str(preset), "--name", "tiny"], check=True, capture_output=True,
                   text=True, timeout=600, env={**os.environ, "NANOCHAT_HOME": str(home), "NANOCHAT_PLUGINS": ""})
    return home / "runs" / "tiny"


@pytest.fixture
def tiny(trained, nanochat_home):
    shutil.copytree(trained, nanochat_home / "runs" / "tiny")
    return Run.open("tiny")


def scaffold(cli, tmp_path, name) -> Path:
    out = cli("plugins", "new", name, "--kind", "task", "--dir", str(tmp_path)).stdout
    assert f"task {name!r}" in out
    return tmp_path / f"nanochat-{name}"


def test_scaffold_installed_listed_evaluated_and_fine_tuned_with_from(cli, tmp_path, tiny):
    folder = scaffold(cli, tmp_path, "capitals")
    assert {p.name for p in folder.iterdir()} >= {"pyproject.toml", "nanochat_capitals", "tests", "README.md"}
    # the scaffold's own test passes as written
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
                   check=True, capture_output=True, cwd=folder, env={**os.environ, "PYTHONPATH": str(folder)})
    env = {"NANOCHAT_PLUGINS": "nanochat-capitals"}
    try:
        out = cli("plugins", "install", "--offline", "-e", str(folder), env=env).stdout
        assert "capitals" in out and "nanochat-capitals" in out
        rows = json.loads(cli("plugins", "--kind", "task", "--json", env=env).stdout)
        assert {"name": "capitals", "kind": "task", "version": "0.1.0", "distribution": "nanochat-capitals",
                "status": "ok", "error": None} in rows
        assert "capitals" in cli("tasks", "list", env=env).stdout

        # score the trained model on the new task and a built-in one, slices and splits as written
        out = cli("eval", "--run", "tiny", "--stage", "sft", "--tasks", "capitals, starter-arithmetic@test[:3]",
                  "--max-new-tokens", "6", "--device", "cpu", env=env).stdout
        assert "capitals" in out and "saved:" in out
        (record,) = evals.records(tiny)
        assert record["state"] == "done" and record["stage"] == "sft" and record["step"] == 2
        assert record["tasks"] == "capitals, starter-arithmetic@test[:3]"
        assert set(record["scores"]) == {"capitals", "starter-arithmetic"}
        assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
        assert record["results"]["capitals"]["problems"] == 4 and record["results"]["starter-arithmetic"]["problems"] == 3
        assert record["checkpoint"].endswith("checkpoints/sft/step_000002") and record["started"] and record["finished"]
        listed = cli("runs", env=env).stdout
        assert f"eval {record['id']}: done" in listed and "capitals" in listed

        # a new run that fine-tunes that model on a mixture with the new task: no tokenizer, no pretraining
        out = cli("run", "--preset", "finetune", "--from", "tiny:sft", "--name", "ft", "--device", "cpu",
                  "--set", "sft.tasks=capitals*3, starter-chat[:20]", "--set", "sft.val_tasks=capitals@test",
                  "--set", "sft.num_iterations=50", "--set", "compile=off", "--set", "chat-eval.tasks=capitals",
                  "--set", "chat-eval.max_new_tokens=6", env=env).stdout
        assert "starting from tiny:sft (step 2)" in out
        ft = Run.open("ft")
        assert [s["name"] for s in ft.stages()] == ["sft", "chat-eval"]
        assert ft.info["from"]["run"] == "tiny" and ft.info["from"]["stage"] == "sft"
        assert ft.info["from"]["checkpoint"] == record["checkpoint"]
        assert all(ft.status(s)["state"] == "done" for s in ("sft", "chat-eval"))
        assert "capitals" in ft.status("chat-eval")["summary"]
        # the mixture ran out long before 50 steps: said in the log, the status and the report
        (note,) = ft.status("sft")["notes"]
        assert "of num_iterations=50: the training mixture ran out" in note and "*4" in note
        assert f"note: {note}" in (ft.stage_dir("sft") / "log.txt").read_text()
        report = (ft.dir / "report.md").read_text()
        assert "started from: run tiny, stage sft (step 2)" in report and "the training mixture ran out" in report

        cli("eval", "--run", "ft", "--tasks", "capitals", "--max-new-tokens", "6", "--device", "cpu", env=env)
        (again,) = evals.records(ft)
        assert again["stage"] == "sft" and again["state"] == "done" and set(again["scores"]) == {"capitals"}
        assert again["checkpoint"].startswith(str(ft.dir))
    finally:
        cli("plugins", "uninstall", "nanochat-capitals", "--yes", check=False)
    assert "capitals" not in cli("tasks", "list", env=env).stdout


def test_broken_scaffolds_show_in_every_listing_with_their_traceback(cli, tmp_path):
    at_import = scaffold(cli, tmp_path, "bad-import")
    module = at_import / "nanochat_bad_import" / "__init__.py"
    module.write_text("raise RuntimeError('boom at import')\n" + module.read_text())
    at_register = scaffold(cli, tmp_path, "bad-register")
    module = at_register / "nanochat_bad_register" / "__init__.py"
    module.write_text(module.read_text().replace("    register(BadRegisterTask())",
                                                 "    raise ValueError('boom at registration')"))
    clash = scaffold(cli, tmp_path, "clash")
    module = clash / "nanochat_clash" / "__init__.py"
    module.write_text(module.read_text().replace('name = "clash"', 'name = "starter-chat"'))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", "--no-deps", "--target",
                    str(site), str(at_import), str(at_register), str(clash)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(site), "NANOCHAT_PLUGINS": "nanochat-bad-import,nanochat-bad-register,nanochat-clash"}

    for kind in (None, "task", "backend"):
        args = ["plugins", "--json", "-v"] + (["--kind", kind] if kind else [])
        rows = {r["name"]: r for r in json.loads(cli(*args, env=env).stdout)}
        broken = {k: r for k, r in rows.items() if r["status"] == "broken"}
        assert set(broken) == {"nanochat-bad-import:bad-import", "nanochat-bad-register:bad-register",
                               "nanochat-clash:clash"}, kind
        assert "RuntimeError: boom at import" in broken["nanochat-bad-import:bad-import"]["traceback"]
        assert 'nanochat_bad_import/__init__.py", line 1' in broken["nanochat-bad-import:bad-import"]["traceback"]
        assert "ValueError: boom at registration" in broken["nanochat-bad-register:bad-register"]["traceback"]
        assert "in nanochat_task" in broken["nanochat-bad-register:bad-register"]["traceback"]
        assert "NameClash" in broken["nanochat-clash:clash"]["traceback"]
        assert "registered by plugin 'tasks' and again" in broken["nanochat-clash:clash"]["error"]

    table = cli("plugins", "--kind", "task", env=env)
    assert "nanochat-bad-import:bad-import" in table.stdout and "Traceback" not in table.stdout
    assert "`nanochat plugins -v` shows" in table.stderr
    verbose = cli("plugins", "--kind", "task", "-v", env=env).stdout
    assert "--- plugin 'nanochat-bad-register:bad-register'" in verbose and "Traceback (most recent call last)" in verbose
    assert "traceback" not in json.loads(cli("plugins", "--json", env=env).stdout)[0]


def test_plugins_new_refuses_bad_names_kinds_and_existing_folders(cli, tmp_path):
    scaffold(cli, tmp_path, "quiz")
    again = cli("plugins", "new", "quiz", "--dir", str(tmp_path), check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = cli("plugins", "new", "My_Quiz", "--dir", str(tmp_path), check=False)
    assert bad.returncode == 2 and "lowercase letters" in bad.stderr
    kind = cli("plugins", "new", "opt", "--kind", "optimizer", "--dir", str(tmp_path), check=False)
    assert kind.returncode == 2 and "--kind task" in kind.stderr
    nope = cli("plugins", "uninstall", "numpy", "--yes", check=False)
    assert nope.returncode == 2 and "not an installed nanochat plugin" in nope.stderr


def test_misspelled_task_or_dataset_refused_at_start_leaving_nothing(cli, tiny, tmp_path):
    bad = cli("run", "--preset", "finetune", "--from", "tiny", "--name", "typo", "--set", "sft.tasks=starter-chatt",
              check=False)
    assert bad.returncode == 2 and "stage 'sft': tasks = 'starter-chatt': unknown task 'starter-chatt'" in bad.stderr
    assert "valid tasks: " in bad.stderr and "starter-arithmetic, starter-chat" in bad.stderr
    bad = cli("run", "--preset", "cpu-tiny", "--name", "typo", "--set", "dataset=startr", check=False)
    assert bad.returncode == 2 and "dataset = 'startr': unknown dataset 'startr'; valid datasets:" in bad.stderr
    bad = cli("run", "--preset", "cpu-tiny", "--name", "typo", "--set", "chat-eval-sft.tasks=starter-chat",
              check=False)
    assert bad.returncode == 2 and "is conversations (training data) and cannot be scored" in bad.stderr
    only_eval = tmp_path / "eval-only.toml"
    only_eval.write_text('[[stage]]\nname = "chat-eval"\nsource = "sft"\ntasks = "starter-arithmetic"\n')
    bad = cli("run", "--preset", str(only_eval), "--name", "typo", check=False)
    assert bad.returncode == 2 and "needs 'tokenizer' but no earlier stage" in bad.stderr and "--from" in bad.stderr
    no_from = cli("run", "--preset", "finetune", "--name", "typo", check=False)
    assert no_from.returncode == 2 and "add --from RUN:STAGE" in no_from.stderr
    own_tokenizer = cli("run", "--preset", "cpu-tiny", "--from", "tiny:sft", "--name", "typo", check=False)
    assert own_tokenizer.returncode == 2 and "trains its own tokenizer" in own_tokenizer.stderr
    assert not Run.exists("typo")


def test_a_run_refused_after_creation_is_removed(cli, tmp_path):
    # a run that passes the plan but is refused before its first stage starts (here: an unknown --stage)
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 1\n'
                      '[[stage]]\nname = "read"\nstage = "counting_stage:ReaderStage"\n')
    bad = cli("run", "--preset", str(preset), "--name", "gone", "--stage", "nope", check=False)
    assert bad.returncode == 2 and "unknown stage(s) nope" in bad.stderr
    assert "was not started, so it was removed" in bad.stderr and not Run.exists("gone")


def test_runs_rm_asks_refuses_while_running_and_protects_from_sources(cli, tiny):
    child = runner.open_or_create("finetune", "child", [], source=model_source.parse("tiny:sft"))
    no_tty = cli("runs", "rm", "child", check=False)
    assert no_tty.returncode == 2 and "needs confirmation: add --yes" in no_tty.stderr and child.dir.exists()
    used = cli("runs", "rm", "tiny", "--yes", check=False)
    assert used.returncode == 2 and "child" in used.stderr and "--force" in used.stderr
    with child.lock():
        busy = cli("runs", "rm", "child", "--yes", check=False)
    assert busy.returncode == 2 and "is being driven by pid" in busy.stderr and child.dir.exists()
    scoring = evals.evals_dir(child) / "20250101-000000-sft"
    evals.write(scoring, stage="sft", state="running", started="2025-01-01T00:00:00", scores={})
    with file_lock(scoring / "eval.lock", "evaluation"):
        busy = cli("runs", "rm", "child", "--yes", check=False)
    assert busy.returncode == 2 and "evaluation 20250101-000000-sft of run 'child' is running" in busy.stderr
    assert evals.records(child)[0]["state"] == "interrupted"  # its process is gone: no longer running
    assert "removed run 'child'" in cli("runs", "rm", "child", "--yes").stdout
    assert not child.dir.exists()
    cli("runs", "rm", "tiny", "--yes")
    missing = cli("runs", "rm", "tiny", "--yes", check=False)
    assert missing.returncode == 2 and "no run named 'tiny'" in missing.stderr


def test_eval_resumes_after_an_interruption_and_runs_under_torchrun(cli, tiny, monkeypatch):
    from nanochat import cli as cli_module
    from nanochat.evaluation import chat
    calls = []
    original = chat.evaluate_generative

    def interrupted_second(engine, tok, view, **kw):
        calls.append(view.task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(engine, tok, view, **kw)
    monkeypatch.setattr(chat, "evaluate_generative", interrupted_second)
    argv = ["eval", "--run", "tiny", "--tasks", "starter-arithmetic[:2], spellingbee[:2]", "--max-new-tokens", "6",
            "--device", "cpu"]
    assert cli_module.main(argv) == 130
    (first,) = evals.records(tiny)
    assert first["state"] == "interrupted" and set(first["scores"]) == {"starter-arithmetic"}
    assert cli_module.main(argv) == 0
    (record,) = evals.records(tiny)  # the same evaluation, carried on
    assert record["id"] == first["id"] and record["state"] == "done"
    assert calls == ["starter-arithmetic", "spellingbee", "spellingbee"]
    assert "(already evaluated)" in (evals.evals_dir(tiny) / record["id"] / "log.txt").read_text()

    cli("eval", "--run", "tiny", "--tasks", "starter-arithmetic[:2], spellingbee[:2]", "--max-new-tokens", "6",
        "--device", "cpu", "--nproc-per-node", "2")
    two = evals.records(tiny)[-1]
    assert two["id"] != record["id"] and two["state"] == "done" and two["world_size"] == 2
    assert two["scores"] == record["scores"]
    assert {r["problems"] for r in two["results"].values()} == {2}


def test_the_documented_task_examples_and_the_example_plugin_are_task_subclasses_that_work():
    import re

    from nanochat import hookimpl, plugins
    from nanochat.tasks import Task, validate_conversation
    repo = Path(__file__).resolve().parent.parent
    sources = {}
    for doc in ("docs/plugins.md", "docs/tasks.md", "docs/zh-CN/plugins.md", "docs/zh-CN/tasks.md"):
        blocks = re.findall(r"```python\n(.*?)```", (repo / doc).read_text(encoding="utf-8"), re.S)
        sources.update({f"{doc}#{i}": b for i, b in enumerate(blocks) if "def nanochat_task" in b})
    sources["example-task"] = (repo / "plugins/example-task/nanochat_example_task/__init__.py").read_text()
    assert len(sources) == 5
    for where, code in sources.items():
        namespace = {"__name__": where}
        exec(compile(code, where, "exec"), namespace)
        registry = plugins.Registry()
        assert registry.add(type("P", (), {"nanochat_task": staticmethod(namespace["nanochat_task"])}),
                            name=where).status == "ok", where
        (task,) = [registry.get("task", n) for n in registry.names("task")]
        assert isinstance(task, Task) and "example" not in type(task).__dict__, where  # one way: make_example
        for split in task.splits:
            conversation = validate_conversation(task.example(split, 0))
            assert task.evaluate(conversation, conversation["messages"][-1]["content"]) is True, where
    assert hookimpl  # the documented examples import it themselves


def test_names_are_resolved_per_stage_type(tmp_path):
    from nanochat.stages import StageError
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "tokenizer"\n[[stage]]\nname = "pretrain"\n'
                      '[[stage]]\nname = "core-eval"\ntasks = "hellaswag, jeopardy"\n'  # CORE bundle labels
                      '[[stage]]\nname = "chat-eval"\nsource = "base"\ntasks = "spellingbee*2, starter-arithmetic"\n')
    run = runner.open_or_create(str(preset), "kinds", ["dataset=starter"])
    assert [s["name"] for s in run.stages()] == ["tokenizer", "pretrain", "core-eval", "chat-eval"]
    with pytest.raises(StageError, match=r"stage 'chat-eval': tasks = 'spellingbee, spellingbee@test': task "
                                         r"'spellingbee' is listed twice"):
        runner.open_or_create(str(preset), "twice", ["chat-eval.tasks=spellingbee, spellingbee@test"])
    with pytest.raises(StageError, match=r"task 'spellingbee' has no split 'dev'; its splits are train, test"):
        runner.open_or_create(str(preset), "split", ["chat-eval.tasks=spellingbee@dev"])
    assert not Run.exists("twice") and not Run.exists("split")


def test_eval_of_a_checkpoint_outside_any_run_needs_its_tokenizer(cli, tiny, tmp_path, nanochat_home):
    from nanochat.stages import find_artifact
    elsewhere = tmp_path / "shared" / "model"
    shutil.copytree(tiny.checkpoint_dir("sft") / "step_000002", elsewhere)
    shutil.copytree(find_artifact(tiny, "tokenizer"), tmp_path / "shared" / "tokenizer")
    bad = cli("eval", "--checkpoint", str(elsewhere), "--tasks", "spellingbee[:1]", check=False)
    assert bad.returncode == 2 and "its tokenizer is unknown" in bad.stderr and "--tokenizer DIR" in bad.stderr
    cli("eval", "--checkpoint", str(elsewhere), "--tokenizer", str(tmp_path / "shared" / "tokenizer"),
        "--tasks", "spellingbee[:1]", "--max-new-tokens", "4", "--device", "cpu")
    (record,) = evals.records(None)
    assert record["state"] == "done" and record["stage"] is None and record["step"] == 2
    assert (nanochat_home / "evals" / record["id"] / "result.json").exists()
    both = cli("eval", "--run", "tiny", "--checkpoint", str(elsewhere), "--tasks", "spellingbee", check=False)
    assert both.returncode == 2 and "not both" in both.stderr
