//! Convolutions: the direct AVX-512 kernel where the CPU has it, im2col and `gemm` otherwise.

use super::*;

/// Floats of one task's im2col tile (1 MiB): tiles hold as many output rows as fit. Every tile is
/// one `gemm` call that packs the whole weight matrix again, so larger tiles amortize that; beyond
/// this the tiles leave the caches. Measured 2^14 … 2^20 on the three benchmark models at one and
/// two threads: 2^18 was the fastest or within 1 % of it on each.
const TILE_FLOATS: usize = 1 << 18;

#[cfg(target_arch = "x86_64")]
/// Floats of one direct-convolution task's input band (the padded input rows it reads, 256 KiB):
/// bands hold as many output rows as fit, so that the band stays in the core's L2 cache while every
/// block of output channels reads it.
const BAND_FLOATS: usize = 1 << 16;

/// Whether the direct convolution kernel runs on this machine (x86-64 with AVX-512F).
pub fn direct_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return direct::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

thread_local! {
    /// Each worker thread's padded input band, tap offsets and vector masks for the direct kernel,
    /// and the band in bfloat16 pairs.
    #[cfg(target_arch = "x86_64")]
    static DIRECT_BUFFERS: std::cell::RefCell<DirectBuffers> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new()))
    };

    /// Each worker thread's im2col tile and padded input rows, kept between tasks and calls.
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(target_arch = "x86_64")]
type DirectBuffers = (Vec<f32>, Vec<u32>, Vec<direct::VectorInfo>, Vec<direct::Bf16Pair>);

/// Whether this machine runs stride-1 convolutions in bfloat16 ([`CpuConv2d::to_bf16`]): x86-64
/// with AVX-512 F, BW and BF16.
pub fn bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return direct::available_bf16();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// (Ho, Wo) of a convolution with kernel `k` = (kh, kw) on an (H, W) input padded by `padding`
/// on every side and `pad_end` more at the bottom and right.
pub fn conv_output_size(
    hw: (usize, usize),
    k: (usize, usize),
    stride: usize,
    padding: usize,
    pad_end: usize,
) -> (usize, usize) {
    let pad = 2 * padding + pad_end;
    ((hw.0 + pad - k.0) / stride + 1, (hw.1 + pad - k.1) / stride + 1)
}

/// A 2-D convolution with fixed weights (PyTorch layout (Cout, Cin, kh, kw)) and optional bias.
/// `padding` pads every side; `pad_end` pads the bottom and right once more (the original DDPM's
/// stride-2 downsampling pads (0, 1, 0, 1) instead of 1 all round). The weights are the model's
/// own tensor, read in place (no second copy). [`to_bf16`](Self::to_bf16) adds a bfloat16 copy
/// that stride-1 convolutions then use.
#[derive(Debug, Clone)]
pub struct CpuConv2d {
    weight: Tensor,
    /// (Cout, ⌈Cin / 2⌉·kh·kw) weights in bfloat16 pairs, when stride-1 runs are in bfloat16.
    #[cfg(target_arch = "x86_64")]
    bf16: Option<std::sync::Arc<Vec<direct::Bf16Pair>>>,
    bias: Option<Vec<f32>>,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    pad_end: usize,
}

/// What is added to a convolution's output before it is written, and a final scale:
/// out = (W * x + bias + channel_bias[b, c] + residual) · scale.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// (B, Cout): one more bias per image and channel (the UNet's time embedding).
    pub channel_bias: Option<&'a [f32]>,
    /// (B, Cout, Ho, Wo): added element by element (a residual connection).
    pub residual: Option<&'a [f32]>,
    pub scale: f32,
}

impl CpuConv2d {
    /// `weight` is an f32 (Cout, Cin, kh, kw) tensor on the CPU; `bias` has Cout values.
    pub fn new(
        weight: &Tensor,
        bias: Option<Vec<f32>>,
        stride: usize,
        padding: usize,
        pad_end: usize,
    ) -> Result<CpuConv2d> {
        let (cout, cin, kh, kw) = weight.dims4()?;
        if !weight.device().is_cpu()
            || weight.dtype() != candle_core::DType::F32
            || bias.as_ref().is_some_and(|b| b.len() != cout)
            || stride == 0
        {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: weights {:?} {:?} need f32 on the CPU, Cout biases and a stride",
                weight.dims(),
                weight.dtype()
            )));
        }
        Ok(CpuConv2d {
            weight: weight.contiguous()?,
            #[cfg(target_arch = "x86_64")]
            bf16: None,
            bias,
            cin,
            cout,
            kh,
            kw,
            stride,
            padding,
            pad_end,
        })
    }

    /// This convolution with its stride-1 runs in bfloat16 (where [`bf16_available`]): weights
    /// and inputs rounded to bfloat16, products summed in f32 (`vdpbf16ps`). Strided convolutions
    /// stay f32 (returned as they are). An error where the CPU lacks the instructions.
    pub fn to_bf16(self) -> Result<CpuConv2d> {
        #[cfg(target_arch = "x86_64")]
        if bf16_available() {
            if self.stride != 1 {
                return Ok(self);
            }
            // Each output channel's (Cin, kh·kw) weights as channel pairs: (⌈Cin / 2⌉, kh·kw).
            let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
            let taps = self.kh * self.kw;
            let mut packed = Vec::with_capacity(self.cout * self.cin.div_ceil(2) * taps);
            let mut channel = Vec::new();
            for wc in w.chunks(self.cin * taps) {
                direct::pack_pairs(wc, self.cin, taps, &mut channel);
                packed.extend_from_slice(&channel);
            }
            return Ok(CpuConv2d { bf16: Some(std::sync::Arc::new(packed)), ..self });
        }
        Err(candle_core::Error::Msg("bf16 convolutions need a CPU with AVX-512 BF16 (avx512_bf16)".into()))
    }

    /// (Ho, Wo) for an H × W input.
    fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        conv_output_size((h, w), (self.kh, self.kw), self.stride, self.padding, self.pad_end)
    }

    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0 && self.pad_end == 0
    }

    /// Input rows r0 − padding … r1 − 1 + kh − 1 − padding of one image `x` (Cin, H, W), the rows
    /// that output rows `r0..r1` read at stride 1, with their zero padding written out into `out`
    /// (every cell written once): (Cin, r1 − r0 + kh − 1, Wp). Returns (rows, Wp).
    fn pad_rows(&self, x: &[f32], h: usize, w: usize, r0: usize, r1: usize, out: &mut Vec<f32>) -> (usize, usize) {
        let (p, e) = (self.padding, self.pad_end);
        let (rows, wp) = (r1 - r0 + self.kh - 1, w + 2 * p + e);
        out.resize(self.cin * rows * wp, 0.0);
        for (o, src) in out.chunks_mut(rows * wp).zip(x.chunks(h * w)) {
            for (t, row) in o.chunks_mut(wp).enumerate() {
                let iy = (r0 + t) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    row.fill(0.0);
                } else {
                    let iy = iy as usize;
                    row[..p].fill(0.0);
                    row[p..p + w].copy_from_slice(&src[iy * w..(iy + 1) * w]);
                    row[p + w..].fill(0.0);
                }
            }
        }
        (rows, wp)
    }

    /// im2col of output rows `r0..r1` of one zero-padded image `xp` (Cin, Hp, Wp) at stride 1
    /// (row 0 of `xp` being the first input row output row 0 reads): every row of `col` is
    /// `rows` plain copies of Wo consecutive inputs.
    #[allow(clippy::too_many_arguments)]
    fn im2col_padded(&self, xp: &[f32], hp: usize, wp: usize, wo: usize, r0: usize, r1: usize, col: &mut [f32]) {
        let n = (r1 - r0) * wo;
        for ci in 0..self.cin {
            let plane = &xp[ci * hp * wp..(ci + 1) * hp * wp];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = (ci * self.kh + ky) * self.kw + kx;
                    let dst = &mut col[row * n..(row + 1) * n];
                    for (t, oy) in (r0..r1).enumerate() {
                        let start = (oy + ky) * wp + kx;
                        dst[t * wo..(t + 1) * wo].copy_from_slice(&plane[start..start + wo]);
                    }
                }
            }
        }
    }

    /// im2col of output rows `r0..r1` of one image `x` (Cin, H, W) into `col` (K × rows·Wo), at
    /// any stride. Input positions outside the image read as zero.
    #[allow(clippy::too_many_arguments)]
    fn im2col(&self, x: &[f32], h: usize, w: usize, wo: usize, r0: usize, r1: usize, col: &mut [f32]) {
        let n = (r1 - r0) * wo;
        let (s, p) = (self.stride as isize, self.padding as isize);
        for ci in 0..self.cin {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = (ci * self.kh + ky) * self.kw + kx;
                    let dst = &mut col[row * n..(row + 1) * n];
                    for (t, oy) in (r0..r1).enumerate() {
                        let iy = oy as isize * s + ky as isize - p;
                        let out = &mut dst[t * wo..(t + 1) * wo];
                        if iy < 0 || iy >= h as isize {
                            out.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        let off = kx as isize - p;
                        if s == 1 {
                            // Output columns whose input column off + ox lies inside the row.
                            let lo = (-off).clamp(0, wo as isize) as usize;
                            let hi = (w as isize - off).clamp(lo as isize, wo as isize) as usize;
                            out[..lo].fill(0.0);
                            out[lo..hi]
                                .copy_from_slice(&src[(lo as isize + off) as usize..(hi as isize + off) as usize]);
                            out[hi..].fill(0.0);
                        } else {
                            for (ox, o) in out.iter_mut().enumerate() {
                                let ix = ox as isize * s + off;
                                *o = if ix >= 0 && ix < w as isize { src[ix as usize] } else { 0.0 };
                            }
                        }
                    }
                }
            }
        }
    }

    /// The convolution of a contiguous (B, Cin, H, W) f32 array, with the epilogue `e`: the direct
    /// AVX-512 kernel for stride-1 convolutions wider than 1×1 where the CPU has it, im2col and
    /// `gemm` otherwise (1×1 convolutions multiply the input in place: `gemm`'s packing of it beats
    /// the direct kernel's reading of one plane per tap, 1.3–1.6× in `conv_speed`).
    pub fn run(&self, x: &[f32], dims: (usize, usize, usize, usize), e: Epilogue) -> Result<(Vec<f32>, Dims4)> {
        self.run_with(x, dims, e, !self.pointwise())
    }

    /// The bias plus image `i`'s channel bias of output channel `co`.
    fn added(&self, e: &Epilogue, i: usize, co: usize) -> f32 {
        self.bias.as_ref().map_or(0.0, |bias| bias[co]) + e.channel_bias.map_or(0.0, |cb| cb[i * self.cout + co])
    }

    /// [`run`](Self::run) with the direct kernel when `direct` and it applies (stride 1 on an
    /// AVX-512 CPU), im2col and `gemm` otherwise.
    pub(crate) fn run_with(
        &self,
        x: &[f32],
        dims: (usize, usize, usize, usize),
        e: Epilogue,
        direct: bool,
    ) -> Result<(Vec<f32>, Dims4)> {
        let (b, c, h, w) = dims;
        let err = |m: String| Err(candle_core::Error::Msg(format!("conv2d: {m}")));
        if c != self.cin {
            return err(format!("input has {c} channels, the kernel takes {}", self.cin));
        }
        if h + 2 * self.padding + self.pad_end < self.kh || w + 2 * self.padding + self.pad_end < self.kw {
            return err(format!("a {h}x{w} input is smaller than the kernel"));
        }
        let (ho, wo) = self.output_size(h, w);
        let k = self.cin * self.kh * self.kw;
        let plane = ho * wo;
        if e.channel_bias.is_some_and(|cb| cb.len() != b * self.cout)
            || e.residual.is_some_and(|r| r.len() != b * self.cout * plane)
        {
            return err("epilogue of the wrong size".into());
        }
        let total = b * self.cout * plane;
        // Zeroed, so that no reference is ever made to uninitialized memory (every element is
        // then written by the tasks below); the memset is within the timing noise (BENCHMARKS.md).
        let mut out: Vec<f32> = vec![0.0; total];
        let (storage, layout) = self.weight.storage_and_layout();
        let Storage::Cpu(storage) = &*storage else {
            return err("weights are not on the CPU".into());
        };
        let weight = input(storage, layout, "conv2d weights")?;
        if weight.len() != self.cout * k {
            return err("weights of the wrong size".into());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = direct;
        #[cfg(target_arch = "x86_64")]
        {
            let padded_image = self.cin * (h + 2 * self.padding + self.pad_end) * (w + 2 * self.padding + self.pad_end);
            // Tap offsets are u32: images of over 2³² floats per sample take im2col.
            if self.stride == 1 && padded_image < u32::MAX as usize {
                if let Some(packed) = &self.bf16 {
                    self.run_direct(x, &packed[..], (b, h, w), (ho, wo), e, &mut out);
                    return Ok((out, (b, self.cout, ho, wo)));
                }
                if direct && direct::available() {
                    self.run_direct(x, weight, (b, h, w), (ho, wo), e, &mut out);
                    return Ok((out, (b, self.cout, ho, wo)));
                }
            }
        }
        let read_dst = self.bias.is_some() || e.channel_bias.is_some() || e.residual.is_some();
        // Tiles of whole output rows (pointwise: of whole columns of the flattened plane).
        let (rows, span) = if self.pointwise() {
            ((TILE_FLOATS / k.max(1)).clamp(1, plane), plane)
        } else {
            ((TILE_FLOATS / (k * wo).max(1)).clamp(1, ho), ho)
        };
        let tiles: Vec<(usize, usize, usize)> =
            (0..b).flat_map(|i| (0..span).step_by(rows).map(move |r0| (i, r0, (r0 + rows).min(span)))).collect();
        let dst = SharedMut(out.as_mut_ptr());
        let image = c * h * w;
        // Stride 1 with tiles of several rows: each task pads the input rows its tile reads (into
        // its own buffer), so that every im2col row is plain copies. With tiles of one or two rows
        // (wide, deep layers) padding would copy each input row three times or twice: im2col
        // then reads the image directly.
        let pad = self.stride == 1 && !self.pointwise() && rows >= 3;
        tiles.par_iter().for_each(|&(i, r0, r1)| {
            BUFFERS.with_borrow_mut(|(col, xp)| {
                let xi = &x[i * image..(i + 1) * image];
                let out_base = i * self.cout * plane;
                // Plane positions c0..c1 of image i are this task's outputs.
                let (c0, c1) = if self.pointwise() { (r0, r1) } else { (r0 * wo, r1 * wo) };
                // SAFETY: tasks write disjoint position ranges c0..c1 of image i's planes of `out`
                // (`total` initialized elements), so no two tasks touch one element; every element
                // is written once: here when the epilogue starts the sum, else by the product
                // (read_dst false never reads them). The matrices passed lie inside `out`, the
                // weights, `xi` and `col`.
                unsafe {
                    // Use the whole wrapper (Send + Sync), not its raw pointer field alone.
                    #[allow(clippy::redundant_locals)]
                    let dst = dst;
                    if read_dst {
                        for co in 0..self.cout {
                            let at = out_base + co * plane;
                            let seg = std::slice::from_raw_parts_mut(dst.0.add(at + c0), c1 - c0);
                            let add = self.added(&e, i, co);
                            match e.residual {
                                Some(r) => seg.iter_mut().zip(&r[at + c0..at + c1]).for_each(|(o, v)| *o = v + add),
                                None => seg.fill(add),
                            }
                        }
                    }
                    let d = (dst.0.add(out_base + c0), plane, 1);
                    if self.pointwise() {
                        matmul(
                            self.cout,
                            c1 - c0,
                            k,
                            d,
                            read_dst,
                            (weight.as_ptr(), k, 1),
                            (xi.as_ptr().add(c0), plane, 1),
                            e.scale,
                        );
                    } else {
                        let n = c1 - c0;
                        col.resize(k * n, 0.0);
                        if pad {
                            let (hp, wp) = self.pad_rows(xi, h, w, r0, r1, xp);
                            self.im2col_padded(xp, hp, wp, wo, 0, r1 - r0, col);
                        } else {
                            self.im2col(xi, h, w, wo, r0, r1, col);
                        }
                        matmul(self.cout, n, k, d, read_dst, (weight.as_ptr(), k, 1), (col.as_ptr(), n, 1), e.scale);
                    }
                }
            })
        });
        Ok((out, (b, self.cout, ho, wo)))
    }
}

#[cfg(target_arch = "x86_64")]
impl CpuConv2d {
    /// The direct kernel at stride 1 into `out` (B·Cout·Ho·Wo elements, every one written):
    /// tasks of one image × a band of output rows × a range of output channels. Bands whose rows
    /// need padding are first copied, padded, into the task's buffer; in bfloat16 every band is
    /// then packed into channel pairs.
    fn run_direct<E: direct::Tap>(
        &self,
        x: &[f32],
        weight: &[E],
        (b, h, w): (usize, usize, usize),
        (ho, wo): (usize, usize),
        e: Epilogue,
        out: &mut Vec<f32>,
    ) {
        let (kh, kw) = (self.kh, self.kw);
        let padded = self.padding > 0 || self.pad_end > 0;
        let wp = w + 2 * self.padding + self.pad_end;
        let pairs = E::CHANNELS > 1;
        let rows = (BAND_FLOATS / (self.cin * wp).max(1)).saturating_sub(kh - 1).clamp(1, ho);
        let bands = ho.div_ceil(rows);
        // Split the channels too when images × bands leave threads idle (results do not depend on it).
        let blocks = self.cout.div_ceil(8);
        let split = (2 * rayon::current_num_threads()).div_ceil(b * bands).clamp(1, blocks);
        let per = blocks.div_ceil(split) * 8;
        let tasks: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|i| (0..bands).flat_map(move |t| (0..self.cout).step_by(per).map(move |c0| (i, t, c0))))
            .collect();
        let (image, plane) = (self.cin * h * w, ho * wo);
        let adds: Vec<f32> = (0..b).flat_map(|i| (0..self.cout).map(move |co| self.added(&e, i, co))).collect();
        let dst = SharedMut(out.as_mut_ptr());
        tasks.par_iter().for_each(|&(i, t, c0)| {
            DIRECT_BUFFERS.with_borrow_mut(|(xp, koff, info, xq)| {
                let (r0, r1) = (t * rows, ((t + 1) * rows).min(ho));
                let xi = &x[i * image..(i + 1) * image];
                let (band, in_plane): (&[f32], usize) = if padded || pairs {
                    let (hp, wp) = self.pad_rows(xi, h, w, r0, r1, xp);
                    (&xp[..], hp * wp)
                } else {
                    (&xi[r0 * w..], h * w)
                };
                let band = E::band(band, self.cin, in_plane, xq);
                koff.clear();
                for ci in 0..self.cin.div_ceil(E::CHANNELS) {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            koff.push((ci * in_plane + ky * wp + kx) as u32);
                        }
                    }
                }
                let task = direct::Band {
                    x: band,
                    koff,
                    wp,
                    rows: r1 - r0,
                    wo,
                    weight,
                    co: c0..(c0 + per).min(self.cout),
                    add: &adds[i * self.cout..(i + 1) * self.cout],
                    plane,
                    o0: r0 * wo,
                    scale: e.scale,
                };
                #[allow(clippy::redundant_locals)]
                let dst = dst;
                // SAFETY: run_direct is called only where the CPU has E's instructions (`direct`'s
                // `available` for f32, a bf16 copy made only where `available_bf16`); tasks write the
                // disjoint outputs of their image, rows and channels, inside `out`'s capacity; the
                // residual has the output's size (checked by run_with); every tap offset plus the
                // band's flat positions lies inside its padded rows, or inside the image's rows
                // r0 .. r1 + kh − 1 when nothing is padded.
                unsafe {
                    let residual = e.residual.map(|r| r.as_ptr().add(i * self.cout * plane));
                    E::run(&task, dst.0.add(i * self.cout * plane), residual, info);
                }
            })
        });
    }
}

impl CustomOp1 for CpuConv2d {
    fn name(&self) -> &'static str {
        "expanse-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(s, l, "conv2d")?;
        let (out, dims) = self.run(x, l.shape().dims4()?, Epilogue { scale: 1.0, ..Default::default() })?;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// A convolution whose second input is added to its output: per image and channel (B, Cout) or
/// element by element (B, Cout, Ho, Wo), then scaled.
pub struct ConvAdd<'a> {
    pub conv: &'a CpuConv2d,
    pub scale: f32,
}

impl CustomOp2 for ConvAdd<'_> {
    fn name(&self) -> &'static str {
        "expanse-conv2d-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, extra) = (input(s1, l1, "conv2d")?, input(s2, l2, "conv2d")?);
        let e = if l2.shape().rank() == 2 {
            Epilogue { channel_bias: Some(extra), residual: None, scale: self.scale }
        } else {
            Epilogue { channel_bias: None, residual: Some(extra), scale: self.scale }
        };
        let (out, dims) = self.conv.run(x, l1.shape().dims4()?, e)?;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 7919 + seed * 104729) % 2001) as f32 * 1e-3 - 1.0).collect()
    }

    #[test]
    fn the_direct_convolution_matches_im2col_and_gemm() {
        if !direct_available() {
            eprintln!("no AVX-512F here: the direct kernel is not used on this machine");
            return;
        }
        // (cin, cout, k, padding, pad_end, batch, h, w): channels off the blocks of 8, outputs
        // narrower and wider than a vector, a row band of one row, 1×1 and unpadded kernels.
        let cases = [
            (5, 7, 3, 1, 0, 7, 9, 11),
            (3, 9, 3, 1, 0, 1, 1, 1),
            (6, 17, 3, 0, 1, 2, 12, 12),
            (3, 9, 3, 0, 0, 2, 5, 6),
            (64, 33, 3, 1, 1, 3, 33, 17),
            (100, 9, 3, 1, 0, 2, 7, 100),
            (7, 5, 1, 0, 0, 7, 13, 10),
            (2000, 3, 3, 1, 0, 1, 3, 37),
        ];
        for (i, &(cin, cout, k, padding, pad_end, b, h, w)) in cases.iter().enumerate() {
            let weight =
                Tensor::from_vec(values(cout * cin * k * k, i), (cout, cin, k, k), &candle_core::Device::Cpu).unwrap();
            let conv = CpuConv2d::new(&weight, Some(values(cout, 10 + i)), 1, padding, pad_end).unwrap();
            let x = values(b * cin * h * w, 20 + i);
            let (ho, wo) = conv.output_size(h, w);
            let (cb, res) = (values(b * cout, 30 + i), values(b * cout * ho * wo, 40 + i));
            let epilogues = [
                Epilogue { scale: 1.0, ..Default::default() },
                Epilogue { channel_bias: Some(&cb), residual: None, scale: 0.5 },
                Epilogue { channel_bias: None, residual: Some(&res), scale: 0.7 },
            ];
            for (j, &e) in epilogues.iter().enumerate() {
                let (want, dims) = conv.run_with(&x, (b, cin, h, w), e, false).unwrap();
                let (got, got_dims) = conv.run_with(&x, (b, cin, h, w), e, true).unwrap();
                assert_eq!(dims, got_dims, "case {i}");
                let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 2e-6 * (cin * k * k) as f32, "case {i}, epilogue {j}: {worst}");
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let again = pool.install(|| conv.run_with(&x, (b, cin, h, w), e, true).unwrap().0);
                    assert!(again == got, "case {i}, epilogue {j}: {threads} threads");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn bf16_value(x: f32) -> f64 {
        f32::from_bits((direct::bf16_bits(x) as u32) << 16) as f64
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(direct::bf16_bits(1.0), 0x3f80);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: to the even one, 1; just above it, up.
        assert_eq!(direct::bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(direct::bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(direct::bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(direct::bf16_bits(-2.5), 0xc020);
        assert_eq!(direct::bf16_bits(f32::INFINITY), 0x7f80);
        assert!(f32::from_bits((direct::bf16_bits(f32::NAN) as u32) << 16).is_nan());
        // The vector packing rounds as the scalar one, pairs in order, a zero partner for odd counts.
        let src: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.737).sin() * 10f32.powi(i % 7 - 3)).collect();
        let mut out = Vec::new();
        direct::pack_pairs(&src, 3, 37, &mut out);
        assert_eq!(out.len(), 2 * 37);
        for j in 0..37 {
            assert_eq!(out[j], direct::Bf16Pair::new(src[j], src[37 + j]), "position {j}");
            assert_eq!(out[37 + j], direct::Bf16Pair::new(src[74 + j], 0.0), "position {j}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_bf16_convolution_sums_the_rounded_products() {
        if !bf16_available() {
            eprintln!("no AVX-512 BF16 here: convolutions stay f32 on this machine");
            let weight = Tensor::zeros((1, 1, 3, 3), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            assert!(CpuConv2d::new(&weight, None, 1, 1, 0).unwrap().to_bf16().is_err());
            return;
        }
        // (cin, cout, k, padding, pad_end, batch, h, w): odd channel counts (a zero partner), 1×1,
        // unpadded and end-padded kernels, a row band of one row, deep inputs.
        let cases = [
            (5, 7, 3, 1, 0, 3, 9, 11),
            (3, 9, 3, 1, 0, 1, 1, 1),
            (6, 17, 3, 0, 1, 2, 12, 12),
            (3, 9, 3, 0, 0, 2, 5, 6),
            (64, 33, 3, 1, 1, 2, 33, 17),
            (7, 5, 1, 0, 0, 3, 13, 10),
            (2001, 3, 3, 1, 0, 1, 3, 37),
        ];
        for (i, &(cin, cout, k, padding, pad_end, b, h, w)) in cases.iter().enumerate() {
            let wv = values(cout * cin * k * k, i);
            let weight = Tensor::from_vec(wv.clone(), (cout, cin, k, k), &candle_core::Device::Cpu).unwrap();
            let bias = values(cout, 10 + i);
            let f32_conv = CpuConv2d::new(&weight, Some(bias.clone()), 1, padding, pad_end).unwrap();
            let conv = f32_conv.clone().to_bf16().unwrap();
            let x = values(b * cin * h * w, 20 + i);
            let (ho, wo) = conv.output_size(h, w);
            let res = values(b * cout * ho * wo, 40 + i);
            let e = Epilogue { channel_bias: None, residual: Some(&res), scale: 0.7 };
            let (got, dims) = conv.run(&x, (b, cin, h, w), e).unwrap();
            assert_eq!(dims, (b, cout, ho, wo), "case {i}");
            // In f64 on the operands rounded to bf16: only the f32 sums' order and rounding differ.
            let (mut worst, mut rms, mut norm) = (0f64, 0f64, 0f64);
            let (f32_out, _) = f32_conv.run(&x, (b, cin, h, w), e).unwrap();
            for n in 0..b {
                for co in 0..cout {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let (mut sum, mut mag) = (0f64, 0f64);
                            for ci in 0..cin {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let (iy, ix) = (
                                            (oy + ky) as isize - padding as isize,
                                            (ox + kx) as isize - padding as isize,
                                        );
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let xv = x[((n * cin + ci) * h + iy as usize) * w + ix as usize];
                                        let t = bf16_value(wv[((co * cin + ci) * k + ky) * k + kx]) * bf16_value(xv);
                                        sum += t;
                                        mag += t.abs();
                                    }
                                }
                            }
                            let at = ((n * cout + co) * ho + oy) * wo + ox;
                            let want = (sum + bias[co] as f64 + res[at] as f64) * 0.7;
                            worst = worst.max((got[at] as f64 - want).abs() / (mag + 1.0));
                            rms += (got[at] as f64 - f32_out[at] as f64).powi(2);
                            norm += (f32_out[at] as f64).powi(2);
                        }
                    }
                }
            }
            assert!(worst < 1e-6, "case {i}: {worst:e} of the terms' magnitude");
            // Against the f32 convolution: the rounding of the operands, about 2⁻⁹ relative.
            let rel = (rms / norm).sqrt();
            assert!(rel > 1e-5 && rel < 1e-2, "case {i}: relative RMS {rel:e} against f32");
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let again = pool.install(|| conv.run(&x, (b, cin, h, w), e).unwrap().0);
                assert!(again == got, "case {i}: {threads} threads");
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// GFLOP/s of the two convolution paths on the UNet's shapes, best of 20 (`MALLOC_MMAP_THRESHOLD_=
    /// 1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 RAYON_NUM_THREADS=1 cargo test --release --lib
    /// conv_speed -- --ignored --nocapture`: the allocator settings of the expanse binary).
    #[test]
    #[ignore]
    fn conv_speed() {
        for &(b, cin, cout, hw, k) in &[
            (4, 64, 64, 64, 3),
            (4, 128, 128, 32, 3),
            (4, 256, 256, 8, 3),
            (8, 32, 32, 32, 3),
            (8, 64, 64, 16, 3),
            (8, 64, 64, 8, 3),
            (8, 128, 64, 8, 3),
            (1, 256, 128, 128, 3),
            (4, 128, 64, 64, 1),
        ] {
            let w: Vec<f32> = (0..cout * cin * k * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
            let weight = Tensor::from_vec(w, (cout, cin, k, k), &candle_core::Device::Cpu).unwrap();
            let conv = CpuConv2d::new(&weight, Some(vec![0.1; cout]), 1, k / 2, 0).unwrap();
            let x: Vec<f32> = (0..b * cin * hw * hw).map(|i| ((i * 104729) % 1000) as f32 * 1e-3).collect();
            let flops = 2.0 * (b * cout * cin * k * k * hw * hw) as f64;
            let bf16 = bf16_available().then(|| conv.clone().to_bf16().unwrap());
            for (path, conv, direct) in
                [("direct", Some(&conv), true), ("gemm", Some(&conv), false), ("bf16", bf16.as_ref(), true)]
            {
                let Some(conv) = conv else { continue };
                let e = Epilogue { scale: 1.0, ..Default::default() };
                let _ = conv.run_with(&x, (b, cin, hw, hw), e, direct).unwrap();
                let mut dt = f64::INFINITY;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    let _ = conv.run_with(&x, (b, cin, hw, hw), e, direct).unwrap();
                    dt = dt.min(t.elapsed().as_secs_f64());
                }
                println!("b{b} {cin}->{cout} {hw}² k{k} {path}: {:.2} ms, {:.1} GFLOP/s", dt * 1e3, flops / dt / 1e9);
            }
        }
    }
}
