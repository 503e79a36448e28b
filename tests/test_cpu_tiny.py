"""The main job end to end: `nanochat run --preset cpu-tiny`, every stage, shrunk to seconds, then chat with it."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


TINY = ["tokenizer.vocab_size=1024", "tokenizer.max_chars=2000000", "depth=2", "head_dim=32", "max_seq_len=64",
        "device_batch_size=4", "total_batch_size=512", "num_iterations=3", "eval_every=2", "eval_tokens=512",
        "save_every=2", "compile=off", "pretrain.sample_every=3", "split_tokens=512", "base-eval.samples=1",
        "sample_tokens=8", "max_problems=3", "max_new_tokens=16", "rl.examples_per_step=2", "rl.num_samples=2",
        "rl.device_batch_size=2", "rl.eval_examples=2", "rl.eval_samples=1", "rl.num_iterations=1"]


def test_cpu_tiny_runs_every_stage_end_to_end(cli, nanochat_home):
    args = ["run", "--preset", "cpu-tiny", "--name", "tiny"]
    for item in TINY:
        args += ["--set", item]
    result = cli(*args, timeout=900)
    assert "run 'tiny' finished" in result.stdout
    runs = json.loads(cli("runs", "--json").stdout)
    stages = runs[0]["stages"]
    assert list(stages) == ["tokenizer", "tokenizer-eval", "pretrain", "base-eval", "midtrain", "chat-eval-mid",
                            "sft", "chat-eval-sft", "rl", "chat-eval-rl"]
    assert set(stages.values()) == {"done"}
    report = (nanochat_home / "runs" / "tiny" / "report.md").read_text()
    for section in ("## Tokenizer training", "## Tokenizer evaluation", "## Base model training",
                    "## Base model evaluation", "## Midtraining", "## Chat evaluation (mid)",
                    "## Supervised finetuning", "## Chat evaluation (sft)", "## Reinforcement learning",
                    "## Chat evaluation (rl)"):
        assert section in report, section
    assert "ChatCORE (these tasks)" in report and "starter-arithmetic" in report and "humaneval" in report
    assert "- val bpb (en): " in report and "- val bpb (zh): " in report  # the starter data is bilingual

    reply = cli("chat", "-p", "What is 2 + 2?", "--max-tokens", "8")
    assert "tiny" in reply.stdout + reply.stderr  # it says which run it loaded
    again = cli("run", "--name", "tiny")
    assert again.stdout.count(": done, skipping") == 10

    # CI's check of the main job reads these files; on a run shrunk to seconds it must say what fell short
    check = subprocess.run([sys.executable, str(REPO / ".ci" / "check_main_job.py")], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "NANOCHAT_HOME": str(nanochat_home)})
    assert check.returncode == 1, check.stdout + check.stderr
    assert "ok   stage chat-eval-rl is done" in check.stdout and "report.md written" in check.stdout
    assert "FAIL pretraining val bpb" in check.stdout and "main job check:" in check.stderr
