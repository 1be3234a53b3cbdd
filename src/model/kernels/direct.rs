//! Direct stride-1 convolution with AVX-512 (chosen at run time; other machines keep im2col and
//! `gemm`): no im2col and no packing. Over a band of output rows of one image whose input rows are
//! laid out with row stride `wp` (zero padding written out, or the unpadded image itself), the
//! output at flat position j = row·wp + column reads the input at j + koff[k] for the K = Cin·kh·kw
//! taps k, so one vector of 16 consecutive flat positions is one plain load per tap. Columns past
//! Wo (the padding's share of each row) are computed and dropped when the vector is stored: its
//! valid lanes are compressed onto consecutive output positions.
//!
//! A microkernel keeps MR output channels × NV vectors of positions in 24 of the 32 registers and
//! reads the weights in place, one broadcast per channel and tap (row-major (Cout, K), the model's
//! own tensor). Every output is one sum over the taps in order, so results do not depend on how
//! the work is split into tasks or on the number of threads.
//!
//! The same kernel runs in bfloat16 where the CPU has AVX-512 BF16 ([`Bf16Pair`]): the input's
//! channels are then stored in pairs, two bf16 per 32-bit lane ([`pack_pairs`]), the weights
//! likewise, and one `vdpbf16ps` adds both channels' products to the f32 sums: half the taps, the
//! same loads and accumulators.

use std::arch::x86_64::*;

/// Output channels per microkernel.
const MR: usize = 8;
/// Vectors of 16 positions per microkernel.
const NV: usize = 3;

/// Two bfloat16 values in one 32-bit lane: input channels 2p (low half) and 2p + 1 (high half) of
/// one position, or the weights of those two channels at one tap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Bf16Pair(pub u32);

/// The bfloat16 nearest `x` (ties to even), as `vcvtneps2bf16` rounds it; NaN stays NaN.
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

impl Bf16Pair {
    /// The pair (lo, hi) rounded to bfloat16.
    pub fn new(lo: f32, hi: f32) -> Self {
        Bf16Pair(bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16)
    }
}

/// What the kernel multiplies: one input value per lane (f32) or two ([`Bf16Pair`]).
pub trait Tap: Copy + Send + Sync + 'static {
    /// Input channels per element.
    const CHANNELS: usize;
    /// 16 lanes of elements.
    type V: Copy;
    /// # Safety
    /// AVX-512F (and BF16 for pairs); every lane in `mask` lies inside memory the caller may read.
    unsafe fn load(mask: u16, p: *const Self) -> Self::V;
    /// `acc` + the products of `w` with every lane of `x`, summed per lane in f32.
    ///
    /// # Safety
    /// AVX-512F (and BF16 for pairs).
    unsafe fn madd(acc: __m512, w: Self, x: Self::V) -> __m512;
    /// Runs [`run`] compiled for this element's instructions.
    ///
    /// # Safety
    /// As [`run`], on a CPU that has the element's instructions ([`available`], [`available_bf16`]).
    unsafe fn run(b: &Band<Self>, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>);
    /// A band's input `planes` channels of `plane` floats as this element: the floats themselves,
    /// or packed into `scratch` by [`pack_pairs`].
    fn band<'a>(x: &'a [f32], planes: usize, plane: usize, scratch: &'a mut Vec<Bf16Pair>) -> &'a [Self];
}

impl Tap for f32 {
    const CHANNELS: usize = 1;
    type V = __m512;

    #[inline(always)]
    unsafe fn load(mask: u16, p: *const f32) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m512, w: f32, x: __m512) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_fmadd_ps(_mm512_set1_ps(w), x, acc) }
    }

    unsafe fn run(b: &Band<f32>, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>) {
        // SAFETY: the caller's contract.
        unsafe { run_f32(b, out, residual, info) }
    }

    fn band<'a>(x: &'a [f32], _: usize, _: usize, _: &'a mut Vec<Bf16Pair>) -> &'a [f32] {
        x
    }
}

impl Tap for Bf16Pair {
    const CHANNELS: usize = 2;
    type V = __m512bh;

    #[inline(always)]
    unsafe fn load(mask: u16, p: *const Bf16Pair) -> __m512bh {
        // SAFETY: the caller's contract; a pair is one 32-bit lane.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(mask, p as *const i32)) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m512, w: Bf16Pair, x: __m512bh) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe {
            let w = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(w.0 as i32));
            _mm512_dpbf16_ps(acc, x, w)
        }
    }

    unsafe fn run(b: &Band<Bf16Pair>, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>) {
        // SAFETY: the caller's contract.
        unsafe { run_bf16(b, out, residual, info) }
    }

    fn band<'a>(x: &'a [f32], planes: usize, plane: usize, scratch: &'a mut Vec<Bf16Pair>) -> &'a [Bf16Pair] {
        pack_pairs(x, planes, plane, scratch);
        scratch
    }
}

/// Whether this machine runs the bfloat16 kernel (AVX-512 F, BW and BF16).
pub fn available_bf16() -> bool {
    available() && std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// Channels `0..planes` of `src` (planes of `plane` floats) as bfloat16 pairs into `out`:
/// ⌈planes / 2⌉ planes of `plane` pairs, channel 2p in the low and 2p + 1 in the high half of each
/// (zero for the missing partner of an odd count), rounded to nearest even as [`bf16_bits`].
pub fn pack_pairs(src: &[f32], planes: usize, plane: usize, out: &mut Vec<Bf16Pair>) {
    assert!(src.len() >= planes * plane, "pack_pairs: {} floats for {planes} planes of {plane}", src.len());
    out.clear();
    out.resize(planes.div_ceil(2) * plane, Bf16Pair(0));
    if available_bf16() {
        // SAFETY: the CPU has what `pack_pairs_avx512` is compiled for; the sizes were just checked.
        unsafe { pack_pairs_avx512(src, planes, plane, out) }
    } else {
        for (p, o) in out.chunks_mut(plane.max(1)).enumerate() {
            let lo = &src[2 * p * plane..(2 * p + 1) * plane];
            let hi = (2 * p + 1 < planes).then(|| &src[(2 * p + 1) * plane..(2 * p + 2) * plane]);
            for (j, o) in o.iter_mut().enumerate() {
                *o = Bf16Pair::new(lo[j], hi.map_or(0.0, |h| h[j]));
            }
        }
    }
}

/// [`pack_pairs`] 16 positions at a time: two conversions in one `vcvtne2ps2bf16`, interleaved by
/// one word permutation.
///
/// # Safety
/// AVX-512 F, BW and BF16; `src` holds `planes` planes, `out` ⌈planes / 2⌉.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_pairs_avx512(src: &[f32], planes: usize, plane: usize, out: &mut [Bf16Pair]) {
    let idx: [i16; 32] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as i16);
    // SAFETY: loads and stores are masked to the plane's positions, inside `src` and `out`.
    unsafe {
        let idx = _mm512_loadu_si512(idx.as_ptr() as *const __m512i);
        for p in 0..planes.div_ceil(2) {
            let lo = src.as_ptr().add(2 * p * plane);
            let hi = (2 * p + 1 < planes).then(|| src.as_ptr().add((2 * p + 1) * plane));
            let o = out.as_mut_ptr().add(p * plane) as *mut i32;
            for j in (0..plane).step_by(16) {
                let m = if plane - j >= 16 { u16::MAX } else { ((1u32 << (plane - j)) - 1) as u16 };
                let a = _mm512_maskz_loadu_ps(m, lo.add(j));
                let b = hi.map_or(_mm512_setzero_ps(), |h| _mm512_maskz_loadu_ps(m, h.add(j)));
                let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
                _mm512_mask_storeu_epi32(o.add(j), m, _mm512_permutexvar_epi16(idx, both));
            }
        }
    }
}

/// Whether this machine runs the kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// One task: output rows of one image over a range of output channels.
pub struct Band<'a, E> {
    /// The band's input: plane `ci` at `ci * in_plane` (for pairs: `ci` counts pairs of channels),
    /// rows `wp` apart, reading past no end (positions past the band's last valid output are masked).
    pub x: &'a [E],
    /// Input offset of each tap k = (ci·kh + ky)·kw + kx: ci·in_plane + ky·wp + kx.
    pub koff: &'a [u32],
    pub wp: usize,
    /// Output rows in the band, and output columns per row.
    pub rows: usize,
    pub wo: usize,
    /// (Cout, K) weights, row-major.
    pub weight: &'a [E],
    pub co: std::ops::Range<usize>,
    /// Added to every output of channel co (the bias, plus the image's channel bias).
    pub add: &'a [f32],
    /// Output positions per channel plane, and the band's first output position in it.
    pub plane: usize,
    pub o0: usize,
    pub scale: f32,
}

/// Per vector of 16 flat positions: the lanes to load, the valid lanes, and the output position
/// of the first valid lane.
pub type VectorInfo = (u16, u16, usize);

/// The [`VectorInfo`] of every vector of the band, in order.
fn vectors<E>(b: &Band<E>, info: &mut Vec<VectorInfo>) {
    let flat = (b.rows - 1) * b.wp + b.wo;
    info.clear();
    for j0 in (0..flat).step_by(16) {
        let (mut load, mut valid, mut first) = (0u16, 0u16, None);
        for l in 0..16.min(flat - j0) {
            let j = j0 + l;
            load |= 1 << l;
            if j % b.wp < b.wo {
                valid |= 1 << l;
                first.get_or_insert(b.o0 + (j / b.wp) * b.wo + j % b.wp);
            }
        }
        info.push((load, valid, first.unwrap_or(0)));
    }
}

/// [`run`] for f32.
///
/// # Safety
/// As [`run`].
#[target_feature(enable = "avx512f")]
unsafe fn run_f32(b: &Band<f32>, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>) {
    // SAFETY: the caller's contract.
    unsafe { run(b, out, residual, info) }
}

/// [`run`] for bfloat16 pairs.
///
/// # Safety
/// As [`run`], on a CPU with AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn run_bf16(b: &Band<Bf16Pair>, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>) {
    // SAFETY: the caller's contract.
    unsafe { run(b, out, residual, info) }
}

/// Writes the band's outputs (channels `b.co`, plane `co` of `out` at `co * b.plane`), adding
/// `residual` (laid out as `out`) when given. `info` is scratch space. Compiled into
/// [`Tap::run`] for each element's instructions.
///
/// # Safety
/// The CPU must have AVX-512F (and BF16 for pairs); `out` and `residual` must hold the planes of
/// channels `b.co` of one image; every tap offset in `b.koff` plus every flat position loaded must
/// lie inside `b.x`; tasks running at once must write disjoint outputs.
#[inline(always)]
unsafe fn run<E: Tap>(b: &Band<E>, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>) {
    vectors(b, info);
    let k = b.koff.len();
    let mut co = b.co.start;
    while co < b.co.end {
        let mr = MR.min(b.co.end - co);
        let mut q = 0;
        while q < info.len() {
            let nv = NV.min(info.len() - q);
            let v = &info[q..q + nv];
            macro_rules! arms {
                ($($m:literal),*) => {
                    // SAFETY: `block` asks what `run` is given (AVX-512F; `out`, `residual` and the
                    // band's input hold every position of these channels and vectors), and these
                    // channels and vectors are this task's own.
                    match (mr, nv) {
                        $(($m, 3) => unsafe { block::<E, $m, 3>(b, k, co, 16 * q, v, out, residual) },
                          ($m, 2) => unsafe { block::<E, $m, 2>(b, k, co, 16 * q, v, out, residual) },
                          ($m, _) => unsafe { block::<E, $m, 1>(b, k, co, 16 * q, v, out, residual) },)*
                        _ => unreachable!("at most {MR} channels"),
                    }
                };
            }
            arms!(8, 7, 6, 5, 4, 3, 2, 1);
            q += nv;
        }
        co += mr;
    }
}

/// M channels from `co` × N vectors `v` from flat position `start`: the sums over the taps, then
/// the epilogue and the compressed store of the valid lanes.
///
/// # Safety
/// As [`run`]: AVX-512F; the weights hold `k` taps for channels `co..co + M`; every lane `v` loads
/// lies inside `b.x` at every tap offset; `out` (and `residual`) hold the planes of those channels
/// at every valid lane, and no other task writes them meanwhile.
#[inline(always)]
unsafe fn block<E: Tap, const M: usize, const N: usize>(
    b: &Band<E>,
    k: usize,
    co: usize,
    start: usize,
    v: &[VectorInfo],
    out: *mut f32,
    residual: Option<*const f32>,
) {
    // SAFETY (every unsafe operation below): the contract above. Loads are masked to the lanes
    // `vectors` found inside the padded input, stores to the valid lanes of this task's channels.
    unsafe {
        let load: [u16; N] = std::array::from_fn(|n| v[n].0);
        let x0 = b.x.as_ptr();
        let w0 = b.weight.as_ptr().add(co * k);
        let mut acc = [[_mm512_setzero_ps(); N]; M];
        for (kk, &off) in b.koff.iter().enumerate() {
            let p = x0.wrapping_add(start + off as usize);
            let xv: [E::V; N] = std::array::from_fn(|n| E::load(load[n], p.wrapping_add(16 * n)));
            for (r, a) in acc.iter_mut().enumerate() {
                let w = *w0.add(r * k + kk);
                for (n, x) in xv.iter().enumerate() {
                    a[n] = E::madd(a[n], w, *x);
                }
            }
        }
        let scale = _mm512_set1_ps(b.scale);
        for (r, a) in acc.iter().enumerate() {
            let c = co + r;
            let add = _mm512_set1_ps(b.add[c]);
            for (n, &(_, valid, first)) in v.iter().enumerate() {
                if valid == 0 {
                    continue;
                }
                let count = ((1u32 << valid.count_ones()) - 1) as u16;
                let at = c * b.plane + first;
                let mut y = _mm512_add_ps(a[n], add);
                if let Some(res) = residual {
                    y = _mm512_add_ps(y, _mm512_maskz_expand_ps(valid, _mm512_maskz_loadu_ps(count, res.add(at))));
                }
                y = _mm512_mul_ps(y, scale);
                _mm512_mask_storeu_ps(out.add(at), count, _mm512_maskz_compress_ps(valid, y));
            }
        }
    }
}
