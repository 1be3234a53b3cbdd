//! GroupNorm, fused with the SiLU that follows it and with a per-channel scale and shift.

use super::*;

/// GroupNorm (affine), with an optional SiLU after it, in one pass for the statistics (f64
/// accumulation) and one for the output.
#[derive(Debug, Clone)]
pub struct CpuGroupNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    groups: usize,
    eps: f64,
}

impl CpuGroupNorm {
    pub fn new(gamma: Vec<f32>, beta: Vec<f32>, groups: usize, eps: f64) -> CpuGroupNorm {
        CpuGroupNorm { gamma, beta, groups, eps }
    }

    /// The operation on tensors: the normalization, followed by SiLU when `silu`.
    pub fn op(&self, silu: bool) -> GroupNormOp<'_> {
        GroupNormOp { norm: self, silu }
    }

    /// The operation on tensors x (B, C, …) and m (B, 2C): the normalization, then
    /// `· (1 + m[:, :C]) + m[:, C:]` per image and channel (ADM's scale-shift norm), then SiLU
    /// when `silu`.
    pub fn scale_shift_op(&self, silu: bool) -> GroupNormScaleShift<'_> {
        GroupNormScaleShift { norm: self, silu }
    }

    /// Normalizes a contiguous (B, C, spatial…) f32 array with `plane` values per channel, then
    /// applies SiLU when `silu`.
    pub fn run(&self, x: &[f32], c: usize, plane: usize, silu: bool) -> Result<Vec<f32>> {
        self.run_modulated(x, c, plane, silu, None)
    }

    /// [`run`](Self::run) with an optional (B, 2C) scale-and-shift after the affine GroupNorm.
    pub fn run_modulated(
        &self,
        x: &[f32],
        c: usize,
        plane: usize,
        silu: bool,
        modulation: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        if !c.is_multiple_of(self.groups) || c != self.gamma.len() {
            return Err(candle_core::Error::Msg(format!(
                "group norm: {c} channels for {} groups of {} weights",
                self.groups,
                self.gamma.len()
            )));
        }
        let per = c / self.groups;
        let size = per * plane;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(size).zip(x.par_chunks(size)).enumerate().for_each(|(idx, (o, xi))| {
            let g = idx % self.groups;
            let (sum, sq) = simd::sums(xi);
            let n = size as f64;
            let mean = sum / n;
            let var = (sq / n - mean * mean).max(0.0);
            let inv = 1.0 / (var + self.eps).sqrt();
            let b = idx / self.groups;
            for cc in 0..per {
                let ch = g * per + cc;
                let (mut scale, mut shift) =
                    (self.gamma[ch] as f64 * inv, self.beta[ch] as f64 - mean * self.gamma[ch] as f64 * inv);
                if let Some(m) = modulation {
                    let (s, t) = (1.0 + m[b * 2 * c + ch] as f64, m[b * 2 * c + c + ch] as f64);
                    (scale, shift) = (scale * s, shift * s + t);
                }
                let (scale, shift) = (scale as f32, shift as f32);
                let (src, dst) = (&xi[cc * plane..(cc + 1) * plane], &mut o[cc * plane..(cc + 1) * plane]);
                simd::affine(src, dst, scale, shift, silu);
            }
        });
        Ok(out)
    }
}

/// [`CpuGroupNorm`] as a candle operation, with or without the SiLU.
pub struct GroupNormOp<'a> {
    norm: &'a CpuGroupNorm,
    silu: bool,
}

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "expanse-group-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(s, l, "group norm")?;
        let dims = l.shape().dims();
        if dims.len() < 2 {
            return Err(candle_core::Error::Msg("group norm: need (B, C, ...)".into()));
        }
        let plane: usize = dims[2..].iter().product();
        let out = self.norm.run(x, dims[1], plane, self.silu)?;
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// [`CpuGroupNorm`] followed by a per-image, per-channel scale and shift (and SiLU), as a candle
/// operation on (x, modulation).
pub struct GroupNormScaleShift<'a> {
    norm: &'a CpuGroupNorm,
    silu: bool,
}

impl CustomOp2 for GroupNormScaleShift<'_> {
    fn name(&self) -> &'static str {
        "expanse-group-norm-scale-shift"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(s1, l1, "group norm")?;
        let m = input(s2, l2, "group norm modulation")?;
        let dims = l1.shape().dims();
        if dims.len() < 2 || l2.shape().dims() != [dims[0], 2 * dims[1]] {
            return Err(candle_core::Error::Msg(format!(
                "group norm: modulation {:?} for input {dims:?}",
                l2.shape().dims()
            )));
        }
        let plane: usize = dims[2..].iter().product();
        let out = self.norm.run_modulated(x, dims[1], plane, self.silu, Some(m))?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
