"""The optimizer plugins: registration, param groups, the update math, state, distributed sync."""
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nanochat_optimizers
from nanochat.model import GPT, GPTConfig
from nanochat_optimizers.optim import MuonAdamWOptimizer, polar_express

ROOT = Path(__file__).resolve().parents[1]
HPARAMS = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28)
SINGLE = SimpleNamespace(rank=0, size=1)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def plugins():
    found = []
    nanochat_optimizers.nanochat_optimizer(register=found.append)
    return {p.name: p for p in found}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig.from_depth(2, vocab_size=120, sequence_len=32, head_dim=32, aspect_ratio=32)
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def hparams(model, **kw):
    return {**HPARAMS, "model_dim": model.config.n_embd, **kw}


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (4, 32), generator=g)
    return x, torch.roll(x, -1, dims=1)


def train(model, opt, steps, seed=1):
    x, y = batch(seed)
    losses = []
    for _ in range(steps):
        loss = model(x, y)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_plugins_register_through_the_hook():
    found = plugins()
    assert set(found) == {"muon", "adamw"}
    for p in found.values():
        assert p.description and callable(p.build)


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, nanochat_optimizers; assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_muon_param_groups():
    model = tiny_model()
    opt = plugins()["muon"].build(model, hparams(model), SINGLE)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(map(id, grouped))) == len(list(model.parameters()))
    by_role = {g["role"]: g for g in opt.param_groups if g["kind"] == "adamw"}
    s = (model.config.n_embd / 768) ** -0.5
    assert by_role["lm_head"]["lr"] == pytest.approx(0.008 * s) and by_role["lm_head"]["betas"] == (0.8, 0.96)
    assert by_role["wte"]["lr"] == pytest.approx(0.3 * s) and by_role["wte"]["weight_decay"] == 0.001
    assert by_role["value_embeds"]["lr"] == pytest.approx(0.15 * s)
    assert by_role["resid_lambdas"]["lr"] == pytest.approx(0.005) and by_role["resid_lambdas"]["weight_decay"] == 0.05
    assert by_role["x0_lambdas"]["betas"] == (0.96, 0.95)
    assert by_role["scalars"]["lr"] == 0.2
    muon = [g for g in opt.param_groups if g["kind"] == "muon"]
    assert muon and all(len({p.shape for p in g["params"]}) == 1 for g in muon)
    for g in opt.param_groups:
        assert g["initial_lr"] == g["lr"]
    for g in muon:
        assert g["momentum"] == 0.95 and g["weight_decay"] == 0.28 and g["lr"] == 0.02
    with pytest.raises(KeyError, match="matrix_lr"):
        plugins()["muon"].build(model, {"embedding_lr": 0.3}, SINGLE)


def test_a_stage_fraction_scales_every_group_even_the_fixed_rate_scalars():
    """RL and SFT take a fraction of the inherited rates. The smear / backout scalars have a fixed rate
    (0.2) that no lr setting reaches: left at full rate, RL collapsed a tiny model in three steps."""
    from nanochat.training import scale_learning_rates
    model = tiny_model()
    opt = plugins()["muon"].build(model, hparams(model), SINGLE)
    before = [g["lr"] for g in opt.param_groups]
    scale_learning_rates(opt, 0.05)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05 * lr for lr in before])
    assert all(g["initial_lr"] == g["lr"] for g in opt.param_groups)
    assert next(g for g in opt.param_groups if g.get("role") == "scalars")["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("shape", [(3, 64, 32), (2, 32, 96)])
def test_polar_express_is_nearly_orthogonal(shape):
    torch.manual_seed(0)
    G = torch.randn(shape)
    for dtype in (torch.float32, torch.bfloat16):
        s = torch.linalg.svdvals(polar_express(G.to(dtype)).float())
        assert s.min() > 0.7 and s.max() < 1.2, (dtype, s.min(), s.max())


def plain_polar_express(G, coeffs):
    """The iteration as the paper writes it, one matrix at a time in float64: X <- aX + b(XX^T)X + c(XX^T)^2 X."""
    X = G.double() / (G.double().norm() * 1.01 + 1e-6)
    for a, b, c in coeffs:
        A = X @ X.T
        X = a * X + b * A @ X + c * A @ A @ X
    return X


@pytest.mark.parametrize("shape", [(3, 48, 48), (2, 96, 32), (2, 32, 96)])  # square, tall, wide
def test_polar_express_matches_the_plain_iteration(shape):
    """The stacked, Gram-side, fused-multiply-add form the optimizer runs (in fp32, and in bf16 as a bf16 model
    runs it) gives what the plain per-matrix iteration gives: a guard for any faster rewrite of it."""
    from nanochat_optimizers.optim import POLAR_EXPRESS_COEFFS
    torch.manual_seed(0)
    G = torch.randn(shape)
    want = torch.stack([plain_polar_express(g, POLAR_EXPRESS_COEFFS) for g in G])
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        got = polar_express(G.to(dtype)).double()
        error = ((got - want).norm(dim=(-2, -1)) / want.norm(dim=(-2, -1))).max().item()
        assert error < tolerance, (dtype, error)


def test_adamw_group_matches_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(64, 16))
    b = torch.nn.Parameter(a.detach().clone())
    cfg = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)
    ours = MuonAdamWOptimizer([dict(kind="adamw", params=[a], **cfg)])
    ref = torch.optim.AdamW([b], **cfg)
    for _ in range(10):
        g = torch.randn(64, 16)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["muon", "adamw"])
def test_a_few_steps_reduce_the_loss(name):
    model = tiny_model()
    opt = plugins()[name].build(model, hparams(model), SINGLE)
    losses = train(model, opt, 12)
    assert losses[-1] < 0.6 * losses[0], losses


def test_muon_weight_decay_and_lr_are_read_each_step():
    model = tiny_model()
    opt = plugins()["muon"].build(model, hparams(model), SINGLE)
    before = {id(p): p.detach().clone() for g in opt.param_groups if g["kind"] == "muon" for p in g["params"]}
    for g in opt.param_groups:
        g["lr"] = 0.0  # a schedule at zero: nothing may move
    train(model, opt, 1)
    for g in opt.param_groups:
        if g["kind"] == "muon":
            for p in g["params"]:
                assert torch.equal(p, before[id(p)])


def test_state_dict_round_trip_continues_identically():
    model = tiny_model()
    opt = plugins()["muon"].build(model, hparams(model), SINGLE)
    train(model, opt, 3)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    buf = io.BytesIO()  # through bytes, as a checkpoint would (state_dict() holds live tensors)
    torch.save(opt.state_dict(), buf)
    continued = train(model, opt, 3)

    resumed = tiny_model(seed=5)
    resumed.load_state_dict(saved_model)
    resumed_opt = plugins()["muon"].build(resumed, hparams(resumed), SINGLE)
    buf.seek(0)
    resumed_opt.load_state_dict(torch.load(buf))
    assert train(resumed, resumed_opt, 3) == continued
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_state_from_another_world_size_is_refused():
    model = tiny_model()
    opt = plugins()["muon"].build(model, hparams(model), SINGLE)
    train(model, opt, 1)
    sd = opt.state_dict()
    sd["sharding"] = {"rank": 1, "world_size": 2}
    with pytest.raises(ValueError, match="rank 1 of 2"):
        opt.load_state_dict(sd)


def test_distributed_matches_gradient_accumulation(tmp_path):
    """2 gloo ranks on CPU, each with half the batch == 1 rank with 2 accumulated micro-batches."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "dist_optim_check.py"), str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "dist_optim_check OK" in out.stdout
