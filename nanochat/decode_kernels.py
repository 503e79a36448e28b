"""The CPU decode step's fused kernels (rustbpe/src/decode.rs), where the Rust library is built.

    kernels = DecodeKernels.load(torch.bfloat16)    # None: no library (or one of other kernels), or a dtype it lacks
    kernels.embed_smear(...); kernels.mix_norm(...); kernels.qkv_post(...); kernels.add_norm(...); ...

Each call takes tensors' data pointers (ints, 0 for "none"); sizes and layouts are the caller's
promise (nanochat/cpu_decode.py makes them). What each kernel computes is documented in decode.rs.
"""
import torch

DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}
KERNELS_VERSION = 1  # decode.rs's KERNELS_VERSION: the signatures below
EPS = torch.finfo(torch.float32).eps  # F.rms_norm's default eps: float32's, for bf16 inputs too


def native_library(version_symbol, version):
    """The Rust library (nanochat_rustbpe) if it is built and its `version_symbol()` returns `version`,
    else None: a library built from other sources may take other arguments (./setup.sh rebuilds it).
    Each group of kernels carries its own version (decode here, the loss in nanochat/cpu_loss.py)."""
    try:
        from nanochat_rustbpe._native import lib
    except ImportError:
        return None
    built = getattr(lib, version_symbol)() if hasattr(lib, version_symbol) else None
    return lib if built == version else None


def _check(rc, name):
    if rc:
        raise RuntimeError(f"decode kernel {name} failed ({rc}): a bug, please report it")


class DecodeKernels:
    def __init__(self, lib, dtype):
        self.lib, self.code = lib, DTYPE_CODES[dtype]

    @classmethod
    def load(cls, dtype):
        if dtype not in DTYPE_CODES:
            return None
        lib = native_library("ndec_version", KERNELS_VERSION)
        return cls(lib, dtype) if lib is not None else None

    def embed_smear(self, rows, width, ids, table, gate_w, channels, smear_lambda, prev, smear, x0):
        _check(self.lib.ndec_embed_smear(self.code, rows, width, ids, table, gate_w, channels, smear_lambda, prev,
                                         smear, x0, EPS), "embed_smear")

    def mix_norm(self, rows, width, src, add, keep, other, resid, mix, x, h):
        _check(self.lib.ndec_mix_norm(self.code, rows, width, src, add, keep, other, resid, mix, x, h, EPS),
               "mix_norm")

    def qkv_post(self, rows, heads, kv_heads, head_dim, qkv, cos, sin, q, k_cache, v_cache, max_len, pos,
                 ids, ve_table, gate_w, h, h_width, gate_channels):
        _check(self.lib.ndec_qkv_post(self.code, rows, heads, kv_heads, head_dim, qkv, cos, sin, EPS, q, k_cache,
                                      v_cache, max_len, pos, ids, ve_table, gate_w, h, h_width, gate_channels),
               "qkv_post")

    def attend(self, rows, heads, kv_heads, head_dim, q, k_cache, v_cache, max_len, start, end, scale, y):
        _check(self.lib.ndec_attend(self.code, rows, heads, kv_heads, head_dim, q, k_cache, v_cache, max_len, start,
                                    end, scale, y), "attend")

    def add_norm(self, rows, width, x, add, h):
        _check(self.lib.ndec_add_norm(self.code, rows, width, x, add, h, EPS), "add_norm")

    def relu_square(self, n, u):
        _check(self.lib.ndec_relu_square(self.code, n, u), "relu_square")
