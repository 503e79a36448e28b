"""The GPT: sizes, init, parameter roles, FLOPs, learning, the KV cache, dtypes, checkpoints."""
import math

import pytest
import torch
import torch.nn.functional as F

from nanochat.model import GPT, GPTConfig, KVCache


@pytest.fixture(autouse=True)
def one_thread():
    # tiny tensors: a second thread only adds contention on a shared 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def build(cfg, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = GPT(cfg, compute_dtype=dtype)
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def randomize(model, seed=1):
    """Give every parameter a non-trivial value (init zeros c_proj and smear, hiding bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        model.smear_lambda.fill_(0.7)
        model.backout_lambda.fill_(0.3)


def tiny(**kw):
    args = dict(vocab_size=100, sequence_len=32, head_dim=16, aspect_ratio=16)
    args.update(kw)
    return GPTConfig.from_depth(args.pop("depth", 3), **args)


def test_from_depth_dims():
    cfg = GPTConfig.from_depth(4, vocab_size=8192, sequence_len=512)
    assert (cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim) == (256, 2, 2, 128)
    for depth, dim in [(12, 768), (20, 1280), (24, 1536), (26, 1664)]:
        cfg = GPTConfig.from_depth(depth, vocab_size=32768, sequence_len=2048)
        assert (cfg.n_embd, cfg.n_head, cfg.head_dim) == (dim, dim // 128, 128)
    # odd widths round up to whole heads
    assert GPTConfig.from_depth(3, vocab_size=10, sequence_len=8).n_embd == 256
    assert GPTConfig.from_depth(4, vocab_size=10, sequence_len=8, n_kv_head=1).n_kv_head == 1


def test_windows():
    cfg = GPTConfig.from_depth(6, vocab_size=10, sequence_len=2048, window_pattern="SSSL")
    assert cfg.window_sizes() == [512, 512, 512, 2048, 512, 2048]  # last layer always long
    assert GPTConfig.from_depth(2, vocab_size=10, sequence_len=100).window_sizes() == [100, 100]  # capped to T
    assert GPTConfig.from_depth(3, vocab_size=10, sequence_len=512, window_pattern="L").window_sizes() == [512] * 3
    with pytest.raises(ValueError, match="window_pattern"):
        GPTConfig.from_depth(2, vocab_size=10, sequence_len=8, window_pattern="SX")


def test_meta_init_and_published_sizes():
    # d24 of the latest recipe at vocab 32768: the published parameter breakdown
    with torch.device("meta"):
        model = GPT(GPTConfig.from_depth(24, vocab_size=32768, sequence_len=2048))
    n = model.num_scaling_params()
    assert n == {"wte": 50_331_648, "value_embeds": 603_979_776, "lm_head": 50_331_648,
                 "transformer_matrices": 679_478_976, "scalars": 74, "total": 1_384_122_122}
    assert n["transformer_matrices"] + n["lm_head"] == 729_810_624
    assert abs(model.estimate_flops() - 4.78e9) / 4.78e9 < 0.005


def test_init_values():
    model = build(tiny(depth=4))
    L = 4
    assert torch.allclose(model.resid_lambdas, torch.tensor([1.15 - 0.10 * i / (L - 1) for i in range(L)]))
    assert torch.allclose(model.x0_lambdas, torch.tensor([0.20 - 0.15 * i / (L - 1) for i in range(L)]))
    for block in model.transformer.h:
        assert block.attn.c_proj.weight.abs().sum() == 0 and block.mlp.c_proj.weight.abs().sum() == 0
    assert model.smear_lambda.item() == 0 and model.backout_lambda.item() == pytest.approx(0.2)
    assert sorted(model.value_embeds.keys()) == ["1", "3"]  # alternating, last layer included
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_parameter_roles_cover_everything_once():
    model = build(tiny(depth=3))
    roles = model.parameter_roles()
    assert set(roles) == {"lm_head", "wte", "value_embeds", "resid_lambdas", "x0_lambdas", "scalars", "matrices"}
    ids = [id(p) for ps in roles.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(p.dim() == 2 for p in roles["matrices"])


def test_estimate_flops_by_hand():
    cfg = GPTConfig.from_depth(2, vocab_size=100, sequence_len=64, head_dim=16, aspect_ratio=16,
                               window_pattern="L", n_kv_head=1)
    model = build(cfg)
    d, H, Hkv, D, Vp, L, T = 32, 2, 1, 16, 128, 2, 64
    per_layer = d * H * D + 2 * d * Hkv * D + d * d + 2 * 4 * d * d
    ve_gates = 1 * 12 * Hkv  # one layer with a value embedding (the last)
    matmul = L * per_layer + ve_gates + d * Vp + 24  # + lm_head + smear gate
    assert model.num_matmul_params() == matmul
    assert model.estimate_flops() == 6 * matmul + L * 12 * H * D * T
    # counted by shape: replacing the Linear class (e.g. with an fp8 one) changes nothing
    block = model.transformer.h[0]
    fc = block.mlp.c_fc
    block.mlp.c_fc = torch.nn.Linear(fc.in_features, fc.out_features, bias=False)
    assert model.estimate_flops() == 6 * matmul + L * 12 * H * D * T


def test_forward_shapes_and_vocab_padding():
    model = build(tiny())
    assert model.config.padded_vocab_size == 128
    d = model.config.n_embd
    assert model.transformer.wte.weight.shape == (128, d) and model.lm_head.weight.shape == (128, d)
    idx = torch.randint(0, 100, (2, 16))
    logits = model(idx)
    assert logits.shape == (2, 16, 100) and logits.dtype == torch.float32
    assert logits.abs().max() <= 15.0
    loss = model(idx, idx)
    assert loss.shape == () and math.isfinite(loss.item())
    assert abs(loss.item() - math.log(100)) < 0.5  # near uniform at init
    per_token = model(idx, idx, reduction="none")
    assert per_token.shape == (2, 16)
    assert torch.allclose(per_token.mean(), loss, atol=1e-6)


@pytest.mark.parametrize("rust_kernel", [True, False])
@pytest.mark.parametrize("rows_per_chunk", [5, 10_000])
def test_loss_matches_textbook_softcap_cross_entropy(monkeypatch, rows_per_chunk, rust_kernel):
    """The fused training loss (chunks of rows, gradient in the forward) against the plain formula,
    with each chunk's softcapped cross entropy in the Rust kernel (nanochat/cpu_loss.py) or torch ops."""
    import nanochat.model as model_module
    from nanochat import cpu_loss
    assert cpu_loss.BUILT, "the Rust loss kernel is not built: ./setup.sh (or pip install ./rustbpe)"
    monkeypatch.setattr(cpu_loss, "BUILT", rust_kernel)
    monkeypatch.setitem(model_module.LOSS_CHUNK_ELEMENTS, True, rows_per_chunk * 128)
    model = build(tiny())
    randomize(model)
    idx = torch.randint(0, 100, (2, 16))
    targets = torch.randint(0, 100, (2, 16))
    targets[0, :5] = -1
    loss = model(idx, targets)
    loss.backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # the same forward, with the loss written the plain way on the raw lm_head output
    captured = {}
    hook = model.lm_head.register_forward_hook(lambda m, i, o: captured.setdefault("raw", o))
    model(idx)
    hook.remove()
    z = 15 * torch.tanh(captured["raw"][..., :100].float() / 15)
    ref = torch.nn.functional.cross_entropy(z.view(-1, 100), targets.view(-1), ignore_index=-1)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    for a, p in zip(ours, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)
    # per-token losses (the plain path, used by evaluation and RL) agree too
    per_token = model(idx, targets, reduction="none")
    assert per_token.shape == (2, 16) and (per_token[0, :5] == 0).all()
    assert torch.allclose(per_token.sum() / 27, loss, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(idx, targets, reduction="sum"), per_token.sum(), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rust_loss_kernel_agrees_with_torch_ops(dtype):
    """Loss and gradient of padded logits rows, ignored rows and a vocabulary past the 16-lane blocks,
    on torch's OpenMP threads (the way training calls it) and on threads of the kernel's own."""
    from nanochat import cpu_loss
    from nanochat.model import softcap_xent_rows
    torch.set_num_threads(2)  # rows split in two runs (the fixture puts one thread back)
    torch.manual_seed(0)
    logits = (torch.randn(37, 1040) * 8).to(dtype)
    targets = torch.randint(0, 1003, (37,))
    targets[::5] = -1
    want_loss, want_grad = softcap_xent_rows(logits, targets, 1003, (0, 37))
    for pool in (cpu_loss.OPENMP_PARALLEL, 0):
        old, cpu_loss.OPENMP_PARALLEL = cpu_loss.OPENMP_PARALLEL, pool
        try:
            loss, grad = cpu_loss.softcap_xent(logits, targets, 1003, 15.0)
        finally:
            cpu_loss.OPENMP_PARALLEL = old
        assert grad.dtype == dtype and (grad[:, 1003:] == 0).all() and (loss[::5] == 0).all()
        assert (grad[::5] == 0).all()
        assert torch.allclose(loss, want_loss, atol=1e-5)
        # bf16: the two round the same f32 values to bf16 after different f32 arithmetic (one ulp apart)
        assert torch.allclose(grad.float(), want_grad.float(), atol=1e-6 if dtype == torch.float32 else 4e-3)


def test_rust_loss_kernel_refuses_a_target_outside_the_vocabulary():
    from nanochat import cpu_loss
    with pytest.raises(ValueError, match="target 1003 is not below vocab_size 1003"):
        cpu_loss.softcap_xent(torch.zeros(2, 1024), torch.tensor([3, 1003]), 1003, 15.0)


def test_a_library_without_the_loss_kernel_is_not_used(monkeypatch):
    import sys
    from types import SimpleNamespace

    from nanochat import cpu_loss
    stale = SimpleNamespace(lib=SimpleNamespace(ndec_version=lambda: 1))  # built before the kernel existed
    monkeypatch.setitem(sys.modules, "nanochat_rustbpe._native", stale)
    assert cpu_loss._load() is None
    monkeypatch.setitem(sys.modules, "nanochat_rustbpe._native", None)  # makes the import fail
    assert cpu_loss._load() is None


def test_all_masked_batch_has_zero_loss():
    model = build(tiny())
    idx = torch.randint(0, 100, (2, 16))
    loss = model(idx, torch.full((2, 16), -1))
    loss.backward()
    assert loss.item() == 0 and model.lm_head.weight.grad.abs().sum() == 0


def test_overfits_one_batch():
    model = build(tiny(depth=2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.randint(0, 100, (4, 32))
    targets = torch.roll(idx, -1, dims=1)
    losses = []
    for _ in range(40):
        loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def _check_decode_matches_full(model, T, prefill, chunk=None, atol=2e-4):
    """Prefill `prefill` tokens, optionally one chunk of `chunk`, then one token at a time."""
    idx = torch.randint(0, model.config.vocab_size, (2, T))
    full = model(idx)
    cache = KVCache(model.config, 2, T, device="cpu", dtype=model.kv_cache_dtype)
    outs = [model(idx[:, :prefill], kv_cache=cache)]
    last = model(idx[:, :prefill], kv_cache=KVCache(model.config, 2, T, device="cpu", dtype=model.kv_cache_dtype),
                 last_only=True)  # what a prefill asks for: the last position's logits only
    assert last.shape == (2, 1, model.config.vocab_size) and torch.allclose(last, outs[0][:, -1:], atol=1e-5)
    t = prefill
    if chunk:
        outs.append(model(idx[:, t:t + chunk], kv_cache=cache))
        t += chunk
    while t < T:
        outs.append(model(idx[:, t:t + 1], kv_cache=cache))
        t += 1
    assert cache.pos == T
    inc = torch.cat(outs, dim=1)
    assert inc.shape == full.shape
    assert torch.allclose(inc, full, atol=atol), (inc - full).abs().max()


def test_kv_cache_decode_equals_full_forward_with_windows():
    # sequence 256 -> short window 128 on "SSSL" layers; 150 positions cross it
    cfg = GPTConfig.from_depth(4, vocab_size=64, sequence_len=256, head_dim=16, aspect_ratio=8,
                               window_pattern="SSSL")
    model = build(cfg)
    assert model.windows == [128, 128, 128, 256]
    randomize(model)
    with torch.no_grad():
        _check_decode_matches_full(model, T=150, prefill=130)
    # tiny windows, so every path (decode, chunk after a prefix, prefill) is cut by a window
    model.windows = [2, 5, 3, 256]
    with torch.no_grad():
        _check_decode_matches_full(model, T=24, prefill=7, chunk=6)


def test_bf16_decoding_on_cpu_keeps_an_fp32_cache_and_matches_the_full_forward():
    """The engine's path: inference mode (prepared weights), bf16 compute, an fp32 cache (one-query
    attention is faster in fp32 on CPUs), and the activations stay bf16 between the layers."""
    cfg = GPTConfig.from_depth(2, vocab_size=64, sequence_len=64, head_dim=16, aspect_ratio=16,
                               window_pattern="SL")
    model = build(cfg, dtype=torch.bfloat16)
    randomize(model)
    assert model.kv_cache_dtype == torch.float32
    seen = []
    model.transformer.h[1].mlp.c_fc.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    with torch.inference_mode():
        _check_decode_matches_full(model, T=20, prefill=9, chunk=3, atol=0.02)  # bf16 rounding (logits std ~0.3)
    assert set(seen) == {torch.bfloat16}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_window_path_matches_the_mask_path():
    """The CUDA training path (flex attention, used when compiled) has the same window semantics."""
    from nanochat.model import _sliding_window_flex, window_mask
    torch.manual_seed(0)
    k, v = torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)
    for heads in (2, 4):  # plain and GQA
        q = torch.randn(1, heads, 40, 16)
        with torch.no_grad():
            flex = _sliding_window_flex(q, k, v, 5, 0.3)
            ref = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=window_mask(40, 40, 5, "cpu"), scale=0.3, enable_gqa=heads != 2)
        assert torch.allclose(flex, ref, atol=1e-5)


@pytest.mark.parametrize("window", [300, 100, 5])
def test_blocked_cpu_attention_matches_sdpa(window):
    from nanochat.model import _blocked_attention, window_mask
    torch.manual_seed(0)
    for heads in (2, 4):  # plain and GQA
        q, k, v = (torch.randn(2, h, 300, 16, requires_grad=True) for h in (heads, 2, 2))
        w = torch.randn(2, heads, 300, 16)
        ours = _blocked_attention(q, k, v, window, 0.3)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=window_mask(300, 300, window, "cpu"), scale=0.3, enable_gqa=heads != 2)
        assert torch.allclose(ours, ref, atol=1e-5)
        for a, b in zip(torch.autograd.grad((ours * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
            assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_kv_cache_decode_with_gqa():
    model = build(tiny(depth=4, n_kv_head=2, window_pattern="SL"))
    assert model.config.n_head == 4 and model.config.n_kv_head == 2
    randomize(model)
    model.windows = [4, 32, 5, 32]
    with torch.no_grad():
        _check_decode_matches_full(model, T=20, prefill=5, chunk=3)


def test_kv_cache_api():
    cfg = tiny(depth=2)
    model = build(cfg)
    randomize(model)
    one = KVCache(cfg, 1, 16, device="cpu", dtype=torch.float32)
    assert one.k.shape == (2, 1, 16, cfg.n_kv_head, cfg.head_dim)
    prompt = torch.randint(0, 100, (1, 6))
    with torch.no_grad():
        logits1 = model(prompt, kv_cache=one)
        assert one.pos == 6
        many = KVCache(cfg, 3, 16, device="cpu", dtype=torch.float32)
        many.prefill_from(one)
        assert many.pos == 6
        nxt = torch.full((3, 1), 7)
        out = model(nxt, kv_cache=many)
        ref = model(torch.cat([prompt, torch.tensor([[7]])], dim=1))[:, -1:]
    assert torch.allclose(out, ref.expand(3, 1, 100), atol=1e-5)
    assert logits1.shape == (1, 6, 100)
    k, v = many.get_layer_cache(1)
    assert k.shape == (3, 16, cfg.n_kv_head, cfg.head_dim)
    many.reset()
    assert many.pos == 0
    many.advance(3)
    assert many.pos == 3
    with pytest.raises(ValueError, match="KV cache full"):
        model(torch.zeros(3, 14, dtype=torch.long), kv_cache=many)


def test_bf16_compute_on_cpu():
    model = build(tiny(), dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    idx = torch.randint(0, 100, (2, 16))
    loss = model(idx, idx)
    loss.backward()
    assert math.isfinite(loss.item())
    assert model.lm_head.weight.grad.dtype == torch.float32
    assert model(idx).dtype == torch.float32
    cache = KVCache(model.config, 2, 16, device="cpu", dtype=torch.bfloat16)
    with torch.no_grad():
        assert model(idx[:, :4], kv_cache=cache).shape == (2, 4, 100)


@pytest.mark.parametrize("onednn", [True, False])
def test_inference_matmul_equals_linear_for_one_and_many_rows(monkeypatch, onednn):
    from nanochat.model import inference_matmul
    if not onednn:
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 64, generator=g)
    for rows in ((1, 1), (8, 1), (2, 5)):  # batch-1 decoding, batch-8 decoding, a prefill
        x = torch.randn(*rows, 64, generator=g)
        with torch.inference_mode():
            assert torch.allclose(inference_matmul(w)(x), F.linear(x, w), atol=1e-4)
            got = inference_matmul(w.bfloat16())(x.bfloat16())
        assert got.dtype == torch.bfloat16 and got.shape == (*rows, 300)
        assert torch.allclose(got.float(), F.linear(x.bfloat16().float(), w.bfloat16().float()), atol=0.1, rtol=1e-2)


def test_inference_weight_cache_follows_weight_changes():
    """Inference mode keeps prepared copies of the weights (packed, transposed); any change to a weight must show."""
    model = build(tiny(), dtype=torch.bfloat16)
    randomize(model)
    idx = torch.randint(0, 100, (1, 8))
    with torch.inference_mode():
        before = model(idx)
        assert torch.equal(model(idx), before)  # served from the cache, same numbers
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
        model.transformer.h[0].attn.c_k.weight.add_(0.1)
        expected = model(idx)  # no cache outside inference mode
    with torch.inference_mode():
        after = model(idx)
    assert not torch.equal(after, before)
    assert torch.equal(after, expected)
    model.load_state_dict(build(tiny(), dtype=torch.bfloat16, seed=7).state_dict())
    with torch.no_grad():
        expected = model(idx)
    with torch.inference_mode():
        assert torch.equal(model(idx), expected)


def test_traces_as_one_graph():
    """torch.compile sees the whole training forward: a graph break costs 2x on a CPU step."""
    import torch._dynamo
    model = build(tiny(depth=2, sequence_len=512, window_pattern="SSSL"), dtype=torch.bfloat16)
    idx = torch.randint(0, 100, (1, 512))
    explained = torch._dynamo.explain(model)(idx, idx)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_compiled_step_matches_eager_and_repeats_bit_for_bit():
    """torch.compile (inductor on CPU, ~30 s cold) gives the eager loss and gradients, and the same bits every time:
    embedding backward stays ATen's (nanochat.repeatable_embedding), for Inductor's own is a scatter of atomic adds
    from several threads whose order, and so the gradients' last bits, changes from run to run."""
    from torch._inductor.utils import run_and_get_code
    model = build(tiny(depth=2, sequence_len=64, window_pattern="SL"))
    randomize(model)
    model.windows = [8, 64]  # a short window too
    idx = torch.randint(0, 100, (2, 64))
    eager = model(idx, idx)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    step = torch.compile(model, dynamic=False)

    def compiled_step():
        model.zero_grad(set_to_none=True)
        loss = step(idx, idx)
        loss.backward()
        return loss, [p.grad.clone() for p in model.parameters()]

    (compiled, first), code = run_and_get_code(compiled_step)
    assert torch.allclose(compiled, eager, atol=1e-5)
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5)
    generated = "\n".join(code)  # forward and backward
    assert "nanochat.embedding_backward" in generated and "atomic_add" not in generated
    for _ in range(3):
        _, again = compiled_step()
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_repeatable_embedding_is_nn_embedding_bit_for_bit_in_eager():
    """The eager path is unchanged: the same lookups and the same gradient bits as nn.Embedding (ATen's kernel both)."""
    from nanochat.repeatable_embedding import RepeatableEmbedding
    idx = torch.randint(0, 50, (4, 300), generator=torch.Generator().manual_seed(2))  # over 1000 ids: threaded
    results = []
    for cls in (torch.nn.Embedding, RepeatableEmbedding):
        torch.manual_seed(0)
        table = cls(50, 24)
        out = table(idx)
        (out * torch.linspace(-1, 1, 24)).square().sum().backward()
        results.append((out.detach(), table.weight.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_config_round_trip_and_wrong_checkpoint():
    cfg = tiny(depth=2)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    legacy = {k: v for k, v in cfg.to_dict().items() if k != "window_pattern"}
    assert GPTConfig.from_dict(legacy).window_pattern == "L"
    with pytest.raises(ValueError, match="unknown GPTConfig keys"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_lyer": 3})
    model = build(cfg)
    model.load_state_dict(build(cfg, seed=3).state_dict())
    with pytest.raises(ValueError, match=r"depth 3 vs this model's 2"):
        model.load_state_dict(build(tiny(depth=3)).state_dict())
    with pytest.raises(ValueError, match=r"padded vocab 256 vs this model's 128"):
        model.load_state_dict(build(tiny(depth=2, vocab_size=200)).state_dict())



def _close(a, b, rel, floor=1e-3):
    """Relative to the tensor's norm (bf16 rounds each element, so elementwise checks would flag noise); a scalar
    near zero (a gradient of 1e-5) is held to the floor instead."""
    return (a.float() - b.float()).norm() <= rel * a.float().norm() + floor


def test_compiled_bf16_blocked_attention_and_optimizer_step_match_eager():
    """What a CPU training step runs by default: bf16, sequences above ATTN_BLOCK (the blocked attention) and the
    compiled Muon/AdamW update. Compiled and eager agree to bf16 rounding (inductor fuses in another order)."""
    from nanochat.distributed import World
    from nanochat.model import ATTN_BLOCK
    from nanochat.plugins import registry
    from nanochat.training import build_optimizer  # as the stages and benchmarks/train.py build it
    T = 2 * ATTN_BLOCK + 32
    idx = torch.randint(0, 100, (1, T), generator=torch.Generator().manual_seed(3))
    model = build(tiny(depth=2, sequence_len=T, window_pattern="SL"), dtype=torch.bfloat16)
    randomize(model)
    eager = model(idx, idx)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, dynamic=False)(idx, idx)
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-2)
    for g, p in zip(grads, model.parameters()):
        assert _close(g, p.grad, 5e-2)
    # The optimizer step, compiled and eager, from the same weights and gradients, twice (state from the first).
    params = []
    for compile in (False, True):
        m = build(tiny(depth=2, sequence_len=T, window_pattern="SL"), dtype=torch.bfloat16)
        m.load_state_dict(model.state_dict())
        hp = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28,
                  model_dim=m.config.n_embd)
        opt = build_optimizer(registry(), "muon", m, hp, World(), compiled=compile)
        assert opt.kernels.compile == compile
        for _ in range(2):
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
            opt.step()
        params.append([p.detach().clone() for p in m.parameters()])
    moved = [not torch.equal(a, b) for a, b in zip(params[0], model.parameters())]
    assert all(moved)
    for a, b, start in zip(*params, model.parameters()):
        assert _close(a - start.detach(), b - start.detach(), 5e-2)  # the updates agree
