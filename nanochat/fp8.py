"""fp8 training matmuls: tensorwise-scaled float8 for the transformer's linear layers (`pretrain.fp8 = true`).

A matmul y = x @ W.T runs on float8 copies of its operands: activations and weights in e4m3 (more
precision), gradients in e5m2 (more range). Each tensor gets one scale from its current absolute maximum
("tensorwise, dynamic"), so its largest value lands just under the format's largest finite number and
nothing saturates. The scale is rounded down to a power of two: a power-of-two scale changes no mantissa
bit, so the quantised values divided back are exact in bf16, and the emulated path below computes what the
fp8 kernel computes (up to summation order). It costs at most one bit of headroom at the top of the range.

Two paths, one quantisation:
- CUDA, compute capability 8.9 or newer (Ada, Hopper, Blackwell): torch._scaled_mm, fp8 tensor cores,
  fp32 accumulation, bf16 out. The forward saves the fp8 copies of x and W for the backward (half the
  bytes of bf16), and both backward matmuls run in fp8 too, with the gradient in e5m2.
- Anywhere else torch runs (CPUs): emulated. The same fp8 tensors are cast back to the compute dtype
  and multiplied there. Slower than plain bf16 (extra casts, no fp8 units), so its use is testing the
  numerics on machines without such a GPU.
Refused elsewhere (Apple GPUs, CUDA GPUs older than 8.9), see `check_supported`.

What stays out of fp8: lm_head (the logits feed a softmax over 32K+ classes, where an e4m3 rounding of
6% per operand moves the loss; the record's own trial of fp8 on lm_head gained ~1% speed for 2 GB more
memory), the tiny gates (widths 12 and 24, below the 16-multiple fp8 kernels need), attention's own
matmuls, and evaluation and sampling: fp8 is used only where gradients are being taken, so a checkpoint's
fp32 weights serve inference in bf16 exactly as without fp8.
"""
import torch

E4M3 = torch.float8_e4m3fn  # weights and activations: 3 mantissa bits, max 448
E5M2 = torch.float8_e5m2    # gradients: 2 mantissa bits, max 57344
AMAX_FLOOR = 1e-12          # an all-zero tensor (a zero-initialised projection) still gets a finite scale
MIN_CAPABILITY = (8, 9)     # the first CUDA architectures with fp8 tensor cores (Ada; Hopper is 9.0)


def unit_roundoff(fp8_dtype) -> float:
    """The largest relative error of rounding a normal number to this format: half its epsilon."""
    return torch.finfo(fp8_dtype).eps / 2


def quantize(x: torch.Tensor, fp8_dtype):
    """(x in fp8, the fp32 0-d tensor that multiplies it back): one power-of-two scale for the whole tensor.

    Everything stays on the device (no host sync): amax, scale and cast are a few kernels.
    """
    fmax = torch.finfo(fp8_dtype).max
    amax = x.detach().abs().amax().float().clamp_min(AMAX_FLOOR)
    scale = torch.exp2(torch.floor(torch.log2(fmax / amax)))
    # the clamp only guards against fp32 rounding in the log2 at an exact power of two: nothing saturates
    q = (x.float() * scale).clamp(-fmax, fmax).to(fp8_dtype)
    return q, scale.reciprocal()


def dequantize(q: torch.Tensor, inverse_scale: torch.Tensor, dtype) -> torch.Tensor:
    return q.to(dtype) * inverse_scale.to(dtype)  # exact: fp8 values and power-of-two scales fit bf16


def _mm(a, a_inv, b, b_inv, out_dtype, fast_accum=False):
    """a @ b of two quantised operands (a: M x K, b: K x N), scaled back, in out_dtype.

    On CUDA the fp8 kernel wants a row-major and b column-major, and dimensions that are multiples of 16.
    """
    if a.is_cuda:
        return torch._scaled_mm(a.contiguous(), b.t().contiguous().t(), scale_a=a_inv, scale_b=b_inv,
                                out_dtype=out_dtype, use_fast_accum=fast_accum)
    return dequantize(a, a_inv, out_dtype) @ dequantize(b, b_inv, out_dtype)


class Fp8Matmul(torch.autograd.Function):
    """y = x @ w.T with x, w in e4m3; backward: dx = dy @ w and dw = dy.T @ x with dy in e5m2.

    x: (rows, in) in the compute dtype; w: (out, in), the fp32 master weight (or a stack of them).
    Returns y in x's dtype and a gradient for w in w's dtype.
    """

    @staticmethod
    def forward(ctx, x, w):
        xq, x_inv = quantize(x, E4M3)
        wq, w_inv = quantize(w, E4M3)
        ctx.save_for_backward(xq, x_inv, wq, w_inv)
        ctx.out_dtype, ctx.w_dtype = x.dtype, w.dtype
        return _mm(xq, x_inv, wq.t(), w_inv, x.dtype, fast_accum=True)

    @staticmethod
    def backward(ctx, grad_y):
        xq, x_inv, wq, w_inv = ctx.saved_tensors
        gq, g_inv = quantize(grad_y, E5M2)
        grad_x = _mm(gq, g_inv, wq, w_inv, ctx.out_dtype) if ctx.needs_input_grad[0] else None
        grad_w = _mm(gq.t(), g_inv, xq, x_inv, torch.float32).to(ctx.w_dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def fp8_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F.linear(x, w) through Fp8Matmul, for x of any leading shape."""
    rows = x.reshape(-1, x.size(-1))
    return Fp8Matmul.apply(rows, w).view(*x.shape[:-1], w.size(0))


def check_supported(device) -> str:
    """How fp8 will run on `device` ("cuda" or "emulated"), or a ValueError saying why it cannot, and the fix."""
    device = torch.device(device)
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        if tuple(cap) < MIN_CAPABILITY:
            name = torch.cuda.get_device_name(device)
            raise ValueError(f"fp8=true needs a GPU with fp8 tensor cores (compute capability 8.9 or newer: "
                             f"L4, L40S, RTX 4090, H100, H200, B200); this one is {name} ({cap[0]}.{cap[1]}). "
                             f"Train in bf16 with --set fp8=false")
        return "cuda"
    if device.type == "cpu":
        return "emulated"
    raise ValueError(f"fp8=true is not supported on the {device.type} device (no float8 matmuls there, and an "
                     f"emulation would only be slower than bf16); use --set fp8=false")


def peak_dtype(device, compute_dtype):
    """The dtype whose peak FLOP/s an fp8 run's MFU is measured against: fp8's on CUDA, else the
    compute dtype's (the emulation multiplies in it)."""
    return E4M3 if torch.device(device).type == "cuda" else compute_dtype
