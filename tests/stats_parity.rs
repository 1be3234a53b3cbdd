//! Parity with TurbuStat 1.3's `PowerSpectrum` on the fixtures written by
//! tools/make_turbustat_fixtures.py: profile to 1e-6 relative (the issue asks for ~1 %), slope to
//! 1e-6 (the issue asks for ~0.02).

mod common;

use common::{fixtures, json, manifest, npy_map, num_or_nan, usize_of};
use expanse::stats::{Apodization, PowerSpectrum, PowerSpectrumOptions};
use ndarray::Array2;

/// The fixtures' folder in tests/fixtures.
const DIR: &str = "stats";

#[test]
fn power_spectra_match_turbustat() {
    let manifest = manifest(&fixtures(DIR));
    let mut checked = 0;
    for case in manifest["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let c = json(fixtures(DIR).join(case["json"].as_str().unwrap()));
        let map = npy_map(fixtures(DIR).join(c["map"].as_str().unwrap()));
        let o = &c["options"];
        let apodize = match o["apodize_kernel"].as_str() {
            Some("tukey") => Some(Apodization::Tukey { alpha: num_or_nan(&o["alpha"]) }),
            Some("hanning") => Some(Apodization::Hanning),
            Some(other) => panic!("{name}: kernel {other}"),
            None => None,
        };
        let fit_range = match (o["low_cut"].as_f64(), o["high_cut"].as_f64()) {
            (Some(l), Some(h)) => Some((l, h)),
            _ => None,
        };
        let opts = PowerSpectrumOptions {
            apodize,
            beam_fwhm: None,
            fit_range,
            log_bins: o["logspacing"].as_bool().unwrap_or(false),
            binsize: o["binsize"].as_f64(),
        };
        let ps = PowerSpectrum::compute(map.view(), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = &c["profile"];
        assert_eq!(ps.nbins(), usize_of(&p["nbins"]), "{name}: nbins");
        let want_counts: Vec<usize> = p["counts"].as_array().unwrap().iter().map(usize_of).collect();
        assert_eq!(ps.counts, want_counts, "{name}: counts");
        let peak = p["ps1D"].as_array().unwrap().iter().map(num_or_nan).filter(|v| v.is_finite()).fold(0.0, f64::max);
        for (i, ((f, pw), sd)) in ps.freqs.iter().zip(&ps.power).zip(&ps.power_std).enumerate() {
            assert!((f - num_or_nan(&p["freqs"][i])).abs() < 1e-12, "{name}: freq {i}");
            let (wp, ws) = (num_or_nan(&p["ps1D"][i]), num_or_nan(&p["ps1D_stddev"][i]));
            if wp.is_nan() {
                assert!(pw.is_nan(), "{name}: bin {i} should be NaN");
                continue;
            }
            if wp < 1e-12 * peak {
                continue; // FFT round-off (exact sinusoid)
            }
            assert!((pw - wp).abs() <= 1e-6 * wp, "{name}: power bin {i}: {pw} vs {wp}");
            // Relative to the bin power: pairs of ±f pixels hold equal power, so a zero spread in
            // TurbuStat (Hermitian symmetry) is FFT round-off here.
            assert!((sd - ws).abs() <= 1e-6 * ws.abs().max(wp), "{name}: std bin {i}: {sd} vs {ws}");
        }
        let fit = &c["fit"];
        if fit["slope_meaningful"].as_bool().unwrap_or(true) {
            assert!(
                (ps.slope - num_or_nan(&fit["slope"])).abs() < 1e-6,
                "{name}: slope {} vs {}",
                ps.slope,
                num_or_nan(&fit["slope"])
            );
            assert!(
                (ps.slope_err - num_or_nan(&fit["slope_err"])).abs() < 1e-6,
                "{name}: slope_err {} vs {}",
                ps.slope_err,
                num_or_nan(&fit["slope_err"])
            );
            assert!(
                (ps.low_cut - num_or_nan(&fit["low_cut"])).abs() < 1e-12
                    && (ps.high_cut - num_or_nan(&fit["high_cut"])).abs() < 1e-12,
                "{name}: cuts"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} cases checked");
}

#[test]
fn a_sinusoid_puts_its_power_in_its_bin_and_a_known_slope_is_recovered() {
    let n = 64;
    let map = Array2::from_shape_fn((n, n), |(y, x)| {
        (2.0 * std::f64::consts::PI * (5.0 * x as f64 + 3.0 * y as f64) / n as f64).sin()
    });
    let ps = PowerSpectrum::compute(map.view(), &PowerSpectrumOptions::default()).unwrap();
    let f0 = (34f64).sqrt() / n as f64;
    let best = ps
        .power
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_finite())
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
        .unwrap()
        .0;
    assert!(ps.edges[best] <= f0 && f0 < ps.edges[best + 1]);
    // A Gaussian random field with P ∝ k^-3 (the sample-data generator) has slope −3 within its error.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(8);
    let field = expanse::simulate::gaussian_field(128, 3.0, &mut rng);
    let ps = PowerSpectrum::compute(field.view(), &PowerSpectrumOptions::default()).unwrap();
    assert!((ps.slope + 3.0).abs() < 3.0 * ps.slope_err + 0.05, "slope {} ± {}", ps.slope, ps.slope_err);
}
