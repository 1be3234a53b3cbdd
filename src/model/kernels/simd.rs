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
