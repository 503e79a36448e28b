"""The per-rank memory estimate, and the MLP keeping only its matmul outputs for the backward."""
from dataclasses import replace
from types import SimpleNamespace

import torch

import nanochat_optimizers
from nanochat.memory import _AliveTensors, activation_bytes, estimate, saved_activation_bytes, state_bytes
from nanochat.model import GPT, MLP, GPTConfig

HPARAMS = dict(embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.28)


def muon(model):
    found = []
    nanochat_optimizers.nanochat_optimizer(register=found.append)
    plugin = {p.name: p for p in found}["muon"]
    return plugin.build(model, {**HPARAMS, "model_dim": model.config.n_embd}, SimpleNamespace(rank=0, size=1))


def tiny(depth=2, **kw):
    args = dict(vocab_size=100, sequence_len=64, head_dim=16, aspect_ratio=16, window_pattern="L")
    return GPTConfig.from_depth(depth, **{**args, **kw})


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def test_state_bytes_match_a_real_step():
    cfg = tiny()
    params, grads, state = state_bytes(cfg, torch.float32, muon)
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    opt = muon(model)
    model(torch.randint(0, 100, (2, 64)), torch.randint(0, 100, (2, 64))).backward()
    opt.step()
    assert params == nbytes(model.parameters())
    assert grads == nbytes(p.grad for p in model.parameters())
    assert state == nbytes(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def test_activations_extrapolate_to_depth_and_batch():
    """Measured at 2 and 4 layers and batch 1 and 2, the estimate for 6 layers at batch 3 is what
    6 layers at batch 3 really keep."""
    cfg = tiny(depth=6)
    predicted = activation_bytes(cfg, torch.bfloat16, device_batch=3)
    measured = saved_activation_bytes(cfg, torch.bfloat16, 3)
    assert abs(predicted - measured) / measured < 0.02, (predicted, measured)
    assert saved_activation_bytes(cfg, torch.bfloat16, 3) > saved_activation_bytes(replace(cfg, n_layer=4), torch.bfloat16, 3)


def test_estimate_adds_its_parts_and_shards_the_state():
    cfg = tiny()
    one = estimate(cfg, torch.float32, 2, 1, muon)
    four = estimate(cfg, torch.float32, 2, 4, muon)
    parts = ("parameters", "gradients", "optimizer_state", "activations", "loss_chunk")
    assert one["total"] == sum(one[k] for k in parts)
    assert four["optimizer_state"] == one["optimizer_state"] // 4
    assert four["parameters"] == one["parameters"] and four["activations"] == one["activations"]


def test_mlp_keeps_only_matmul_outputs_with_the_same_gradients():
    torch.manual_seed(0)
    cfg = tiny()
    mlp = MLP(cfg)
    for p in mlp.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 64, cfg.n_embd, requires_grad=True)

    def grads(forward):
        for t in (x, *mlp.parameters()):
            t.grad = None
        forward(x).square().sum().backward()
        return [t.grad.clone() for t in (x, *mlp.parameters())]
    plain, kept = grads(mlp._forward), grads(mlp)
    for a, b in zip(plain, kept):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # what each path keeps for the backward: the plain one also keeps relu(h)^2 (4*d per token)
    def kept(forward):
        tracker = _AliveTensors()
        with tracker:
            out = forward(x)
        alive = tracker.alive_bytes()
        del out
        return alive
    hidden, out = 2 * 64 * 4 * cfg.n_embd * 4, 2 * 64 * cfg.n_embd * 4  # bytes of h and of the output
    assert kept(mlp) == hidden + out  # c_fc's output and the result, nothing else
    assert kept(mlp._forward) >= kept(mlp) + hidden
