"""`nanochat chat` end to end: a real tiny checkpoint in a run folder, the real command in a subprocess.

The expected replies come from the engine in this process (greedy, so they are exact): the command
must load the same model and tokenizer, render the same conversation and print the same text.
"""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from nanochat import checkpoint
from nanochat.distributed import World
from nanochat.engine import Engine
from nanochat.model import GPT, GPTConfig
from nanochat.runs import Run
from nanochat.tokenizer import Tokenizer

TEXT = "Hello there! How are you today? I am fine, thank you. 你好，世界！今天天气很好，我们去散步吧。12 + 30 = 42."


def chat_command():
    """`nanochat chat` once the CLI has the command, else the module behind it."""
    from nanochat.cli import build_parser
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["chat", "--help"])
    except SystemExit as exc:
        if exc.code == 0:
            return [os.path.join(os.path.dirname(sys.executable), "nanochat"), "chat"]
    return [sys.executable, "-m", "nanochat.chat_cli"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A NANOCHAT_HOME with run 'tiny': a finished tokenizer stage and an sft stage with a checkpoint."""
    home = tmp_path_factory.mktemp("home")
    run = Run(home / "runs" / "tiny")
    run.dir.mkdir(parents=True)
    stages = [{"name": n, "stage": n, "settings": {}} for n in ("tokenizer", "pretrain", "sft")]
    (run.dir / "run.json").write_text(json.dumps({"name": "tiny", "preset": "test", "stages": stages}))
    tok = Tokenizer.train([TEXT] * 30, 320, threads=1)
    tok.save(run.checkpoint_dir("tokenizer"))
    run.set_status("tokenizer", state="done", artifacts={"tokenizer": "checkpoints/tokenizer"})
    cfg = GPTConfig.from_depth(2, vocab_size=tok.vocab_size, sequence_len=128, head_dim=16, aspect_ratio=32)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    for stage, step in (("pretrain", 5), ("sft", 10)):
        path = checkpoint.save(run.checkpoint_dir(stage), step, world=World(), model=model,
                               meta={"model_config": cfg.to_dict()})
        artifact = "base-model" if stage == "pretrain" else "sft-model"
        run.set_status(stage, state="done", artifacts={artifact: str(path.relative_to(run.dir))})
    return home


@pytest.fixture(scope="module")
def engine(home):
    run = Run(home / "runs" / "tiny")
    model, _ = checkpoint.load_model(run.checkpoint_dir("sft"), "cpu", torch.float32)
    return Engine(model, Tokenizer.load(run.checkpoint_dir("tokenizer")))


def chat(home, *args, stdin=""):
    env = {**os.environ, "NANOCHAT_HOME": str(home), "NANOCHAT_DTYPE": "fp32", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([*chat_command(), "--device", "cpu", *args], input=stdin.encode(), capture_output=True,
                            env=env, timeout=120)
    return result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")


def reply(engine, *turns, max_tokens=6):
    """The greedy replies to a conversation of user turns, as the REPL would hold it."""
    messages, out = [], []
    for text in turns:
        messages.append({"role": "user", "content": text})
        stream = engine.chat(messages, max_tokens=max_tokens, temperature=0.0)
        deltas = []
        while True:
            try:
                deltas.append(next(stream))
            except StopIteration as stop:
                messages.append(stop.value if stop.value["content"] else {"role": "assistant", "content": " "})
                break
        out.append("".join(deltas))
    return out


def test_one_shot_names_what_it_loaded(home, engine):
    code, out, err = chat(home, "-p", "Hello there!", "--temperature", "0", "--max-tokens", "6")
    assert code == 0, err
    assert out == reply(engine, "Hello there!")[0] + "\n"
    assert "run 'tiny', stage 'sft', step 10" in err and "checkpoints/sft/step_000010" in err


def test_piped_repl_with_commands_and_chinese(home, engine):
    lines = ["/temperature 0", "Hello there!", "你好，世界", "/clear", "Hello there!", "/top-k 5", "/bogus",
             "/quit", "never answered"]
    code, out, err = chat(home, "--temperature", "1.5", "--max-tokens", "6", stdin="\n".join(lines) + "\n")
    assert code == 0, err
    first, second = reply(engine, "Hello there!", "你好，世界")
    assert out == f"{first}\n{second}\n{first}\n"  # /clear: the third turn starts afresh
    assert "(temperature = 0.0)" in err and "(top-k = 5)" in err and "(new conversation)" in err
    assert "unknown command /bogus" in err


def test_chinese_prompt_and_system_prompt(home, engine):
    code, out, err = chat(home, "-p", "今天天气很好吗？", "--temperature", "0", "--max-tokens", "8")
    assert code == 0, err
    assert out == reply(engine, "今天天气很好吗？", max_tokens=8)[0] + "\n"
    code, out, err = chat(home, "--temperature", "0", "--max-tokens", "6", stdin="/system 用中文回答。\n你好\n")
    assert code == 0, err
    assert out == reply(engine, "用中文回答。\n\n你好")[0] + "\n"  # the system prompt joins the first turn


def test_base_model_and_explicit_checkpoint(home, engine):
    code, out, err = chat(home, "--stage", "base", "-p", "Hello", "--temperature", "0", "--max-tokens", "5")
    assert code == 0, err
    assert out == "Hello" + engine.complete("Hello", max_tokens=5) + "\n"
    assert "base model" in err and "stage 'pretrain', step 5" in err
    path = home / "runs" / "tiny" / "checkpoints" / "sft" / "step_000010"
    code, out, err = chat(home, "--checkpoint", str(path), "-p", "Hello there!", "--temperature", "0",
                          "--max-tokens", "6")
    assert code == 0, err
    assert out == reply(engine, "Hello there!")[0] + "\n"


def test_nothing_to_chat_with(tmp_path, home):
    code, out, err = chat(tmp_path / "empty", "-p", "hi")
    assert code == 2 and out == ""
    assert "no finished chat model" in err and "nanochat run --preset cpu-tiny" in err
    code, _, err = chat(home, "--stage", "rl", "-p", "hi")
    assert code == 2 and "no finished rl model in any run" in err
    code, _, err = chat(home, "--run", "nope", "-p", "hi")
    assert code == 2 and "no run named 'nope'" in err


def test_damaged_checkpoint(tmp_path, home):
    import shutil
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    weights = copy / "runs" / "tiny" / "checkpoints" / "sft" / "step_000010" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, out, err = chat(copy, "-p", "hi")
    assert code == 2 and out == ""
    assert "is damaged" in err and "nanochat run --name tiny --stage sft" in err


@pytest.fixture(scope="module")
def ending_home(home, tmp_path_factory):
    """The same tiny model with <|assistant_end|> pulled up, so some replies end by themselves within a
    few tokens (a random model never says it is done)."""
    import shutil
    copy = tmp_path_factory.mktemp("ending") / "home"
    shutil.copytree(home, copy)
    run = Run(copy / "runs" / "tiny")
    model, _ = checkpoint.load_model(run.checkpoint_dir("sft"), "cpu", torch.float32)
    tok = Tokenizer.load(run.checkpoint_dir("tokenizer"))
    with torch.no_grad():
        model.lm_head.weight[tok.encode_special("<|assistant_end|>")] += 0.4
    shutil.rmtree(run.checkpoint_dir("sft"))
    checkpoint.save(run.checkpoint_dir("sft"), 10, world=World(), model=model, meta={"model_config": model.config.to_dict()})
    return copy, Engine(model, tok)


def test_reply_that_ends_by_itself_gets_no_limit_note(ending_home):
    home, engine = ending_home
    prompt = "12 + 30"
    ids = engine.chat_prompt([{"role": "user", "content": prompt}])
    reply_tokens = []
    for column, _ in engine.generate(ids, max_tokens=40, temperature=0.0):
        if column[0] in engine.stops:
            break
        reply_tokens.append(column[0])
    assert 2 <= len(reply_tokens) < 40, "the crafted model should end this reply by itself after a few tokens"
    code, out, err = chat(home, "-p", prompt, "--temperature", "0", "--max-tokens", "40")
    assert code == 0, err
    assert out == reply(engine, prompt, max_tokens=40)[0] + "\n"
    assert "reached the limit" not in err
    code, out, err = chat(home, "-p", prompt, "--temperature", "0", "--max-tokens", "1")
    assert code == 0, err
    assert out == reply(engine, prompt, max_tokens=1)[0] + "\n"
    assert "(the reply reached the limit of 1 tokens; raise it with --max-tokens)" in err
