//! The element loops of the kernels, compiled three times: for AVX-512 and for AVX2 + FMA machines
//! (chosen at run time), and for the baseline. All three do the same IEEE operations in the same
//! order (sums over eight fixed lanes), so results do not depend on which one runs.

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

/// The softmax of one row: the reference [`softmax_columns_impl`] is checked against.
#[cfg(all(test, target_arch = "x86_64"))]
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

/// [`softmax_impl`] down each column of a row-major (rows × cols) block, with the same operations
/// in the same order as on that column made a row (lanes by row index modulo 8), so the same bits.
#[inline(always)]
fn softmax_columns_impl(block: &mut [f32], cols: usize) {
    let mut lanes = vec![f32::NEG_INFINITY; 8 * cols];
    for (i, row) in block.chunks(cols).enumerate() {
        for (m, &v) in lanes[(i % 8) * cols..][..cols].iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    let mut max = vec![f32::NEG_INFINITY; cols];
    for lane in lanes.chunks(cols) {
        for (m, &v) in max.iter_mut().zip(lane) {
            *m = m.max(v);
        }
    }
    for row in block.chunks_mut(cols) {
        for (v, &m) in row.iter_mut().zip(&max) {
            *v = exp_f32(*v - m);
        }
    }
    lanes.fill(0.0);
    for (i, row) in block.chunks(cols).enumerate() {
        for (s, &v) in lanes[(i % 8) * cols..][..cols].iter_mut().zip(row) {
            *s += v;
        }
    }
    let inv: Vec<f32> = (0..cols)
        .map(|c| {
            let s: [f32; 8] = std::array::from_fn(|lane| lanes[lane * cols + c]);
            1.0 / s.iter().sum::<f32>()
        })
        .collect();
    for row in block.chunks_mut(cols) {
        row.iter_mut().zip(&inv).for_each(|(v, r)| *v *= r);
    }
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
dispatch!(
    softmax_columns, softmax_columns_impl, softmax_columns_avx2, softmax_columns_avx512,
    (block: &mut [f32], cols: usize) -> ()
);

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
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
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
                assert_eq!(bits(&a), bits(&want), "affine avx2, n = {n}, silu {silu}");
                assert_eq!(bits(&b), bits(&want), "affine avx512, n = {n}, silu {silu}");
            }
            // Down the columns of an n × 3 block: each column as softmax gives it as a row.
            let block: Vec<f32> = (0..3 * n).map(|_| next()).collect();
            let mut want = Vec::new();
            for c in 0..3 {
                let mut column: Vec<f32> = block.iter().skip(c).step_by(3).copied().collect();
                softmax_impl(&mut column);
                want.push(column);
            }
            let want: Vec<f32> = (0..3 * n).map(|i| want[i % 3][i / 3]).collect();
            let mut got = [block.clone(), block.clone(), block.clone()];
            softmax_columns_impl(&mut got[0], 3);
            // SAFETY: as above.
            unsafe {
                softmax_columns_avx2(&mut got[1], 3);
                if avx512 {
                    softmax_columns_avx512(&mut got[2], 3);
                } else {
                    got[2].clone_from(&want);
                }
            }
            for (k, g) in got.iter().enumerate() {
                assert_eq!(bits(g), bits(&want), "softmax down columns (build {k}), n = {n}");
            }
        }
    }
}
