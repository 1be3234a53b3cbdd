//! Parity of `stats::scattering` with kymatio 0.3.0 `Scattering2D` (fixtures from
//! tools/make_scattering_fixtures.py), theory checks and bad-input errors.
//!
//! Tolerances. "f64" fixtures are kymatio's code with float64 filters: the only differences left are
//! FFT algorithms (pocketfft vs rustfft) and summation order, so every element must agree to
//! 1e-12 of its channel's largest magnitude (measured ≲ 1e-14). The "stock" fixture is kymatio as
//! shipped, whose spatial filters are complex64/float32; that rounding (~6e-8 relative per filter value,
//! then propagated through two modulus layers) allows 1e-5 of the channel maximum (measured 6.2e-7).

mod common;

use common::{fixtures, floats, invalid_cause, json, npy, npy_map, num, relative_error, usize_of};
use expanse::stats::scattering::{Scattering2d, ScatteringCoefficients};
use ndarray::{Array2, Array3, Axis};

/// The fixtures' folder in tests/fixtures.
const DIR: &str = "stats/scattering";

struct Case {
    name: &'static str,
    tolerance: f64,
}

const F64_TOLERANCE: f64 = 1e-12;
const STOCK_TOLERANCE: f64 = 1e-5;

const CASES: [Case; 7] = [
    Case { name: "grf_32x32_J2_L8", tolerance: F64_TOLERANCE },
    Case { name: "grf_32x32_J3_L8", tolerance: F64_TOLERANCE },
    Case { name: "grf_32x48_J3_L4", tolerance: F64_TOLERANCE },
    Case { name: "grf_29x45_J2_L6", tolerance: F64_TOLERANCE },
    Case { name: "lognormal_32x48_J3_L4", tolerance: F64_TOLERANCE },
    Case { name: "grf_8x12_J3_L4", tolerance: F64_TOLERANCE },
    Case { name: "grf_32x32_J3_L8_stock", tolerance: STOCK_TOLERANCE },
];

struct Fixture {
    map: Array2<f64>,
    expected: Array3<f64>,
    meta: serde_json::Value,
}

fn load(case: &str) -> Fixture {
    let meta = json(fixtures(DIR).join(format!("{case}.json")));
    let map = npy_map(fixtures(DIR).join(meta["map"].as_str().unwrap()));
    let expected: Array3<f64> = npy(fixtures(DIR).join(format!("{case}.npy")));
    Fixture { map, expected, meta }
}

fn bank_for(fixture: &Fixture) -> Scattering2d {
    let (ny, nx) = fixture.map.dim();
    Scattering2d::new(ny, nx, usize_of(&fixture.meta["J"]), usize_of(&fixture.meta["L"])).unwrap()
}

/// Largest |a − b| in each channel divided by that channel's largest |b|, maximised over channels.
fn channel_relative_error(actual: &Array3<f64>, expected: &Array3<f64>) -> f64 {
    assert_eq!(actual.dim(), expected.dim());
    actual
        .outer_iter()
        .zip(expected.outer_iter())
        .map(|(a, b)| {
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b.iter()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            diff / scale
        })
        .fold(0.0, f64::max)
}

#[test]
fn full_transform_matches_kymatio() {
    for case in &CASES {
        let fixture = load(case.name);
        let bank = bank_for(&fixture);
        let actual = bank.transform(fixture.map.view()).unwrap();
        let expected_shape: Vec<usize> =
            fixture.meta["output_shape"].as_array().unwrap().iter().map(usize_of).collect();
        assert_eq!(actual.shape(), expected_shape.as_slice(), "{}", case.name);
        let (channels, oy, ox) = bank.output_shape();
        assert_eq!([channels, oy, ox].as_slice(), actual.shape());
        let error = channel_relative_error(&actual, &fixture.expected);
        println!("{}: max channel-relative error {error:.2e}", case.name);
        assert!(error < case.tolerance, "{}: error {error:e} ≥ {:e}", case.name, case.tolerance);
    }
}

#[test]
fn channel_order_matches_kymatio() {
    for case in &CASES {
        let fixture = load(case.name);
        let paths = bank_for(&fixture).paths();
        let scales = fixture.meta["channel_j"].as_array().unwrap();
        let angles = fixture.meta["channel_theta"].as_array().unwrap();
        assert_eq!(paths.len(), scales.len());
        for ((path, j), t) in paths.iter().zip(scales).zip(angles) {
            let j: Vec<usize> = j.as_array().unwrap().iter().map(usize_of).collect();
            let t: Vec<usize> = t.as_array().unwrap().iter().map(usize_of).collect();
            assert_eq!((&path.scales, &path.angles), (&j, &t), "{}", case.name);
        }
    }
}

#[test]
fn isotropic_coefficients_match_kymatio() {
    for case in &CASES {
        let fixture = load(case.name);
        let bank = bank_for(&fixture);
        let coefficients = bank.coefficients(fixture.map.view()).unwrap();
        let meta = &fixture.meta;
        assert_eq!((coefficients.j, coefficients.l), (bank.j(), bank.l()));
        let mut worst = relative_error(coefficients.s0, num(&meta["s0"]), 0.0);
        let s1 = floats(&meta["s1"]);
        assert_eq!(coefficients.s1.len(), s1.len());
        for (a, b) in coefficients.s1.iter().zip(&s1) {
            worst = worst.max(relative_error(*a, *b, 0.0));
        }
        let s2 = meta["s2"].as_array().unwrap();
        assert_eq!(coefficients.s2.len(), s2.len());
        for (&(j1, j2, value), expected) in coefficients.s2.iter().zip(s2) {
            let expected = expected.as_array().unwrap();
            assert_eq!((j1, j2), (usize_of(&expected[0]), usize_of(&expected[1])));
            worst = worst.max(relative_error(value, num(&expected[2]), 0.0));
        }
        let reduced = coefficients.reduced();
        let expected_reduced = meta["reduced"].as_array().unwrap();
        assert_eq!(reduced.len(), expected_reduced.len());
        assert_eq!(coefficients.labels().len(), reduced.len());
        let mut worst_log = 0.0f64;
        for (a, b) in reduced.iter().zip(expected_reduced) {
            worst_log = worst_log.max((a - num(b)).abs());
        }
        println!("{}: isotropic max rel error {worst:.2e}, reduced max abs error {worst_log:.2e}", case.name);
        assert!(worst < case.tolerance, "{}: {worst:e}", case.name);
        assert!(worst_log < case.tolerance, "{}: {worst_log:e}", case.name);
    }
}

#[test]
fn reduced_vector_layout_and_labels() {
    let coefficients = ScatteringCoefficients {
        j: 3,
        l: 4,
        s0: 1.0,
        s1: vec![2.0, 4.0, 8.0],
        s2: vec![(0, 1, 1.0), (0, 2, 0.5), (1, 2, 1.0)],
    };
    assert_eq!(coefficients.reduced(), vec![1.0, 2.0, 3.0, -1.0, -2.0, -2.0]);
    assert_eq!(coefficients.labels(), vec!["s1 j=0", "s1 j=1", "s1 j=2", "s2 j=0→1", "s2 j=0→2", "s2 j=1→2"]);
}

/// Angle index t' of the wavelet at π/2 − θ_t (reflection about the diagonal), θ_t = (a − t)π/L with
/// a = ⌊L/2 − 1⌋, and whether reaching it needs θ → θ + π (|x⋆ψ_θ+π| = |x⋆ψ_θ| for real x).
fn transposed_angle(t: usize, l: usize) -> (usize, bool) {
    let a = (l as f64 - l as f64 / 2.0 - 1.0).trunc() as i64;
    let raw = 2 * a - l as i64 / 2 - t as i64;
    let wrapped = raw.rem_euclid(l as i64);
    (wrapped as usize, wrapped != raw)
}

#[test]
fn transposing_a_square_map_reflects_the_angles() {
    // The padded grid, the subsampling grid and the filters' periodic copies are all symmetric under
    // transposition of a square map, so S(xᵀ) equals S(x) with each angle t mapped to t' and each
    // channel transposed, up to FFT rounding. One kymatio-inherent exception: ψ_θ+π = conj ψ_θ holds
    // on the full grid, but a wavelet cropped to a coarser resolution keeps the negative Nyquist row
    // and column and drops the positive ones, so a second-order path with j1 ≥ 1 whose second angle
    // needs the π wrap differs by that wavelet's (small, aliased) Nyquist content.
    let fixture = load("grf_32x32_J3_L8");
    let bank = bank_for(&fixture);
    let direct = bank.transform(fixture.map.view()).unwrap();
    let transposed_map = fixture.map.t().to_owned();
    let transposed = bank.transform(transposed_map.view()).unwrap();
    let paths = bank.paths();
    let (mut worst_exact, mut worst_nyquist, mut exact_paths) = (0.0f64, 0.0f64, 0);
    for (index, path) in paths.iter().enumerate() {
        let mapped: Vec<(usize, bool)> = path.angles.iter().map(|&t| transposed_angle(t, bank.l())).collect();
        let mapped_angles: Vec<usize> = mapped.iter().map(|m| m.0).collect();
        let cropped_wrap = path.scales.len() == 2 && path.scales[0] >= 1 && mapped[1].1;
        let partner = paths.iter().position(|p| p.scales == path.scales && p.angles == mapped_angles).unwrap();
        let a = transposed.index_axis(Axis(0), index);
        let b = direct.index_axis(Axis(0), partner);
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b.t().iter()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale;
        if cropped_wrap {
            worst_nyquist = worst_nyquist.max(diff);
        } else {
            worst_exact = worst_exact.max(diff);
            exact_paths += 1;
        }
    }
    println!("transpose equivariance: {exact_paths} paths to {worst_exact:.2e}, others to {worst_nyquist:.2e}");
    assert!(exact_paths > paths.len() / 2);
    assert!(worst_exact < 1e-12, "{worst_exact:e}");
    assert!(worst_nyquist < 2e-3, "{worst_nyquist:e}");
}

#[test]
fn scaling_the_map_scales_the_coefficients() {
    let fixture = load("grf_32x48_J3_L4");
    let bank = bank_for(&fixture);
    let base = bank.transform(fixture.map.view()).unwrap();
    let scaled = bank.transform((&fixture.map * -3.0).view()).unwrap();
    let mut expected = base.mapv(|v| 3.0 * v);
    expected.index_axis_mut(Axis(0), 0).mapv_inplace(|v| -v);
    assert!(channel_relative_error(&scaled, &expected) < 1e-12);
}

#[test]
fn constant_map_has_zero_fluctuation_channels_and_no_coefficients() {
    let bank = Scattering2d::new(32, 32, 2, 8).unwrap();
    let map = Array2::from_elem((32, 32), 5.0);
    let output = bank.transform(map.view()).unwrap();
    let s0_mean = output.index_axis(Axis(0), 0).mean().unwrap();
    assert!(s0_mean > 0.0);
    let largest_fluctuation = output.slice(ndarray::s![1.., .., ..]).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(largest_fluctuation < 1e-12 * s0_mean, "{largest_fluctuation:e}");
    let cause = invalid_cause(bank.coefficients(map.view()));
    assert!(cause.contains("constant"), "{cause}");
}

#[test]
fn bad_parameters_are_refused() {
    assert!(invalid_cause(Scattering2d::new(32, 32, 0, 8)).contains("J = 0"));
    assert!(invalid_cause(Scattering2d::new(32, 32, 2, 0)).contains("L = 0"));
    let cause = invalid_cause(Scattering2d::new(16, 40, 5, 8));
    assert!(cause.contains("16×40") && cause.contains("J = 5") && cause.contains("J ≤ 4"), "{cause}");
    assert!(Scattering2d::new(16, 40, 4, 8).is_ok());
    assert!(invalid_cause(Scattering2d::new(0, 40, 1, 8)).contains("too small"));
    assert!(invalid_cause(Scattering2d::new(1 << 20, 1 << 20, 200, 8)).contains("too small"));
}

#[test]
fn bad_maps_are_refused() {
    let bank = Scattering2d::new(16, 16, 2, 4).unwrap();
    let mut map = Array2::from_shape_fn((16, 16), |(y, x)| ((y * 7 + x * 3) % 5) as f64);
    map[[3, 4]] = f64::NAN;
    let cause = invalid_cause(bank.transform(map.view()));
    assert!(cause.contains("1 NaN or infinite pixels of 256"), "{cause}");
    assert!(invalid_cause(bank.coefficients(map.view())).contains("NaN"));
    let all_nan = Array2::from_elem((16, 16), f64::NAN);
    assert!(invalid_cause(bank.transform(all_nan.view())).contains("entirely NaN"));
    let wrong_shape = Array2::<f64>::zeros((16, 17));
    assert!(invalid_cause(bank.transform(wrong_shape.view())).contains("16×17"));
}

#[test]
#[ignore = "timing: cargo test --release --test battery_scattering -- --ignored --nocapture"]
fn timing_256() {
    let map = Array2::from_shape_fn((256, 256), |(y, x)| {
        ((y as f64 * 0.37).sin() + (x as f64 * 0.11 + y as f64 * 0.05).cos() * 2.0) * (1.0 + (x * y % 7) as f64)
    });
    for j in [4, 5] {
        let start = std::time::Instant::now();
        let bank = Scattering2d::new(256, 256, j, 8).unwrap();
        let built = start.elapsed();
        let start = std::time::Instant::now();
        let runs = 5;
        for _ in 0..runs {
            std::hint::black_box(bank.coefficients(map.view()).unwrap());
        }
        let per_map = start.elapsed() / runs;
        println!("256², J={j}, L=8: filter bank {built:?}, coefficients per map {per_map:?}");
    }
}
