"""fp8 training (nanochat/fp8.py): the quantisation's error bounds, the matmul's forward and backward against
fp32, which layers use it, a tiny model's loss curve against bf16, and where fp8 is refused.

The CUDA kernel (torch._scaled_mm) needs a GPU of compute capability 8.9+; here the emulated path runs the
same quantisation, and benchmarks/gpu_check/ compares the two on a GPU.
"""
import math

import pytest
import torch

from nanochat import fp8, gpus, plan
from nanochat.model import GPT, GPTConfig

# Measured (seeds 0-2, 200 steps, see loss_curve): the largest gap between the fp8 and bf16 runs' smoothed
# loss at any step was 0.0017 nats (0.0010-0.0017), the final gap at most 0.0004, from a start of 4.85 to
# 1.54; the tolerance leaves 6x room for other CPUs' summation orders.
LOSS_CURVE_TOLERANCE = 0.01


def spread(n=4096, seed=0):
    """Values over twelve binary orders of magnitude, both signs."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp2(torch.rand(n, generator=g) * 12 - 6)
    return mag * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("dtype", [fp8.E4M3, fp8.E5M2])
def test_round_trip_error_is_within_half_the_formats_epsilon(dtype):
    x = spread()
    q, inv = fp8.quantize(x, dtype)
    back = fp8.dequantize(q, inv, torch.float32)
    scaled = (x * inv.reciprocal()).abs()
    normal = scaled >= torch.finfo(dtype).smallest_normal
    rel = ((back - x).abs() / x.abs())[normal]
    assert rel.max() <= fp8.unit_roundoff(dtype)  # e4m3: 1/16, e5m2: 1/8
    assert rel.max() > fp8.unit_roundoff(dtype) / 2  # the bound is tight: a real rounding happened
    # below the normal range the error is at most half the smallest subnormal step, scaled back
    step = torch.finfo(dtype).smallest_normal * 2.0 ** -{fp8.E4M3: 3, fp8.E5M2: 2}[dtype]
    assert ((back - x).abs()[~normal] <= step / 2 * inv).all()


@pytest.mark.parametrize("dtype", [fp8.E4M3, fp8.E5M2])
@pytest.mark.parametrize("amax", [1e-9, 3e-3, 1.0, 447.9, 448.0, 1e6])
def test_amax_scaling_saturates_nothing_and_uses_the_top_octave(dtype, amax):
    x = spread() * (amax / spread().abs().max())
    q, inv = fp8.quantize(x, dtype)
    top = q.float().abs().max().item()
    fmax = torch.finfo(dtype).max
    assert math.isfinite(top) and fmax / 2 <= top <= fmax  # the largest value lands in the format's top octave
    assert math.log2(inv.item()) == int(math.log2(inv.item()))  # a power-of-two scale
    # and so the values divided back are exact in bf16: the emulation computes what the kernel computes
    assert torch.equal(fp8.dequantize(q, inv, torch.bfloat16).float(), fp8.dequantize(q, inv, torch.float32))


def test_a_zero_tensor_quantises_to_zero():
    q, inv = fp8.quantize(torch.zeros(16, 16), fp8.E4M3)
    assert torch.isfinite(inv) and not q.float().any()


def test_matmul_forward_and_backward_within_the_rounding_bound():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 128, generator=g)
    w = torch.randn(64, 128, generator=g) * 0.05
    dy = torch.randn(96, 64, generator=g) * 1e-3
    xq, wq = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fp8.fp8_linear(xq, wq)
    y.backward(dy)
    ref_y, ref_dx, ref_dw = x @ w.t(), dy @ w, dy.t() @ x
    u4, u5 = fp8.unit_roundoff(fp8.E4M3), fp8.unit_roundoff(fp8.E5M2)
    # each product carries at most the relative error of its two roundings; their sum bounds the error
    assert ((y - ref_y).abs() <= (2 * u4 + 1e-6) * (x.abs() @ w.abs().t()) + 1e-6).all()
    assert ((xq.grad - ref_dx).abs() <= (u4 + u5 + 1e-6) * (dy.abs() @ w.abs()) + 1e-9).all()
    assert ((wq.grad - ref_dw).abs() <= (u4 + u5 + 1e-6) * (dy.abs().t() @ x.abs()) + 1e-9).all()
    # and on random data far inside it
    assert (y - ref_y).norm() / ref_y.norm() < 0.05
    assert (xq.grad - ref_dx).norm() / ref_dx.norm() < 0.1 and (wq.grad - ref_dw).norm() / ref_dw.norm() < 0.1
    assert wq.grad.dtype == torch.float32 and y.dtype == x.dtype


def build(fp8_on, dtype=torch.bfloat16, seed=0, aspect_ratio=64, vocab=256, seq=64):
    torch.manual_seed(seed)
    cfg = GPTConfig.from_depth(2, vocab_size=vocab, sequence_len=seq, head_dim=32, aspect_ratio=aspect_ratio,
                               window_pattern="L")
    with torch.device("meta"):
        model = GPT(cfg, compute_dtype=dtype, fp8=fp8_on)
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def test_only_the_blocks_matmuls_are_fp8_and_evaluation_is_untouched(monkeypatch):
    model = build(True)
    marked = {name for name, m in model.named_modules() if name and getattr(m, "fp8", False) is True}
    assert marked == {f"transformer.h.{i}.{part}" for i in range(2)
                      for part in ("attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    calls = []
    real = fp8.Fp8Matmul.apply
    monkeypatch.setattr(fp8.Fp8Matmul, "apply", lambda *a: calls.append(a[1].shape) or real(*a))
    with torch.no_grad():
        torch.nn.init.normal_(model.transformer.h[0].mlp.c_proj.weight, std=0.02)  # so every path matters
    x = torch.randint(0, 256, (2, 64))
    model(x, x).backward()
    # per block (width 128): fused qkv (3 x 128 rows), attention out, MLP in and out, and the MLP's two again
    # when its backward recomputes it (model.MLP keeps only matmul outputs); lm_head and the gates are not here
    assert sorted(calls) == sorted([(384, 128), (128, 128)] * 2 + [(512, 128), (128, 512)] * 4)
    calls.clear()
    plain = build(False)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))  # no gradients taken: bf16, as the checkpoint will be used
    assert not calls


def markov_batches(steps, batch=8, seq=32, vocab=128, seed=0):
    """Tokens from a fixed random chain where each token has 4 likely successors: a curve with shape."""
    g = torch.Generator().manual_seed(1234)
    successors = torch.randint(0, vocab, (vocab, 4), generator=g)
    g.manual_seed(seed)
    for _ in range(steps):
        rows = torch.empty(batch, seq + 1, dtype=torch.long)
        rows[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(seq):
            rows[:, t + 1] = successors[rows[:, t], torch.randint(0, 4, (batch,), generator=g)]
        yield rows[:, :-1], rows[:, 1:]


def loss_curve(fp8_on, steps, seed):
    """Smoothed (debiased EMA) training loss of a 2-layer, 64-wide model on markov_batches."""
    model = build(fp8_on, seed=seed, aspect_ratio=32, vocab=128, seq=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    smooth, curve = 0.0, []
    for i, (x, y) in enumerate(markov_batches(steps, seed=seed)):
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        smooth = 0.9 * smooth + 0.1 * loss.item()
        curve.append(smooth / (1 - 0.9 ** (i + 1)))
    return curve


@pytest.fixture
def one_thread():
    """Tiny matmuls on a shared machine: more threads only wait on each other (about 15x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_tiny_models_loss_curve_stays_within_tolerance_of_bf16(one_thread):
    steps = 200
    bf16, f8 = loss_curve(False, steps, seed=0), loss_curve(True, steps, seed=0)
    assert bf16[-1] < bf16[0] - 2.0  # it learned (from ln 128 = 4.9 towards ln 4 = 1.4)
    gap = max(abs(a - b) for a, b in zip(bf16, f8))
    assert gap < LOSS_CURVE_TOLERANCE, gap
    assert bf16 != f8  # fp8 really ran: the curves are close, not equal


def test_fp8_is_refused_where_it_cannot_run_naming_the_fix(monkeypatch):
    assert fp8.check_supported("cpu") == "emulated"
    with pytest.raises(ValueError, match=r"not supported on the mps device.*--set fp8=false"):
        fp8.check_supported("mps")
    # a CUDA GPU older than 8.9: named, with what would work and the fix (device queries as an A100 answers them)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(ValueError, match=r"8\.9 or newer: .*H100.*this one is NVIDIA A100-SXM4-80GB \(8\.0\).*"
                                         r"--set fp8=false"):
        fp8.check_supported("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8.check_supported("cuda") == "cuda"


def test_plans_with_fp8_use_the_fp8_peak():
    assert gpus.fp8_peak("NVIDIA H100 80GB HBM3") == 2 * 989e12 and gpus.fp8_peak("A100") is None
    # tf32 (fp32 matmuls on tensor cores, what benchmarks/train.py divides fp32 steps by): half of bf16, none on T4
    assert gpus.tf32_peak("NVIDIA H100 80GB HBM3") == 989e12 / 2 and gpus.tf32_peak("Tesla T4") is None
    est = plan.gpu_estimate(1e20, "H100", 8, fp8=True)
    assert est["precision"] == "fp8" and est["mfu"] == gpus.PLANNING_MFU_FP8
    assert est["hours"] == pytest.approx(1e20 / (8 * 1979e12 * gpus.PLANNING_MFU_FP8) / 3600, rel=1e-3)
    bf16 = plan.gpu_estimate(1e20, "H100", 8)
    assert bf16["precision"] == "bf16" and est["hours"] < bf16["hours"]
    assert plan.gpu_estimate(1e20, "A100", 8, fp8=True)["precision"] == "bf16"  # no fp8 there: planned in bf16
