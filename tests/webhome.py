"""A NANOCHAT_HOME with a tiny run for the web tests and benchmarks/serve.py: real checkpoints, real tokenizer.

Run "tiny" has a finished tokenizer and three models of the same random weights (seconds to make):
- tiny/sft:  the stop token <|assistant_end|> is made likely, so sampled replies end on their own;
- tiny/mid:  the stop tokens' lm_head rows are zero, so greedy replies never stop (long generations);
- tiny/base: the plain weights.
"""
import json

import torch

from nanochat import checkpoint
from nanochat.distributed import World
from nanochat.model import GPT, GPTConfig
from nanochat.runs import Run
from nanochat.tokenizer import Tokenizer

TEXT = "Hello there! How are you today? I am fine, thank you. 你好，世界！今天天气很好，我们去散步吧。12 + 30 = 42."
STAGES = (("pretrain", "base", 5), ("mid", "mid", 7), ("sft", "sft", 10))


def make_home(home, *, depth=2, sequence_len=4200, stop_logit=4.0):
    """Create run 'tiny' under `home` (a NANOCHAT_HOME); return its Run."""
    run = Run(home / "runs" / "tiny")
    run.dir.mkdir(parents=True)
    stages = [{"name": n, "stage": n, "settings": {}} for n in ("tokenizer", "pretrain", "mid", "sft")]
    (run.dir / "run.json").write_text(json.dumps({"name": "tiny", "preset": "test", "stages": stages}))
    tok = Tokenizer.train([TEXT] * 30, 320, threads=1)
    tok.save(run.checkpoint_dir("tokenizer"))
    run.set_status("tokenizer", state="done", artifacts={"tokenizer": "checkpoints/tokenizer"})
    cfg = GPTConfig.from_depth(depth, vocab_size=tok.vocab_size, sequence_len=sequence_len, head_dim=16,
                               aspect_ratio=32)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    stops = [tok.encode_special("<|assistant_end|>"), tok.bos_id]
    plain = model.lm_head.weight.detach().clone()
    for stage, kind, step in STAGES:
        with torch.no_grad():
            model.lm_head.weight.copy_(plain)
            if kind == "mid":
                model.lm_head.weight[stops] = 0.0
            elif kind == "sft":  # the stop token's row follows the final hidden state's mean direction
                model.lm_head.weight[stops[0]] = stop_logit * _mean_direction(model, tok)
        path = checkpoint.save(run.checkpoint_dir(stage), step, world=World(), model=model,
                               meta={"model_config": cfg.to_dict()})
        run.set_status(stage, state="done", artifacts={f"{kind}-model": str(path.relative_to(run.dir))})
    return run


@torch.no_grad()
def _mean_direction(model, tok):
    """A unit-ish row whose logit is about the same positive value for most hidden states."""
    ids = torch.tensor([tok.encode(TEXT)[:64]])
    hidden = {}
    handle = model.lm_head.register_forward_hook(lambda m, inp, out: hidden.setdefault("x", inp[0]))
    model(ids)
    handle.remove()
    mean = hidden["x"][0].mean(0)
    return mean / mean.norm() ** 2
