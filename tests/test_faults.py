"""kill -9 anywhere (NANOCHAT_FAULT): every training and evaluation stage is killed at each fault point it passes,
resumed with `nanochat run`, and must end with the uninterrupted run's model, metrics and report, bit for bit.

One uninterrupted run of a tiny pipeline is shared by the whole module; each case is nanochat.fault_matrix.run_case.
"""
import concurrent.futures
import os
import shutil

import pytest

from core_bundle import write_bundle
from nanochat import faults
from nanochat.fault_matrix import differences, forget, nanochat, outcome, run_case
from nanochat.runs import Run

PRESET = """
[defaults]
dataset = "starter"
device = "cpu"
compile = "off"
dtype = "fp32"
[[stage]]
name = "tokenizer"
vocab_size = 512
max_chars = 300000
threads = 1
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 32
window_pattern = "SL"
device_batch_size = 2
total_batch_size = 128
num_iterations = 6
eval_every = 3
eval_tokens = 256
save_every = 2
sample_every = -1
warmup_steps = 2
[[stage]]
name = "base-eval"
split_tokens = 256
device_batch_size = 2
samples = 1
sample_tokens = 8
[[stage]]
name = "core-eval"
max_per_task = 3
[[stage]]
name = "midtrain"
tasks = "starter-chat[:60], starter-arithmetic[:40]"
val_tasks = "starter-chat@test[:8]"
device_batch_size = 2
total_batch_size = 128
num_iterations = 6
eval_every = 3
eval_tokens = 128
save_every = 2
[[stage]]
name = "sft"
tasks = "starter-chat[:60], starter-arithmetic[:40]"
val_tasks = "starter-chat@test[:8]"
num_iterations = 6
eval_every = 3
eval_tokens = 128
save_every = 2
[[stage]]
name = "rl"
task = "starter-arithmetic"
num_iterations = 6
examples_per_step = 2
num_samples = 2
device_batch_size = 2
max_new_tokens = 8
eval_examples = 2
eval_samples = 1
eval_every = 3
save_every = 2
[[stage]]
name = "chat-eval"
source = "rl"
tasks = "starter-arithmetic[:3], spellingbee[:2], spellingbee@train[:2]"
max_new_tokens = 8
"""

# (stage, point@visit) -> where the resumed attempt must start: "step N" (its checkpoint), "N tasks kept"
# (evaluations finished before the kill), "tokenizer kept" (the trained files), or "afresh".
MATRIX = {
    ("tokenizer", "loader@50"): "afresh",
    ("tokenizer", "checkpoint@1"): "afresh",
    ("tokenizer", "metrics@2"): "tokenizer kept",
    ("tokenizer", "status@2"): "tokenizer kept",
    ("pretrain", "step@4"): "step 2",
    ("pretrain", "checkpoint@2"): "step 2",
    ("pretrain", "metrics@6"): "step 2",
    ("pretrain", "status@2"): "step 6",
    ("pretrain", "loader@9"): "step 2",
    ("base-eval", "step@1"): "afresh",
    ("base-eval", "loader@2"): "afresh",
    ("base-eval", "metrics@1"): "afresh",
    ("base-eval", "status@2"): "afresh",
    ("core-eval", "step@8"): "2 tasks kept",
    ("core-eval", "loader@2"): "1 tasks kept",
    ("core-eval", "metrics@4"): "3 tasks kept",
    ("core-eval", "status@2"): "6 tasks kept",
    ("midtrain", "step@4"): "step 2",
    ("midtrain", "checkpoint@2"): "step 2",
    ("midtrain", "metrics@6"): "step 2",
    ("midtrain", "status@2"): "step 6",
    ("midtrain", "loader@12"): "step 2",
    ("sft", "step@3"): "step 2",
    ("sft", "checkpoint@3"): "step 4",
    ("sft", "metrics@4"): "step 2",
    ("sft", "status@2"): "step 6",
    ("sft", "loader@9"): "step 2",
    ("rl", "step@5"): "step 4",
    ("rl", "checkpoint@2"): "step 2",
    ("rl", "metrics@4"): "step 2",
    ("rl", "status@2"): "step 6",
    ("rl", "loader@5"): "step 2",
    ("chat-eval", "step@5"): "1 tasks kept",
    ("chat-eval", "loader@3"): "2 tasks kept",
    ("chat-eval", "metrics@2"): "1 tasks kept",
    ("chat-eval", "status@2"): "3 tasks kept",
}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every case is compared with, and the environment the cases run in."""
    root = tmp_path_factory.mktemp("faults")
    (root / "tiny.toml").write_text(PRESET)
    env = {**os.environ, "NANOCHAT_HOME": str(root / "home"), "NANOCHAT_EVAL_BUNDLE": str(write_bundle(root)),
           "OMP_NUM_THREADS": "1"}  # tiny models: one thread is faster, above all on a busy machine
    env.pop("NANOCHAT_FAULT", None)
    done = nanochat("run", "--preset", str(root / "tiny.toml"), "--name", "straight", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Run(root / "home" / "runs" / "straight"), env


@pytest.fixture(scope="module")
def cases(straight, request, tmp_path_factory):
    """Every selected case, run two at a time (each is two `nanochat run` processes of one thread)."""
    original, env = straight
    chosen = [(item.callspec.params["stage"], item.callspec.params["fault"]) for item in request.session.items
              if item.originalname == "test_kill_anywhere_then_resume_gives_the_uninterrupted_result"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = {key: pool.submit(run_case, original, tmp_path_factory.mktemp("case"), *key, env) for key in chosen}
    return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("stage,fault", list(MATRIX), ids=[f"{s}-{f}" for s, f in MATRIX])
def test_kill_anywhere_then_resume_gives_the_uninterrupted_result(cases, stage, fault):
    case = cases[stage, fault]
    assert case["killed"] and case["killed_at"], case["output"]
    assert case["state_after_kill"] == "running"  # what a power cut leaves behind
    assert case["resumed"] and case["attempts"] == 2, case["output"]
    assert case["resumed_from"] == MATRIX[stage, fault], case["output"]
    assert case["equal"], (case["differs_in"], case["output"])


# cpu-tiny's own numerics with the defaults: dtype and compile left to the backend (bf16 where the CPU has it,
# torch.compile where a C++ compiler is), the machine's threads, and sequences above 128 (the blocked CPU
# attention). No `deterministic`: the model's embeddings keep their backward out of Inductor, so compiled CPU
# steps repeat bit for bit without it.
COMPILED = """
[defaults]
dataset = "starter"
device = "cpu"
[[stage]]
name = "tokenizer"
vocab_size = 512
max_chars = 300000
threads = 1
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 160
window_pattern = "L"
device_batch_size = 2
total_batch_size = 640
num_iterations = 6
eval_every = 3
eval_tokens = 640
save_every = 2
sample_every = -1
warmup_steps = 2
"""


def test_with_the_presets_own_dtype_and_compile_a_killed_run_resumes_bit_for_bit(tmp_path, nanochat_home):
    from nanochat import plugins
    from nanochat.backend import select
    cpu = select("cpu", plugins.registry())
    assert cpu.compile_is_wise(), "no C++ compiler: torch.compile, the default this test is about, cannot run here"
    (tmp_path / "compiled.toml").write_text(COMPILED)
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)
    done = nanochat("run", "--preset", str(tmp_path / "compiled.toml"), "--name", "straight", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    straight = Run.open("straight")
    assert f"{cpu.compute_dtype()}; cpu" in (straight.stage_dir("pretrain") / "log.txt").read_text()
    case = run_case(straight, nanochat_home, "pretrain", "step@4", env)
    assert case["killed"] and case["resumed"] and case["resumed_from"] == "step 2", case["output"]
    assert case["equal"], (case["differs_in"], case["output"])


def test_a_truncated_latest_checkpoint_is_named_and_the_previous_one_used(straight, nanochat_home):
    original, env = straight
    env = {**env, "NANOCHAT_HOME": str(nanochat_home)}
    shutil.copytree(original.dir, nanochat_home / "runs" / "cut")
    run = Run(nanochat_home / "runs" / "cut")
    forget(run, "pretrain")
    killed = nanochat("run", "--name", "cut", "--stage", "pretrain", env={**env, "NANOCHAT_FAULT": "step@6"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    model = run.checkpoint_dir("pretrain") / "step_000004" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    resumed = nanochat("run", "--name", "cut", "--stage", "pretrain", env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{model} is truncated" in resumed.stdout + resumed.stderr
    assert "resumed from step 2" in resumed.stdout
    assert not differences(outcome(run, "pretrain"), outcome(original, "pretrain"))


def test_a_bad_fault_spec_is_named(monkeypatch):
    for bad in ("nowhere", "step@0", "step@x"):
        monkeypatch.setenv("NANOCHAT_FAULT", bad)
        with pytest.raises(ValueError, match=rf"NANOCHAT_FAULT='{bad}' is not valid.*checkpoint@2"):
            faults.hit("step")
    monkeypatch.delenv("NANOCHAT_FAULT")
    faults.hit("step")  # unset: nothing happens
