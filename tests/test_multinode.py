"""Multi-node runs on one machine: two "nodes" of one process each (torchrun over gloo on 127.0.0.1), with a
disk each or one shared disk, against one node of two processes. Same processes, same collectives, so the
models match exactly (fp32, no compile)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanochat import runner

EXE = str(Path(sys.executable).parent / "nanochat")
PRESET = """
description = "tokenizer, pretraining, SFT and a chat eval, shrunk to seconds"
[defaults]
device = "cpu"
dataset = "starter"
dtype = "fp32"
compile = "off"
[[stage]]
name = "tokenizer"
vocab_size = 1024
max_chars = 2000000
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 64
window_pattern = "L"
device_batch_size = 4
total_batch_size = 512
num_iterations = 4
warmup_steps = 1
eval_every = 2
eval_tokens = 512
sample_every = -1
save_every = 2
[[stage]]
name = "sft"
source = "base"
tasks = "starter-chat, starter-arithmetic[:200]"
val_tasks = "starter-chat@test[:20]"
num_iterations = 3
eval_every = 2
eval_tokens = 512
save_every = 2
[[stage]]
name = "chat-eval"
source = "sft"
tasks = "starter-arithmetic"
max_problems = 4
max_new_tokens = 8
"""
STAGES = ["tokenizer", "pretrain", "sft", "chat-eval"]
TRAINING = STAGES[:3]  # what is compared with one node (chat-eval runs in the shared-disk test)


def free_port_range(count: int) -> int:
    """A base port with `count` free ports after it (stage i meets on base + i)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def start(home: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([EXE, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NANOCHAT_HOME": str(home), **(env or {})})


def two_nodes(preset, homes, port, envs=({}, {}), stages=STAGES):
    """Node 0 and node 1 of one run, started together; (exit code, output) of each."""
    only = [arg for stage in stages for arg in ("--stage", stage)]
    procs = [start(home, "--preset", preset, "--name", "mn", "--nnodes", "2", "--node-rank", str(k),
                   "--master-addr", "127.0.0.1", "--master-port", str(port), *only, env=env)
             for k, (home, env) in enumerate(zip(homes, envs))]
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


def sft_weights(home: Path, name: str) -> dict:
    from nanochat.runs import Run
    run = Run(home / "runs" / name)
    return torch.load(run.dir / run.status("sft")["artifacts"]["sft-model"] / "model.pt", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "mn.toml"
    path.write_text(PRESET)
    return str(path)


@pytest.fixture(scope="module")
def one_node(preset, tmp_path_factory):
    """The reference: one node, two processes."""
    home = tmp_path_factory.mktemp("one-node")
    proc = start(home, "--preset", preset, "--name", "mn", "--nproc-per-node", "2", *(
        arg for stage in TRAINING for arg in ("--stage", stage)))
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    return sft_weights(home, "mn")


def test_two_nodes_with_a_disk_each_survive_a_dead_node_and_match_one_node(preset, one_node, tmp_path):
    homes = [tmp_path / "node0", tmp_path / "node1"]
    port = free_port_range(len(STAGES))
    # node 1 dies (SIGKILL) at its 3rd training step, after the step-2 checkpoint: node 0 must stop too, saying so
    (code0, out0), (code1, out1) = two_nodes(preset, homes, port, envs=({}, {"NANOCHAT_FAULT": "step@3"}),
                                             stages=TRAINING)
    assert code0 != 0 and code1 != 0, out0 + out1
    assert "stage 'pretrain' failed under torchrun on node 0 of 2" in out0, out0
    assert "lost contact with another process of the job" in out0 and "on every node" in out0, out0
    assert "stage 'pretrain' failed under torchrun on node 1 of 2" in out1, out1
    # both come back: the run resumes from the checkpoint both nodes have, and finishes
    (code0, out0), (code1, out1) = two_nodes(preset, homes, port, stages=TRAINING)
    assert code0 == 0 and code1 == 0, out0 + out1
    assert "tokenizer: done, skipping" in out1 and "resumed from step 2" in out0
    from nanochat.runs import Run
    for home in homes:  # every node's driver learnt each stage's outcome, in its own copy of the run
        run = Run(home / "runs" / "mn")
        assert [run.status(s)["state"] for s in TRAINING] == ["done"] * 3
        assert (run.dir / run.status("tokenizer")["artifacts"]["tokenizer"]).exists()  # shipped to node 1
    node1 = Run(homes[1] / "runs" / "mn")
    step = node1.dir / node1.status("pretrain")["artifacts"]["base-model"]
    assert sorted(p.name for p in step.glob("*.pt")) == ["model.pt", "rank1.pt"]  # its own shard, not node 0's
    assert not (node1.dir / "report.md").exists() and (homes[0] / "runs" / "mn" / "report.md").exists()
    assert same_weights(sft_weights(homes[0], "mn"), one_node)
    assert same_weights(sft_weights(homes[1], "mn"), one_node)


def test_two_nodes_on_a_shared_disk_match_one_node(preset, one_node, tmp_path):
    home = tmp_path / "shared"
    (code0, out0), (code1, out1) = two_nodes(preset, [home, home], free_port_range(len(STAGES)))
    assert code0 == 0 and code1 == 0, out0 + out1
    from nanochat.runs import Run
    run = Run(home / "runs" / "mn")
    assert [run.status(s)["state"] for s in STAGES] == ["done"] * 4
    assert run.status("pretrain")["attempts"] == 1  # only node 0's driver counts attempts
    step = run.dir / run.status("pretrain")["artifacts"]["base-model"]
    assert sorted(p.name for p in step.glob("*.pt")) == ["model.pt", "rank0.pt", "rank1.pt"]
    assert same_weights(sft_weights(home, "mn"), one_node)


def test_nodes_started_with_other_settings_are_refused_with_the_difference(preset, tmp_path):
    homes = [tmp_path / "node0", tmp_path / "node1"]
    port = free_port_range(len(STAGES))
    procs = [start(home, "--preset", preset, "--name", "odd", "--nnodes", "2", "--node-rank", str(k),
                   "--master-port", str(port), *extra)
             for k, (home, extra) in enumerate(zip(homes, ([], ["--set", "pretrain.depth=3"])))]
    results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    for code, out in results:
        assert code != 0
        assert "node 1 was started with other settings or code than node 0" in out, out
        assert "plan.pretrain.depth: node 0 has 2, node 1 has 3" in out, out


@pytest.mark.parametrize("launch, name, message", [
    (runner.Launch(nnodes=2, node_rank=2), "x", "--node-rank 2 must be from 0 to 1"),
    (runner.Launch(nnodes=2, node_rank=1), None, "give the run a --name, the same on every node"),
    (runner.Launch(nnodes=0), "x", "--nnodes 0 must be at least 1"),
    (runner.Launch(master_port=80), "x", "--master-port 80 must be from 1024 to 65000"),
])
def test_impossible_launches_are_refused_before_a_run_exists(launch, name, message):
    with pytest.raises(runner.StageError, match=message.replace("-", r"\-")):
        runner.check_launch(launch, name)


def test_each_node_has_its_own_lock_on_a_shared_disk(preset):
    from nanochat.runs import RunBusy
    run = runner.open_or_create(preset, "locks", [])
    with run.lock(0), run.lock(1):  # node 0 and node 1 drive the same run folder side by side
        with pytest.raises(RunBusy, match="node 1 of run 'locks' is being driven by pid"):
            with run.lock(1):
                pass


def test_a_node_that_creates_the_run_second_joins_it(preset):
    from nanochat.runs import Run, RunExists
    first = runner.open_or_create(preset, "both", ["pretrain.depth=3"])
    with pytest.raises(RunExists):
        Run.create("both", {"stages": []})  # run.json is never replaced by a second creator
    again = runner.open_or_create(preset, "both", ["pretrain.depth=3"])  # node 1, a moment later
    assert again.dir == first.dir and again.info["overrides"] == ["pretrain.depth=3"]  # the same --set: no change


def test_differences_name_every_differing_setting():
    from nanochat.nodes import differences
    ours = {"stage": "sft", "plan": {"pretrain": {"depth": 2, "dtype": "fp32"}}, "torch": "2.9"}
    theirs = {"stage": "pretrain", "plan": {"pretrain": {"depth": 3, "dtype": "fp32"}}, "torch": "2.9"}
    assert differences(ours, theirs) == [("plan.pretrain.depth", 2, 3), ("stage", "sft", "pretrain")]
    assert differences(ours, ours) == []
