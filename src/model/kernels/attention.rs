//! Spatial self-attention in the channels-first layout.

use super::*;

/// Query positions per attention task: a block's scores are H·W × QUERY_BLOCK floats (1 MiB at
/// 4,096 positions, 4 MiB at 16,384) instead of the (H·W)² of all queries at once, with the same
/// sums in the same order (the outputs are bit for bit those of the unblocked product). 64 was the
/// fastest of 32, 64, 128 and 256 at 128² and 256² (BENCHMARKS.md).
const QUERY_BLOCK: usize = 64;

/// Spatial self-attention over the H·W positions of each image, with the residual connection,
/// computed in the channels-first layout of the UNet: QKV = W·X + b, then per head and block of
/// queries Sᵀ = KᵀQ/√d (keys × queries), the softmax down each column, O = V·P, and last
/// Y = W_o·O + b_o + x, divided by the rescale factor. In f32, or after [`to_bf16`](Self::to_bf16)
/// with the two products of each head in bfloat16 (Q, K, V and the softmax's P rounded to it, sums
/// in f32; the projections and the softmax stay f32: in bfloat16 the projections were no faster).
/// Half-precision models on other devices take candle's path in
/// [`super::unet::SpatialAttention`], which computes the scores and softmax in f32 as well.
#[derive(Debug, Clone)]
pub struct CpuAttention {
    /// Whether the per-head products run in bfloat16.
    bf16: bool,
    /// (3·inner, C): the query, key and value weights stacked.
    qkv: Vec<f32>,
    qkv_bias: Vec<f32>,
    /// (C, inner).
    out: Vec<f32>,
    out_bias: Vec<f32>,
    channels: usize,
    inner: usize,
    heads: usize,
    rescale: f64,
}

impl CpuAttention {
    /// Weights as PyTorch's `Linear` holds them: (out, in) row-major.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        q: (Vec<f32>, Vec<f32>),
        k: (Vec<f32>, Vec<f32>),
        v: (Vec<f32>, Vec<f32>),
        out: (Vec<f32>, Vec<f32>),
        channels: usize,
        heads: usize,
        rescale: f64,
    ) -> CpuAttention {
        let inner = q.1.len();
        let qkv = [q.0, k.0, v.0].concat();
        let qkv_bias = [q.1, k.1, v.1].concat();
        CpuAttention { bf16: false, qkv, qkv_bias, out: out.0, out_bias: out.1, channels, inner, heads, rescale }
    }

    /// This attention with its per-head products in bfloat16 (where [`super::bf16_available`] and
    /// the heads have an even number of channels; an error otherwise).
    pub fn to_bf16(self) -> Result<CpuAttention> {
        if !super::bf16_available() {
            return Err(candle_core::Error::Msg("bf16 attention needs a CPU with AVX-512 BF16 (avx512_bf16)".into()));
        }
        if !(self.inner / self.heads).is_multiple_of(2) {
            return Err(candle_core::Error::Msg(format!(
                "bf16 attention needs an even number of channels per head, not {}",
                self.inner / self.heads
            )));
        }
        Ok(CpuAttention { bf16: true, ..self })
    }

    /// `x` (B, C, H, W) and its group-normalized copy `normed`, both contiguous.
    pub fn run(&self, x: &[f32], normed: &[f32], dims: (usize, usize, usize, usize)) -> Result<Vec<f32>> {
        let (_, c, h, w) = dims;
        if c != self.channels {
            return Err(candle_core::Error::Msg(format!(
                "attention: {c} channels, the weights take {}",
                self.channels
            )));
        }
        let (n, inner) = (h * w, self.inner);
        let hd = inner / self.heads;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let image = c * n;
        let mut out = x.to_vec();
        // Rows of the projections per task, so that one image's attention (batch 1) uses every
        // thread too; the blocks are fixed, so results do not depend on the number of threads.
        const ROWS: usize = 32;
        out.par_chunks_mut(image).enumerate().for_each(|(i, y)| {
            let xn = &normed[i * image..(i + 1) * image];
            let mut qkv = vec![0f32; 3 * inner * n];
            // SAFETY (the two projections below): every matrix lies inside `qkv`, `o`, `y`, `xn` or
            // the weights, with the sizes and strides given; outputs never overlap inputs.
            qkv.par_chunks_mut(ROWS * n).enumerate().for_each(|(t, rows)| {
                let r0 = t * ROWS;
                for (row, bias) in rows.chunks_mut(n).zip(&self.qkv_bias[r0..]) {
                    row.fill(*bias);
                }
                let m = rows.len() / n;
                unsafe {
                    matmul(
                        m,
                        n,
                        c,
                        (rows.as_mut_ptr(), n, 1),
                        true,
                        (self.qkv[r0 * c..].as_ptr(), c, 1),
                        (xn.as_ptr(), n, 1),
                        1.0,
                    )
                };
            });
            let mut o = vec![0f32; inner * n];
            #[cfg(target_arch = "x86_64")]
            if self.bf16 {
                heads_bf16(&qkv, &mut o, n, inner, self.heads, scale);
            } else {
                heads_f32(&qkv, &mut o, n, inner, self.heads, scale);
            }
            #[cfg(not(target_arch = "x86_64"))]
            heads_f32(&qkv, &mut o, n, inner, self.heads, scale);
            let o = &o;
            y.par_chunks_mut(ROWS * n).enumerate().for_each(|(t, rows)| {
                let r0 = t * ROWS;
                for (row, bias) in rows.chunks_mut(n).zip(&self.out_bias[r0..]) {
                    row.iter_mut().for_each(|v| *v += bias);
                }
                let m = rows.len() / n;
                unsafe {
                    matmul(
                        m,
                        n,
                        inner,
                        (rows.as_mut_ptr(), n, 1),
                        true,
                        (self.out[r0 * inner..].as_ptr(), inner, 1),
                        (o.as_ptr(), n, 1),
                        1.0,
                    )
                };
                if self.rescale != 1.0 {
                    let r = (1.0 / self.rescale) as f32;
                    rows.iter_mut().for_each(|v| *v *= r);
                }
            });
        });
        Ok(out)
    }
}

/// Every head's O = V·softmax(KᵀQ·scale) into `o` (inner × n) from `qkv` (3·inner × n), in f32.
fn heads_f32(qkv: &[f32], o: &mut [f32], n: usize, inner: usize, heads: usize, scale: f32) {
    let hd = inner / heads;
    // V transposed (n × inner), so that every product below reads its operands the way the
    // matrix product packs them (no strided gathers).
    let mut vt = vec![0f32; n * inner];
    for (ch, row) in qkv[2 * inner * n..].chunks(n).enumerate() {
        for (key, &v) in row.iter().enumerate() {
            vt[key * inner + ch] = v;
        }
    }
    let vt = &vt;
    // Per head, blocks of query positions: a block's scores (n × rows) stay small enough
    // for the caches whatever the map size (one n × n matrix is 64 MiB at 4,096 positions,
    // 1 GiB at 16,384), and the blocks keep every thread busy when there is one image and
    // one head. Each query's softmax is whole in its block; the blocks are fixed, so
    // results do not depend on the number of threads.
    let blocks = n.div_ceil(QUERY_BLOCK);
    let dst = SharedMut(o.as_mut_ptr());
    // A block's scores are written whole by the first product, so one buffer serves every task
    // a worker runs (no allocation and zeroing of a megabyte per task).
    let scratch = || vec![0f32; n * QUERY_BLOCK.min(n)];
    (0..heads * blocks).into_par_iter().for_each_init(scratch, |scores, task| {
        let (head, r0) = (task / blocks, (task % blocks) * QUERY_BLOCK);
        let rows = QUERY_BLOCK.min(n - r0);
        let scores = &mut scores[..n * rows];
        // SAFETY: Q and K of this head lie inside `qkv` (3·inner·n floats) and its V inside
        // `vt` (n·inner) with the strides given; the task writes columns r0..r0 + rows of
        // head `head`'s hd × n block of `o`, which no other task writes, and `o` outlives
        // this parallel section.
        unsafe {
            #[allow(clippy::redundant_locals)]
            let dst = dst;
            let qh = qkv.as_ptr().add(head * hd * n + r0);
            let kh = qkv.as_ptr().add((inner + head * hd) * n);
            let vh = vt.as_ptr().add(head * hd);
            // Sᵀ (n × rows) = Khᵀ (n × hd) · Qh[:, r0..r0 + rows] (hd × rows), scaled.
            matmul(n, rows, hd, (scores.as_mut_ptr(), rows, 1), false, (kh, 1, n), (qh, n, 1), scale);
            // Each query's softmax over the keys: down the columns.
            simd::softmax_columns(scores, rows);
            // Oh[:, r0..r0 + rows] (hd × rows) = Vh (hd × n) · P (n × rows).
            let oh = dst.0.add(head * hd * n + r0);
            matmul(hd, rows, n, (oh, n, 1), false, (vh, 1, inner), (scores.as_ptr(), rows, 1), 1.0);
        }
    });
}

/// Every head's O = V·softmax(KᵀQ·scale) into `o` (inner × n) from `qkv` (3·inner × n) in
/// bfloat16 with f32 sums, by the direct convolution's kernel (a product is a band of one row: the
/// lanes run over queries, the broadcast operand over keys or channels, pairs over the summed
/// dimension). Per head and block of queries as the f32 path. The softmax's exponentials go
/// straight into bfloat16 pairs unnormalized ([`exp_pairs`]) and each query's output column is
/// divided by its sum after the second product: one pass over the scores after their maxima,
/// where normalizing and then rounding took three.
#[cfg(target_arch = "x86_64")]
fn heads_bf16(qkv: &[f32], o: &mut [f32], n: usize, inner: usize, heads: usize, scale: f32) {
    use super::direct::{self, Bf16Pair};
    let hd = inner / heads;
    let pairs = hd / 2;
    let key_pairs = n.div_ceil(2);
    // Per head: Q as channel pairs (hd/2 × n), Kᵀ as pairs of channels per key (n × hd/2), V as
    // pairs of keys per channel (hd × ⌈n/2⌉).
    let mut q = Vec::new();
    direct::pack_pairs(&qkv[..inner * n], inner, n, &mut q);
    let kt: Vec<Bf16Pair> = (0..heads)
        .flat_map(|h| {
            let k = &qkv[(inner + h * hd) * n..(inner + (h + 1) * hd) * n];
            (0..n).flat_map(move |key| {
                (0..pairs).map(move |p| Bf16Pair::new(k[2 * p * n + key], k[(2 * p + 1) * n + key]))
            })
        })
        .collect();
    let v: Vec<Bf16Pair> = qkv[2 * inner * n..]
        .chunks(n)
        .flat_map(|row| (0..key_pairs).map(|j| Bf16Pair::new(row[2 * j], row.get(2 * j + 1).copied().unwrap_or(0.0))))
        .collect();
    let zeros = vec![0f32; n.max(hd)];
    let blocks = n.div_ceil(QUERY_BLOCK);
    let dst = SharedMut(o.as_mut_ptr());
    let (q, kt, v, zeros) = (&q, &kt, &v, &zeros);
    // Per worker: a block's scores, its exponentials as pairs and its columns' 1/Σ, each written
    // whole before it is read.
    let cols = QUERY_BLOCK.min(n);
    let scratch = || (vec![0f32; n * cols], vec![Bf16Pair(0); key_pairs * cols], vec![0f32; cols]);
    (0..heads * blocks).into_par_iter().for_each_init(scratch, |(scores, p, inv), task| {
        let (head, r0) = (task / blocks, (task % blocks) * QUERY_BLOCK);
        let rows = QUERY_BLOCK.min(n - r0);
        let (scores, p, inv) = (&mut scores[..n * rows], &mut p[..key_pairs * rows], &mut inv[..rows]);
        // Sᵀ (n × rows) = Khᵀ · Qh[:, r0..r0 + rows], scaled: the keys broadcast, the queries in lanes.
        // SAFETY: bf16 attention is made only where `available_bf16`; Kᵀ holds n × hd/2 pairs of
        // this head, Q's pairs r0 + p·n + j (j < rows, p < hd/2) lie inside its planes; the
        // product writes all of `scores` (n × rows), and `exp_pairs` all of `p` and `inv`.
        unsafe {
            let kh = &kt[head * n * pairs..(head + 1) * n * pairs];
            let qh = &q[head * pairs * n + r0..];
            product((kh, n), (qh, n, rows), (scores.as_mut_ptr(), rows, 0), scale, zeros);
            exp_pairs(scores, n, rows, p, inv);
        }
        #[allow(clippy::redundant_locals)]
        let dst = dst;
        // Oh[:, r0..r0 + rows] = Vh · P, then each column divided by its sum: the channels
        // broadcast, the queries in lanes.
        // SAFETY: as above for the reads (Vh holds hd × ⌈n/2⌉ pairs, P ⌈n/2⌉ × rows); the task
        // writes columns r0..r0 + rows of head `head`'s hd × n block of `o`, which no other task
        // writes, and `o` outlives this parallel section.
        unsafe {
            let vh = &v[head * hd * key_pairs..(head + 1) * hd * key_pairs];
            let oh = dst.0.add(head * hd * n);
            product((vh, hd), (p, rows, rows), (oh, n, r0), 1.0, zeros);
            for ch in 0..hd {
                let out = std::slice::from_raw_parts_mut(oh.add(ch * n + r0), rows);
                out.iter_mut().zip(inv.iter()).for_each(|(o, r)| *o *= r);
            }
        }
    });
}

/// The exponentials of a block of scores (n keys × cols queries, row-major) less each column's
/// maximum, as bfloat16 pairs of keys (⌈n/2⌉ × cols: keys 2k and 2k + 1 in the low and high half,
/// zero for the missing partner of an odd n, rounded to nearest even), and 1/Σ of each column's
/// exponentials in f32 into `inv`: the softmax down each column but for its division. The
/// exponential is [`super::exp_f32`]'s argument reduction with one degree less of its polynomial
/// (relative error under 3·10⁻⁶, a thousandth of a bfloat16 rounding).
///
/// # Safety
/// AVX-512 F, BW and BF16; `scores` holds n·cols floats, `p` ⌈n/2⌉·cols pairs, `inv` cols floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn exp_pairs(scores: &[f32], n: usize, cols: usize, p: &mut [super::direct::Bf16Pair], inv: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(scores.len() >= n * cols && p.len() >= n.div_ceil(2) * cols && inv.len() >= cols);
    let idx: [i16; 32] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as i16);
    // SAFETY: every load and store is masked to columns j..j + 16 below `cols` of rows inside the
    // sizes above.
    unsafe {
        let idx = _mm512_loadu_si512(idx.as_ptr() as *const __m512i);
        let exp = |x: __m512| {
            const SHIFTER: f32 = 12_582_912.0;
            let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
            let t = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), _mm512_set1_ps(SHIFTER));
            let k = _mm512_sub_ps(t, _mm512_set1_ps(SHIFTER));
            let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693_145_75), x);
            let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428_606_8e-6), r);
            let r2 = _mm512_mul_ps(r, r);
            let c = |v: f32| _mm512_set1_ps(v);
            let hi = _mm512_fmadd_ps(r, c(1.0 / 120.0), c(1.0 / 24.0));
            let mid = _mm512_fmadd_ps(r, c(1.0 / 6.0), c(0.5));
            let lo = _mm512_add_ps(c(1.0), r);
            let poly = _mm512_fmadd_ps(r2, _mm512_fmadd_ps(r2, hi, mid), lo);
            let bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(SHIFTER.to_bits() as i32 - 127));
            _mm512_mul_ps(poly, _mm512_castsi512_ps(_mm512_slli_epi32(bits, 23)))
        };
        let src = scores.as_ptr();
        let out = p.as_mut_ptr() as *mut i32;
        for j in (0..cols).step_by(16) {
            let m = if cols - j >= 16 { u16::MAX } else { ((1u32 << (cols - j)) - 1) as u16 };
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for key in 0..n {
                max = _mm512_max_ps(max, _mm512_maskz_loadu_ps(m, src.add(key * cols + j)));
            }
            let mut sum = _mm512_setzero_ps();
            for pair in 0..n.div_ceil(2) {
                let a = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, src.add(2 * pair * cols + j)), max));
                let b = if 2 * pair + 1 < n {
                    exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, src.add((2 * pair + 1) * cols + j)), max))
                } else {
                    _mm512_setzero_ps()
                };
                sum = _mm512_add_ps(_mm512_add_ps(sum, a), b);
                let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
                _mm512_mask_storeu_epi32(out.add(pair * cols + j), m, _mm512_permutexvar_epi16(idx, both));
            }
            _mm512_mask_storeu_ps(inv.as_mut_ptr().add(j), m, _mm512_div_ps(_mm512_set1_ps(1.0), sum));
        }
    }
}

/// C = A·B·scale in bfloat16 with f32 sums, by the direct convolution's kernel as a band of one
/// row: A = (pairs, m), m rows of K pairs, row-major, broadcast; B = (pairs, ld, cols), K rows `ld`
/// pairs apart, `cols` columns from the start, in lanes; C's row r at `out.0 + r·out.1 + out.2`.
/// `zeros` holds at least m zeros (the kernel's added term).
///
/// # Safety
/// The CPU has AVX-512 BF16; B's rows lie inside its slice; C's rows lie inside the memory `out`
/// points into, and no other task writes them meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn product(
    a: (&[super::direct::Bf16Pair], usize),
    b: (&[super::direct::Bf16Pair], usize, usize),
    out: (*mut f32, usize, usize),
    scale: f32,
    zeros: &[f32],
) {
    use super::direct::{Bf16Pair, Tap};
    let ((a, m), (b, ld, cols)) = (a, b);
    let koff: Vec<u32> = (0..a.len() / m).map(|k| (k * ld) as u32).collect();
    let band = super::direct::Band {
        x: b,
        koff: &koff,
        wp: cols,
        rows: 1,
        wo: cols,
        weight: a,
        co: 0..m,
        add: &zeros[..m],
        plane: out.1,
        o0: out.2,
        scale,
    };
    // SAFETY: the caller's contract.
    unsafe { Bf16Pair::run(&band, out.0, None, &mut Vec::new()) };
}

impl CustomOp2 for CpuAttention {
    fn name(&self) -> &'static str {
        "expanse-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, normed) = (input(s1, l1, "attention")?, input(s2, l2, "attention")?);
        if l1.shape() != l2.shape() {
            return Err(candle_core::Error::Msg("attention: input and normalized input differ in shape".into()));
        }
        let out = self.run(x, normed, l1.shape().dims4()?)?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// exp_pairs is the softmax down each column but for its division: every pair rounds the exact
    /// exponential to bfloat16, and `inv` is 1/Σ of them within f32 rounding, with an odd number of
    /// keys (a zero partner) and a number of queries that leaves a partial vector.
    #[test]
    fn exp_pairs_is_the_softmax_before_its_division() {
        if !super::super::bf16_available() {
            println!("no AVX-512 BF16 on this CPU: nothing to check");
            return;
        }
        let (n, cols): (usize, usize) = (37, 21);
        let scores: Vec<f32> = (0..n * cols).map(|i| ((i * 7919 % 1009) as f32 * 0.037).sin() * 9.0).collect();
        let mut p = vec![super::super::direct::Bf16Pair(0); n.div_ceil(2) * cols];
        let mut inv = vec![0f32; cols];
        // SAFETY: the CPU has AVX-512 BF16 (checked above); the sizes are those exp_pairs asks for.
        unsafe { exp_pairs(&scores, n, cols, &mut p, &mut inv) };
        let bf16 = |bits: u32| f32::from_bits(bits << 16) as f64;
        for c in 0..cols {
            let max = (0..n).map(|k| scores[k * cols + c] as f64).fold(f64::NEG_INFINITY, f64::max);
            let exact: Vec<f64> = (0..n).map(|k| (scores[k * cols + c] as f64 - max).exp()).collect();
            let sum: f64 = exact.iter().sum();
            assert!((inv[c] as f64 * sum - 1.0).abs() < 1e-5, "column {c}: 1/Σ {} against {}", inv[c], 1.0 / sum);
            for (k, &e) in exact.iter().enumerate() {
                let pair = p[(k / 2) * cols + c].0;
                let got = bf16(if k % 2 == 0 { pair & 0xffff } else { pair >> 16 });
                assert!((got - e).abs() <= e * 2f64.powi(-8), "key {k}, column {c}: {got} against {e}");
            }
            assert_eq!(p[(n / 2) * cols + c].0 >> 16, 0, "the odd key's partner is zero");
        }
    }

    /// The bf16 attention is the f32 one within bfloat16 rounding, and does not depend on the
    /// number of threads (blocks of queries, one of them partial).
    #[test]
    fn bf16_attention_is_the_f32_one_within_its_rounding() {
        if !super::super::bf16_available() {
            println!("no AVX-512 BF16 on this CPU: nothing to check");
            return;
        }
        let (c, heads, h, w) = (8, 2, 9, 11);
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| (((i + seed) * 7919 + seed * 104729) % 2001) as f32 * 1e-3 - 1.0).collect()
        };
        let linear = |seed| (values(c * c, seed), values(c, seed + 1).iter().map(|v| v * 0.1).collect::<Vec<_>>());
        let f32_attention = CpuAttention::new(linear(1), linear(3), linear(5), linear(7), c, heads, 1.0);
        let bf16_attention = f32_attention.clone().to_bf16().unwrap();
        let x = values(2 * c * h * w, 11);
        let normed = values(2 * c * h * w, 13);
        let want = f32_attention.run(&x, &normed, (2, c, h, w)).unwrap();
        let got = bf16_attention.run(&x, &normed, (2, c, h, w)).unwrap();
        let rms = |v: &mut dyn Iterator<Item = f32>| {
            let all: Vec<f64> = v.map(|x| (x as f64).powi(2)).collect();
            (all.iter().sum::<f64>() / all.len() as f64).sqrt()
        };
        let attended = rms(&mut want.iter().zip(&x).map(|(y, x)| y - x));
        let error = rms(&mut got.iter().zip(&want).map(|(a, b)| a - b));
        assert!(error > 0.0 && error < 1e-2 * attended, "bf16 error {error:e} against {attended:e}");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        assert_eq!(pool.install(|| bf16_attention.run(&x, &normed, (2, c, h, w)).unwrap()), got);
    }
}
