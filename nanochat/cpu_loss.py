"""The training loss's element-wise work on a CPU in one Rust kernel (rustbpe/src/loss.rs), where built.

    if cpu_loss.available(logits):
        loss, dlogits = cpu_loss.softcap_xent(logits, targets, vocab_size, cap)

For each row of padded logits: the softcapped cross entropy (0 where the target is -1) and its
gradient with respect to the logits, in the logits' dtype, zero in the padded columns. HeadLoss
(nanochat/model.py) calls it per chunk instead of the torch ops that compute the same: compiled,
those make three passes over the chunk and three exponentials a value, the kernel one pass and two.
It is a torch custom op, so a compiled training step calls it as one opaque kernel.
"""
import ctypes
import re

import torch

from nanochat.decode_kernels import DTYPE_CODES, native_library

LOSS_VERSION = 1  # loss.rs's LOSS_VERSION: the signature used below


def _load():
    """The Rust library, or None without one (or with one built from other sources)."""
    return native_library("nloss_version", LOSS_VERSION)


def _openmp_parallel():
    """The address of GOMP_parallel in the OpenMP runtime torch runs on (Linux), or 0 (then the
    kernel starts threads of its own, which share the cores with OpenMP's spinning ones, at half speed)."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return 0
    try:
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if re.search(r"/lib(gomp|iomp5|omp)[^/]*\.so", line)}
    except OSError:
        return 0
    torch_dir = str(torch.__file__).rsplit("/", 1)[0]
    for path in sorted(mapped, key=lambda p: not p.startswith(torch_dir)):  # torch's own runtime first
        try:
            return ctypes.cast(ctypes.CDLL(path).GOMP_parallel, ctypes.c_void_p).value or 0
        except (OSError, AttributeError):
            continue
    return 0


# loaded once at import, so that a compiled graph reads a plain flag (torch.compile cannot trace the import)
LIB = _load()
BUILT = LIB is not None
OPENMP_PARALLEL = None  # GOMP_parallel's address, looked up at the first call (not on every import of the model)


def available(logits):
    """Whether the kernel can take these logits: a CPU tensor of f32 or bf16, and the library built."""
    return BUILT and logits.device.type == "cpu" and logits.dtype in DTYPE_CODES


@torch.library.custom_op("nanochat::softcap_xent", mutates_args=())
def softcap_xent(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                 cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss per row in f32, d loss / d logits in the logits' dtype) for (rows, padded) logits."""
    global OPENMP_PARALLEL
    if OPENMP_PARALLEL is None:
        OPENMP_PARALLEL = _openmp_parallel()
    logits, targets = logits.contiguous(), targets.contiguous()
    rows, padded = logits.shape
    loss = torch.empty(rows, dtype=torch.float32)
    grad = torch.empty_like(logits)
    rc = LIB.nloss_softcap_xent(DTYPE_CODES[logits.dtype], rows, vocab_size, padded, logits.data_ptr(),
                                targets.data_ptr(), cap, loss.data_ptr(), grad.data_ptr(), torch.get_num_threads(),
                                OPENMP_PARALLEL)
    if rc:
        bad = targets[targets >= vocab_size]
        raise ValueError(f"softcap_xent: target {bad[0].item()} is not below vocab_size {vocab_size}; targets "
                         "must be token ids of the model's vocabulary, or -1 to ignore a position" if bad.numel()
                         else f"softcap_xent failed ({rc}) on logits {tuple(logits.shape)} {logits.dtype}")
    return loss, grad


@softcap_xent.register_fake
def _(logits, targets, vocab_size, cap):
    return logits.new_empty(logits.shape[0], dtype=torch.float32), torch.empty_like(logits)
