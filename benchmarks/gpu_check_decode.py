"""The GPU check's decoding part: KV-cache decode of a d20 on one CUDA device, compiled and eager.

    python benchmarks/gpu_check_decode.py        (a minute or two on one H100)

Runs benchmarks/infer.py at the d20 shape (vocab 65,536, context 2,048, bf16) at batch 1 and 8,
with the compiled decode step and without, and prints one JSON document on stdout (progress on
stderr): ms per step, tok/s and memory-bandwidth utilisation (bytes of weights + KV read per
step over the card's datasheet bandwidth) for each. The compiled and eager runs generate the
same greedy tokens in fp32 (checked on a small model first: decode_compiled_matches_eager); in bf16
they may part after a while, so at d20 only the speeds are compared.
"""
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infer  # noqa: E402  (benchmarks/infer.py)

D20 = ["--depth", "20", "--vocab-size", "65536", "--sequence-len", "2048", "--prompt-tokens", "128",
       "--new-tokens", "256", "--batch-sizes", "1,8", "--repeats", "2", "--no-naive", "--device", "cuda",
       "--dtype", "bf16"]


def compiled_matches_eager():
    """Greedy tokens of the compiled decode step == the eager one's, fp32, a d2 on CUDA, batch 1 and 3."""
    import torch
    from nanochat.engine import Engine
    from nanochat.model import GPT, GPTConfig
    cfg = GPTConfig.from_depth(2, vocab_size=4096, sequence_len=256, window_pattern="SL")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(cfg, compute_dtype=torch.float32)
    model.to_empty(device="cuda")
    model.init_weights()
    tokenizer = infer.SpecialTokens(cfg.vocab_size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.lm_head.weight[tokenizer.bos_id:] = 0.0
    prompt = [tokenizer.bos_id] + list(range(1, 40))
    eager, compiled = Engine(model, tokenizer), Engine(model, tokenizer, compile=True)
    return all(eager.generate_batch(prompt, num_samples=n, max_tokens=100, temperature=0.0)
               == compiled.generate_batch(prompt, num_samples=n, max_tokens=100, temperature=0.0) for n in (1, 3))


def main():
    out = {}
    with contextlib.redirect_stdout(sys.stderr):
        out["decode_compiled_matches_eager"] = compiled_matches_eager()
    with contextlib.redirect_stdout(sys.stderr):
        for mode in ("on", "off"):
            r = infer.main(D20 + ["--compile", mode])
            name = "compiled" if mode == "on" else "eager"
            out["memory_bandwidth_gb_s"] = r["memory_bandwidth_gb_s"]
            for b, x in r["batch"].items():
                out[f"decode_d20_{name}_b{b}_ms_per_step"] = x["ms_per_step"]
                out[f"decode_d20_{name}_b{b}_tok_s"] = x["decode_tok_s"]
                out[f"decode_d20_{name}_b{b}_bandwidth_utilisation"] = x.get("bandwidth_utilisation")
            out[f"prefill_d20_{name}_tok_s"] = r["prefill_tok_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
