//! Minkowski functionals and peak counts: parity with quantimpy 0.2.6 and lenstools 1.2 (fixtures from
//! tools/make_morphology_fixtures.py), Gaussian-random-field theory, hand-built shapes and bad input.

mod common;

use std::f64::consts::PI;

use common::{fixtures, floats, invalid_cause, json, max_relative_error, npy_map, SplitMix64};
use expanse::stats::minkowski::{default_thresholds, MinkowskiFunctionals};
use expanse::stats::peaks::{default_edges, PeakCounts};
use ndarray::{Array2, ArrayView2};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// The fixtures' folder in tests/fixtures.
const DIR: &str = "stats/morphology";
const CASES: [&str; 4] = ["grf_a3_64", "grf_a4_48x80", "lognormal_64", "nan_64"];

/// Both sides sum the same integer configuration counts, quantimpy through per-strip densities times strip
/// areas, so V1 and V2 differ by rounding only: observed ≤ 6e-16 relative, asserted 1e-13 (room for the
/// ~1000 strip sums of the masked map), relative to max(|value|, 1e-11 for V1, 1e-12 for V2: far below
/// their scales ~1e-2, ~1e-3, for values that cancel to ~0). V0 is a ratio of the same two integers: exact.
#[test]
fn minkowski_matches_quantimpy() {
    for case in CASES {
        let map = npy_map(fixtures(DIR).join(format!("{case}.npy")));
        let expected = json(fixtures(DIR).join(format!("{case}_minkowski.json")));
        for (variant, reference) in expected.as_object().unwrap() {
            let thresholds = floats(&reference["thresholds"]);
            if variant == "default" {
                assert_eq!(thresholds, default_thresholds());
            }
            let got = MinkowskiFunctionals::compute(map.view(), &thresholds).unwrap();
            assert_eq!(got.nu, thresholds);
            assert_eq!(got.v0, floats(&reference["v0"]), "{case}/{variant} v0");
            let e1 = max_relative_error(&got.v1, &floats(&reference["v1"]), 1e-11);
            let e2 = max_relative_error(&got.v2, &floats(&reference["v2"]), 1e-12);
            println!("{case}/{variant}: max relative error v1 {e1:.2e}, v2 {e2:.2e}");
            assert!(e1 < 1e-13, "{case}/{variant} v1 relative error {e1}");
            assert!(e2 < 1e-13, "{case}/{variant} v2 relative error {e2}");
        }
    }
}

/// Peak counts are integers; the densities are count / pixels in both, so they must agree exactly.
#[test]
fn peaks_match_lenstools_and_scipy() {
    for case in CASES {
        let map = npy_map(fixtures(DIR).join(format!("{case}.npy")));
        let expected = json(fixtures(DIR).join(format!("{case}_peaks.json")));
        for (variant, reference) in expected.as_object().unwrap() {
            let edges = floats(&reference["edges"]);
            if variant == "default" {
                assert_eq!(edges, default_edges());
            }
            let got = PeakCounts::compute(map.view(), &edges).unwrap();
            assert_eq!(got.pixels as u64, reference["pixels"].as_u64().unwrap(), "{case}/{variant} pixels");
            let counts =
                |densities: &[f64]| -> Vec<f64> { densities.iter().map(|d| (d * got.pixels as f64).round()).collect() };
            assert_eq!(counts(&got.maxima), floats(&reference["maxima_counts"]), "{case}/{variant} maxima");
            assert_eq!(counts(&got.minima), floats(&reference["minima_counts"]), "{case}/{variant} minima");
            assert_eq!(got.maxima, floats(&reference["maxima"]), "{case}/{variant} maxima densities");
            assert_eq!(got.minima, floats(&reference["minima"]), "{case}/{variant} minima densities");
            assert_eq!(got.edges, edges);
        }
    }
}

/// Box–Muller normals from the tests' SplitMix64.
struct Normals(SplitMix64);

impl Normals {
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.0.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * self.0.uniform()).cos()
    }
}

/// Periodic Gaussian random field of side `n` with power spectrum exp(−k² θ²) (k in radians per pixel),
/// and the spectral moments σ₁²/σ₀² and σ₂²/σ₁² of that spectrum (its trigonometric interpolant).
fn smooth_grf(n: usize, theta: f64, seed: u64) -> (Array2<f64>, f64, f64) {
    let mut normals = Normals(SplitMix64(seed));
    let mut buffer: Vec<Complex<f64>> = (0..n * n).map(|_| Complex::new(normals.normal(), 0.0)).collect();
    let fft = FftPlanner::new().plan_fft_forward(n);
    let ifft = FftPlanner::new().plan_fft_inverse(n);
    let transpose = |data: &mut Vec<Complex<f64>>| {
        let copy = data.clone();
        for i in 0..n {
            for j in 0..n {
                data[j * n + i] = copy[i * n + j];
            }
        }
    };
    let wavenumber = |i: usize| 2.0 * PI * if i <= n / 2 { i as f64 } else { i as f64 - n as f64 } / n as f64;
    let (mut p0, mut p1, mut p2) = (0.0, 0.0, 0.0);
    fft.process(&mut buffer);
    transpose(&mut buffer);
    fft.process(&mut buffer);
    for i in 0..n {
        for j in 0..n {
            let k2 = wavenumber(i).powi(2) + wavenumber(j).powi(2);
            let power = (-k2 * theta * theta).exp();
            buffer[i * n + j] *= power.sqrt();
            p0 += power;
            p1 += k2 * power;
            p2 += k2 * k2 * power;
        }
    }
    ifft.process(&mut buffer);
    transpose(&mut buffer);
    ifft.process(&mut buffer);
    let map = Array2::from_shape_fn((n, n), |(i, j)| buffer[i * n + j].re);
    (map, p1 / p0, p2 / p1)
}

/// Complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let value = t * poly.exp();
    if x >= 0.0 {
        value
    } else {
        2.0 - value
    }
}

/// A 1024² field smoothed on θ = 3 pixels, compared with theory at |ν| ≤ 2: V0 within 0.01 of ½ erfc(ν/√2);
/// V1 within 2 % of its scale √τ/8 (theory √τ/8 e^(−ν²/2)); V2 within 6 % of its scale τ/(2π)^(3/2) e^(−1/2)
/// (theory τ/(2π)^(3/2) ν e^(−ν²/2)). Errors are measured against the scales, not point by point, because
/// the relative error grows in the tails (V1 is 5 % low at ν = 2 here: few, small excursion regions).
/// Observed with this seed: 0.0007, 1.0 %, 3.3 %. Sample variance at this smoothing is 1–3 % on V1 and V2
/// (other seeds, in numpy: V2 up to 5 %), the 2×2-window pixelization bias on V1 about −1 % (−2…−4 % at
/// θ = 2 pixels).
#[test]
fn minkowski_follow_gaussian_field_theory() {
    let (map, sigma1_sq, _) = smooth_grf(1024, 3.0, 7);
    let tau = sigma1_sq / 2.0;
    let thresholds: Vec<f64> = (0..17).map(|i| -2.0 + 0.25 * i as f64).collect();
    let got = MinkowskiFunctionals::compute(map.view(), &thresholds).unwrap();
    let v1_scale = tau.sqrt() / 8.0;
    let v2_scale = tau / (2.0 * PI).powf(1.5) * (-0.5f64).exp();
    let (mut worst0, mut worst1, mut worst2) = (0.0f64, 0.0f64, 0.0f64);
    for (k, &nu) in thresholds.iter().enumerate() {
        let gauss = (-nu * nu / 2.0).exp();
        let theory0 = 0.5 * erfc(nu / 2f64.sqrt());
        let theory1 = tau.sqrt() / 8.0 * gauss;
        let theory2 = tau / (2.0 * PI).powf(1.5) * nu * gauss;
        worst0 = worst0.max((got.v0[k] - theory0).abs());
        worst1 = worst1.max((got.v1[k] - theory1).abs() / v1_scale);
        worst2 = worst2.max((got.v2[k] - theory2).abs() / v2_scale);
    }
    println!("GRF theory: max |ΔV0| {worst0:.4}, max |ΔV1|/scale {worst1:.4}, max |ΔV2|/scale {worst2:.4}");
    assert!(worst0 < 0.01, "V0 off theory by {worst0}");
    assert!(worst1 < 0.02, "V1 off theory by {worst1}");
    assert!(worst2 < 0.06, "V2 off theory by {worst2}");
}

/// Maxima and minima of the same field: each density within 5 % of σ₂² / (8√3 π σ₁²) per pixel (about
/// 5300 expected, Poisson-like noise 1.4 %, 8-neighbour pixelization bias about −1 % at θ = 3), minima
/// mirrored: the height histograms of maxima and minima of −map are the same.
#[test]
fn peaks_follow_gaussian_field_theory() {
    let (map, _, sigma2_over_sigma1) = smooth_grf(1024, 3.0, 7);
    let edges: Vec<f64> = (0..49).map(|i| -6.0 + 0.25 * i as f64).collect();
    let got = PeakCounts::compute(map.view(), &edges).unwrap();
    let theory = sigma2_over_sigma1 / (8.0 * 3f64.sqrt() * PI);
    let maxima: f64 = got.maxima.iter().sum();
    let minima: f64 = got.minima.iter().sum();
    println!("peaks: maxima {:.4}, minima {:.4} of theory", maxima / theory, minima / theory);
    assert!((maxima / theory - 1.0).abs() < 0.05);
    assert!((minima / theory - 1.0).abs() < 0.05);
    let negated = PeakCounts::compute((-&map).view(), &edges).unwrap();
    let mirrored: Vec<f64> = negated.maxima.iter().rev().copied().collect();
    assert_eq!(got.minima, mirrored);
    let mean_max: f64 = got.maxima.iter().zip(edges.windows(2)).map(|(d, e)| d * (e[0] + e[1]) / 2.0).sum();
    assert!(mean_max / maxima > 0.5, "maxima should sit at positive heights");
}

/// A smooth bump: one component (χ = 1) above its mean; a ring: χ = 0; two diagonal pixels: χ = 2
/// (the excursion set is 4-connected). Area = (ny − 1)(nx − 1) windows. The bump's level set at its mean is
/// a circle of radius 6 √(−ln mean): the Crofton length must be within 2 % of its circumference.
#[test]
fn minkowski_euler_characteristic_of_shapes() {
    let (ny, nx) = (40, 50);
    let area = ((ny - 1) * (nx - 1)) as f64;
    let radius = |i: usize, j: usize| ((i as f64 - 19.3).powi(2) + (j as f64 - 24.6).powi(2)).sqrt();
    let bump = Array2::from_shape_fn((ny, nx), |(i, j)| (-(radius(i, j) / 6.0).powi(2)).exp());
    let got = MinkowskiFunctionals::compute(bump.view(), &[1.0]).unwrap();
    assert!((got.v2[0] * area - 1.0).abs() < 1e-9, "bump χ = {}", got.v2[0] * area);
    let ring = Array2::from_shape_fn((ny, nx), |(i, j)| (-((radius(i, j) - 10.0) / 2.0).powi(2)).exp());
    let got = MinkowskiFunctionals::compute(ring.view(), &[1.0]).unwrap();
    assert!((got.v2[0] * area).abs() < 1e-9, "ring χ = {}", got.v2[0] * area);
    let mut dots = Array2::zeros((6, 6));
    dots[[2, 2]] = 1.0;
    dots[[3, 3]] = 1.0;
    let got = MinkowskiFunctionals::compute(dots.view(), &[1.0]).unwrap();
    assert!((got.v2[0] * 25.0 - 2.0).abs() < 1e-12);
    assert!((got.v0[0] - 2.0 / 36.0).abs() < 1e-15);
    let disc_length = 4.0 * area * MinkowskiFunctionals::compute(bump.view(), &[0.0]).unwrap().v1[0];
    let expected_radius = 6.0 * (-bump.mean().unwrap().ln()).sqrt();
    assert!((disc_length / (2.0 * PI * expected_radius) - 1.0).abs() < 0.02, "disc perimeter {disc_length}");
}

/// Heights exactly on the last edge are counted (numpy's closed last bin), on an inner edge go right.
#[test]
fn peaks_use_numpy_bin_edges() {
    // 8 pixels at +1, 8 at −1: mean 0 and std 1 exactly; pixel (1, 1) = +1 is the only peak.
    let mut map = Array2::from_elem((4, 4), -1.0);
    map[[1, 1]] = 1.0;
    for (i, j) in [(0, 3), (1, 3), (2, 3), (3, 0), (3, 1), (3, 2), (3, 3)] {
        map[[i, j]] = 1.0;
    }
    let closed = PeakCounts::compute(map.view(), &[0.0, 1.0]).unwrap();
    assert_eq!(closed.pixels, 4);
    assert_eq!(closed.maxima, vec![0.25]);
    let inner = PeakCounts::compute(map.view(), &[0.0, 1.0, 2.0]).unwrap();
    assert_eq!(inner.maxima, vec![0.0, 0.25]);
    let outside = PeakCounts::compute(map.view(), &[-1.0, 0.999]).unwrap();
    assert_eq!(outside.maxima, vec![0.0]);
    assert_eq!(closed.minima, vec![0.0]);
}

/// A ramp with one bump: the bump is the only maximum; the ramp's corners (its extremes) are on the edge
/// and cannot be peaks, and nothing wraps around. A NaN next to the bump removes it and the 9 pixels whose
/// 3×3 neighbourhood holds the NaN.
#[test]
fn peaks_exclude_edges_and_masked_neighbours() {
    let mut map = Array2::from_shape_fn((7, 7), |(i, j)| (i + j) as f64 * 0.1);
    map[[3, 3]] = 10.0;
    let got = PeakCounts::compute(map.view(), &[-100.0, 100.0]).unwrap();
    assert_eq!(got.pixels, 25);
    assert_eq!(got.maxima, vec![1.0 / 25.0]);
    assert_eq!(got.minima, vec![0.0]);
    map[[2, 2]] = f64::NAN;
    let masked = PeakCounts::compute(map.view(), &[-100.0, 100.0]).unwrap();
    assert_eq!(masked.pixels, 16);
    assert_eq!(masked.maxima, vec![0.0]);
}

#[test]
fn bad_input_is_an_error() {
    let nu = default_thresholds();
    let edges = default_edges();
    let minkowski = |map: ArrayView2<f64>, nu: &[f64]| invalid_cause(MinkowskiFunctionals::compute(map, nu));
    let peaks = |map: ArrayView2<f64>, edges: &[f64]| invalid_cause(PeakCounts::compute(map, edges));
    let all_nan = Array2::from_elem((8, 8), f64::NAN);
    assert!(minkowski(all_nan.view(), &nu).contains("no finite pixel"));
    assert!(peaks(all_nan.view(), &edges).contains("no finite pixel"));
    let constant = Array2::from_elem((8, 8), 3.5);
    assert!(minkowski(constant.view(), &nu).contains("constant"));
    assert!(peaks(constant.view(), &edges).contains("constant"));
    let huge = Array2::from_shape_fn((8, 8), |(i, j)| if (i + j) % 2 == 0 { 1e308 } else { 1.5e308 });
    assert!(minkowski(huge.view(), &nu).contains("too large"));
    assert!(peaks(huge.view(), &edges).contains("too large"));
    let tiny = Array2::from_shape_fn((2, 5), |(i, j)| (i + j) as f64);
    assert!(minkowski(tiny.view(), &nu).contains("at least 3×3"));
    assert!(peaks(tiny.view(), &edges).contains("at least 3×3"));
    let good = Array2::from_shape_fn((8, 8), |(i, j)| ((i * 3 + j * 5) % 7) as f64);
    assert!(minkowski(good.view(), &[0.0, f64::NAN]).contains("finite"));
    assert!(minkowski(good.view(), &[f64::INFINITY]).contains("finite"));
    assert!(minkowski(good.view(), &[]).contains("no threshold"));
    assert!(peaks(good.view(), &[0.0]).contains("at least 2"));
    assert!(peaks(good.view(), &[0.0, f64::NAN]).contains("finite"));
    assert!(peaks(good.view(), &[0.0, 1.0, 1.0]).contains("increase"));
    let checkerboard = Array2::from_shape_fn((6, 6), |(i, j)| if (i + j) % 2 == 0 { f64::NAN } else { j as f64 });
    assert!(minkowski(checkerboard.view(), &nu).contains("2×2"));
    assert!(peaks(checkerboard.view(), &edges).contains("8 finite neighbours"));
}

/// `cargo test --release --test battery_morphology -- --ignored --nocapture`
#[test]
#[ignore]
fn timing_256() {
    let (map, _, _) = smooth_grf(256, 2.0, 3);
    let start = std::time::Instant::now();
    let repeats = 20;
    for _ in 0..repeats {
        MinkowskiFunctionals::compute(map.view(), &default_thresholds()).unwrap();
    }
    let minkowski = start.elapsed().as_secs_f64() / repeats as f64;
    let start = std::time::Instant::now();
    for _ in 0..repeats {
        PeakCounts::compute(map.view(), &default_edges()).unwrap();
    }
    let peaks = start.elapsed().as_secs_f64() / repeats as f64;
    println!("256²: Minkowski (25 thresholds) {:.2} ms, peaks {:.2} ms", minkowski * 1e3, peaks * 1e3);
}
