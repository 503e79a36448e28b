"""What a newcomer sees is clean: no torch warning block in a compiled training step."""
import subprocess
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nanochat.model import MLP, GPTConfig

COMPILED_STEP = """
import torch
from nanochat.model import GPT, GPTConfig
torch.manual_seed(0)
cfg = GPTConfig.from_depth(1, vocab_size=64, sequence_len=16, head_dim=16, aspect_ratio=32)
with torch.device("meta"):
    model = GPT(cfg)
model.to_empty(device="cpu"); model.init_weights()
idx = torch.randint(0, 64, (1, 16))
torch.compile(model, dynamic=False)(idx, idx).backward()
print("stepped")
"""


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_checkpointed_mlp_has_no_inplace_ops():
    """The promise that lets nanochat.model drop torch.compile's context_fn notice."""
    mlp = MLP(GPTConfig.from_depth(1, vocab_size=64, sequence_len=16, head_dim=16, aspect_ratio=32))
    x = torch.randn(2, 4, mlp.c_fc.weight.shape[1], requires_grad=True)
    with _Ops() as ops:
        mlp._forward(x).sum().backward()
    assert ops.names and not [n for n in ops.names if n.endswith("_") and not n.startswith("_")], ops.names


def test_compiled_training_step_prints_no_warning_block():
    quiet = subprocess.run([sys.executable, "-c", COMPILED_STEP], capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and "stepped" in quiet.stdout, quiet.stderr
    assert "context_fn" not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr


def test_the_notice_nanochat_drops_is_still_torchs():
    """The filter sits on the logger torch logs the notice with (so the test above can fail)."""
    import inspect
    import logging

    import torch._higher_order_ops.wrap as wrap
    assert "context_fn is passed to torch.utils.checkpoint under torch.compile" in inspect.getsource(wrap)
    assert wrap.log is logging.getLogger("torch._higher_order_ops.wrap") and wrap.log.filters
