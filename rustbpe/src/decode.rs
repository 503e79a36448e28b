//! Kernels for the decode step on a CPU (nanochat/cpu_decode.py): the small element-wise work
//! between the matmuls of a step, a few calls per layer instead of dozens of torch ops.
//!
//! Decoding one token on a CPU is bound by the cost of each op (dispatch, a fresh output, a cold
//! cache after each matmul), not by arithmetic, so joining a layer's norms, rotary, value
//! embedding and cache writes into four calls is what makes the step fast.
//!
//! Activations are f32 or bf16 (`dtype` 0 or 1; bf16 arrives as its 16 bits). Every value is
//! rounded to the activation type where the torch op it replaces rounds, so results equal the torch
//! path's except for the order of the sums in a norm (and the gate's few-term dot product). The
//! KV cache and the queries are f32. Pointers arrive as integers (Python's `tensor.data_ptr()`);
//! the caller guarantees sizes and layouts (contiguous rows), as documented on each function.

pub(crate) const F32: u32 = 0;
pub(crate) const BF16: u32 = 1;

/// Bumped whenever a kernel is added or a signature below changes; nanochat/decode_kernels.py checks it
/// (a library built from older sources is then not used, rather than called with the wrong arguments).
pub const KERNELS_VERSION: u32 = 1;

#[no_mangle]
pub extern "C" fn ndec_version() -> u32 {
    KERNELS_VERSION
}

pub(crate) trait Act: Copy {
    fn get(self) -> f32;
    fn put(v: f32) -> Self;
}

impl Act for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        v
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Bf16(u16);

impl Act for Bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        let b = v.to_bits();
        let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16; // round to nearest, ties to even
        let quiet_nan = (b >> 16) | 0x40; // as torch makes
        // both computed, one selected: no branch, so loops over values vectorize
        Bf16((if v.is_nan() { quiet_nan } else { rounded }) as u16)
    }
}

/// `v` rounded to the activation type, back as f32.
#[inline(always)]
fn round<T: Act>(v: f32) -> f32 {
    T::put(v).get()
}

#[inline(always)]
unsafe fn ld<T: Act>(p: *const T, i: usize) -> f32 {
    p.add(i).read().get()
}

#[inline(always)]
unsafe fn st<T: Act>(p: *mut T, i: usize, v: f32) {
    p.add(i).write(T::put(v))
}

/// out[0..n] = x * rsqrt(mean(x^2) + eps), as torch's rms_norm (f32 inside).
unsafe fn rms_norm<T: Act>(x: *const T, out: *mut T, n: usize, eps: f32) {
    let mut lanes = [0f32; 8];
    for i in 0..n {
        let v = ld(x, i);
        lanes[i % 8] += v * v;
    }
    let sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    let inv = 1.0 / (sum / n as f32 + eps).sqrt();
    for i in 0..n {
        st(out, i, ld(x, i) * inv);
    }
}

/// scale * sigmoid(row[:channels] . w[:, col]) for a (channels x cols) gate matrix `w`, rounded
/// where torch rounds (the matmul's output, the sigmoid, the product).
unsafe fn gate<T: Act>(row: *const T, w: *const T, channels: usize, cols: usize, col: usize, scale: f32) -> f32 {
    let mut dot = 0f32;
    for c in 0..channels {
        dot += ld(row, c) * ld(w, c * cols + col);
    }
    let sig = round::<T>(1.0 / (1.0 + (-round::<T>(dot)).exp()));
    round::<T>(scale * sig)
}

/// The step's entry, per row of `width`: e = rms_norm(table[id]) (the f32 embedding row rounded
/// to the activation type first); then smear, if `smear` != 0 (every position but the first):
/// x0 = e + gate * prev, gate = lambda * sigmoid(e[:channels] . gate_w); else x0 = e. `prev` (the
/// row's previous embedding, f32) becomes e.
#[allow(clippy::too_many_arguments)]
unsafe fn embed_smear<T: Act>(
    rows: usize,
    width: usize,
    ids: usize,
    table: usize,
    gate_w: usize,
    channels: usize,
    lambda: f32,
    prev: usize,
    smear: u32,
    x0: usize,
    eps: f32,
) {
    let (table, prev, x0) = (table as *const f32, prev as *mut f32, x0 as *mut T);
    let mut e = vec![T::put(0.0); width];
    let mut row = vec![T::put(0.0); width];
    for r in 0..rows {
        let token = (ids as *const i64).add(r).read() as usize;
        for (i, v) in row.iter_mut().enumerate() {
            *v = T::put(table.add(token * width + i).read());
        }
        rms_norm(row.as_ptr(), e.as_mut_ptr(), width, eps);
        let g = if smear != 0 { gate::<T>(e.as_ptr(), gate_w as *const T, channels, 1, 0, lambda) } else { 0.0 };
        let (prev, out) = (prev.add(r * width), x0.add(r * width));
        for (i, v) in e.iter().enumerate() {
            let v = v.get();
            out.add(i).write(T::put(if smear != 0 { v + round::<T>(g * round::<T>(prev.add(i).read())) } else { v }));
            prev.add(i).write(v);
        }
    }
}

/// One block's entry, per row of `width`:
///   v = src (+ add, if add != 0);  keep = v (if keep != 0);
///   x = resid * v + mix * other;   h = rms_norm(x) (if h != 0)
/// with GPT.forward's roundings (each product, then the sum). `src`, `other` and `keep` may be
/// `x` itself: each element is read before it is written.
#[allow(clippy::too_many_arguments)]
unsafe fn mix_norm<T: Act>(
    rows: usize,
    width: usize,
    src: usize,
    add: usize,
    keep: usize,
    other: usize,
    resid: f32,
    mix: f32,
    x: usize,
    h: usize,
    eps: f32,
) {
    let (src, add, keep, other, x, h) =
        (src as *const T, add as *const T, keep as *mut T, other as *const T, x as *mut T, h as *mut T);
    for i in 0..rows * width {
        let mut v = ld(src, i);
        if !add.is_null() {
            v = round::<T>(v + ld(add, i));
        }
        if !keep.is_null() {
            st(keep, i, v);
        }
        let o = ld(other, i);
        st(x, i, round::<T>(resid * v) + round::<T>(mix * o));
    }
    if !h.is_null() {
        for r in 0..rows {
            rms_norm(x.add(r * width) as *const T, h.add(r * width), width, eps);
        }
    }
}

/// What the step does between the q/k/v matmul and attention, per row:
/// - q and k heads: rotary at this position (`cos`, `sin`: that position's rows of head_dim
///   values, [c, c] and [s, -s] over the two halves), then rms_norm per head; q to `q` (f32, rows x
///   heads x head_dim), k to the cache;
/// - v heads: plus gate * value embedding when the layer has one (`ve_table` != 0): gate =
///   3 sigmoid(h[:gate_channels] . gate_w[:, j]) for kv head j, the embedding row of the token
///   (`ids`) from the f32 table, rounded to the activation type; then to the cache.
///
/// `qkv`: rows x (heads + 2 kv_heads) x head_dim activations; `k_cache`, `v_cache`: this layer's
/// f32 cache, rows x max_len x kv_heads x head_dim, written at position `pos`.
#[allow(clippy::too_many_arguments)]
unsafe fn qkv_post<T: Act>(
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    qkv: usize,
    cos: usize,
    sin: usize,
    eps: f32,
    q: usize,
    k_cache: usize,
    v_cache: usize,
    max_len: usize,
    pos: usize,
    ids: usize,
    ve_table: usize,
    gate_w: usize,
    h: usize,
    h_width: usize,
    gate_channels: usize,
) {
    let (qkv, cos, sin, q) = (qkv as *const T, cos as *const T, sin as *const T, q as *mut f32);
    let (k_cache, v_cache) = (k_cache as *mut f32, v_cache as *mut f32);
    let d = head_dim;
    let half = d / 2;
    let per_row = (heads + 2 * kv_heads) * d;
    let mut rotated = vec![T::put(0.0); d];
    let mut normed = vec![T::put(0.0); d];
    for r in 0..rows {
        let row = qkv.add(r * per_row);
        let cache_at = ((r * max_len + pos) * kv_heads) * d;
        for head in 0..heads + kv_heads {
            let x = row.add(head * d);
            for (i, slot) in rotated.iter_mut().enumerate() {
                let swapped = ld(x, if i < half { i + half } else { i - half });
                let a = round::<T>(ld(x, i) * ld(cos, i));
                *slot = T::put(swapped.mul_add(ld(sin, i), a)); // addcmul: one rounding
            }
            rms_norm(rotated.as_ptr(), normed.as_mut_ptr(), d, eps);
            let out =
                if head < heads { q.add((r * heads + head) * d) } else { k_cache.add(cache_at + (head - heads) * d) };
            for (i, v) in normed.iter().enumerate() {
                out.add(i).write(v.get());
            }
        }
        for j in 0..kv_heads {
            let v = row.add((heads + kv_heads + j) * d);
            let out = v_cache.add(cache_at + j * d);
            if ve_table == 0 {
                for i in 0..d {
                    out.add(i).write(ld(v, i));
                }
                continue;
            }
            let hrow = (h as *const T).add(r * h_width);
            let gate = gate::<T>(hrow, gate_w as *const T, gate_channels, kv_heads, j, 3.0);
            let token = (ids as *const i64).add(r).read() as usize;
            let table = (ve_table as *const f32).add(token * kv_heads * d + j * d);
            for i in 0..d {
                let e = round::<T>(table.add(i).read());
                out.add(i).write(round::<T>(ld(v, i) + round::<T>(gate * e)));
            }
        }
    }
}

/// a . b over n f32 values, in 8 lanes (so the compiler can vectorize the sum).
#[inline(always)]
unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
    let mut lanes = [0f32; 8];
    for i in 0..n {
        lanes[i % 8] += a.add(i).read() * b.add(i).read();
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// Attention of one query per head over positions start..=end of this layer's f32 cache (rows x
/// max_len x kv_heads x head_dim), softmax in f32: y = softmax(scale q.k) v, written in the
/// activation type as rows x heads x head_dim (what the output projection reads). Query head i reads
/// kv head i / (heads / kv_heads).
#[allow(clippy::too_many_arguments)]
unsafe fn attend<T: Act>(
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: usize,
    k_cache: usize,
    v_cache: usize,
    max_len: usize,
    start: usize,
    end: usize,
    scale: f32,
    y: usize,
) {
    let (q, k_cache, v_cache, y) = (q as *const f32, k_cache as *const f32, v_cache as *const f32, y as *mut T);
    let d = head_dim;
    let stride = kv_heads * d; // from one position to the next
    let mut weights = vec![0f32; end + 1 - start];
    let mut acc = vec![0f32; d];
    for r in 0..rows {
        for head in 0..heads {
            let j = head / (heads / kv_heads);
            let query = q.add((r * heads + head) * d);
            let base = (r * max_len * kv_heads + j) * d;
            let mut max = f32::NEG_INFINITY;
            for (t, w) in weights.iter_mut().enumerate() {
                *w = scale * dot(query, k_cache.add(base + (start + t) * stride), d);
                max = max.max(*w);
            }
            let mut total = 0f32;
            for w in weights.iter_mut() {
                *w = (*w - max).exp();
                total += *w;
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (t, w) in weights.iter().enumerate() {
                let value = v_cache.add(base + (start + t) * stride);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += w * value.add(i).read();
                }
            }
            let out = y.add((r * heads + head) * d);
            for (i, a) in acc.iter().enumerate() {
                st(out, i, a / total);
            }
        }
    }
}

/// x = x + add; h = rms_norm(x), per row of `width`.
unsafe fn add_norm<T: Act>(rows: usize, width: usize, x: usize, add: usize, h: usize, eps: f32) {
    let (x, add, h) = (x as *mut T, add as *const T, h as *mut T);
    for i in 0..rows * width {
        st(x, i, ld(x, i) + ld(add, i));
    }
    for r in 0..rows {
        rms_norm(x.add(r * width) as *const T, h.add(r * width), width, eps);
    }
}

/// u = relu(u)^2, in place (n values).
unsafe fn relu_square<T: Act>(n: usize, u: usize) {
    let u = u as *mut T;
    for i in 0..n {
        let v = ld(u, i).max(0.0);
        st(u, i, v * v);
    }
}

fn catch(f: impl FnOnce()) -> i64 {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_or(crate::ERR_PANIC, |_| crate::OK)
}

macro_rules! by_dtype {
    ($dtype:expr, $f:ident($($arg:expr),*)) => {
        match $dtype {
            F32 => catch(|| unsafe { $f::<f32>($($arg),*) }),
            BF16 => catch(|| unsafe { $f::<Bf16>($($arg),*) }),
            _ => crate::ERR_ARGS,
        }
    };
}

/// See `embed_smear`. Returns 0, or a negative error (bad dtype, a panic).
///
/// # Safety
/// `ids`: `rows` i64 token ids, each a row of the f32 `table` (`width` wide); `gate_w`: `channels`
/// values; `prev` (f32) and `x0`: `rows * width` values.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ndec_embed_smear(
    dtype: u32,
    rows: usize,
    width: usize,
    ids: usize,
    table: usize,
    gate_w: usize,
    channels: usize,
    lambda: f32,
    prev: usize,
    smear: u32,
    x0: usize,
    eps: f32,
) -> i64 {
    by_dtype!(dtype, embed_smear(rows, width, ids, table, gate_w, channels, lambda, prev, smear, x0, eps))
}

/// See `mix_norm`. Returns 0, or a negative error (bad dtype, a panic).
///
/// # Safety
/// Every non-zero pointer addresses `rows * width` contiguous values of the activation type.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ndec_mix_norm(
    dtype: u32,
    rows: usize,
    width: usize,
    src: usize,
    add: usize,
    keep: usize,
    other: usize,
    resid: f32,
    mix: f32,
    x: usize,
    h: usize,
    eps: f32,
) -> i64 {
    by_dtype!(dtype, mix_norm(rows, width, src, add, keep, other, resid, mix, x, h, eps))
}

/// See `qkv_post`.
///
/// # Safety
/// The pointers address the layouts documented on `qkv_post`; `pos < max_len`; each id indexes a
/// row of `ve_table` when it is given.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ndec_qkv_post(
    dtype: u32,
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    qkv: usize,
    cos: usize,
    sin: usize,
    eps: f32,
    q: usize,
    k_cache: usize,
    v_cache: usize,
    max_len: usize,
    pos: usize,
    ids: usize,
    ve_table: usize,
    gate_w: usize,
    h: usize,
    h_width: usize,
    gate_channels: usize,
) -> i64 {
    if pos >= max_len || head_dim & 1 == 1 {
        return crate::ERR_ARGS;
    }
    by_dtype!(
        dtype,
        qkv_post(
            rows,
            heads,
            kv_heads,
            head_dim,
            qkv,
            cos,
            sin,
            eps,
            q,
            k_cache,
            v_cache,
            max_len,
            pos,
            ids,
            ve_table,
            gate_w,
            h,
            h_width,
            gate_channels
        )
    )
}

/// See `attend`.
///
/// # Safety
/// `q`: rows x heads x head_dim f32; the caches as documented on `attend`, `start <= end < max_len`;
/// `y`: rows x heads x head_dim values of the activation type.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ndec_attend(
    dtype: u32,
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: usize,
    k_cache: usize,
    v_cache: usize,
    max_len: usize,
    start: usize,
    end: usize,
    scale: f32,
    y: usize,
) -> i64 {
    if start > end || end >= max_len || kv_heads == 0 || heads / kv_heads * kv_heads != heads {
        return crate::ERR_ARGS;
    }
    by_dtype!(dtype, attend(rows, heads, kv_heads, head_dim, q, k_cache, v_cache, max_len, start, end, scale, y))
}

/// See `add_norm`.
///
/// # Safety
/// `x`, `add` and `h` address `rows * width` contiguous values of the activation type.
#[no_mangle]
pub unsafe extern "C" fn ndec_add_norm(
    dtype: u32,
    rows: usize,
    width: usize,
    x: usize,
    add: usize,
    h: usize,
    eps: f32,
) -> i64 {
    by_dtype!(dtype, add_norm(rows, width, x, add, h, eps))
}

/// See `relu_square`.
///
/// # Safety
/// `u` addresses `n` contiguous values of the activation type.
#[no_mangle]
pub unsafe extern "C" fn ndec_relu_square(dtype: u32, n: usize, u: usize) -> i64 {
    by_dtype!(dtype, relu_square(n, u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        let up = f32::from_bits(0x3F80_8001); // just above the midpoint of 1.0 and the next bf16
        assert_eq!(Bf16::put(up).0, 0x3F81);
        assert_eq!(Bf16::put(f32::from_bits(0x3F80_8000)).0, 0x3F80); // a tie goes to the even one
        assert_eq!(Bf16::put(f32::from_bits(0x3F81_8000)).0, 0x3F82);
        assert!(Bf16::put(f32::NAN).get().is_nan());
        assert_eq!(Bf16::put(-2.5).get(), -2.5);
    }

    #[test]
    fn mix_norm_reads_each_value_before_writing_it_in_place() {
        let mut x = [1.0f32, -2.0, 3.0, 0.5];
        let x0 = [0.5f32, 0.5, 0.5, 0.5];
        let mut h = [0f32; 4];
        let p = x.as_mut_ptr() as usize;
        unsafe { mix_norm::<f32>(1, 4, p, 0, 0, x0.as_ptr() as usize, 2.0, 1.0, p, h.as_mut_ptr() as usize, 0.0) };
        assert_eq!(x, [2.5, -3.5, 6.5, 1.5]);
        let rms = ((2.5f32 * 2.5 + 3.5 * 3.5 + 6.5 * 6.5 + 1.5 * 1.5) / 4.0).sqrt();
        for (hv, xv) in h.iter().zip(x) {
            assert!((hv - xv / rms).abs() < 1e-6);
        }
    }

    #[test]
    fn an_unknown_dtype_or_a_position_past_the_cache_is_refused() {
        assert_eq!(unsafe { ndec_relu_square(7, 0, 0) }, crate::ERR_ARGS);
        assert_eq!(
            unsafe { ndec_qkv_post(0, 1, 1, 1, 2, 0, 0, 0, 0.0, 0, 0, 0, 4, 4, 0, 0, 0, 0, 0, 0) },
            crate::ERR_ARGS
        );
    }
}
