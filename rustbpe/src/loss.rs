//! The training loss's element-wise work on a CPU (nanochat/model.py `HeadLoss`): softcapped cross
//! entropy of a chunk of logits rows and its gradient, in one pass over each row.
//!
//! For every row r with target t (the first `vocab` of `padded` columns are real):
//!
//! ```text
//! z_j     = cap * tanh(l_j / cap)                     (as cap - 2 cap / (1 + exp(2 l_j / cap)))
//! s       = sum_j exp(z_j),   loss_r = ln s - z_t
//! grad_rj = (exp(z_j) / s - [j == t]) * (1 - (z_j / cap)^2)    for j < vocab, 0 beyond
//! ```
//!
//! and a row whose target is negative gets loss 0 and a zero gradient. Compiled torch ops make three
//! passes over the chunk (z written out in f32 and read back, three exponentials a value); here a
//! row's z and exp(z) stay in a per-thread scratch the size of one row, two exponentials a value.
//! The loops are written so that the compiler vectorizes them; on x86-64 they are compiled a second
//! time for AVX-512 and AVX2 and the best the CPU has is chosen at run time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::decode::{Act, Bf16, BF16, F32};

/// Bumped whenever the signature below changes; nanochat/cpu_loss.py checks it.
pub const LOSS_VERSION: u32 = 1;

#[no_mangle]
pub extern "C" fn nloss_version() -> u32 {
    LOSS_VERSION
}

const LANES: usize = 16;

/// exp(x) for f32, branch-free: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7
/// (relative error below 1e-8, under one f32 ulp), 2^n built in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split so that n * LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n is an integer in [-126, 127] after the clamp, so the unchecked conversion is exact
    p * f32::from_bits(((unsafe { n.to_int_unchecked::<i32>() } + 127) as u32) << 23)
}

#[inline(always)]
fn softcap(x: f32, cap: f32) -> f32 {
    cap - 2.0 * cap / (1.0 + exp(x * (2.0 / cap)))
}

/// Rows `start..end` of the job's chunk, its logits and gradient of type T; `z` and `e` are scratch
/// of at least `vocab` values.
#[inline(always)]
unsafe fn rows<T: Act>(job: &Job, start: usize, end: usize, z: &mut [f32], e: &mut [f32]) {
    let (vocab, padded, cap) = (job.vocab, job.padded, job.cap);
    let (logits, grad) = (job.logits as *const T, job.grad as *mut T);
    let (targets, loss) = (job.targets as *const i64, job.loss as *mut f32);
    let full = vocab / LANES * LANES;
    let (z, e) = (&mut z[..vocab], &mut e[..vocab]);
    for r in start..end {
        let l = std::slice::from_raw_parts(logits.add(r * padded), vocab);
        let g = grad.add(r * padded);
        let t = *targets.add(r);
        let mut acc = [0f32; LANES];
        // 16 values at a time into 16 partial sums (slices of known length: no bounds checks, so
        // the compiler keeps the 16 in vector registers)
        for ((lc, zc), ec) in l.chunks_exact(LANES).zip(z.chunks_exact_mut(LANES)).zip(e.chunks_exact_mut(LANES)) {
            for k in 0..LANES {
                let zj = softcap(lc[k].get(), cap);
                let ej = exp(zj);
                zc[k] = zj;
                ec[k] = ej;
                acc[k] += ej;
            }
        }
        let mut s = 0.0;
        for j in full..vocab {
            z[j] = softcap(l[j].get(), cap);
            e[j] = exp(z[j]);
            s += e[j];
        }
        s += acc.iter().sum::<f32>();
        for j in vocab..padded {
            g.add(j).write(T::put(0.0));
        }
        if t < 0 {
            *loss.add(r) = 0.0;
            for j in 0..vocab {
                g.add(j).write(T::put(0.0));
            }
            continue;
        }
        let t = t as usize;
        *loss.add(r) = s.ln() - z[t];
        let inv = 1.0 / s;
        let inv_cap = 1.0 / cap;
        for j in 0..vocab {
            let u = z[j] * inv_cap;
            g.add(j).write(T::put(e[j] * inv * (1.0 - u * u)));
        }
        let u = z[t] * inv_cap;
        g.add(t).write(T::put((e[t] * inv - 1.0) * (1.0 - u * u)));
    }
}

/// The same loop compiled for the widest vector unit this CPU has.
unsafe fn rows_best<T: Act>(job: &Job, start: usize, end: usize, z: &mut [f32], e: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        unsafe fn avx512<T: Act>(job: &Job, start: usize, end: usize, z: &mut [f32], e: &mut [f32]) {
            rows::<T>(job, start, end, z, e)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<T: Act>(job: &Job, start: usize, end: usize, z: &mut [f32], e: &mut [f32]) {
            rows::<T>(job, start, end, z, e)
        }
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
        {
            return avx512::<T>(job, start, end, z, e);
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return avx2::<T>(job, start, end, z, e);
        }
    }
    rows::<T>(job, start, end, z, e)
}

/// One call's arguments, shared by the threads that split its rows.
struct Job {
    dtype: u32,
    n_rows: usize,
    vocab: usize,
    padded: usize,
    logits: usize,
    targets: usize,
    cap: f32,
    loss: usize,
    grad: usize,
    threads: usize,
    next_part: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Runs parts (of `threads` contiguous runs of rows) until none is left: whatever the number of
    /// threads that call it, every part runs once.
    fn work(&self) {
        loop {
            let part = self.next_part.fetch_add(1, Ordering::Relaxed);
            if part >= self.threads {
                return;
            }
            self.run_part(part);
        }
    }

    fn run_part(&self, part: usize) {
        let per = self.n_rows.div_ceil(self.threads);
        let (start, end) = ((part * per).min(self.n_rows), ((part + 1) * per).min(self.n_rows));
        let go = || unsafe {
            let (mut z, mut e) = (vec![0f32; self.vocab], vec![0f32; self.vocab]);
            if self.dtype == F32 {
                rows_best::<f32>(self, start, end, &mut z, &mut e);
            } else {
                rows_best::<Bf16>(self, start, end, &mut z, &mut e);
            }
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(go)).is_err() {
            self.panicked.store(true, Ordering::Relaxed);
        }
    }
}

/// GOMP_parallel's body, on every thread of the team (no unwinding: run_part catches panics).
unsafe extern "C" fn omp_body(job: *mut std::ffi::c_void) {
    (*(job as *const Job)).work();
}

/// Signature of libgomp's `GOMP_parallel` (what `#pragma omp parallel` compiles to).
type GompParallel = unsafe extern "C" fn(unsafe extern "C" fn(*mut std::ffi::c_void), *mut std::ffi::c_void, u32, u32);
/// Softcapped cross entropy and its gradient for `n_rows` rows (see the module's text), the rows
/// split over `threads` threads. Returns 0, or a negative error: `ERR_ARGS` for an unknown dtype,
/// `vocab` 0 or above `padded`, or a target at or past `vocab` (nothing is written then);
/// `ERR_PANIC` for a bug.
///
/// The threads are torch's own when the caller passes the address of `GOMP_parallel` in the libgomp
/// torch runs on: its pool's threads spin for a while after each parallel region (a matmul, a
/// compiled kernel), and threads of our own would share the cores with them at half speed (measured:
/// 6.0 ms instead of 3.2 for a 512 x 8192 chunk right after a matmul). With 0, std threads are spawned.
///
/// # Safety
/// `logits` and `grad`: `n_rows * padded` contiguous values of the dtype (f32 or bf16 bits);
/// `targets`: `n_rows` i64; `loss`: `n_rows` f32. `grad` must not overlap the others.
/// `gomp_parallel` is 0 or the address of libgomp's function of that name.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn nloss_softcap_xent(
    dtype: u32,
    n_rows: usize,
    vocab: usize,
    padded: usize,
    logits: usize,
    targets: usize,
    cap: f32,
    loss: usize,
    grad: usize,
    threads: usize,
    gomp_parallel: usize,
) -> i64 {
    if vocab == 0 || vocab > padded || (dtype != F32 && dtype != BF16) {
        return crate::ERR_ARGS;
    }
    let t = std::slice::from_raw_parts(targets as *const i64, n_rows);
    if t.iter().any(|&v| v >= vocab as i64) {
        return crate::ERR_ARGS;
    }
    let job = Job {
        dtype,
        n_rows,
        vocab,
        padded,
        logits,
        targets,
        cap,
        loss,
        grad,
        threads: threads.clamp(1, n_rows.max(1)),
        next_part: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    if gomp_parallel != 0 {
        let parallel = std::mem::transmute::<usize, GompParallel>(gomp_parallel);
        parallel(omp_body, &job as *const Job as *mut std::ffi::c_void, job.threads as u32, 0);
    } else {
        std::thread::scope(|scope| {
            for _ in 1..job.threads {
                scope.spawn(|| job.work());
            }
            job.work();
        });
    }
    if job.panicked.load(Ordering::Relaxed) {
        crate::ERR_PANIC
    } else {
        crate::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_an_ulp_or_two_and_saturates() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            assert!(((exp(x) as f64 - want) / want).abs() < 2.5e-7, "exp({x})");
            x += 0.0137;
        }
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    #[test]
    fn loss_and_gradient_match_the_formula() {
        let (vocab, padded, cap) = (37, 40, 15.0f32); // a tail past the 16-lane blocks, padded columns
        let logits: Vec<f32> = (0..2 * padded).map(|i| ((i * 7919) % 61) as f32 - 30.0).collect();
        let targets = [5i64, -1];
        let (mut loss, mut grad) = ([9f32; 2], vec![9f32; 2 * padded]);
        let rc = unsafe {
            nloss_softcap_xent(
                F32, 2, vocab, padded, logits.as_ptr() as usize, targets.as_ptr() as usize, cap,
                loss.as_mut_ptr() as usize, grad.as_mut_ptr() as usize, 2, 0,
            )
        };
        assert_eq!(rc, crate::OK);
        let z: Vec<f64> = logits[..vocab].iter().map(|&l| cap as f64 * (l as f64 / cap as f64).tanh()).collect();
        let s: f64 = z.iter().map(|v| v.exp()).sum();
        assert!((loss[0] as f64 - (s.ln() - z[5])).abs() < 1e-5);
        for j in 0..vocab {
            let want = ((z[j].exp() / s) - if j == 5 { 1.0 } else { 0.0 }) * (1.0 - (z[j] / cap as f64).powi(2));
            assert!((grad[j] as f64 - want).abs() < 1e-6, "column {j}");
        }
        assert!(grad[vocab..padded].iter().all(|&g| g == 0.0));
        assert_eq!(loss[1], 0.0); // an ignored row
        assert!(grad[padded..].iter().all(|&g| g == 0.0));
    }

    /// Stands in for libgomp's GOMP_parallel: a team of three threads, more than the parts asked for.
    unsafe extern "C" fn team_of_three(f: unsafe extern "C" fn(*mut std::ffi::c_void), data: *mut std::ffi::c_void,
                                       _threads: u32, _flags: u32) {
        let data = data as usize;
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(move || unsafe { f(data as *mut std::ffi::c_void) });
            }
        });
    }

    #[test]
    fn a_thread_pool_of_any_size_covers_every_row_once() {
        let (rows, vocab) = (5, 20);
        let logits: Vec<f32> = (0..rows * vocab).map(|i| (i % 13) as f32).collect();
        let targets: Vec<i64> = (0..rows as i64).collect();
        let run = |pool: usize| {
            let (mut loss, mut grad) = (vec![f32::NAN; rows], vec![f32::NAN; rows * vocab]);
            let rc = unsafe {
                nloss_softcap_xent(F32, rows, vocab, vocab, logits.as_ptr() as usize, targets.as_ptr() as usize, 15.0,
                                   loss.as_mut_ptr() as usize, grad.as_mut_ptr() as usize, 2, pool)
            };
            assert_eq!(rc, crate::OK);
            (loss, grad)
        };
        let with_pool = run(team_of_three as *const () as usize);
        assert!(with_pool.0.iter().chain(&with_pool.1).all(|v| v.is_finite()));
        assert_eq!(with_pool, run(0));
    }

    #[test]
    fn a_target_past_the_vocabulary_is_refused_before_anything_is_written() {
        let logits = [0f32; 8];
        let (mut loss, mut grad) = ([7f32; 1], [7f32; 8]);
        let rc = unsafe {
            nloss_softcap_xent(
                F32, 1, 8, 8, logits.as_ptr() as usize, [8i64].as_ptr() as usize, 15.0,
                loss.as_mut_ptr() as usize, grad.as_mut_ptr() as usize, 1, 0,
            )
        };
        assert_eq!(rc, crate::ERR_ARGS);
        assert_eq!((loss, grad), ([7.0], [7.0; 8]));
    }
}
