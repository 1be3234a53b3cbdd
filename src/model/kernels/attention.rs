//! Spatial self-attention in the channels-first layout.

use super::*;

/// Spatial self-attention over the H·W positions of each image, with the residual connection,
/// computed in the channels-first layout of the UNet (no transposes): QKV = W·X + b, per head
/// S = QᵀK/√d, softmax over each row, O = V·Pᵀ, then Y = W_o·O + b_o + x, divided by the rescale
/// factor. f32 only, scores included; half-precision models take candle's path in
/// [`super::unet::SpatialAttention`], which computes the scores and softmax in f32 as well.
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
            let qkv = &qkv;
            o[..self.heads * hd * n].par_chunks_mut(hd * n).enumerate().for_each(|(head, oh)| {
                let mut scores = vec![0f32; n * n];
                unsafe {
                    let qh = qkv.as_ptr().add(head * hd * n);
                    let kh = qkv.as_ptr().add((inner + head * hd) * n);
                    let vh = qkv.as_ptr().add((2 * inner + head * hd) * n);
                    // S (n × n) = Qhᵀ (n × hd) · Kh (hd × n), scaled.
                    matmul(n, n, hd, (scores.as_mut_ptr(), n, 1), false, (qh, 1, n), (kh, n, 1), scale);
                    for row in scores.chunks_mut(n) {
                        simd::softmax(row);
                    }
                    // Oh (hd × n) = Vh (hd × n) · Pᵀ (n × n).
                    matmul(hd, n, n, (oh.as_mut_ptr(), n, 1), false, (vh, n, 1), (scores.as_ptr(), 1, n), 1.0);
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
