"""GPU check, part "evals": the evaluation paths a run takes on the GPU, at d12 in bf16 (compiled, as base-eval
runs it): validation bits per byte, CORE's multiple-choice scoring (one forward over padded rows per batch of
examples), and the Engine's sampling (chat-eval's generative tasks, and RL). About 1-2 minutes on one H100.

    python benchmarks/gpu_check/evals.py [--cpu]
"""
from common import Part, build, device, parse

import torch

args = parse(__doc__.split("\n")[0])
dev = device(args)
part = Part("evals", args)

from nanochat.engine import Engine  # noqa: E402
from nanochat.evaluation.bpb import evaluate_bpb  # noqa: E402
from nanochat.evaluation.core import encode_example, score_batch  # noqa: E402
from nanochat.tokenizer import Tokenizer  # noqa: E402

WORDS = "the cat sat on a mat while the dog ran to the park and a bird sang in the old tree".split()
docs = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(200)]
tok = Tokenizer.train(docs, 300)
seq = 64 if args.cpu else 2048
model = build(dev, depth=2 if args.cpu else 12, seq=seq, vocab=tok.vocab_size)
model.eval()
run = model if args.cpu else torch.compile(model, dynamic=False)


@part.check("bpb")
def _():
    g = torch.Generator().manual_seed(0)
    B = 2 if args.cpu else 16

    def batches():
        while True:
            x = torch.randint(0, tok.vocab_size, (B, seq + 1), generator=g).to(dev)
            yield x[:, :-1], x[:, 1:]
    token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64, device=dev)
    with torch.no_grad():
        bpb = evaluate_bpb(run, batches(), 3, token_bytes)
    assert bpb > 0 and bpb == bpb, bpb
    return {"value": bpb}


@part.check("core_scoring")
def _():
    examples = [encode_example(tok, "multiple_choice", [f"the cat sat on the {w}" for w in ("mat", "dog", "tree")],
                               i % 3, seq) for i in range(8)]
    examples += [encode_example(tok, "language_modeling", ["a bird sang", "a bird sang in the old tree"], None, seq)]
    correct = score_batch(model, examples, tok.bos_id, dev)
    assert len(correct) == len(examples)
    return {"examples": len(examples)}


@part.check("engine_sampling")
def _():
    engine = Engine(model, tok)
    with torch.inference_mode():
        text = engine.complete("the cat", max_tokens=16, temperature=0.0)
    assert isinstance(text, str)
    return {"chars": len(text)}


part.finish()
