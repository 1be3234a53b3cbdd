//! Fast CPU kernels for the UNet (f32, contiguous NCHW): stride-1 convolutions as a direct
//! AVX-512 kernel where the CPU has it (`kernels/direct.rs`), other convolutions (and all of them
//! elsewhere) as im2col of row tiles into per-task buffers multiplied by the `gemm` crate straight into the
//! output (1×1 convolutions as plain products, no copy), and GroupNorm fused with the SiLU that
//! follows it.
//!
//! Work is split into tasks (one image × one tile of output rows, or one image × channel group)
//! run on rayon's pool; every task computes its outputs with single-threaded arithmetic in a
//! fixed order, so results do not depend on the number of threads. Other devices and dtypes keep
//! candle's own operations (see [`super::unet`]).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether CPU f32 models use these kernels (the default) or candle's own operations (for
/// comparisons and parity checks).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

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

#[cfg(target_arch = "x86_64")]
mod direct;

thread_local! {
    /// Each worker thread's padded input band, tap offsets and vector masks for the direct kernel.
    #[cfg(target_arch = "x86_64")]
    static DIRECT_BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<u32>, Vec<direct::VectorInfo>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };

    /// Each worker thread's im2col tile and padded input rows, kept between tasks and calls.
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// (B, C, H, W).
pub type Dims4 = (usize, usize, usize, usize);

/// A raw pointer that tasks writing disjoint parts of one output may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: a SharedMut is only made for an output buffer that outlives the parallel section using
// it (the section joins before the buffer is read or dropped), and every task writes a disjoint
// range of it (its own image, channels and rows), so no two threads touch one element.
unsafe impl Send for SharedMut {}
// SAFETY: as for Send: shared references only hand the pointer to tasks with disjoint ranges.
unsafe impl Sync for SharedMut {}

fn input<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(candle_core::Error::Msg(format!("{what}: the CPU kernel takes f32 only")));
    };
    let (a, b) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    Ok(&data[a..b])
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
/// own tensor, read in place (no second copy).
#[derive(Debug, Clone)]
pub struct CpuConv2d {
    weight: Tensor,
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
        Ok(CpuConv2d { weight: weight.contiguous()?, bias, cin, cout, kh, kw, stride, padding, pad_end })
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
            if direct && self.stride == 1 && direct::available() && padded_image < u32::MAX as usize {
                self.run_direct(x, weight, (b, h, w), (ho, wo), e, &mut out);
                return Ok((out, (b, self.cout, ho, wo)));
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
    /// need padding are first copied, padded, into the task's buffer.
    fn run_direct(
        &self,
        x: &[f32],
        weight: &[f32],
        (b, h, w): (usize, usize, usize),
        (ho, wo): (usize, usize),
        e: Epilogue,
        out: &mut Vec<f32>,
    ) {
        let (kh, kw) = (self.kh, self.kw);
        let padded = self.padding > 0 || self.pad_end > 0;
        let wp = w + 2 * self.padding + self.pad_end;
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
            DIRECT_BUFFERS.with_borrow_mut(|(xp, koff, info)| {
                let (r0, r1) = (t * rows, ((t + 1) * rows).min(ho));
                let xi = &x[i * image..(i + 1) * image];
                let (band, in_plane): (&[f32], usize) = if padded {
                    let (hp, wp) = self.pad_rows(xi, h, w, r0, r1, xp);
                    (&xp[..], hp * wp)
                } else {
                    (&xi[r0 * w..], h * w)
                };
                koff.clear();
                for ci in 0..self.cin {
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
                // SAFETY: run_direct is called only where direct::available(); tasks write the
                // disjoint outputs of their image, rows and channels, inside `out`'s capacity; the
                // residual has the output's size (checked by run_with); every tap offset plus the
                // band's flat positions lies inside its padded rows, or inside the image's rows
                // r0 .. r1 + kh − 1 when nothing is padded.
                unsafe {
                    let residual = e.residual.map(|r| r.as_ptr().add(i * self.cout * plane));
                    direct::run(&task, dst.0.add(i * self.cout * plane), residual, info);
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

/// Concatenation of two contiguous (B, C₁, …) and (B, C₂, …) arrays along the channels.
pub struct ChannelConcat;

impl CustomOp2 for ChannelConcat {
    fn name(&self) -> &'static str {
        "expanse-concat"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (input(s1, l1, "concat")?, input(s2, l2, "concat")?);
        let (da, db) = (l1.shape().dims(), l2.shape().dims());
        if da.len() < 2 || da.len() != db.len() || da[0] != db[0] || da[2..] != db[2..] {
            return Err(candle_core::Error::Msg(format!(
                "concat: shapes {da:?} and {db:?} do not join along channels"
            )));
        }
        let batch = da[0];
        let (ia, ib) = (a.len() / batch.max(1), b.len() / batch.max(1));
        let mut out = vec![0f32; a.len() + b.len()];
        out.par_chunks_mut(ia + ib).enumerate().for_each(|(i, o)| {
            o[..ia].copy_from_slice(&a[i * ia..(i + 1) * ia]);
            o[ia..].copy_from_slice(&b[i * ib..(i + 1) * ib]);
        });
        let mut dims = da.to_vec();
        dims[1] += db[1];
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Nearest-neighbour upsampling ×2 of a contiguous (B, C, H, W) array.
pub struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "expanse-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(s, l, "upsample")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let mut out = vec![0f32; b * c * 4 * h * w];
        out.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(o, src)| {
            for y in 0..h {
                let row = &src[y * w..(y + 1) * w];
                let (top, rest) = o[2 * y * 2 * w..].split_at_mut(2 * w);
                for (x2, v) in top.chunks_mut(2).zip(row) {
                    x2[0] = *v;
                    x2[1] = *v;
                }
                rest[..2 * w].copy_from_slice(top);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, 2 * h, 2 * w))))
    }
}

/// e^x for f32, branch-free so that loops over it vectorize: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
/// e^r by a degree-6 polynomial (Taylor, relative error < 2e-7 on that interval), times 2^n built
/// in the exponent bits. Inputs are clamped to [−87, 88] (e^x then stays a normal f32).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    // ln 2 split in a part exact in f32 and a remainder (Cody–Waite).
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    // Estrin's scheme: three short chains instead of one of depth six, so that the out-of-order
    // core overlaps them (2× faster than Horner's here).
    let r2 = r * r;
    let p = (1.0 + r) + r2 * ((0.5 + r * (1.0 / 6.0)) + r2 * ((1.0 / 24.0 + r * (1.0 / 120.0)) + r2 * (1.0 / 720.0)));
    let bits = t.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// SiLU y·σ(y) with [`exp_f32`].
#[inline(always)]
pub fn silu_f32(y: f32) -> f32 {
    y / (1.0 + exp_f32(-y))
}

/// The element loops of the kernels, compiled three times: for AVX-512 and for AVX2 + FMA machines
/// (chosen at run time), and for the baseline. All three do the same IEEE operations in the same
/// order (sums over eight fixed lanes), so results do not depend on which one runs.
mod simd {
    use super::{exp_f32, silu_f32};

    #[inline(always)]
    fn sums_impl(x: &[f32]) -> (f64, f64) {
        // f32 partial sums over blocks of 64 in eight lanes, accumulated in f64.
        let (mut sum, mut sq) = (0f64, 0f64);
        for block in x.chunks(64) {
            let (mut s1, mut s2) = ([0f32; 8], [0f32; 8]);
            for lane in block.chunks(8) {
                for (j, &v) in lane.iter().enumerate() {
                    s1[j] += v;
                    s2[j] += v * v;
                }
            }
            sum += s1.iter().map(|&v| v as f64).sum::<f64>();
            sq += s2.iter().map(|&v| v as f64).sum::<f64>();
        }
        (sum, sq)
    }

    #[inline(always)]
    fn affine_impl(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = silu_f32(v * scale + shift);
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * scale + shift;
            }
        }
    }

    #[inline(always)]
    fn softmax_impl(row: &mut [f32]) {
        let mut m = [f32::NEG_INFINITY; 8];
        for lane in row.chunks(8) {
            for (j, &v) in lane.iter().enumerate() {
                m[j] = m[j].max(v);
            }
        }
        let max = m.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = exp_f32(*v - max);
        }
        let mut s = [0f32; 8];
        for lane in row.chunks(8) {
            for (j, &v) in lane.iter().enumerate() {
                s[j] += v;
            }
        }
        let inv = 1.0 / s.iter().sum::<f32>();
        row.iter_mut().for_each(|v| *v *= inv);
    }

    macro_rules! dispatch {
        ($name:ident, $imp:ident, $avx:ident, $avx512:ident, ($($arg:ident: $t:ty),*) -> $ret:ty) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $avx($($arg: $t),*) -> $ret {
                $imp($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn $avx512($($arg: $t),*) -> $ret {
                $imp($($arg),*)
            }

            pub fn $name($($arg: $t),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features the functions were compiled for.
                    return unsafe {
                        if std::arch::is_x86_feature_detected!("avx512f") {
                            $avx512($($arg),*)
                        } else {
                            $avx($($arg),*)
                        }
                    };
                }
                $imp($($arg),*)
            }
        };
    }

    dispatch!(sums, sums_impl, sums_avx2, sums_avx512, (x: &[f32]) -> (f64, f64));
    dispatch!(
        affine, affine_impl, affine_avx2, affine_avx512,
        (src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) -> ()
    );
    dispatch!(softmax, softmax_impl, softmax_avx2, softmax_avx512, (row: &mut [f32]) -> ());

    #[cfg(all(test, target_arch = "x86_64"))]
    mod tests {
        use super::*;

        /// The three builds of each element loop (baseline, AVX2 + FMA, AVX-512) give the same bits,
        /// as BENCHMARKS.md states; a build the CPU cannot run is skipped with a line saying so.
        #[test]
        fn the_simd_builds_of_the_element_loops_agree_bit_for_bit() {
            let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            let avx512 = avx2 && std::arch::is_x86_feature_detected!("avx512f");
            if !avx2 {
                println!("SKIPPED: this CPU has no AVX2 + FMA: only the baseline build runs here");
                return;
            }
            if !avx512 {
                println!("SKIPPED: this CPU has no AVX-512: the AVX-512 build is not compared here");
            }
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 16.0 - 8.0
            };
            for n in [1, 7, 8, 63, 64, 65, 1000, 4099] {
                let x: Vec<f32> = (0..n).map(|_| next()).collect();
                let want = sums_impl(&x);
                // SAFETY: the features each build needs were detected above.
                let got: Vec<(f64, f64)> = unsafe {
                    let mut v = vec![sums_avx2(&x)];
                    if avx512 {
                        v.push(sums_avx512(&x));
                    }
                    v
                };
                for g in got {
                    assert_eq!((g.0.to_bits(), g.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "sums, n = {n}");
                }
                for silu in [false, true] {
                    let mut want = vec![0f32; n];
                    affine_impl(&x, &mut want, 0.7, -0.3, silu);
                    let mut a = vec![0f32; n];
                    let mut b = vec![0f32; n];
                    // SAFETY: as above.
                    unsafe {
                        affine_avx2(&x, &mut a, 0.7, -0.3, silu);
                        if avx512 {
                            affine_avx512(&x, &mut b, 0.7, -0.3, silu);
                        } else {
                            b.clone_from(&want);
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&want), "affine avx2, n = {n}, silu {silu}");
                    assert_eq!(bits(&b), bits(&want), "affine avx512, n = {n}, silu {silu}");
                }
                let mut want = x.clone();
                softmax_impl(&mut want);
                let (mut a, mut b) = (x.clone(), x.clone());
                // SAFETY: as above.
                unsafe {
                    softmax_avx2(&mut a);
                    if avx512 {
                        softmax_avx512(&mut b);
                    } else {
                        b.clone_from(&want);
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&want), "softmax avx2, n = {n}");
                assert_eq!(bits(&b), bits(&want), "softmax avx512, n = {n}");
            }
        }
    }
}

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

/// One single-threaded product dst (m × n) = beta·(dst + lhs (m × k) · rhs (k × n)) (the old dst
/// read only when `read_dst`), every matrix given by its pointer and (row, column) strides.
///
/// SAFETY: the pointers and strides must describe in-bounds matrices of those sizes, and dst must
/// not overlap the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, usize, usize),
    read_dst: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    // SAFETY: the caller's contract above is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            read_dst,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            beta,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
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

    #[test]
    fn the_fast_exp_is_within_a_few_ulp_of_the_library_one() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
        assert!((silu_f32(2.0) - 2.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
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
            for direct in [true, false] {
                let e = Epilogue { scale: 1.0, ..Default::default() };
                let _ = conv.run_with(&x, (b, cin, hw, hw), e, direct).unwrap();
                let mut dt = f64::INFINITY;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    let _ = conv.run_with(&x, (b, cin, hw, hw), e, direct).unwrap();
                    dt = dt.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "b{b} {cin}->{cout} {hw}² k{k} direct={direct}: {:.2} ms, {:.1} GFLOP/s",
                    dt * 1e3,
                    flops / dt / 1e9
                );
            }
        }
    }
}
