"""Post-training for real on a tiny model: midtrain -> sft -> rl -> chat-eval, exact resume of SFT, the
all-masked micro-batch, categorical scoring, and the errors users meet."""
import math

import pytest
import torch

from nanochat import hookimpl, plugins, runner, stages
from nanochat.distributed import World
from nanochat.evaluation.chat import chatcore, evaluate_categorical
from nanochat.runs import Run
from nanochat.stages import StageError
from nanochat.tasks import TaskView, render_mc
from nanochat.training import optimizer_step

PRESET = """
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
name = "midtrain"
tasks = "starter-chat[:200], starter-arithmetic[:100]"
val_tasks = "starter-chat@test[:20]"
num_iterations = 2
eval_every = 1
[[stage]]
name = "sft"
tasks = "starter-chat[:200], starter-arithmetic[:100]"
val_tasks = "starter-chat@test[:20]"
num_iterations = 6
eval_every = 3
save_every = 2
[[stage]]
name = "rl"
task = "starter-arithmetic"
num_iterations = 2
examples_per_step = 2
num_samples = 2
device_batch_size = 2
max_new_tokens = 12
eval_examples = 2
eval_samples = 2
eval_every = 2
[[stage]]
name = "chat-eval"
source = "rl"
tasks = "starter-arithmetic[:3], spellingbee[:2]"
max_new_tokens = 12
"""


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "chat.toml"
    path.write_text(PRESET)
    return str(path)


def test_post_training_chain_and_exact_sft_resume(preset, monkeypatch):
    run = runner.open_or_create(preset, "chain", [])
    runner.run_pipeline(run, echo=False, only=["tokenizer", "pretrain", "midtrain"])
    mid = run.metrics("midtrain")
    assert [m["step"] for m in mid if "loss" in m] == [1, 2] and all(math.isfinite(m["loss"]) for m in mid if "loss" in m)
    assert run.status("midtrain")["artifacts"]["mid-model"].startswith("checkpoints/midtrain/step_")

    # SFT, interrupted after its step-4 metrics (a checkpoint exists at step 4), then resumed.
    original = stages.StageContext.metric

    def crash(self, record):
        original(self, record)
        if self.name == "sft" and record.get("step") == 5 and "loss" in record:
            raise KeyboardInterrupt("simulated power cut")
    monkeypatch.setattr(stages.StageContext, "metric", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run_pipeline(run, echo=False, only=["sft"])
    assert run.status("sft")["state"] == "interrupted"
    monkeypatch.setattr(stages.StageContext, "metric", original)
    runner.run_pipeline(run, echo=False, only=["sft"])
    resumed = [(m["step"], m.get("loss"), m.get("val_bpb")) for m in run.metrics("sft")]

    again = runner.open_or_create(preset, "again", [])
    runner.run_pipeline(again, echo=False, only=["tokenizer", "pretrain", "midtrain", "sft"])
    straight = [(m["step"], m.get("loss"), m.get("val_bpb")) for m in again.metrics("sft")]
    assert resumed == straight
    assert "resumed from step 4" in (run.stage_dir("sft") / "log.txt").read_text()
    assert "optimizer warm-started" in (run.stage_dir("sft") / "log.txt").read_text()

    runner.run_pipeline(run, echo=False)  # rl and chat-eval
    rl = run.metrics("rl")
    assert [m["step"] for m in rl if "reward" in m] == [1, 2] and any("pass@2" in m for m in rl)
    summary = run.status("chat-eval")["summary"]
    assert set(summary) == {"starter-arithmetic", "spellingbee", "ChatCORE (these tasks)"}
    assert 0.0 <= summary["ChatCORE (these tasks)"] <= 1.0


def test_sft_needs_the_model_it_starts_from(preset):
    run = runner.open_or_create(preset, "nomid", [])
    with pytest.raises(StageError, match="'mid-model', which stage 'midtrain' of run 'nomid' provides"):
        runner.run_pipeline(run, echo=False, only=["sft"])


def test_a_micro_batch_with_every_target_masked_gives_no_nan():
    from nanochat.model import GPT, GPTConfig
    model = GPT(GPTConfig.from_depth(1, vocab_size=100, sequence_len=8, head_dim=32))
    model.init_weights()
    optimizer = plugins.registry().get("optimizer", "adamw").build(
        model, {"embedding_lr": 0.1, "unembedding_lr": 0.01, "matrix_lr": 0.01, "scalar_lr": 0.1, "weight_decay": 0.0,
                "model_dim": model.config.n_embd}, World())
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"]
    x = torch.randint(0, 100, (2, 8))
    batches = [(x, torch.full((2, 8), -1)), (x, torch.randint(0, 100, (2, 8)))]
    loss = optimizer_step(model, batches, optimizer, World())
    assert math.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_out_of_memory_suggests_a_smaller_device_batch():
    class Hungry(torch.nn.Module):
        def forward(self, x, y):
            raise torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(StageError, match="device_batch_size=4: lower it, e.g. --set device_batch_size=2"):
        optimizer_step(Hungry(), [(torch.zeros(4, 8), torch.zeros(4, 8))], None, World())


class Pick:
    """A categorical task: the right letter is always 'B'."""

    name, kind, splits = "pick-b", "categorical", ("test",)

    def num_examples(self, split):
        return 8

    def example(self, split, index):
        letters = ["A", "B", "C", "D"]
        return {"messages": [{"role": "user", "content": render_mc(f"question {index}", letters, ["w", "x", "y", "z"])},
                             {"role": "assistant", "content": "B"}], "letters": letters}

    def evaluate(self, conversation, completion):
        return completion == conversation["messages"][-1]["content"]


def test_categorical_scoring_reads_the_letter_logits(tmp_path):
    from nanochat.tokenizer import Tokenizer
    tok = Tokenizer.train(["A B C D question choice " * 50], 280)
    b_id = tok.encode("B")[0]

    class LikesB(torch.nn.Module):
        def forward(self, ids):
            logits = torch.zeros(*ids.shape, tok.vocab_size)
            logits[..., b_id] = 1.0
            return logits

    result = evaluate_categorical(LikesB(), tok, TaskView(Pick(), "test"), batch_size=3, device="cpu", world=World())
    assert result == {"accuracy": 1.0, "baseline": 0.25, "problems": 8}
    assert chatcore({"pick-b": result}) == 1.0
    assert chatcore({"pick-b": {"accuracy": 0.25, "baseline": 0.25}}) == 0.0


def test_chat_eval_runs_any_registered_categorical_task(preset):
    class PickPlugin:
        @hookimpl
        def nanochat_task(register):
            register(Pick())
    plugins.registry().add(PickPlugin, name="pick-plugin")
    run = runner.open_or_create(preset, "mc", ["chat-eval.source=base", "chat-eval.tasks=pick-b"])
    runner.run_pipeline(run, echo=False, only=["tokenizer", "pretrain", "chat-eval"])
    summary = Run.open("mc").status("chat-eval")["summary"]
    assert 0.0 <= summary["pick-b"] <= 1.0 and "ChatCORE (these tasks)" in summary
