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
/// Y = W_o·O + b_o + x, divided by the rescale factor. f32 only, scores included; half-precision
/// models take candle's path in [`super::unet::SpatialAttention`], which computes the scores and
/// softmax in f32 as well.
#[derive(Debug, Clone)]
pub struct CpuAttention {
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
        CpuAttention { qkv, qkv_bias, out: out.0, out_bias: out.1, channels, inner, heads, rescale }
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
            // SAFETY (the three blocks below): every matrix lies inside `qkv`, `scores`, `o`, `y`,
            // `xn` or the weights, with the sizes and strides given; outputs never overlap inputs.
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
            // V transposed (n × inner), so that every product below reads its operands the way the
            // matrix product packs them (no strided gathers).
            let mut vt = vec![0f32; n * inner];
            for (ch, row) in qkv[2 * inner * n..].chunks(n).enumerate() {
                for (key, &v) in row.iter().enumerate() {
                    vt[key * inner + ch] = v;
                }
            }
            let (qkv, vt) = (&qkv, &vt);
            // Per head, blocks of query positions: a block's scores (n × rows) stay small enough
            // for the caches whatever the map size (one n × n matrix is 64 MiB at 4,096 positions,
            // 1 GiB at 16,384), and the blocks keep every thread busy when there is one image and
            // one head. Each query's softmax is whole in its block; the blocks are fixed, so
            // results do not depend on the number of threads.
            let blocks = n.div_ceil(QUERY_BLOCK);
            let dst = SharedMut(o.as_mut_ptr());
            (0..self.heads * blocks).into_par_iter().for_each(|task| {
                let (head, r0) = (task / blocks, (task % blocks) * QUERY_BLOCK);
                let rows = QUERY_BLOCK.min(n - r0);
                let mut scores = vec![0f32; n * rows];
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
                    simd::softmax_columns(&mut scores, rows);
                    // Oh[:, r0..r0 + rows] (hd × rows) = Vh (hd × n) · P (n × rows).
                    let oh = dst.0.add(head * hd * n + r0);
                    matmul(hd, rows, n, (oh, n, 1), false, (vh, 1, inner), (scores.as_ptr(), rows, 1), 1.0);
                }
            });
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
