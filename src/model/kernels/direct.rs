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

use std::arch::x86_64::*;

/// Output channels per microkernel.
const MR: usize = 8;
/// Vectors of 16 positions per microkernel.
const NV: usize = 3;

/// Whether this machine runs the kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// One task: output rows of one image over a range of output channels.
pub struct Band<'a> {
    /// The band's input: plane `ci` at `ci * in_plane`, rows `wp` apart, reading past no end
    /// (positions past the band's last valid output are masked).
    pub x: &'a [f32],
    /// Input offset of each tap k = (ci·kh + ky)·kw + kx: ci·in_plane + ky·wp + kx.
    pub koff: &'a [u32],
    pub wp: usize,
    /// Output rows in the band, and output columns per row.
    pub rows: usize,
    pub wo: usize,
    /// (Cout, K) weights, row-major.
    pub weight: &'a [f32],
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
fn vectors(b: &Band, info: &mut Vec<VectorInfo>) {
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

/// Writes the band's outputs (channels `b.co`, plane `co` of `out` at `co * b.plane`), adding
/// `residual` (laid out as `out`) when given. `info` is scratch space.
///
/// # Safety
/// The CPU must have AVX-512F; `out` and `residual` must hold the planes of channels `b.co` of
/// one image; every tap offset in `b.koff` plus every flat position loaded must lie inside `b.x`;
/// tasks running at once must write disjoint outputs.
#[target_feature(enable = "avx512f")]
pub unsafe fn run(b: &Band, out: *mut f32, residual: Option<*const f32>, info: &mut Vec<VectorInfo>) {
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
                        $(($m, 3) => unsafe { block::<$m, 3>(b, k, co, 16 * q, v, out, residual) },
                          ($m, 2) => unsafe { block::<$m, 2>(b, k, co, 16 * q, v, out, residual) },
                          ($m, _) => unsafe { block::<$m, 1>(b, k, co, 16 * q, v, out, residual) },)*
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
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const M: usize, const N: usize>(
    b: &Band,
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
            let mut xv = [_mm512_setzero_ps(); N];
            for (n, x) in xv.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(load[n], p.wrapping_add(16 * n));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*w0.add(r * k + kk));
                for (n, x) in xv.iter().enumerate() {
                    a[n] = _mm512_fmadd_ps(w, *x, a[n]);
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
