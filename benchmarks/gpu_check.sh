#!/usr/bin/env bash
# The CUDA paths in one short run (a few minutes on a single H100): bf16, flash SDPA, the
# compiled flex-attention sliding windows, a compiled training step against eager, KV-cache
# decoding, the compiled optimizer kernels, and the MFU of a d12 and a d20 training step
# (target: d20 bf16 >= 50% MFU), and the d20 step's peak memory against benchmarks/memory.py's
# estimate of it. Progress goes to stderr; stdout gets one JSON document.
#
#   bash benchmarks/gpu_check.sh            (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

checks=$("$PY" - <<'EOF'
import json, sys, time, traceback
from types import SimpleNamespace
import torch
import torch.nn.functional as F

assert torch.cuda.is_available(), "no CUDA device: this script checks the GPU paths"
torch.backends.cuda.matmul.allow_tf32 = False  # exact comparisons below; the MFU runs use tf32
dev = torch.device("cuda")
out = {"torch": torch.__version__, "device_name": torch.cuda.get_device_name(),
       "capability": list(torch.cuda.get_device_capability()), "bf16_ok": torch.cuda.is_bf16_supported()}

def check(name):
    def run(fn):
        t0 = time.time()
        try:
            extra = fn() or {}
            out[name + "_ok"] = True
            out.update({f"{name}_{k}": v for k, v in extra.items()})
        except Exception as e:
            out[name + "_ok"] = False
            out[name + "_error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc(file=sys.stderr)
        print(f"{name}: {out[name + '_ok']} ({time.time() - t0:.1f} s)", file=sys.stderr)
    return run

from nanochat.model import GPT, GPTConfig, KVCache, attention, window_mask
import nanochat_optimizers

def build(depth=2, seq=256, dtype=torch.bfloat16, pattern="SSSL", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig.from_depth(depth, vocab_size=1000, sequence_len=seq, window_pattern=pattern, **kw)
    with torch.device("meta"):
        m = GPT(cfg, compute_dtype=dtype)
    m.to_empty(device=dev)
    m.init_weights()
    with torch.no_grad():  # non-zero projections and smear, so every path matters
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
        m.smear_lambda.fill_(0.5)
    return m

@check("flash_sdpa")
def _():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (torch.randn(2, 4, 1024, 128, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

@check("flex_window")
def _():
    # compiled attention() on a short window takes the flex path; compare with the masked SDPA
    T, W = 1024, 256
    q, k, v = (torch.randn(2, 4, T, 128, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    fast = torch.compile(lambda q, k, v: attention(q, k, v, W, 0.1), dynamic=False)
    y = fast(q, k, v)
    y.float().square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(T, T, W, dev), scale=0.1)
    ref.float().square().sum().backward()
    err = (y - ref).abs().max().item()
    gerr = max((g - t.grad).abs().max().item() for g, t in zip(grads, (q, k, v)))
    assert err < 2e-2 and gerr < 5e-2, (err, gerr)
    return {"max_err": err, "max_grad_err": gerr}

@check("compiled_step")
def _():
    m = build(depth=4, seq=512)
    x = torch.randint(0, 1000, (4, 512), device=dev)
    eager = m(x, x)
    eager.backward()
    g_eager = m.lm_head.weight.grad.clone()
    m.zero_grad()
    compiled = torch.compile(m, dynamic=False)(x, x)
    compiled.backward()
    rel = ((m.lm_head.weight.grad - g_eager).norm() / g_eager.norm()).item()
    assert abs(compiled.item() - eager.item()) < 2e-2 and rel < 5e-2, (compiled.item(), eager.item(), rel)
    return {"loss_eager": eager.item(), "loss_compiled": compiled.item(), "grad_rel_err": rel}

@check("kv_decode")
def _():
    m = build(depth=4, seq=256, dtype=torch.float32)
    m.windows = [5, 9, 3, m.config.sequence_len]
    idx = torch.randint(0, 1000, (2, 40), device=dev)
    with torch.inference_mode():
        full = m(idx)
        cache = KVCache(m.config, 2, 40, device=dev, dtype=torch.float32)
        parts = [m(idx[:, :11], kv_cache=cache), m(idx[:, 11:17], kv_cache=cache)]
        parts += [m(idx[:, t:t + 1], kv_cache=cache) for t in range(17, 40)]
    err = (torch.cat(parts, 1) - full).abs().max().item()
    assert err < 1e-3, err
    return {"max_err": err}

@check("optimizer_compiled")
def _():
    found = []
    nanochat_optimizers.nanochat_optimizer(register=found.append)
    muon = {p.name: p for p in found}["muon"]
    x = torch.randint(0, 1000, (4, 256), device=dev)
    results = []
    for compiled in (False, True):
        m = build(depth=4, seq=256)
        h = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28,
                 model_dim=m.config.n_embd, compile=compiled)
        opt = muon.build(m, h, SimpleNamespace(rank=0, size=1))
        losses = []
        for _ in range(5):
            loss = m(x, x)
            loss.backward()
            opt.step()
            m.zero_grad(set_to_none=True)
            losses.append(loss.item())
        results.append(losses)
    assert results[1][-1] < results[1][0], results
    assert max(abs(a - b) for a, b in zip(*results)) < 5e-2, results
    return {"losses_eager": results[0], "losses_compiled": results[1]}

print(json.dumps(out))
EOF
)

bench() {  # one training benchmark; its progress to stderr, its JSON line captured
    "$PY" benchmarks/train.py --seq-len 2048 --vocab-size 32768 --window-pattern SSSL --steps 8 --warmup 3 "$@" \
        | tee /dev/stderr | tail -n 1
}
d12=$(bench --depth 12 --batch 32)
d20=$(bench --depth 20 --batch 16)
# the CPU-side memory estimate of that same d20 step (one process), to hold against its measured peak
mem=$("$PY" benchmarks/memory.py --depth 20 --seq-len 2048 --device-batch 16 --world-size 1 --vocab-size 32768 \
      --window-pattern SSSL --compiled | tee /dev/stderr | tail -n 1)

"$PY" - "$checks" "$d12" "$d20" "$mem" <<'EOF'
import json, sys
checks, d12, d20, mem = (json.loads(a) for a in sys.argv[1:5])
ok = all(v for k, v in checks.items() if k.endswith("_ok")) and d20["mfu"] >= 0.5
memory = {"d20_b16_measured_peak": d20["peak_memory"], "d20_b16_estimate": mem["total"],
          "estimate_over_measured": mem["total"] / d20["peak_memory"]}
print(json.dumps({"ok": ok, "d20_mfu_target": 0.5, "checks": checks, "d12": d12, "d20": d20, "memory": memory}))
EOF
