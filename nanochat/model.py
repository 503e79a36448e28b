"""The GPT: one depth dial, fp32 master weights, compute in a chosen dtype, and a KV cache.

Architecture (the latest nanochat recipe):
- token embedding -> RMSNorm -> smear (mix in the previous token) -> blocks -> backout -> RMSNorm -> lm_head
- block: x = resid_lambda*x + x0_lambda*x0; x += attn(norm(x)); x += mlp(norm(x))
- attention: RoPE (base 100k) then QK RMSNorm, scores scaled by 1.2*1.2/sqrt(head_dim), GQA,
  value embeddings on alternating layers (last layer always) with a 3*sigmoid gate per kv head,
  a per-layer sliding window ("SSSL": three short layers, one long; the last layer is always long)
- MLP: relu(x)^2, 4x wide; no biases, RMSNorm has no weights, output projections start at zero
- logits: vocab padded to a multiple of 64, sliced back, softcap 15*tanh(x/15) in fp32

Build on the meta device, move to a device, then call init_weights():
    with torch.device("meta"): model = GPT(GPTConfig.from_depth(4, vocab_size=..., sequence_len=...))
    model.to_empty(device=device); model.init_weights()
"""
import logging
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from nanochat import cpu_loss
from nanochat.fp8 import fp8_linear
from nanochat.repeatable_embedding import RepeatableEmbedding

ROPE_BASE = 100_000
QK_SCALE = 1.2          # applied to q and k after their norm; folded into the attention scale
SOFTCAP = 15.0
VE_GATE_CHANNELS = 12   # the value-embedding gate reads the first 12 channels of the block input
SMEAR_CHANNELS = 24     # the smear gate reads the first 24 channels of the embedding
VOCAB_MULTIPLE = 64     # pad the vocab so it shards evenly and matmuls stay aligned
ROPE_LENGTH_FACTOR = 10 # rotary tables cover 10x the training length (for long generations)
ATTN_BLOCK = 128        # CPU attention: query block size of the blocked path (sliding windows)
CAUSAL_BLOCK = 256      # ... and its largest block for plain causal attention (at most half the sequence)
ATTN_BLOCKED_MAX_LEN = 1024  # beyond this the blocked path's saved probabilities cost too much memory
LOSS_CHUNK_ELEMENTS = {True: 1 << 22, False: 1 << 26}  # logits per loss chunk: CPU (stays in L3), other


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768
    window_pattern: str = "SSSL"

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; pick a width that is")
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head} (GQA groups)")
        if self.n_embd < SMEAR_CHANNELS:
            raise ValueError(f"n_embd={self.n_embd} is below the {SMEAR_CHANNELS} channels the smear gate reads; use a wider model")
        pattern = self.window_pattern.upper()
        if not pattern or set(pattern) - set("SL"):
            raise ValueError(f"window_pattern={self.window_pattern!r} must be a non-empty string of S (short) and L (long)")
        self.window_pattern = pattern

    @classmethod
    def from_depth(cls, depth, *, vocab_size, sequence_len, head_dim=128, aspect_ratio=64,
                   window_pattern="SSSL", n_kv_head=None):
        """The one dial: width = depth*aspect_ratio rounded up to a whole number of heads."""
        if depth < 1:
            raise ValueError(f"depth={depth} must be at least 1")
        n_embd = math.ceil(depth * aspect_ratio / head_dim) * head_dim
        n_head = n_embd // head_dim
        return cls(sequence_len=sequence_len, vocab_size=vocab_size, n_layer=depth, n_head=n_head,
                   n_kv_head=n_head if n_kv_head is None else n_kv_head, n_embd=n_embd,
                   window_pattern=window_pattern)

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self):
        return math.ceil(self.vocab_size / VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def window_sizes(self):
        """Per layer: how many earlier tokens a query may attend to (S = T/4 rounded up to 128)."""
        T = self.sequence_len
        short = min(math.ceil(T / 4 / 128) * 128, T)
        sizes = [short if self.window_pattern[i % len(self.window_pattern)] == "S" else T
                 for i in range(self.n_layer)]
        sizes[-1] = T
        return sizes

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig keys {sorted(unknown)}; known keys are {sorted(known)}")
        d = dict(d)
        d.setdefault("window_pattern", "L")  # configs written before sliding windows had full attention
        return cls(**d)


def has_value_embedding(layer, n_layer):
    """Alternating layers carry a value embedding, and the last layer always does."""
    return layer % 2 == (n_layer - 1) % 2


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def linear(module, x, *weights):
    """x @ W.T in x's dtype, where W is the weight(s) of a matmul; several are stacked along the rows.

    Training casts every step (autograd needs it), or runs in fp8 on a module marked for it (GPT's
    fp8 argument) while gradients are taken. In inference mode the matmul is prepared once and kept on
    the module until a weight changes (its version or storage), see inference_matmul.
    """
    dtype = x.dtype
    if torch.compiler.is_compiling() or not torch.is_inference_mode_enabled():  # (this order: no graph break)
        w = weights[0] if len(weights) == 1 else torch.cat(weights)
        if module.fp8 and torch.is_grad_enabled():
            return fp8_linear(x, w)
        return F.linear(x, w if w.dtype == dtype else w.to(dtype))
    if x.device.type != "cpu" and len(weights) == 1 and weights[0].dtype == dtype:
        return F.linear(x, weights[0])
    return prepared_matmul(module, dtype, x.device, *weights)(x)


def prepared_matmul(module, dtype, device, *weights):
    """The inference matmul x -> x @ W.T (inference_matmul) for these weights, kept on the module
    and rebuilt when a weight changes (its version or storage), the dtype or the device."""
    key = (dtype, device) + tuple((w.data_ptr(), w._version) for w in weights)
    cached = module.__dict__.get("_inference_matmul")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            w = (weights[0] if len(weights) == 1 else torch.cat(weights)).to(dtype)
            cached = (key, inference_matmul(w))
        module.__dict__["_inference_matmul"] = cached
    return cached[1]


def inference_matmul(w):
    """x -> x @ w.T with w laid out for decoding, where a step multiplies a few rows (one per sequence).

    On CPUs the generic kernels handle few-row products poorly. Measured on a decode step's matmuls:
    a weight pre-packed for oneDNN is 2-4x faster than F.linear in bf16 and 1.5-2.5x in fp32 at
    8 rows; for a single fp32 row the transposed, contiguous weight streams fastest (so fp32 keeps
    both). Without oneDNN, the transposed weight. Elsewhere F.linear is already right.
    """
    if w.device.type != "cpu":
        return lambda x: F.linear(x, w)
    onednn = torch.backends.mkldnn.is_available() and (
        w.dtype == torch.float32 or w.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not onednn:
        transposed = w.t().contiguous()
        return lambda x: x @ transposed
    packed = torch.ops.mkldnn._reorder_linear_weight(w, 8)  # 8: the row count to tune for

    def packed_matmul(x):
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    if w.dtype == torch.bfloat16:
        return packed_matmul
    transposed = w.t().contiguous()
    return lambda x: x @ transposed if x.numel() == x.size(-1) else packed_matmul(x)


class Linear(nn.Linear):
    """fp32 master weight; the matmul runs in the activation's dtype (bf16 on GPUs), or fp8 (see linear)."""

    fp8 = False

    def forward(self, x):
        return linear(self, x, self.weight)


def apply_rotary(x, cos, sin):
    """Rotate each head's two halves by the position's angle.

    x: (B, T, heads, D); cos = [cos, cos] and sin = [sin, -sin] over D, so swapping the halves
    does it: [x1, x2] -> [x1 cos + x2 sin, x2 cos - x1 sin]. (The swap is written as a cat, not a
    roll: compiled for CPU, the roll's backward indexes modulo D and loses vectorization.)
    """
    half = x.size(-1) // 2
    return torch.addcmul(x * cos, torch.cat((x[..., half:], x[..., :half]), dim=-1), sin)


# ----------------------------------------------------------------------------------------------
# Attention with per-layer windows. q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D). The queries sit at
# absolute positions Tk-Tq .. Tk-1, the keys at 0 .. Tk-1. A query at i sees keys j with
# 0 <= i - j <= window.

def _sliding_window_flex(q, k, v, window, scale):
    """CUDA inside torch.compile: flex attention skips the blocks outside the window."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def sliding_causal(b, h, qi, kj):
        return (qi >= kj) & (qi - kj <= window)

    T = q.size(2)
    block_mask = create_block_mask(sliding_causal, None, None, T, T, device=q.device)  # traced into the graph
    return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=q.size(1) != k.size(1))


def _block_size(T, window):
    """Query rows per block: small blocks skip more keys of a short window; plain causal attention
    skips the upper triangle in halves or quarters, where bigger matmuls pay more than finer skipping
    (measured: 256 at sequence 512, 128 at 256)."""
    return min(CAUSAL_BLOCK, T // 2) if window >= T - 1 else ATTN_BLOCK


def _blocks(T, window):
    """Query blocks (start, end) and the first key each one can see."""
    size = _block_size(T, window)
    for s in range(0, T, size):
        yield s, min(s + size, T), max(0, s - window)


class _BlockedAttention(torch.autograd.Function):
    """CPU training attention over a whole sequence, one block of queries at a time (_block_size).

    Each block only meets the keys it can see (causal, inside its window), forward and backward;
    SDPA would need an explicit mask for a window and compute every block. For plain causal
    attention SDPA's CPU flash kernel skips masked blocks too, but its backward ran 2.7x slower
    than this path compiled (d4's shape: 12.5 + 10.5 ms forward + backward against 14.5 + 30.8).
    Numerics as in flash attention: scores and softmax in fp32, the probabilities and the
    backward's matmuls in the compute dtype. q: (B, Hkv, G, T, D), k and v: (B, Hkv, 1, T, D).
    """

    @staticmethod
    def forward(ctx, q, k, v, window, scale):
        qf, kf = q.float(), k.float()
        out, probs = [], []
        for s, e, ks in _blocks(q.size(-2), window):
            scores = (qf[..., s:e, :] @ kf[..., ks:e, :].mT) * scale
            scores = scores.masked_fill(~window_mask(e - s, e - ks, window, q.device), float("-inf"))
            probs.append(scores.softmax(-1).to(v.dtype))
            out.append(probs[-1] @ v[..., ks:e, :])
        ctx.save_for_backward(q, k, v, *probs)
        ctx.window, ctx.scale = window, scale
        return torch.cat(out, dim=-2)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, *probs = ctx.saved_tensors
        T = q.size(-2)
        dq, dk, dv = [], 0, 0
        for (s, e, ks), p in zip(_blocks(T, ctx.window), probs):
            go = grad_out[..., s:e, :]
            dp = (go @ v[..., ks:e, :].mT).float()
            pf = p.float()
            ds = (pf * (dp - (pf * dp).sum(-1, keepdim=True)) * ctx.scale).to(q.dtype)
            dq.append(ds @ k[..., ks:e, :])
            # each block's key gradients, zero-padded to the whole sequence and summed: written as
            # += into slices, the compiler nests one masked copy per block (many times slower)
            rows = (0, 0, ks, T - e)
            dk = dk + F.pad((ds.mT @ q[..., s:e, :]).float().sum(2, keepdim=True), rows)  # sum over the GQA group
            dv = dv + F.pad((p.mT @ go).float().sum(2, keepdim=True), rows)
        return torch.cat(dq, dim=-2), dk.to(k.dtype), dv.to(v.dtype), None, None


def _blocked_attention(q, k, v, window, scale):
    B, H, T, D = q.shape
    q = q.unflatten(1, (k.size(1), H // k.size(1)))  # GQA: queries grouped under their kv head
    return _BlockedAttention.apply(q, k.unsqueeze(2), v.unsqueeze(2), window, scale).view(B, H, T, D)


def attention(q, k, v, window, scale):
    Tq, Tk = q.size(2), k.size(2)
    gqa = q.size(1) != k.size(1)
    causal = window >= Tk - 1
    if (Tq == Tk and q.device.type == "cpu" and _block_size(Tq, window) < Tq <= ATTN_BLOCKED_MAX_LEN
            and (torch.is_grad_enabled() or not causal)):
        # a whole sequence on CPU with a window, or causal in training (SDPA's backward is the slow part)
        return _blocked_attention(q, k, v, window, scale)
    if Tq == Tk and causal:
        # plain causal (CUDA, or CPU without grad): SDPA's flash kernel skips the masked blocks
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if Tq == 1:
        # decoding one token: keep the last window+1 keys, no mask needed
        start = max(0, Tk - 1 - window)
        return F.scaled_dot_product_attention(q, k[:, :, start:], v[:, :, start:], scale=scale, enable_gqa=gqa)
    if Tq == Tk and q.is_cuda and torch.compiler.is_compiling():
        return _sliding_window_flex(q, k, v, window, scale)
    # a window shorter than the sequence (CPU, or CUDA uncompiled), or a chunk appended to a KV
    # cache: SDPA with an explicit mask (flex attention has no CPU backward)
    mask = window_mask(Tq, Tk, window, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def window_mask(Tq, Tk, window, device):
    i = torch.arange(Tk - Tq, Tk, device=device).unsqueeze(1)
    j = torch.arange(Tk, device=device).unsqueeze(0)
    return (j <= i) & (i - j <= window)


class CausalSelfAttention(nn.Module):
    fp8 = False  # the fused q/k/v matmul in fp8 (set by GPT)

    def __init__(self, config, layer):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        d, kv = config.n_embd, config.n_kv_head * config.head_dim
        self.c_q = Linear(d, config.n_head * config.head_dim, bias=False)
        self.c_k = Linear(d, kv, bias=False)
        self.c_v = Linear(d, kv, bias=False)
        self.c_proj = Linear(d, d, bias=False)
        self.ve_gate = Linear(VE_GATE_CHANNELS, config.n_kv_head, bias=False) \
            if has_value_embedding(layer, config.n_layer) else None
        self.scale = QK_SCALE * QK_SCALE / math.sqrt(config.head_dim)

    def forward(self, x, ve, cos, sin, window, kv_cache):
        B, T, _ = x.shape
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        # one matmul for q, k and v (the three stay separate parameters for Muon)
        qkv = linear(self, x, self.c_q.weight, self.c_k.weight, self.c_v.weight).view(B, T, H + 2 * Hkv, D)
        qk, v = qkv[:, :, :H + Hkv], qkv[:, :, H + Hkv:]
        qk = norm(apply_rotary(qk, cos, sin))
        q, k = qk[:, :, :H], qk[:, :, H:]
        if ve is not None:
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, Hkv, D)
        if kv_cache is not None:
            k_cache, v_cache = kv_cache.get_layer_cache(self.layer)
            pos = kv_cache.pos
            k_cache[:, pos:pos + T] = k
            v_cache[:, pos:pos + T] = v
            k, v = k_cache[:, :pos + T], v_cache[:, :pos + T]
        # a cache may hold keys and values in a wider dtype than the compute dtype (GPT.kv_cache_dtype)
        y = attention(q.transpose(1, 2).to(k.dtype), k.transpose(1, 2), v.transpose(1, 2), window, self.scale)
        return self.c_proj(y.transpose(1, 2).to(x.dtype).reshape(B, T, H * D))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        if not torch.is_grad_enabled():
            return self._forward(x)
        # Keep only the matmul results for the backward: relu(h)^2 is recomputed from h (one
        # pointwise op) instead of kept beside it, which saves 4*d values per token and layer, about
        # a fifth of the activations training keeps (how a d20 fits 8x80 GB at device batch 32).
        return checkpoint(self._forward, x, use_reentrant=False, context_fn=_keep_matmul_outputs)

    def _forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


_MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten._scaled_mm.default)


def _matmuls_only(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


def _keep_matmul_outputs():
    return create_selective_checkpoint_contexts(_matmuls_only)


class _CheckedContextFnNotice(logging.Filter):
    """torch.compile logs a block asking to make sure a checkpointed region with a context_fn has no
    in-place ops. MLP._forward has none (relu and square make new tensors; a test keeps it so), so
    every compiled training run would print a warning that does not apply: drop that one message."""

    def filter(self, record):
        return "context_fn is passed to torch.utils.checkpoint under torch.compile" not in record.getMessage()


logging.getLogger("torch._higher_order_ops.wrap").addFilter(_CheckedContextFnNotice())


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, window, kv_cache):
        x = x + self.attn(norm(x), ve, cos, sin, window, kv_cache)
        return x + self.mlp(norm(x))


# ----------------------------------------------------------------------------------------------
# The loss: softcapped logits and cross entropy, in fp32.

def softcap(x):
    """SOFTCAP * tanh(x / SOFTCAP).

    Compiled, it is written with exp, which inductor vectorizes much better than tanh on CPUs;
    eager (decoding), tanh is one kernel instead of four.
    """
    if torch.compiler.is_compiling():
        return SOFTCAP - 2 * SOFTCAP / (1 + torch.exp(x * (2 / SOFTCAP)))
    return SOFTCAP * torch.tanh(x / SOFTCAP)


def softcap_slope(z):
    """d softcap(x) / dx from the softcapped value z: 1 - tanh^2 = 1 - (z / SOFTCAP)^2."""
    t = z * (1 / SOFTCAP)
    return 1 - t * t


def cross_entropy_rows(logits, targets, vocab_size):
    """(loss, logsumexp) per row of padded logits; a row whose target is -1 has loss 0.

    Softcapped logits lie in [-15, 15], so logsumexp needs no max subtraction.
    """
    z = softcap(logits[..., :vocab_size].float())
    lse = z.exp().sum(-1).log()
    target_logit = softcap(logits.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1).float())
    return torch.where(targets >= 0, lse - target_logit, 0.0), lse


def softcap_xent_rows(logits, targets, vocab_size, padding):
    """(loss per row, d loss / d logits in the logits' dtype, zero in the padded columns)."""
    loss, lse = cross_entropy_rows(logits, targets, vocab_size)
    # d loss / d logits = (softmax - onehot) * d softcap / dx.
    # The softmax part for every column, then the target column overwritten with its own
    # value: cheaper than comparing every column with the target (int64 vectors on CPUs).
    valid = (targets >= 0).unsqueeze(1)
    target = targets.clamp_min(0).unsqueeze(1)
    z = softcap(logits[:, :vocab_size].float())
    dlogits = (torch.exp(z - lse.unsqueeze(1)) * valid * softcap_slope(z)).to(logits.dtype)
    zt = z.gather(1, target)
    dtarget = ((torch.exp(zt - lse.unsqueeze(1)) - 1) * valid * softcap_slope(zt)).to(logits.dtype)
    return loss, F.pad(dlogits.scatter(1, target, dtarget), padding)  # padded columns: no gradient


class HeadLoss(torch.autograd.Function):
    """Training loss, summed over rows: lm_head matmul, softcap and cross entropy together.

    The rows go through in chunks, and each chunk's gradient is computed right away (the loss is
    a sum, so the backward only scales it): a chunk's logits stay in cache, and neither the full
    (rows x vocab) logits nor their gradient ever exist.
    """

    @staticmethod
    def forward(ctx, x, weight, targets, vocab_size, chunk):
        w = weight.to(x.dtype)
        dx = torch.empty_like(x)
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        padding = (0, w.size(0) - vocab_size)
        for s in range(0, x.size(0), chunk):
            xc, tc = x[s:s + chunk], targets[s:s + chunk]
            logits = xc @ w.t()
            if cpu_loss.available(logits):  # the same, one pass in Rust (nanochat/cpu_loss.py)
                loss, dlogits = cpu_loss.softcap_xent(logits, tc, vocab_size, SOFTCAP)
            else:
                loss, dlogits = softcap_xent_rows(logits, tc, vocab_size, padding)
            total = total + loss.sum()
            dx[s:s + chunk] = dlogits @ w
            dw += (dlogits.t() @ xc).float()
        ctx.save_for_backward(dx, dw)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        dx, dw = ctx.saved_tensors
        return dx * grad_total.to(dx.dtype), (dw * grad_total).to(ctx.weight_dtype), None, None, None


# ----------------------------------------------------------------------------------------------

class KVCache:
    """Keys and values of every layer for B rows, preallocated up to max_len positions.

    `pos` is a plain int (all rows advance together), so decoding never syncs with the device.
    `prev_embedding` holds each row's last normalized token embedding, which smear mixes into
    the next token. GPT.forward(idx, kv_cache=cache) writes the new positions and advances.
    """

    def __init__(self, config, batch_size, max_len, *, device, dtype):
        shape = (config.n_layer, batch_size, max_len, config.n_kv_head, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.prev_embedding = torch.zeros(batch_size, 1, config.n_embd, device=device, dtype=dtype)
        self.batch_size, self.max_len, self.n_layer = batch_size, max_len, config.n_layer
        self.pos = 0

    def reset(self):
        self.pos = 0

    def advance(self, n):
        self.pos += n

    def get_layer_cache(self, i):
        return self.k[i], self.v[i]

    def prefill_from(self, other):
        """Copy a batch-1 cache (a prefilled prompt) into every row of this one."""
        if other.batch_size != 1:
            raise ValueError(f"prefill_from needs a batch-1 cache, got batch {other.batch_size}")
        if other.k.shape[0] != self.k.shape[0] or other.k.shape[3:] != self.k.shape[3:]:
            raise ValueError(f"cache shapes differ: {tuple(other.k.shape)} vs {tuple(self.k.shape)}")
        if other.pos > self.max_len:
            raise ValueError(f"the prefilled prompt has {other.pos} positions but this cache holds {self.max_len}")
        n = other.pos
        self.k[:, :, :n] = other.k[:, :, :n]
        self.v[:, :, :n] = other.v[:, :, :n]
        self.prev_embedding.copy_(other.prev_embedding.expand_as(self.prev_embedding))
        self.pos = n


# ----------------------------------------------------------------------------------------------

class GPT(nn.Module):
    def __init__(self, config, *, compute_dtype=torch.float32, fp8=False):
        """Runs on the meta device too: only shapes here, all values are set in init_weights().

        fp8: the blocks' matmuls train in float8 (nanochat/fp8.py); weights and checkpoints do not change.
        """
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.fp8 = fp8
        self.windows = config.window_sizes()
        self.backout_layer = config.n_layer // 2
        V, d = config.padded_vocab_size, config.n_embd
        self.transformer = nn.ModuleDict({
            "wte": RepeatableEmbedding(V, d),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = Linear(d, V, bias=False)
        for block in self.transformer.h:  # the one place fp8 is chosen; lm_head and the gates stay out (fp8.py)
            for module in (block.attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                module.fp8 = fp8
        self.value_embeds = nn.ModuleDict({
            str(i): RepeatableEmbedding(V, config.n_kv_head * config.head_dim)
            for i in range(config.n_layer) if has_value_embedding(i, config.n_layer)})
        self.ve_keys = [str(i) if str(i) in self.value_embeds else None for i in range(config.n_layer)]
        self.resid_lambdas = nn.Parameter(torch.empty(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.empty(config.n_layer))
        self.smear_gate = Linear(SMEAR_CHANNELS, 1, bias=False)
        self.smear_lambda = nn.Parameter(torch.empty(()))
        self.backout_lambda = nn.Parameter(torch.empty(()))
        rope_shape = (1, ROPE_LENGTH_FACTOR * config.sequence_len, 1, config.head_dim)
        self.register_buffer("cos", torch.empty(rope_shape, dtype=compute_dtype), persistent=False)
        self.register_buffer("sin", torch.empty(rope_shape, dtype=compute_dtype), persistent=False)

    @torch.no_grad()
    def init_weights(self):
        cfg = self.config
        L, d = cfg.n_layer, cfg.n_embd
        s = math.sqrt(3) * d ** -0.5  # uniform(-s, s) has std 1/sqrt(d)
        nn.init.normal_(self.transformer.wte.weight, std=0.8)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.uniform_(block.mlp.c_fc.weight, -0.4 * s, 0.4 * s)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        # graded lambdas: early layers keep more residual and more of the embedding
        frac = torch.arange(L, dtype=torch.float32) / max(L - 1, 1)
        self.resid_lambdas.copy_(1.15 - 0.10 * frac)
        self.x0_lambdas.copy_(0.20 - 0.15 * frac)
        nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        self.smear_lambda.zero_()
        self.backout_lambda.fill_(0.2)
        # rotary tables, in the compute dtype so nothing is cast per step
        device = self.transformer.wte.weight.device
        D = cfg.head_dim
        inv_freq = ROPE_BASE ** (-torch.arange(0, D, 2, dtype=torch.float32, device=device) / D)
        angles = torch.outer(torch.arange(self.cos.size(1), dtype=torch.float32, device=device), inv_freq)
        cos, sin = angles.cos(), angles.sin()
        self.cos = torch.cat((cos, cos), dim=1)[None, :, None, :].to(self.compute_dtype)
        self.sin = torch.cat((sin, -sin), dim=1)[None, :, None, :].to(self.compute_dtype)

    @property
    def kv_cache_dtype(self):
        """The dtype a KVCache for this model should use: the compute dtype, except on CPUs, where
        one-query attention runs 3-5x faster in fp32 than in bf16 (and the cache is small)."""
        return torch.float32 if self.cos.device.type == "cpu" else self.compute_dtype

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, idx, targets=None, *, kv_cache=None, reduction="mean", last_only=False):
        """Loss (targets == -1 are ignored) if targets are given, else fp32 logits (B, T, vocab), or
        (B, 1, vocab) for the last position only with last_only=True (a prefill needs no more).

        With kv_cache, idx holds the next T tokens of every row: they are appended to the cache
        and the logits are for those positions only. reduction="none" gives a (B, T) loss.
        With grad enabled, a "mean"/"sum" loss comes from HeadLoss, which computes its gradient
        in the same pass: evaluate under torch.no_grad() to skip that work.
        """
        B, T = idx.shape
        dt = self.compute_dtype
        pos = 0 if kv_cache is None else kv_cache.pos
        if kv_cache is not None and pos + T > kv_cache.max_len:
            raise ValueError(f"KV cache full: {pos} + {T} tokens > max_len {kv_cache.max_len}; allocate a longer cache")
        if pos + T > self.cos.size(1):
            raise ValueError(f"position {pos + T} is past the rotary table ({self.cos.size(1)}); "
                             f"raise sequence_len (rotary covers {ROPE_LENGTH_FACTOR}x of it)")
        cos, sin = self.cos[:, pos:pos + T], self.sin[:, pos:pos + T]

        x = norm(self.transformer.wte(idx).to(dt))
        x = self._smear(x, kv_cache)
        x0 = x
        x_mid = x
        resid, x0_mix = self.resid_lambdas.unbind(), self.x0_lambdas.unbind()
        for i, block in enumerate(self.transformer.h):
            x = resid[i] * x + x0_mix[i] * x0
            key = self.ve_keys[i]
            ve = self.value_embeds[key](idx).to(dt) if key is not None else None
            x = block(x, ve, cos, sin, self.windows[i], kv_cache)
            if i == self.backout_layer:
                x_mid = x
        x = norm(x - self.backout_lambda * x_mid)
        if kv_cache is not None:
            kv_cache.advance(T)

        V = self.config.vocab_size
        if targets is None:
            return softcap(self.lm_head(x[:, -1:] if last_only else x)[..., :V].float())
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction={reduction!r}; use 'mean', 'sum' or 'none'")
        if reduction != "none" and torch.is_grad_enabled():
            chunk = max(1, LOSS_CHUNK_ELEMENTS[x.device.type == "cpu"] // self.config.padded_vocab_size)
            total = HeadLoss.apply(x.view(B * T, -1), self.lm_head.weight, targets.reshape(B * T), V, chunk)
        else:
            loss, _ = cross_entropy_rows(self.lm_head(x), targets, V)
            if reduction == "none":
                return loss
            total = loss.sum()
        if reduction == "sum":
            return total
        return total / (targets >= 0).sum().clamp(min=1)  # an all-masked batch gives 0, not NaN

    def _smear(self, x, kv_cache):
        """x[t] += smear_lambda * sigmoid(gate(x[t, :24])) * x[t-1]: a cheap bigram signal."""
        gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[..., :SMEAR_CHANNELS]))
        if kv_cache is None:
            prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # position 0 has no previous token
        else:
            first = kv_cache.prev_embedding.to(x.dtype) if kv_cache.pos > 0 else torch.zeros_like(x[:, :1])
            prev = first if x.size(1) == 1 else torch.cat((first, x[:, :-1]), dim=1)
            out = x + gate * prev
            kv_cache.prev_embedding.copy_(x[:, -1:])
            return out
        return x + gate * prev

    # -- parameters, FLOPs, checkpoints -------------------------------------------------------------

    def parameter_roles(self):
        """role -> params; every parameter appears exactly once (the optimizer plugins use this)."""
        roles = {
            "lm_head": [self.lm_head.weight],
            "wte": [self.transformer.wte.weight],
            "value_embeds": list(self.value_embeds.parameters()),
            "resid_lambdas": [self.resid_lambdas],
            "x0_lambdas": [self.x0_lambdas],
            "scalars": [self.smear_gate.weight, self.smear_lambda, self.backout_lambda],
            "matrices": list(self.transformer.h.parameters()),
        }
        ids = [id(p) for ps in roles.values() for p in ps]
        assert len(ids) == len(set(ids)) == len(list(self.parameters())), "parameter roles must cover every parameter once"
        return roles

    def num_matmul_params(self):
        """Weights that multiply the token stream: every 2-D weight that is not an embedding table.

        Counted by shape, not by module class, so swapping Linear for another class (fp8) keeps it.
        """
        roles = self.parameter_roles()
        return sum(p.numel() for role in ("matrices", "lm_head", "scalars") for p in roles[role] if p.dim() == 2)

    def estimate_flops(self):
        """Training FLOPs per token: 6 per matmul weight plus attention over each layer's window."""
        cfg = self.config
        attn = sum(12 * cfg.n_head * cfg.head_dim * min(w, cfg.sequence_len) for w in self.windows)
        return 6 * self.num_matmul_params() + attn

    def num_scaling_params(self):
        roles = self.parameter_roles()
        count = {role: sum(p.numel() for p in ps) for role, ps in roles.items()}
        out = {
            "wte": count["wte"],
            "value_embeds": count["value_embeds"],
            "lm_head": count["lm_head"],
            "transformer_matrices": count["matrices"],
            "scalars": count["resid_lambdas"] + count["x0_lambdas"] + count["scalars"],
        }
        out["total"] = sum(out.values())
        assert out["total"] == sum(p.numel() for p in self.parameters())
        return out

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Refuse a checkpoint of another shape with a message that names both shapes."""
        cfg = self.config
        layers = {int(k.split(".")[2]) for k in state_dict if k.startswith("transformer.h.")}
        theirs_depth = max(layers) + 1 if layers else 0
        wte = state_dict.get("transformer.wte.weight")
        problems = []
        if theirs_depth != cfg.n_layer:
            problems.append(f"depth {theirs_depth} vs this model's {cfg.n_layer}")
        if wte is not None and wte.shape[0] != cfg.padded_vocab_size:
            problems.append(f"padded vocab {wte.shape[0]} vs this model's {cfg.padded_vocab_size} (vocab_size {cfg.vocab_size})")
        if wte is not None and wte.shape[1] != cfg.n_embd:
            problems.append(f"width {wte.shape[1]} vs this model's {cfg.n_embd}")
        if problems:
            raise ValueError("checkpoint does not fit this model: " + "; ".join(problems)
                             + ". Build the model from the checkpoint's own config (GPTConfig.from_dict).")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
