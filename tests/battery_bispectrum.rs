//! Parity of `expanse::stats::bispectrum` with TurbuStat 1.3 `Bispectrum` (fixtures from
//! tools/make_bispectrum_fixtures.py), exact identities of the estimator, and bad-input errors.
//!
//! Tolerances: the angle draws are bit-identical to numpy's, so every sampled Fourier index matches
//! and the only differences left are FFT rounding (rustfft vs numpy's pocketfft, ≈1e-16 relative to
//! the largest coefficient). Errors in B are therefore bounded relative to Σ |F(q1) F(q2) F*(q3)|,
//! the sum the bicoherence divides by: measured ≤ 3e-15 of it, tested at 1e-13.

mod common;

use common::{fixtures, invalid_cause, manifest, npy, npy_map, usize_of};
use expanse::stats::bispectrum::{Bispectrum, BispectrumOptions, LegacyMt19937};
use ndarray::{Array2, Array3};

/// The fixtures' folder in tests/fixtures.
const DIR: &str = "stats/bispectrum";
/// |ΔB| / Σ|samples| and |Δ bicoherence| allowed (measured max 2.8e-15).
const TOL: f64 = 1e-13;

struct Case {
    name: &'static str,
    map: &'static str,
    opts: BispectrumOptions,
}

fn cases() -> Vec<Case> {
    let opts = |nsamples, seed, mean_subtract| BispectrumOptions { nsamples, seed, mean_subtract };
    vec![
        Case { name: "grf_32_default", map: "grf_32", opts: opts(100, 1000, false) },
        Case { name: "grf_32_meansub", map: "grf_32", opts: opts(100, 1000, true) },
        Case { name: "lognormal_32_default", map: "lognormal_32", opts: opts(100, 1000, false) },
        Case { name: "lognormal_32_meansub", map: "lognormal_32", opts: opts(100, 1000, true) },
        Case { name: "grf_29x31_default", map: "grf_29x31", opts: opts(100, 1000, false) },
        Case { name: "grf_29x31_seed7_n37", map: "grf_29x31", opts: opts(37, 7, false) },
        Case { name: "nan_32_default", map: "nan_32", opts: opts(100, 1000, false) },
    ]
}

#[test]
fn manifest_lists_the_tested_cases() {
    let manifest = manifest(&fixtures(DIR));
    assert_eq!(manifest["versions"]["turbustat"], "1.3");
    let listed = manifest["cases"].as_array().unwrap();
    let ours = cases();
    assert_eq!(listed.len(), ours.len());
    for (entry, case) in listed.iter().zip(&ours) {
        assert_eq!(entry["case"], case.name);
        assert_eq!(entry["map"], case.map);
        assert_eq!(usize_of(&entry["nsamples"]), case.opts.nsamples);
        assert_eq!(entry["seed"].as_u64().unwrap(), case.opts.seed);
        assert_eq!(entry["mean_subtract"].as_bool().unwrap(), case.opts.mean_subtract);
    }
}

#[test]
fn angle_stream_is_numpy_legacy_uniform_bit_for_bit() {
    let expected = npy_map(fixtures(DIR).join("rng_uniform_0_2pi.npy"));
    for (row, seed) in [0u32, 7, 1000, u32::MAX].into_iter().enumerate() {
        let mut rng = LegacyMt19937::new(seed);
        for (i, &value) in expected.row(row).iter().enumerate() {
            let ours = std::f64::consts::TAU * rng.next_f64();
            assert_eq!(ours.to_bits(), value.to_bits(), "seed {seed}, draw {i}: {ours} vs {value}");
        }
    }
}

#[test]
fn matches_turbustat_fixtures() {
    for case in cases() {
        let map = npy_map(fixtures(DIR).join(format!("{}.npy", case.map)));
        let ours = Bispectrum::compute(map.view(), &case.opts).unwrap();
        let reference: Array3<f64> = npy(fixtures(DIR).join(format!("{}.npy", case.name)));
        let (ny, nx) = map.dim();
        assert_eq!(ours.amplitude.dim(), (ny / 2, nx / 2), "{}", case.name);
        assert_eq!(reference.dim(), (4, ny / 2, nx / 2), "{}", case.name);
        assert_eq!(ours.k, (0..ny / 2).map(|k| k as f64).collect::<Vec<_>>());
        assert_eq!(ours.k2, (0..nx / 2).map(|k| k as f64).collect::<Vec<_>>());
        let (mut worst_b, mut worst_bicoherence) = (0.0f64, 0.0f64);
        for ((i, j), &amplitude) in ours.amplitude.indexed_iter() {
            let (ref_re, ref_im) = (reference[[0, i, j]], reference[[1, i, j]]);
            let (ref_bicoherence, ref_log) = (reference[[2, i, j]], reference[[3, i, j]]);
            let bicoherence = ours.bicoherence[[i, j]];
            assert!(ref_bicoherence > 0.0 && ref_bicoherence <= 1.0 + 1e-12, "{} ({i},{j})", case.name);
            let d_bicoherence = (bicoherence - ref_bicoherence).abs();
            assert!(d_bicoherence <= TOL, "{} ({i},{j}): bicoherence {bicoherence} vs {ref_bicoherence}", case.name);
            worst_bicoherence = worst_bicoherence.max(d_bicoherence);
            // With mean subtraction, B in the k1 <= 1 rows and k2 <= 1 columns is proportional to
            // F(0,0), which is rounding noise in both codes; only its bicoherence is comparable.
            if case.opts.mean_subtract && (i <= 1 || j <= 1) {
                continue;
            }
            let ref_norm = ref_re.hypot(ref_im) / ref_bicoherence;
            let phase = ours.biphase[[i, j]];
            let d_b = (amplitude * phase.cos() - ref_re).hypot(amplitude * phase.sin() - ref_im) / ref_norm;
            assert!(d_b <= TOL, "{} ({i},{j}): B differs by {d_b:e} of the norm", case.name);
            worst_b = worst_b.max(d_b);
            let d_log = (ours.log_amplitude[[i, j]] - ref_log).abs();
            let log_tol = TOL / (std::f64::consts::LN_10 * ref_bicoherence);
            assert!(d_log <= log_tol, "{} ({i},{j}): log10|B| {} vs {ref_log}", case.name, ours.log_amplitude[[i, j]]);
        }
        println!("{}: max |dB|/norm {worst_b:.2e}, max |d bicoherence| {worst_bicoherence:.2e}", case.name);
    }
}

#[test]
fn zero_wave_vector_lines_have_unit_bicoherence() {
    // k1 = 0 (or k2 = 0): every sample is F(0,0)|F(q)|², all with one phase.
    let b = Bispectrum::compute(npy_map(fixtures(DIR).join("lognormal_32.npy")).view(), &BispectrumOptions::default())
        .unwrap();
    for k in 0..16 {
        assert!((b.bicoherence[[0, k]] - 1.0).abs() < 1e-12);
        assert!((b.bicoherence[[k, 0]] - 1.0).abs() < 1e-12);
    }
    assert!(b.bicoherence.iter().all(|&v| (0.0..=1.0 + 1e-12).contains(&v)));
}

#[test]
fn scaling_the_map_scales_b_by_the_cube() {
    let map = npy_map(fixtures(DIR).join("grf_29x31.npy"));
    let opts = BispectrumOptions::default();
    let base = Bispectrum::compute(map.view(), &opts).unwrap();
    for factor in [2.5, -0.5] {
        let scaled = Bispectrum::compute(map.mapv(|v| factor * v).view(), &opts).unwrap();
        let cube: f64 = factor * factor * factor;
        for ((i, j), &amplitude) in scaled.amplitude.indexed_iter() {
            let expected = cube.abs() * base.amplitude[[i, j]];
            let norm = base.amplitude[[i, j]] / base.bicoherence[[i, j]] * cube.abs();
            assert!((amplitude - expected).abs() <= TOL * norm, "factor {factor} ({i},{j})");
            assert!((scaled.bicoherence[[i, j]] - base.bicoherence[[i, j]]).abs() <= TOL);
            let turn = if cube < 0.0 { std::f64::consts::PI } else { 0.0 };
            let d_phase = (scaled.biphase[[i, j]] - base.biphase[[i, j]] - turn).rem_euclid(std::f64::consts::TAU);
            let d_phase = d_phase.min(std::f64::consts::TAU - d_phase);
            assert!(d_phase <= 1e-9 / base.bicoherence[[i, j]], "factor {factor} ({i},{j}): biphase");
        }
    }
}

#[test]
fn mean_subtraction_ignores_an_offset() {
    let map = npy_map(fixtures(DIR).join("lognormal_32.npy"));
    let opts = BispectrumOptions { mean_subtract: true, ..BispectrumOptions::default() };
    let base = Bispectrum::compute(map.view(), &opts).unwrap();
    let shifted = Bispectrum::compute(map.mapv(|v| v + 3.0).view(), &opts).unwrap();
    for ((i, j), &amplitude) in shifted.amplitude.indexed_iter().filter(|((i, j), _)| *i > 1 && *j > 1) {
        let norm = base.amplitude[[i, j]] / base.bicoherence[[i, j]];
        assert!((amplitude - base.amplitude[[i, j]]).abs() <= 1e-12 * norm, "({i},{j})");
        assert!((shifted.bicoherence[[i, j]] - base.bicoherence[[i, j]]).abs() <= 1e-12, "({i},{j})");
    }
    // Without mean subtraction the surfaces differ (samples that hit F(0,0) weigh in).
    let plain = Bispectrum::compute(map.view(), &BispectrumOptions::default()).unwrap();
    let changes = plain.bicoherence.iter().zip(&base.bicoherence).map(|(a, b)| (a - b).abs());
    let largest_change = changes.fold(0.0, f64::max);
    println!("largest bicoherence change from mean subtraction: {largest_change}");
    assert!(largest_change > 0.1);
}

#[test]
fn nan_pixels_are_zero_filled_as_turbustat() {
    let map = npy_map(fixtures(DIR).join("nan_32.npy"));
    assert!(map.iter().any(|v| v.is_nan()));
    let opts = BispectrumOptions::default();
    let with_nan = Bispectrum::compute(map.view(), &opts).unwrap();
    let zeroed = Bispectrum::compute(map.mapv(|v| if v.is_nan() { 0.0 } else { v }).view(), &opts).unwrap();
    assert_eq!(with_nan, zeroed);
}

#[test]
fn deterministic_and_seeded() {
    let map = npy_map(fixtures(DIR).join("grf_32.npy"));
    let opts = BispectrumOptions::default();
    let first = Bispectrum::compute(map.view(), &opts).unwrap();
    assert_eq!(first, Bispectrum::compute(map.view(), &opts).unwrap());
    let other = Bispectrum::compute(map.view(), &BispectrumOptions { seed: 1001, ..opts }).unwrap();
    assert_ne!(first.bicoherence, other.bicoherence);
}

#[test]
fn clearly_non_square_maps_wrap_indices() {
    // TurbuStat raises IndexError for these shapes; we wrap the Fourier indices periodically.
    for (ny, nx) in [(24, 40), (40, 24), (4, 64)] {
        let map = Array2::from_shape_fn((ny, nx), |(y, x)| ((0.37 * y as f64).sin() + (0.21 * x as f64).cos()).exp());
        let b = Bispectrum::compute(map.view(), &BispectrumOptions::default()).unwrap();
        assert_eq!(b.bicoherence.dim(), (ny / 2, nx / 2));
        assert!(b.bicoherence.iter().all(|&v| (0.0..=1.0 + 1e-12).contains(&v)), "{ny}x{nx}");
        assert!(b.amplitude.iter().all(|v| v.is_finite()), "{ny}x{nx}");
    }
}

#[test]
fn profile_is_the_mean_bicoherence_per_unit_radius_bin() {
    let b = Bispectrum::compute(npy_map(fixtures(DIR).join("grf_29x31.npy")).view(), &BispectrumOptions::default())
        .unwrap();
    let (centres, values) = b.bicoherence_profile();
    // 14 × 15 grid: r_max = √(13² + 14²) = 19.1 → bins 1..=19.
    assert_eq!(centres, (1..=19).map(|c| c as f64).collect::<Vec<_>>());
    assert_eq!(values.len(), 19);
    assert!(values.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    for (bin, &value) in centres.iter().zip(&values) {
        let cells: Vec<f64> = b
            .bicoherence
            .indexed_iter()
            .filter(|((i, j), _)| *i > 0 && *j > 0 && ((*i * *i + *j * *j) as f64).sqrt().round() == *bin)
            .map(|(_, &v)| v)
            .collect();
        let mean = cells.iter().sum::<f64>() / cells.len() as f64;
        assert!((value - mean).abs() < 1e-14, "bin {bin}");
    }
    // The first bin holds only (1, 1).
    assert_eq!(values[0], b.bicoherence[[1, 1]]);
}

#[test]
fn serde_round_trip() {
    let b = Bispectrum::compute(npy_map(fixtures(DIR).join("grf_29x31.npy")).view(), &BispectrumOptions::default())
        .unwrap();
    let json = serde_json::to_string(&b).unwrap();
    let back: Bispectrum = serde_json::from_str(&json).unwrap();
    assert_eq!(back.amplitude.dim(), b.amplitude.dim());
    assert_eq!(back.k, b.k);
    for (x, y) in back.bicoherence.iter().zip(&b.bicoherence) {
        assert!((x - y).abs() <= 1e-15 * y.abs());
    }
    let text = r#"{"nsamples":100,"seed":1000,"mean_subtract":false}"#;
    let opts: BispectrumOptions = serde_json::from_str(text).unwrap();
    assert_eq!(opts, BispectrumOptions::default());
}

fn invalid(map: Array2<f64>, opts: BispectrumOptions) -> String {
    invalid_cause(Bispectrum::compute(map.view(), &opts))
}

#[test]
fn bad_input_is_refused() {
    let opts = BispectrumOptions::default();
    let ramp = |ny, nx| Array2::from_shape_fn((ny, nx), |(y, x)| (y * nx + x) as f64);
    assert!(invalid(Array2::from_elem((16, 16), 2.0), opts).contains("constant"));
    assert!(invalid(Array2::from_elem((16, 16), f64::NAN), opts).contains("no finite"));
    let mut constant_with_hole = Array2::from_elem((16, 16), 2.0);
    constant_with_hole[[3, 3]] = f64::NAN;
    assert!(invalid(constant_with_hole, opts).contains("constant"));
    let mut with_inf = ramp(16, 16);
    with_inf[[1, 2]] = f64::INFINITY;
    assert!(invalid(with_inf, opts).contains("infinite"));
    assert!(invalid(ramp(3, 16), opts).contains("at least 4×4"));
    assert!(invalid(ramp(16, 3), opts).contains("at least 4×4"));
    assert!(invalid(Array2::zeros((0, 0)), opts).contains("at least 4×4"));
    assert!(invalid(ramp(16, 16), BispectrumOptions { nsamples: 0, ..opts }).contains("nsamples"));
    assert!(invalid(ramp(16, 16), BispectrumOptions { seed: 1 << 32, ..opts }).contains("seed"));
    assert!(Bispectrum::compute(ramp(4, 4).view(), &opts).is_ok());
}

/// `cargo test --release --test battery_bispectrum -- --ignored --nocapture`
#[test]
#[ignore]
fn timing_256() {
    let mut rng = LegacyMt19937::new(3);
    let map = Array2::from_shape_fn((256, 256), |_| rng.next_f64());
    let start = std::time::Instant::now();
    let b = Bispectrum::compute(map.view(), &BispectrumOptions::default()).unwrap();
    println!("256x256, default options: {:.3} s (one thread)", start.elapsed().as_secs_f64());
    assert_eq!(b.bicoherence.dim(), (128, 128));
}
