"""Out of memory at the first step: the device batch is halved and gradient accumulation doubled (same total
batch, same rows, same results), with a note; and a resume with another device batch continues from the same
data position. The device's OOM error comes from a test backend plugin (tests/fixtures/oom_backend.py)."""
import json
import shutil

import pytest

import oom_backend
from nanochat import plugins, runner
from nanochat.runs import Run
from nanochat.stages import StageError

PRESET = """
[defaults]
dataset = "starter"
[[stage]]
name = "tokenizer"
vocab_size = 512
max_chars = 1000000
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 32
window_pattern = "SL"
device_batch_size = 8
total_batch_size = 512
num_iterations = 6
eval_every = 3
eval_tokens = 512
save_every = 2
keep_checkpoints = 10
sample_every = -1
compile = "off"
dtype = "fp32"
warmup_steps = 2
tokenizer_threads = 1
"""


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(PRESET)
    return str(path)


@pytest.fixture
def oom_device():
    registry = plugins.registry()
    registry.add(oom_backend, name="oom-backend-test")
    yield "oom-cpu"
    if oom_backend.OOMBackend.hook is not None:
        oom_backend.OOMBackend.hook.remove()
        oom_backend.OOMBackend.hook = None
    plugins.reset()


def losses(run):
    return [(m["step"], m.get("loss"), m.get("val_bpb")) for m in run.metrics("pretrain")]


def run(preset, name, *overrides):
    return runner.run_pipeline(runner.open_or_create(preset, name, list(overrides)), echo=False)


def close(a, b):
    """Two loss curves over the same rows in other micro-batches: equal up to float summation order."""
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    for (_, l1, b1), (_, l2, b2) in zip(a, b):
        assert (l1 is None and l2 is None) or l1 == pytest.approx(l2, rel=1e-4)
        assert (b1 is None and b2 is None) or b1 == pytest.approx(b2, rel=1e-4)


def test_out_of_memory_at_the_first_step_halves_the_device_batch_and_goes_on(preset, oom_device):
    fits = run(preset, "fits")                                # device batch 8 on a CPU: fits
    oom = run(preset, "oom", f"pretrain.device={oom_device}")  # device batch 8 on a device that holds 2 rows
    close(losses(oom), losses(fits))  # the same rows each step, in micro-batches of 2 instead of 8
    log = oom.stage_dir("pretrain").joinpath("log.txt").read_text()
    assert "out of memory at the first step with device_batch_size=8; went on with 4 and gradient accumulation 4" in log
    assert "device_batch_size=4; went on with 2 and gradient accumulation 8" in log
    report = oom.stage_dir("pretrain").joinpath("report.md").read_text()
    assert "device batch: 2 (out of memory" in report


def test_resume_with_another_device_batch_continues_from_the_same_data(preset):
    broken = run(preset, "broken")
    straight = losses(broken)
    # the run as it is after a crash during step 5: its last checkpoint is step 4's ...
    ckpt = broken.checkpoint_dir("pretrain")
    shutil.rmtree(ckpt / "step_000006")
    (ckpt / "latest.json").write_text(json.dumps({"step": 4}))
    broken.set_status("pretrain", state="interrupted")
    # ... resumed with a quarter of the device batch: the same rows, so the same curve (to float rounding)
    resumed = runner.run_pipeline(runner.open_or_create(None, "broken", ["pretrain.device_batch_size=2"]), echo=False)
    log = resumed.stage_dir("pretrain").joinpath("log.txt").read_text()
    assert "resumed from step 4" in log
    close(losses(resumed), straight)


def test_out_of_memory_later_or_at_one_row_stops_with_the_advice(preset, oom_device):
    oom_backend.OOMBackend.max_rows = 0  # nothing fits, not even one row
    try:
        with pytest.raises(StageError, match="out of memory with device_batch_size=1: lower it"):
            run(preset, "hopeless", f"pretrain.device={oom_device}")
    finally:
        oom_backend.OOMBackend.max_rows = 2
    assert Run.open("hopeless").status("pretrain")["state"] == "failed"


CHAT_PRESET = """
[defaults]
dataset = "starter"
device_batch_size = 4
total_batch_size = 512
compile = "off"
dtype = "fp32"
eval_tokens = 256
[[stage]]
name = "tokenizer"
vocab_size = 600
max_chars = 1000000
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
tasks = "starter-chat[:200], starter-arithmetic[:100]"
val_tasks = "starter-chat@test[:20]"
num_iterations = 6
eval_every = 3
save_every = 2
keep_checkpoints = 10
"""


def test_sft_resumed_with_another_device_batch_reads_on_from_the_same_conversations(tmp_path, monkeypatch):
    from nanochat import checkpoint, stages
    preset = tmp_path / "chat.toml"
    preset.write_text(CHAT_PRESET)
    straight = run(str(preset), "straight")
    cut = runner.open_or_create(str(preset), "cut", [])
    original = stages.StageContext.metric

    def crash(self, record):  # a power cut during step 5 (the last checkpoint is step 4's)
        original(self, record)
        if self.name == "sft" and record.get("step") == 5 and "loss" in record:
            raise KeyboardInterrupt("simulated power cut")
    monkeypatch.setattr(stages.StageContext, "metric", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run_pipeline(cut, echo=False)
    monkeypatch.setattr(stages.StageContext, "metric", original)
    resumed = runner.run_pipeline(runner.open_or_create(None, "cut", ["sft.device_batch_size=2"]), echo=False)
    assert "resumed from step 4" in resumed.stage_dir("sft").joinpath("log.txt").read_text()

    def positions(r):  # where each data stream stands after the last step
        state = checkpoint.load(r.checkpoint_dir("sft")).rank_state(0, 1)
        return {k: v["position"] for k, v in state["loaders"].items()}
    assert positions(resumed) == positions(straight) and len(positions(straight)) == 2
    assert [m["step"] for m in resumed.metrics("sft") if "loss" in m] == list(range(1, 7))
