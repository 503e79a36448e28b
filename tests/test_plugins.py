"""The plugin manager: built-ins through entry points, quarantine, clashes, NANOCHAT_PLUGINS, and one test per hook."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nanochat import backend, hookimpl, plugins, runner
from nanochat.plugins import NameClash, UnknownName


def test_first_party_plugins_load_through_entry_points():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})
    rows = reg.listing()
    assert {("cpu", "backend"), ("cuda", "backend"), ("mps", "backend"), ("starter", "dataset")} <= {
        (r["name"], r["kind"]) for r in rows}
    assert all(r["status"] == "ok" and r["distribution"] == "nanochat" for r in rows)
    assert reg.owner("backend", "cpu").name == "backends"


def test_unknown_name_lists_valid_ones():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})
    with pytest.raises(UnknownName, match="unknown dataset 'fineweb-nope'; valid datasets: .*starter"):
        reg.get("dataset", "fineweb-nope")
    with pytest.raises(UnknownName, match="valid kinds: backend, optimizer, dataset, task, observer"):
        reg.names("widget")


def test_name_clash_raises_naming_both_plugins():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})

    class Impostor:
        @hookimpl
        def nanochat_backend(register):
            register(type("B", (), {"name": "cpu"})())

    with pytest.raises(NameClash, match="backend 'cpu' is registered by plugin 'backends' and again by plugin 'impostor'"):
        reg.add(Impostor, name="impostor")
    assert "impostor" not in reg.plugins and reg.get("backend", "cpu").__class__.__name__ == "CPUBackend"


def test_plugin_whose_hook_raises_is_quarantined_and_the_rest_work():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})

    class Faulty:
        @hookimpl
        def nanochat_task(register):
            raise RuntimeError("the disk is on fire")

    plugin = reg.add(Faulty, name="faulty")
    assert plugin.status == "broken" and "the disk is on fire" in plugin.error
    assert reg.get("backend", "cpu") is not None
    row = next(r for r in reg.listing() if r["name"] == "faulty")
    assert row["status"] == "broken" and row["kind"] is None


def test_unknown_hook_name_is_reported():
    reg = plugins.Registry()

    class Typo:
        @hookimpl
        def nanochat_tasks(register):
            pass

    plugin = reg.add(Typo, name="typo")
    assert plugin.status == "broken" and "unknown hook 'nanochat_tasks'" in plugin.error


def make_fake_distribution(root: Path) -> None:
    """A real installed-distribution layout (dist-info + modules) that importlib.metadata finds on sys.path."""
    info = root / "fakeplug-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        "[nanochat]\nbroken = fakeplug_broken\nclash = fakeplug_clash\ngood = fakeplug_good\n")
    (root / "fakeplug_broken.py").write_text("import a_module_that_does_not_exist\n")
    (root / "fakeplug_clash.py").write_text(textwrap.dedent("""
        from nanochat import hookimpl
        class Twin:
            name = "starter"
        @hookimpl
        def nanochat_dataset(register):
            register(Twin())
    """))
    (root / "fakeplug_good.py").write_text(textwrap.dedent("""
        from nanochat import hookimpl
        class Echo:
            name = "echo-task"
            kind = "generative"
        @hookimpl
        def nanochat_task(register):
            register(Echo())
    """))


def test_broken_third_party_plugins_are_quarantined_in_the_real_cli(tmp_path, cli):
    make_fake_distribution(tmp_path / "site")
    env = {"PYTHONPATH": str(tmp_path / "site"), "NANOCHAT_PLUGINS": "fakeplug"}
    result = cli("plugins", "--json", env=env)
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["fakeplug:broken"]["status"] == "broken"
    assert "No module named 'a_module_that_does_not_exist'" in rows["fakeplug:broken"]["error"]
    assert rows["fakeplug:clash"]["status"] == "broken"
    assert "registered by plugin 'datasets' and again by plugin 'fakeplug:clash'" in rows["fakeplug:clash"]["error"]
    assert rows["echo-task"] == {"name": "echo-task", "kind": "task", "version": "1.2.3", "distribution": "fakeplug",
                                 "status": "ok", "error": None}
    assert rows["starter"]["status"] == "ok" and rows["cpu"]["status"] == "ok"
    assert "plugin 'fakeplug:broken' is broken" in result.stderr


def test_nanochat_plugins_env_selects_third_party_plugins(tmp_path, cli):
    make_fake_distribution(tmp_path / "site")
    pythonpath = str(tmp_path / "site")
    none = json.loads(cli("plugins", "--json", env={"PYTHONPATH": pythonpath, "NANOCHAT_PLUGINS": ""}).stdout)
    assert {r["distribution"] for r in none} == {"nanochat"}
    only_good = json.loads(cli("plugins", "--json", "--kind", "task",
                               env={"PYTHONPATH": pythonpath, "NANOCHAT_PLUGINS": "good"}).stdout)
    assert [r["name"] for r in only_good if r["distribution"] == "fakeplug"] == ["echo-task"]
    missing = json.loads(cli("plugins", "--json", env={"PYTHONPATH": pythonpath, "NANOCHAT_PLUGINS": "nope"}).stdout)
    error = next(r for r in missing if r["name"] == "nope")["error"]
    assert "no such plugin is installed" in error and "fakeplug" in error


def test_example_third_party_plugin_installed_with_pip(cli):
    pytest.importorskip("nanochat_example_task", reason="./setup.sh --test installs plugins/example-task")
    rows = json.loads(cli("plugins", "--json", "--kind", "task", env={"NANOCHAT_PLUGINS": "nanochat-example-task"}).stdout)
    row = next(r for r in rows if r["name"] == "reverse-words")
    assert row["distribution"] == "nanochat-example-task" and row["status"] == "ok"


def test_listing_plugins_does_not_import_torch():
    code = ("import sys, io, contextlib; from nanochat.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['plugins', '--json'])\n"
            "import nanochat; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- one test per hook --------------------------------------------------------------------------------
def test_hook_nanochat_backend():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})

    class Turbo:
        name, priority, dist_backend = "turbo", 99, "gloo"

        def is_available(self):
            return True

    class Absent(Turbo):
        name, priority = "absent", 100

        def is_available(self):
            return False

    class TurboPlugin:
        @hookimpl
        def nanochat_backend(register):
            register(Turbo())
            register(Absent())

    reg.add(TurboPlugin, name="turbo-plugin")
    assert backend.select(None, reg).name == "turbo"  # best available, skipping the unavailable one
    assert backend.select("cpu", reg).name == "cpu"  # an explicit choice wins
    with pytest.raises(plugins.PluginError, match="'absent' is not available on this machine; available: .*turbo"):
        backend.select("absent", reg)
    reg.remove("turbo-plugin")
    assert "turbo" not in reg.names("backend")


def test_hook_nanochat_optimizer():
    torch = pytest.importorskip("torch")
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})

    class PlainSGD:
        name, description = "plain-sgd", "SGD for tests"

        def build(self, model, hparams, world):
            return torch.optim.SGD(model.parameters(), lr=hparams["matrix_lr"])

    class SGDPlugin:
        @hookimpl
        def nanochat_optimizer(register):
            register(PlainSGD())

    reg.add(SGDPlugin, name="sgd-plugin")
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = reg.get("optimizer", "plain-sgd").build(model, {"matrix_lr": 0.5}, None)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert torch.allclose(model.weight, torch.full((1, 2), 0.5))


def test_hook_nanochat_dataset(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from nanochat.datasets import Position, ShardedDataset

    for i, n in enumerate([5, 3]):  # two shards: train, then val
        docs = [f"shard{i}-doc{j}" for j in range(n)]
        pq.write_table(pa.table({"text": docs}), tmp_path / f"shard_{i:05d}.parquet", row_group_size=1)

    class Tiny(ShardedDataset):
        name, description = "tiny", "five documents"

        def local_dir(self):
            return tmp_path

    class TinyPlugin:
        @hookimpl
        def nanochat_dataset(register):
            register(Tiny())

    reg = plugins.load({"NANOCHAT_PLUGINS": ""})
    reg.add(TinyPlugin, name="tiny-plugin")
    ds = reg.get("dataset", "tiny")
    assert list(ds.iter_documents("train")) == [f"shard0-doc{j}" for j in range(5)]
    assert list(ds.iter_documents("val")) == [f"shard1-doc{j}" for j in range(3)]
    rank1 = [(docs[0], pos.row_group) for docs, pos in ds.iter_row_groups("train", rank=1, world=2)]
    assert rank1 == [("shard0-doc1", 1), ("shard0-doc3", 3)]
    # Resuming after row group 1 continues with this rank's next group, then wraps into epoch 2.
    it = ds.iter_row_groups("train", rank=1, world=2, start=Position(0, 1, 1), epochs=None)
    assert [(d[0], p.epoch) for d, p in (next(it), next(it), next(it))] == [
        ("shard0-doc3", 1), ("shard0-doc1", 2), ("shard0-doc3", 2)]


def test_hook_nanochat_task():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})

    class Echo:
        name, kind, splits = "echo", "generative", ("test",)

        def num_examples(self, split):
            return 1

        def example(self, split, index):
            return {"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi"}]}

        def evaluate(self, conversation, completion):
            return completion == "hi"

    class EchoPlugin:
        @hookimpl
        def nanochat_task(register):
            register(Echo())

    reg.add(EchoPlugin, name="echo-plugin")
    task = reg.get("task", "echo")
    assert task.evaluate(task.example("test", 0), "hi") and not task.evaluate(task.example("test", 0), "bye")
    assert any(r["name"] == "echo" and r["kind"] == "task" for r in reg.listing())


def test_hook_nanochat_observer(tmp_path):
    seen = []

    class Recorder:
        name = "recorder"

        def is_enabled(self, run_info):
            return run_info["run"] == "observed"

        def on_event(self, event):
            seen.append((event["type"], event["stage"], event.get("record")))

    class RecorderPlugin:
        @hookimpl
        def nanochat_observer(register):
            register(Recorder())

    plugins.registry().add(RecorderPlugin, name="recorder-plugin")
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 2\n')
    runner.run_pipeline(runner.open_or_create(str(preset), "observed", []), echo=False)
    assert seen == [("stage_start", "count", None), ("metrics", "count", {"step": 1}),
                    ("metrics", "count", {"step": 2}), ("stage_done", "count", None)]


def test_the_cpu_compute_dtype_follows_a_bf16_speedup_timed_in_alternation(monkeypatch):
    """bf16 where the CPU has it and its matmuls time >1.2x fp32's, both probed in turn; the probe is
    measured once per machine and cached (a second call times nothing)."""
    import nanochat_backends
    import torch
    from nanochat import backend as probes
    cpu = plugins.load({"NANOCHAT_PLUGINS": ""}).get("backend", "cpu")
    monkeypatch.delenv("NANOCHAT_DTYPE", raising=False)
    timed = []
    real_burst = probes._burst
    monkeypatch.setattr(probes, "_burst", lambda a, b, sync: timed.append(a.dtype) or real_burst(a, b, sync, reps=1))
    speedup = probes.bf16_speedup("cpu", size=64, rounds=3)
    assert speedup > 0 and timed == [torch.float32, torch.bfloat16] * 3  # in turn, not one then the other
    assert probes.bf16_speedup("cpu", size=64, rounds=3) == speedup and len(timed) == 6  # cached
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: True)
    for measured, dtype in ((2.0, torch.bfloat16), (1.1, torch.float32)):
        monkeypatch.setattr(nanochat_backends, "bf16_speedup", lambda device, m=measured: m)
        assert cpu.compute_dtype() == dtype
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: False)
    assert cpu.compute_dtype() == torch.float32
