"""GPU check, part "kernels": flash SDPA, the compiled flex-attention sliding windows, a compiled training step
against eager, KV-cache decoding, the fp8 kernel against its CPU emulation, and the optimizer's compiled update
kernels as the stages build them (nanochat.training.build_optimizer). About 2 minutes on one H100.

    python benchmarks/gpu_check/kernels.py [--cpu]

With --cpu: the same checks at tiny shapes, eager (no torch.compile) and without the flash kernel.
"""
from types import SimpleNamespace

from common import Part, build, device, parse

import torch
import torch.nn.functional as F

args = parse(__doc__.split("\n")[0])
dev = device(args)
part = Part("kernels", args)
compile_ = (lambda f: f) if args.cpu else (lambda f: torch.compile(f, dynamic=False))
T = 128 if args.cpu else 1024
D = 32 if args.cpu else 128

from nanochat import fp8  # noqa: E402
from nanochat.model import KVCache, attention, window_mask  # noqa: E402


@part.check("flash_sdpa")
def _():
    q, k, v = (torch.randn(2, 4, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    if args.cpu:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()


@part.check("flex_window")
def _():
    # compiled attention() on a short window takes the flex path on CUDA; compare with the masked SDPA
    W = T // 4
    q, k, v = (torch.randn(2, 4, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    y = compile_(lambda q, k, v: attention(q, k, v, W, 0.1))(q, k, v)
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


@part.check("compiled_step")
def _():
    m = build(dev, depth=2 if args.cpu else 4, seq=64 if args.cpu else 512)
    x = torch.randint(0, 1000, (4, m.config.sequence_len), device=dev)
    eager = m(x, x)
    eager.backward()
    g_eager = m.lm_head.weight.grad.clone()
    m.zero_grad()
    compiled = compile_(m)(x, x)
    compiled.backward()
    rel = ((m.lm_head.weight.grad - g_eager).norm() / g_eager.norm()).item()
    assert abs(compiled.item() - eager.item()) < 2e-2 and rel < 5e-2, (compiled.item(), eager.item(), rel)
    return {"loss_eager": eager.item(), "loss_compiled": compiled.item(), "grad_rel_err": rel}


@part.check("kv_decode")
def _():
    m = build(dev, depth=4, seq=64 if args.cpu else 256, dtype=torch.float32, aspect_ratio=16 if args.cpu else 64)
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


@part.check("fp8_kernel")
def _():
    """torch._scaled_mm (forward, and both backward matmuls) against the CPU emulation of the same quantisation."""
    mode = fp8.check_supported(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 512, generator=g).bfloat16()
    w = torch.randn(768, 512, generator=g) * 0.05
    dy = (torch.randn(256, 768, generator=g) * 1e-3).bfloat16()
    results = []
    for where in (dev, torch.device("cpu")):
        xd, wd = x.to(where, copy=True).requires_grad_(), w.to(where, copy=True).requires_grad_()
        y = fp8.fp8_linear(xd, wd)
        y.backward(dy.to(where))
        results.append([t.float().cpu() for t in (y, xd.grad, wd.grad)])
    rel = [((a - b).norm() / b.norm()).item() for a, b in zip(*results)]
    ref = (x.float() @ w.t())
    rel_ref = ((results[0][0] - ref).norm() / ref.norm()).item()
    assert max(rel) < 1e-2 and rel_ref < 0.05, (rel, rel_ref)
    return {"mode": mode, "kernel_vs_emulated_rel_err": rel, "vs_fp32_rel_err": rel_ref}


@part.check("fp8_compiled_step")
def _():
    m = build(dev, depth=2, seq=512 if not args.cpu else 64, fp8=True)
    x = torch.randint(0, 1000, (4, m.config.sequence_len), device=dev)
    eager = m(x, x)
    eager.backward()
    g_eager = m.transformer.h[0].mlp.c_fc.weight.grad.clone()
    m.zero_grad()
    compiled = compile_(m)(x, x)
    compiled.backward()
    rel = ((m.transformer.h[0].mlp.c_fc.weight.grad - g_eager).norm() / g_eager.norm()).item()
    assert abs(compiled.item() - eager.item()) < 2e-2 and rel < 5e-2, (compiled.item(), eager.item(), rel)
    return {"loss_eager": eager.item(), "loss_compiled": compiled.item(), "grad_rel_err": rel}


@part.check("optimizer_compiled")
def _():
    from nanochat.plugins import registry
    from nanochat.training import build_optimizer
    seq = 64 if args.cpu else 256
    x = torch.randint(0, 1000, (4, seq), device=dev)
    results = []
    for compiled in (False, not args.cpu):
        m = build(dev, depth=2 if args.cpu else 4, seq=seq)
        h = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28,
                 model_dim=m.config.n_embd)
        opt = build_optimizer(registry(), "muon", m, h, SimpleNamespace(rank=0, size=1), compiled)
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


part.finish()
