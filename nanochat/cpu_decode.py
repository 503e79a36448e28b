"""The decode step on a CPU: GPT.forward for one new token per row, written with few ops.

    decode = CpuDecode(model)
    step = decode.prepare(cache)            # once per generation: weights, and this cache's views
    raw = step(ids)                         # ids (B, 1) -> raw logits (B, vocab), before the softcap

Why: decoding a small model on a CPU costs per op, not per FLOP. GPT.forward is written for
training and every device; for one token per row it runs a few hundred small ops a step, many of
them views, casts and re-checks. This step runs the same arithmetic as GPT.forward with a
KV cache (the same ops in the same dtypes, so greedy tokens come out the same), with what can be
done once done once per generation:
- every matmul weight cast to the compute dtype and pre-packed for oneDNN (model.prepared_matmul,
  the same prepared matmuls GPT.forward uses in inference mode, so nothing is held twice);
  the tiny gate matmuls (12 and 24 inputs) as plain matmuls, where oneDNN's per-call cost is 10x
  the work (the embedding tables stay as they are: a row is looked up, then cast, as in GPT.forward;
  a compute-dtype copy of the value embeddings would cost gigabytes at d20);
- the scalars (residual mixing, smear, backout) as Python floats (rounded to the compute dtype,
  as a multiplication by GPT.forward's 0-dim fp32 tensors does), the rotary tables as rows;
- each layer's keys and values as (B, heads, positions, head_dim) views of the cache, written in
  place and sliced to the layer's window, so attention reads them with no copy;
- the logits come back before the softcap (15 tanh(x / 15)): it keeps the order of the logits, so
  greedy decoding and top-k pick from the raw values and only the kept ones are softcapped (a
  tanh over the whole vocabulary is a large part of a batch-8 step here).
Rows are 2-D (B, width) throughout, so no op carries the length-1 time axis.

The fused step (the default where the Rust library is built) goes further: the element-wise work
between the matmuls runs in Rust kernels (rustbpe/src/decode.rs, through nanochat/decode_kernels.py),
four calls a layer and one each for the embedding and the head's norm, on buffers made once per
generation, instead of a few dozen torch ops a layer. At batch 1 attention runs in a kernel too (one
query per head: SDPA's per-call cost is most of it); more rows keep SDPA, whose wider vectors win.
The kernels round where the torch ops round, so the logits differ from the torch path's only by the
order of sums (within a step or two of the compute dtype); fused=False keeps torch ops.

CPU only: on a GPU the step is bound by kernel launches and memory, and GPT.forward (or the
compiled step, nanochat/compiled_decode.py) is the one to use; Engine picks this class only for a
GPT on a CPU.
"""
import torch
import torch.nn.functional as F

from nanochat.decode_kernels import DecodeKernels
from nanochat.model import SMEAR_CHANNELS, VE_GATE_CHANNELS, norm, prepared_matmul


class CpuDecode:
    def __init__(self, model, *, fused=True):
        """fused: the element-wise work between the matmuls runs in the Rust kernels where the library
        is built (rustbpe/src/decode.rs; same roundings, the norms' sums in another order), else
        through torch ops (bit-identical to GPT.forward)."""
        self.model = model
        self.weights_key = None
        self.kernels = DecodeKernels.load(model.compute_dtype) if fused else None

    def _weights_key(self):
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    @torch.no_grad()
    def prepare(self, cache):
        """The step for this cache (ids -> raw logits); refreshes the prepared weights first if any
        parameter changed since. Each generation has its own step, so generators may interleave."""
        key = self._weights_key()
        if key != self.weights_key:
            self._prepare_weights()
            self.weights_key = key
        # (B, kv heads, positions, head_dim) views: a step writes position pos and reads a window
        keys = [cache.k[i].transpose(1, 2) for i in range(cache.n_layer)]
        values = [cache.v[i].transpose(1, 2) for i in range(cache.n_layer)]
        if self.kernels is not None and self.tables_fit_kernels and cache.k.dtype == torch.float32 \
                and cache.k.is_contiguous() and cache.prev_embedding.is_contiguous():
            buffers, pointers = self._buffers(cache), self._cache_pointers(cache)
            return lambda ids: self._fused_step(ids, cache, keys, values, buffers, pointers)
        return lambda ids: self._step(ids, cache, keys, values)

    def _prepare_weights(self):
        m, dt = self.model, self.model.compute_dtype

        device = m.cos.device

        def packed(module, *weights):  # the matmul GPT.forward prepares too, kept on the module: shared
            return prepared_matmul(module, dt, device, *(weights or (module.weight,)))

        def scalar(p):  # GPT.forward multiplies by a 0-dim fp32 tensor, which the op rounds to dt first
            return p.to(dt).item()

        def plain(w):  # a few inputs: a plain matmul beats oneDNN's per-call cost
            return w.detach().t().to(dt).contiguous()

        self.layers = []
        for i, block in enumerate(m.transformer.h):
            a, key = block.attn, m.ve_keys[i]
            self.layers.append((
                packed(a, a.c_q.weight, a.c_k.weight, a.c_v.weight), packed(a.c_proj),
                packed(block.mlp.c_fc), packed(block.mlp.c_proj),
                None if key is None else m.value_embeds[key].weight.detach(),
                None if a.ve_gate is None else plain(a.ve_gate.weight),
                scalar(m.resid_lambdas[i]), scalar(m.x0_lambdas[i]), m.windows[i], a.scale))
        self.wte, self.dtype = m.transformer.wte.weight.detach(), dt
        self.smear_gate = plain(m.smear_gate.weight)
        self.smear_lambda, self.backout_lambda = scalar(m.smear_lambda), scalar(m.backout_lambda)
        self.lm_head = packed(m.lm_head)
        self.cos, self.sin = m.cos[0, :, 0], m.sin[0, :, 0]  # (positions, head_dim)
        # the kernels read the embedding tables as contiguous f32 rows (a model cast whole to bf16 has others)
        tables = [self.wte] + [layer[4] for layer in self.layers if layer[4] is not None]
        self.tables_fit_kernels = all(t.dtype == torch.float32 and t.is_contiguous() for t in tables) \
            and self.cos.is_contiguous() and self.sin.is_contiguous()

    def _check_room(self, cache):
        """One more position must fit the cache and the rotary table."""
        pos = cache.pos
        if pos + 1 > cache.max_len:
            raise ValueError(f"KV cache full: {pos} + 1 tokens > max_len {cache.max_len}; allocate a longer cache")
        if pos + 1 > self.cos.size(0):
            raise ValueError(f"position {pos + 1} is past the rotary table ({self.cos.size(0)})")

    def _step(self, ids, cache, all_keys, all_values):
        """Raw logits (B, vocab) of the next token of every row; the cache advances by one."""
        m, cfg = self.model, self.model.config
        B, pos = ids.size(0), cache.pos
        self._check_room(cache)
        H, Hkv, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        half, gqa = D // 2, H != Hkv
        cos, sin = self.cos[pos], self.sin[pos]
        ids = ids.view(B)

        x = norm(F.embedding(ids, self.wte).to(self.dtype))
        gate = self.smear_lambda * torch.sigmoid(x[:, :SMEAR_CHANNELS] @ self.smear_gate)
        prev = cache.prev_embedding.view(B, -1)
        smeared = x + gate * prev.to(x.dtype) if pos > 0 else x  # position 0 has no previous token
        prev.copy_(x)
        x = x0 = smeared
        x_mid = x
        for i, (qkv_mm, proj_mm, fc_mm, fc_proj_mm, ve_table, ve_gate, resid, x0_mix, window, scale) \
                in enumerate(self.layers):
            x = resid * x + x0_mix * x0
            # attention
            h = norm(x)
            qkv = qkv_mm(h).view(B, H + 2 * Hkv, D)
            qk = qkv[:, :H + Hkv]
            qk = norm(torch.addcmul(qk * cos, qk.roll(half, -1), sin))
            v = qkv[:, H + Hkv:]
            if ve_table is not None:
                g = 3 * torch.sigmoid(h[:, :VE_GATE_CHANNELS] @ ve_gate)
                v = v + g.unsqueeze(-1) * F.embedding(ids, ve_table).view(B, Hkv, D).to(v.dtype)
            keys, values = all_keys[i], all_values[i]
            keys[:, :, pos] = qk[:, H:]
            values[:, :, pos] = v
            start = max(0, pos - window)
            y = F.scaled_dot_product_attention(qk[:, :H].unsqueeze(2).to(keys.dtype), keys[:, :, start:pos + 1],
                                               values[:, :, start:pos + 1], scale=scale, enable_gqa=gqa)
            x = x + proj_mm(y.reshape(B, H * D).to(x.dtype))
            # MLP
            u = fc_mm(norm(x))
            x = x + fc_proj_mm(torch.relu_(u).square_())
            if i == m.backout_layer:
                x_mid = x
        x = norm(x - self.backout_lambda * x_mid)
        cache.advance(1)
        return self.lm_head(x)[:, :cfg.vocab_size].float()

    def _buffers(self, cache):
        """The fused step's working rows, made once per generation: the residual stream x, the
        block input x0, the norm output h, the backout row, the queries (f32) and attention's output."""
        cfg, B = self.model.config, cache.batch_size
        rows = [torch.empty(B, cfg.n_embd, dtype=self.dtype) for _ in range(4)]
        q = torch.empty(B, cfg.n_head, cfg.head_dim, dtype=torch.float32)
        y = torch.empty(B, cfg.n_head * cfg.head_dim, dtype=self.dtype)
        return rows + [q, y]

    @staticmethod
    def _cache_pointers(cache):
        """Each layer's (keys, values) addresses in the cache: fixed for the generation."""
        return [(cache.k[i].data_ptr(), cache.v[i].data_ptr()) for i in range(cache.n_layer)]

    def _fused_step(self, ids, cache, all_keys, all_values, buffers, cache_pointers):
        """_step with the element-wise work in the Rust kernels: per layer four calls (five at batch 1,
        with attention) around the four matmuls, on these buffers' pointers."""
        m, cfg, k = self.model, self.model.config, self.kernels
        B, pos = ids.size(0), cache.pos
        self._check_room(cache)
        H, Hkv, D, n = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.n_embd
        h, q, y = buffers[2], buffers[4], buffers[5]  # the ones torch reads too
        xp, x0p, hp, midp, qp, yp = (t.data_ptr() for t in buffers)
        ids = ids.reshape(B).contiguous()
        cos, sin = self.cos[pos].data_ptr(), self.sin[pos].data_ptr()

        prev = cache.prev_embedding
        k.embed_smear(B, n, ids.data_ptr(), self.wte.data_ptr(), self.smear_gate.data_ptr(), SMEAR_CHANNELS,
                      self.smear_lambda, prev.data_ptr(), pos > 0, x0p)  # the token, smeared with the previous one
        src, add = x0p, 0
        for i, ((qkv_mm, proj_mm, fc_mm, fc_proj_mm, ve_table, ve_gate, resid, x0_mix, window, scale),
                (kp, vp)) in enumerate(zip(self.layers, cache_pointers)):
            # the previous block's MLP output joins x (kept as the backout row after its layer),
            # then x = resid * x + x0_mix * x0, h = norm(x)
            keep = midp if i - 1 == m.backout_layer else 0
            k.mix_norm(B, n, src, add, keep, x0p, resid, x0_mix, xp, hp)
            src = xp
            qkv = qkv_mm(h)
            k.qkv_post(B, H, Hkv, D, qkv.data_ptr(), cos, sin, qp, kp, vp, cache.max_len, pos, ids.data_ptr(),
                       0 if ve_table is None else ve_table.data_ptr(), 0 if ve_gate is None else ve_gate.data_ptr(),
                       hp, n, VE_GATE_CHANNELS)
            start = max(0, pos - window)
            if B == 1:  # one row: the kernel beats SDPA's per-call cost; more rows: SDPA's wider vectors win
                k.attend(B, H, Hkv, D, qp, kp, vp, cache.max_len, start, pos, scale, yp)
                attended = proj_mm(y)
            else:
                window_keys, window_values = all_keys[i][:, :, start:pos + 1], all_values[i][:, :, start:pos + 1]
                ys = F.scaled_dot_product_attention(q.unsqueeze(2), window_keys, window_values, scale=scale,
                                                    enable_gqa=H != Hkv)
                attended = proj_mm(ys.reshape(B, H * D).to(self.dtype))  # a name holds every tensor a kernel reads
            k.add_norm(B, n, xp, attended.data_ptr(), hp)
            u = fc_mm(h)
            k.relu_square(u.numel(), u.data_ptr())
            add_rows = fc_proj_mm(u)  # held until the next call has read it
            add = add_rows.data_ptr()
        keep = midp if len(self.layers) - 1 == m.backout_layer else 0
        k.mix_norm(B, n, xp, add, keep, midp, 1.0, -self.backout_lambda, xp, hp)  # x - backout * x_mid, norm
        cache.advance(1)
        return self.lm_head(h)[:, :cfg.vocab_size].float()
