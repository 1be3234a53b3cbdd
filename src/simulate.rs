//! Sample data: lognormal "column density" maps of turbulent clouds.
//!
//! A Gaussian random field δ with power spectrum P(k) ∝ k^-β (white noise shaped in Fourier
//! space, k in cycles per pixel, the k = 0 mode removed, then standardized to zero mean and unit
//! variance per map) is exponentiated: N = N̄ · exp(σ δ − σ²/2), so ln N has standard deviation
//! σ (the log-width) and N has mean N̄. Deterministic by seed (ChaCha8, one stream for the set).

use ndarray::{Array2, Array3};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rustfft::num_complex::Complex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::power_spectrum::{fft2, fftfreq};

/// Parameters of a set of simulated clouds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CloudSpec {
    /// Number of maps.
    pub count: usize,
    /// Map side in pixels.
    pub size: usize,
    /// Power-spectrum index β of the Gaussian field (P ∝ k^-β).
    pub beta: f64,
    /// Standard deviation σ of ln N.
    pub sigma_ln: f64,
    /// Mean column density N̄ in cm⁻².
    pub mean: f64,
    pub seed: u64,
}

impl Default for CloudSpec {
    fn default() -> Self {
        CloudSpec { count: 32, size: 64, beta: 3.0, sigma_ln: 1.0, mean: 1e21, seed: 1 }
    }
}

impl CloudSpec {
    fn validate(&self) -> Result<()> {
        if self.count == 0 || self.size < 4 {
            return Err(Error::Invalid("simulate needs at least 1 map of at least 4x4 pixels".into()));
        }
        if !(self.sigma_ln > 0.0 && self.sigma_ln.is_finite()) || !(self.mean > 0.0 && self.mean.is_finite()) {
            return Err(Error::Invalid("simulate needs a positive log-width and a positive mean".into()));
        }
        if !self.beta.is_finite() {
            return Err(Error::Invalid("simulate needs a finite spectral index".into()));
        }
        Ok(())
    }
}

/// A standardized Gaussian random field with P(k) ∝ k^-β.
pub fn gaussian_field(size: usize, beta: f64, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let n = size;
    let mut buf: Vec<Complex<f64>> = (0..n * n).map(|_| Complex::new(StandardNormal.sample(rng), 0.0)).collect();
    fft2(&mut buf, n, n, false);
    for r in 0..n {
        for c in 0..n {
            let k = (fftfreq(r, n).powi(2) + fftfreq(c, n).powi(2)).sqrt();
            let amp = if k == 0.0 { 0.0 } else { k.powf(-beta / 2.0) };
            buf[r * n + c] *= amp;
        }
    }
    fft2(&mut buf, n, n, true);
    let field = Array2::from_shape_fn((n, n), |(r, c)| buf[r * n + c].re);
    let mean = field.mean().expect("non-empty");
    let std = field.mapv(|v| (v - mean).powi(2)).mean().expect("non-empty").sqrt();
    field.mapv(|v| (v - mean) / std)
}

/// Simulates `spec.count` lognormal column-density maps (cm⁻²), shape (count, size, size).
pub fn lognormal_clouds(spec: &CloudSpec) -> Result<Array3<f32>> {
    spec.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut out = Array3::<f32>::zeros((spec.count, spec.size, spec.size));
    let s = spec.sigma_ln;
    for mut plane in out.outer_iter_mut() {
        let delta = gaussian_field(spec.size, spec.beta, &mut rng);
        plane.assign(&delta.mapv(|d| (spec.mean * (s * d - 0.5 * s * s).exp()) as f32));
    }
    Ok(out)
}

/// Simulates the clouds and writes them (format from the extension) with BUNIT `cm-2`, the
/// parameters as SIM* header cards and in the provenance.
pub fn write_clouds(spec: &CloudSpec, out: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    use crate::io::fits::{format_card, CardValue};
    crate::io::Format::from_extension(out)?;
    let maps = lognormal_clouds(spec)?;
    let mut provenance = crate::io::Provenance {
        tool: crate::io::TOOL.to_string(),
        command: "simulate".into(),
        sources: Vec::new(),
        units: Some("cm-2".into()),
        records: Default::default(),
    };
    provenance.records.insert(
        "simulation".into(),
        serde_json::json!({
            "model": "lognormal: N = mean * exp(sigma_ln * delta - sigma_ln^2 / 2), delta a standardized Gaussian \
                random field with P(k) ~ k^-beta",
            "spec": spec,
        }),
    );
    let cards = vec![
        format_card("OBJECT", CardValue::Str("simulated lognormal turbulent cloud".into()), ""),
        format_card("SIMBETA", CardValue::Float(spec.beta), "power-spectrum index of ln N field"),
        format_card("SIMSIGMA", CardValue::Float(spec.sigma_ln), "standard deviation of ln N"),
        format_card("SIMMEAN", CardValue::Float(spec.mean), "[cm-2] mean column density"),
        format_card("SIMSEED", CardValue::Int(spec.seed as i64), "random seed (ChaCha8)"),
    ];
    let stack = crate::io::OutputStack {
        data: maps.view().into_dyn(),
        mask: None,
        units: Some("cm-2".into()),
        provenance: &provenance,
        fits_cards: cards,
    };
    crate::io::write_stack(out, &stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_maps_other_seed_other_maps() {
        let spec = CloudSpec { count: 2, size: 32, ..CloudSpec::default() };
        let a = lognormal_clouds(&spec).unwrap();
        assert_eq!(a, lognormal_clouds(&spec).unwrap());
        assert_ne!(a, lognormal_clouds(&CloudSpec { seed: 2, ..spec }).unwrap());
    }

    #[test]
    fn log_width_and_mean_are_as_asked() {
        let spec = CloudSpec { count: 4, size: 64, sigma_ln: 0.8, mean: 1e21, beta: 2.5, seed: 7 };
        let maps = lognormal_clouds(&spec).unwrap();
        let logs: Vec<f64> = maps.iter().map(|&v| (v as f64).ln()).collect();
        let m = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!((sd - 0.8).abs() < 1e-3, "ln-width {sd}");
        assert!(maps.iter().all(|&v| v > 0.0));
    }

    #[test]
    fn the_field_has_the_requested_spectral_slope() {
        // Fit log P on log k of the mean 2-D power of 8 fields; slope should be -beta.
        let n = 64;
        let beta = 3.0;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut power = vec![0.0f64; n * n];
        for _ in 0..8 {
            let f = gaussian_field(n, beta, &mut rng);
            let mut buf: Vec<Complex<f64>> = f.iter().map(|&v| Complex::new(v, 0.0)).collect();
            fft2(&mut buf, n, n, false);
            for (p, b) in power.iter_mut().zip(&buf) {
                *p += b.norm_sqr();
            }
        }
        let (mut sx, mut sy, mut sxx, mut sxy, mut cnt) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for r in 0..n {
            for c in 0..n {
                let k = (fftfreq(r, n).powi(2) + fftfreq(c, n).powi(2)).sqrt();
                if k > 0.0 && k < 0.5 {
                    let (x, y) = (k.log10(), power[r * n + c].log10());
                    sx += x;
                    sy += y;
                    sxx += x * x;
                    sxy += x * y;
                    cnt += 1.0;
                }
            }
        }
        let slope = (cnt * sxy - sx * sy) / (cnt * sxx - sx * sx);
        assert!((slope + beta).abs() < 0.1, "slope {slope}");
    }
}
