//! Comparisons of whole maps: reconstruction metrics (MSE, PSNR, SSIM) and the memorization
//! check of synthetic maps against the real ones.

use super::nearest::nearest;
use ndarray::{s, Array2, ArrayView2};
use serde::Serialize;

/// Mean squared error.
pub fn mse(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    crate::numerics::mse(a, b)
}

/// Peak signal-to-noise ratio (dB) for a given data range.
pub fn psnr(a: ArrayView2<f64>, b: ArrayView2<f64>, data_range: f64) -> f64 {
    crate::numerics::psnr_of_mse(mse(a, b), data_range)
}

/// Structural similarity as scikit-image's `structural_similarity(a, b, data_range=…)` computes it
/// by default: 7×7 uniform windows, K1 = 0.01, K2 = 0.03, sample covariances, the mean over the
/// windows that fit entirely inside the map (scikit-image 0.26 to 1e-13, tests/stats_claims.rs).
/// A map under 7 pixels on a side gets a window of its smaller side, where scikit-image refuses.
pub fn ssim(a: ArrayView2<f64>, b: ArrayView2<f64>, data_range: f64) -> f64 {
    let (h, w) = a.dim();
    let win = 7usize.min(h).min(w);
    let np = (win * win) as f64;
    let cov_norm = np / (np - 1.0);
    let (c1, c2) = ((0.01 * data_range).powi(2), (0.03 * data_range).powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for i in 0..=h - win {
        for j in 0..=w - win {
            let pa = a.slice(s![i..i + win, j..j + win]);
            let pb = b.slice(s![i..i + win, j..j + win]);
            let (ma, mb) = (pa.mean().expect("window"), pb.mean().expect("window"));
            let va = cov_norm * (pa.mapv(|v| v * v).mean().expect("window") - ma * ma);
            let vb = cov_norm * (pb.mapv(|v| v * v).mean().expect("window") - mb * mb);
            let cab = cov_norm * ((&pa * &pb).mean().expect("window") - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    total / count as f64
}

/// Nearest-neighbour distances of synthetic maps to real ones, against the real maps' own.
#[derive(Debug, Clone, Serialize)]
pub struct Memorization {
    /// For each real map, the RMS distance to its nearest other real map.
    pub real_nn: Vec<f64>,
    /// For each synthetic map: (index of the nearest real map, RMS distance to it).
    pub synthetic_nn: Vec<(usize, f64)>,
    /// Synthetic maps closer to a real map than half the smallest real–real distance.
    pub threshold: f64,
    pub flagged: Vec<usize>,
    /// The closest synthetic–real distance over the closest real–real distance: below 1, some
    /// synthetic map lies nearer a real map than any two real maps lie to each other.
    pub ratio: f64,
    /// Seconds the check took (printed, not written: reports do not depend on the machine).
    #[serde(skip)]
    pub seconds: f64,
}

/// The memorization check: a synthetic map is flagged as a near-copy when it lies closer to a
/// real map than half of the smallest distance between two real maps. Distances are RMS over the
/// pixels finite in both maps, so blank (NaN) pixels of the real maps are left out. The
/// nearest neighbours come from matrix products (O(N²) multiply-adds at the machine's peak rate
/// instead of a pass over every pair's pixels) and are exact (src/stats/nearest.rs).
pub fn memorization(real: &[Array2<f64>], synthetic: &[Array2<f64>]) -> Memorization {
    let start = std::time::Instant::now();
    // Nearest neighbours by matrix products, checked pixel by pixel (stats::nearest): the same
    // numbers as comparing every pair, whatever the threads.
    let real_nn: Vec<f64> = nearest(real, real, true)
        .into_iter()
        .map(|n| n.map(|(_, d)| d).filter(|d| !d.is_nan()).unwrap_or(f64::INFINITY))
        .collect();
    let synthetic_nn: Vec<(usize, f64)> =
        nearest(synthetic, real, false).into_iter().map(|n| n.unwrap_or((0, f64::NAN))).collect();
    let closest_real = real_nn.iter().cloned().fold(f64::INFINITY, f64::min);
    let closest_synthetic = synthetic_nn.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let threshold = 0.5 * closest_real;
    let flagged = synthetic_nn.iter().enumerate().filter(|(_, (_, d))| *d < threshold).map(|(i, _)| i).collect();
    let ratio = if closest_real > 0.0 { closest_synthetic / closest_real } else { f64::INFINITY };
    Memorization { real_nn, synthetic_nn, threshold, flagged, ratio, seconds: start.elapsed().as_secs_f64() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssim_is_one_for_identical_maps_and_drops_with_noise() {
        let a = Array2::from_shape_fn((32, 32), |(i, j)| ((i * j) as f64 * 0.1).sin());
        assert!((ssim(a.view(), a.view(), 2.0) - 1.0).abs() < 1e-12);
        let b = Array2::from_shape_fn((32, 32), |(i, j)| a[[i, j]] + if (i + j) % 2 == 0 { 0.3 } else { -0.3 });
        let s = ssim(a.view(), b.view(), 2.0);
        assert!(s < 0.9 && s > 0.0, "{s}");
        assert!((psnr(a.view(), b.view(), 2.0) - 10.0 * (4.0f64 / 0.09).log10()).abs() < 1e-9);
    }

    #[test]
    fn copies_are_flagged_and_new_maps_are_not() {
        let real: Vec<Array2<f64>> =
            (0..4).map(|k| Array2::from_shape_fn((8, 8), |(i, j)| ((i + 2 * j + 3 * k) as f64).sin())).collect();
        let copy = real[2].mapv(|v| v + 1e-3);
        let new = Array2::from_shape_fn((8, 8), |(i, j)| ((3 * i + j) as f64 * 0.7).cos());
        let m = memorization(&real, &[copy, new.clone()]);
        assert_eq!(m.flagged, vec![0]);
        assert_eq!(m.synthetic_nn[0].0, 2);
        assert!(m.ratio < 0.01, "a copy gives a ratio near 0: {}", m.ratio);
        let fresh = memorization(&real, std::slice::from_ref(&new));
        let closest_real = fresh.real_nn.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!((fresh.ratio - fresh.synthetic_nn[0].1 / closest_real).abs() < 1e-12);
        // Blank pixels in real maps are left out of the distances (no panic, same answer).
        let mut blanked = real.clone();
        blanked[2][[3, 3]] = f64::NAN;
        blanked[1].row_mut(0).fill(f64::NAN);
        let m = memorization(&blanked, &[real[2].mapv(|v| v + 1e-3), new]);
        assert_eq!((m.flagged.clone(), m.synthetic_nn[0].0), (vec![0], 2));
        assert!(m.real_nn.iter().all(|d| d.is_finite()) && m.ratio.is_finite() && m.ratio < 0.01, "{m:?}");
    }

    #[test]
    fn memorization_does_not_depend_on_the_threads() {
        let maps = |n: usize, phase: f64| -> Vec<Array2<f64>> {
            (0..n)
                .map(|k| Array2::from_shape_fn((8, 8), |(i, j)| ((i + 2 * j) as f64 * 0.3 + phase * k as f64).sin()))
                .collect()
        };
        let (real, synthetic) = (maps(6, 0.7), maps(5, 1.1));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| memorization(&real, &synthetic))
        };
        let (one, three) = (run(1), run(3));
        assert_eq!(one.real_nn, three.real_nn);
        assert_eq!(one.synthetic_nn, three.synthetic_nn);
        assert_eq!(one.ratio, three.ratio);
    }
}
