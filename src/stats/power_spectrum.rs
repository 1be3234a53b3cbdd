//! The azimuthally averaged power spectrum with TurbuStat's conventions (TurbuStat 1.3
//! `PowerSpectrum`; formulas in tests/fixtures/stats/TURBUSTAT_NOTES.md, parity in
//! tests/stats_parity.rs).
//!
//! * 2-D power |FFT2(map)|², unnormalized; NaN pixels set to 0; optional radial apodization
//!   (Tukey with α, Hanning) and Gaussian beam correction (analytic, unlike TurbuStat's: see
//!   [`PowerSpectrumOptions::beam_fwhm`]).
//! * Frequencies in cycles per pixel, f = √(f_y² + f_x²) per axis; k = 0 excluded.
//! * `round(√(⌊Ny/2⌋² + ⌊Nx/2⌋²)) + 1` linear bins from 1/min(shape) to 0.5 (or log-spaced);
//!   bin centres are the edges' midpoints; per bin the mean power and the sample standard
//!   deviation of the pixel powers (×t₀.₉₂₅(n−1)/√n where that exceeds 1); bins with n ≤ 1 are NaN.
//! * Fit: unweighted least squares of log10 P on log10 f over low_cut < f ≤ high_cut (defaults
//!   2/max(shape) and the last bin centre); slope error HC3-robust, as statsmodels computes it.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use rustfft::{num_complex::Complex, FftPlanner};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::error::{Error, Result};
use crate::stats::battery::{BatteryOptions, CurveAxes, MapStatistic, Statistic};

/// Radial apodization windows (TurbuStat's photutils-style split cosine bells).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Apodization {
    Tukey { alpha: f64 },
    Hanning,
}

impl std::str::FromStr for Apodization {
    type Err = Error;
    /// `tukey:ALPHA` or `hanning`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "hanning" {
            return Ok(Apodization::Hanning);
        }
        match s.strip_prefix("tukey:").map(str::parse::<f64>) {
            Some(Ok(alpha)) if (0.0..=1.0).contains(&alpha) => Ok(Apodization::Tukey { alpha }),
            _ => Err(Error::Invalid(format!("apodization '{s}': use tukey:ALPHA (0 <= ALPHA <= 1) or hanning"))),
        }
    }
}

/// `tukey:ALPHA` or `hanning`, as [`FromStr`](std::str::FromStr) reads it.
impl std::fmt::Display for Apodization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Apodization::Tukey { alpha } => write!(f, "tukey:{alpha}"),
            Apodization::Hanning => f.write_str("hanning"),
        }
    }
}

/// Options of [`PowerSpectrum::compute`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerSpectrumOptions {
    pub apodize: Option<Apodization>,
    /// Gaussian beam FWHM in pixels: divide each pixel of the 2-D power by the analytic beam power
    /// exp(−4π²σ²f²), σ = FWHM/√(8 ln 2). TurbuStat's `beam_correct=True` divides instead by |FFT|²
    /// of the beam sampled on the map grid (radio_beam's kernel), which aliases near f = ½. For a
    /// 3-pixel FWHM (tests/stats_claims.rs) the two agree to 1e-5 for f ≤ 0.31 and to 1 % for
    /// f ≤ 0.43 pixel⁻¹; in the last bin TurbuStat's power is 38.5 % higher on a 64² map (an even
    /// side samples the kernel half a pixel off centre, so its power falls to 0 on the Nyquist row
    /// and column, pixels TurbuStat then drops) and 22.4 % lower on a 63² map; fitted slopes
    /// −2.949 against TurbuStat's −2.918, and −2.740 against −2.761.
    pub beam_fwhm: Option<f64>,
    /// (low, high) in pixel⁻¹: fit over low < f ≤ high.
    pub fit_range: Option<(f64, f64)>,
    /// Log-spaced bins instead of TurbuStat's default linear ones.
    pub log_bins: bool,
    /// TurbuStat's `binsize` (default 1): the bin count is round(r_max / binsize) + 1.
    pub binsize: Option<f64>,
}

/// A radial power spectrum and its power-law fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSpectrum {
    /// Bin centres (pixel⁻¹).
    pub freqs: Vec<f64>,
    pub power: Vec<f64>,
    pub power_std: Vec<f64>,
    pub counts: Vec<usize>,
    pub edges: Vec<f64>,
    /// P ∝ f^slope.
    pub slope: f64,
    pub slope_err: f64,
    pub intercept: f64,
    pub low_cut: f64,
    pub high_cut: f64,
    /// Bins that entered the fit.
    pub fit_used: Vec<bool>,
}

/// numpy's `fftfreq(n)[i]`, with its arithmetic (signed index × (1/n)).
pub fn fftfreq(i: usize, n: usize) -> f64 {
    let k = if i < n.div_ceil(2) { i as f64 } else { i as f64 - n as f64 };
    k * (1.0 / n as f64)
}

/// Radial split-cosine-bell window centred at ((Ny−1)/2, (Nx−1)/2).
fn window(ny: usize, nx: usize, a: Apodization) -> Vec<f64> {
    let (alpha, beta) = match a {
        Apodization::Tukey { alpha } => (alpha, 1.0 - alpha),
        Apodization::Hanning => (1.0, 0.0),
    };
    let npts = (ny.min(nx) as f64 - 1.0) / 2.0;
    let r_in = beta * npts;
    let r_tap = (alpha * npts).floor();
    let (cy, cx) = ((ny as f64 - 1.0) / 2.0, (nx as f64 - 1.0) / 2.0);
    let mut w = Vec::with_capacity(ny * nx);
    for y in 0..ny {
        for x in 0..nx {
            let d = ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2)).sqrt();
            let mut v =
                if r_tap == 0.0 { 1.0 } else { 0.5 * (1.0 + (std::f64::consts::PI * (d - r_in) / r_tap).cos()) };
            if d < r_in {
                v = 1.0;
            }
            if d > r_in + r_tap {
                v = 0.0;
            }
            w.push(v);
        }
    }
    w
}

/// In-place 2-D FFT of a row-major (ny × nx) complex array (unnormalized both ways, as
/// rustfft).
pub fn fft2(buf: &mut [Complex<f64>], ny: usize, nx: usize, inverse: bool) {
    let mut planner = FftPlanner::new();
    let (row, col) = if inverse {
        (planner.plan_fft_inverse(nx), planner.plan_fft_inverse(ny))
    } else {
        (planner.plan_fft_forward(nx), planner.plan_fft_forward(ny))
    };
    for r in buf.chunks_mut(nx) {
        row.process(r);
    }
    let mut tmp = vec![Complex::new(0.0, 0.0); ny];
    for c in 0..nx {
        for r in 0..ny {
            tmp[r] = buf[r * nx + c];
        }
        col.process(&mut tmp);
        for r in 0..ny {
            buf[r * nx + c] = tmp[r];
        }
    }
}

fn fft2_power(data: &[f64], ny: usize, nx: usize) -> Vec<f64> {
    let mut buf: Vec<Complex<f64>> = data.iter().map(|&v| Complex::new(v, 0.0)).collect();
    fft2(&mut buf, ny, nx, false);
    buf.iter().map(|z| z.norm_sqr()).collect()
}

/// numpy's `linspace(a, b, n + 1)` with the last value set exactly.
pub(crate) fn linspace(a: f64, b: f64, intervals: usize) -> Vec<f64> {
    let step = (b - a) / intervals as f64;
    let mut v: Vec<f64> = (0..=intervals).map(|i| i as f64 * step + a).collect();
    v[intervals] = b;
    v
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let s = 10f64.powi(decimals);
    (x * s).round() / s
}

impl PowerSpectrum {
    /// The radial spectrum of one map (rows × columns), fitted with a power law.
    pub fn compute(map: ArrayView2<f64>, opts: &PowerSpectrumOptions) -> Result<PowerSpectrum> {
        let (ny, nx) = map.dim();
        if ny < 4 || nx < 4 {
            return Err(Error::Invalid(format!("power spectrum of a {ny}x{nx} map: need at least 4x4 pixels")));
        }
        let mut data: Vec<f64> = map.iter().map(|&v| if v.is_finite() { v } else { 0.0 }).collect();
        if let Some(a) = opts.apodize {
            for (d, w) in data.iter_mut().zip(window(ny, nx, a)) {
                *d *= w;
            }
        }
        let mut p2 = fft2_power(&data, ny, nx);
        let freq = |i: usize, j: usize| (fftfreq(i, ny).powi(2) + fftfreq(j, nx).powi(2)).sqrt();
        if let Some(fwhm) = opts.beam_fwhm {
            let sigma = fwhm / (8.0 * std::f64::consts::LN_2).sqrt();
            for i in 0..ny {
                for j in 0..nx {
                    let f = freq(i, j);
                    let beam = (-4.0 * std::f64::consts::PI.powi(2) * sigma * sigma * f * f).exp();
                    p2[i * nx + j] = if beam > 0.0 { p2[i * nx + j] / beam } else { f64::NAN };
                }
            }
        }
        let (cy, cx) = ((ny / 2) as f64, (nx / 2) as f64);
        let binsize = opts.binsize.unwrap_or(1.0);
        if !(binsize > 0.0) {
            return Err(Error::Invalid(format!("binsize must be positive, got {binsize}")));
        }
        let nbins = (((cy * cy + cx * cx).sqrt() / binsize).round_ties_even() as usize) + 1;
        let min_bin = 1.0 / ny.min(nx) as f64;
        let edges = if opts.log_bins {
            linspace(min_bin.log10(), 0.5f64.log10(), nbins).into_iter().map(|e| 10f64.powf(e)).collect()
        } else {
            linspace(min_bin, 0.5, nbins)
        };
        let min_width = edges.windows(2).map(|w| w[1] - w[0]).fold(f64::INFINITY, f64::min);
        let decimals = (-min_width.log10()).floor() as i32 + 6;
        let last = edges[nbins];
        let mut groups: Vec<Vec<f64>> = vec![Vec::new(); nbins];
        for i in 0..ny {
            for j in 0..nx {
                let f = freq(i, j);
                let p = p2[i * nx + j];
                if f == 0.0 || f < edges[0] || !p.is_finite() {
                    continue;
                }
                let b = if f >= last {
                    if round_to(f, decimals) == round_to(last, decimals) {
                        nbins - 1
                    } else {
                        continue;
                    }
                } else {
                    edges.partition_point(|&e| e <= f) - 1
                };
                groups[b].push(p);
            }
        }
        let freqs: Vec<f64> = edges.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        let counts: Vec<usize> = groups.iter().map(Vec::len).collect();
        let mut power = Vec::with_capacity(nbins);
        let mut power_std = Vec::with_capacity(nbins);
        for g in &groups {
            let n = g.len();
            if n <= 1 {
                power.push(f64::NAN);
                power_std.push(f64::NAN);
                continue;
            }
            let mean = g.iter().sum::<f64>() / n as f64;
            let sd = (g.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
            let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).map(|t| t.inverse_cdf(0.925)).unwrap_or(1.0);
            let a = t / (n as f64).sqrt();
            power.push(mean);
            power_std.push(if a > 1.0 { sd * a } else { sd });
        }
        let (low_cut, high_cut) = opts.fit_range.unwrap_or((1.0 / (0.5 * ny.max(nx) as f64), freqs[nbins - 1]));
        let fit_used: Vec<bool> =
            freqs.iter().zip(&power).map(|(&f, &p)| f > low_cut && f <= high_cut && p.is_finite() && p > 0.0).collect();
        let xs: Vec<f64> = freqs.iter().zip(&fit_used).filter(|(_, &u)| u).map(|(f, _)| f.log10()).collect();
        let ys: Vec<f64> = power.iter().zip(&fit_used).filter(|(_, &u)| u).map(|(p, _)| p.log10()).collect();
        if xs.len() < 3 {
            return Err(Error::Invalid(format!("only {} bins inside the fit range {low_cut}..{high_cut}", xs.len())));
        }
        let (intercept, slope, slope_err) = ols_hc3(&xs, &ys);
        Ok(PowerSpectrum {
            freqs,
            power,
            power_std,
            counts,
            edges,
            slope,
            slope_err,
            intercept,
            low_cut,
            high_cut,
            fit_used,
        })
    }

    /// The number of bins.
    pub fn nbins(&self) -> usize {
        self.freqs.len()
    }
}

/// Least-squares line y = a + b x with the HC3-robust standard error of b.
pub fn ols_hc3(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let n = x.len() as f64;
    let (sx, sy) = (x.iter().sum::<f64>(), y.iter().sum::<f64>());
    let sxx = x.iter().map(|v| v * v).sum::<f64>();
    let sxy = x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let det = n * sxx - sx * sx;
    // (XᵀX)⁻¹ for X = [1, x].
    let (i00, i01, i11) = (sxx / det, -sx / det, n / det);
    let b = (n * sxy - sx * sy) / det;
    let a = (sy - b * sx) / n;
    // Sandwich: (XᵀX)⁻¹ Xᵀ diag(e²/(1−h)²) X (XᵀX)⁻¹, slope entry.
    let mut m = [[0.0f64; 2]; 2];
    for (&xi, &yi) in x.iter().zip(y) {
        let e = yi - a - b * xi;
        let h = i00 + 2.0 * i01 * xi + i11 * xi * xi;
        let w = e * e / ((1.0 - h) * (1.0 - h));
        m[0][0] += w;
        m[0][1] += w * xi;
        m[1][1] += w * xi * xi;
    }
    m[1][0] = m[0][1];
    let row = [i01, i11];
    let var = (0..2).map(|r| (0..2).map(|c| row[r] * m[r][c] * row[c]).sum::<f64>()).sum::<f64>();
    (a, b, var.sqrt())
}

/// Fails unless `lo`–`hi` (pixel⁻¹) can bound a power-law fit: 0 <= LOW < HIGH.
pub fn check_fit_range(lo: f64, hi: f64) -> Result<()> {
    if !(lo >= 0.0 && lo < hi) {
        return Err(Error::Invalid(format!("[{lo}, {hi}]: need 0 <= LOW < HIGH")));
    }
    Ok(())
}

/// Power spectra of a set of maps of one shape: per-map spectra, the ensemble mean ± standard
/// deviation of log10 P per bin, and the fit of the ensemble's mean spectrum.
#[derive(Debug, Clone, Serialize)]
pub struct EnsembleSpectrum {
    pub freqs: Vec<f64>,
    pub mean_log_power: Vec<f64>,
    pub std_log_power: Vec<f64>,
    /// Spectrum of the ensemble: mean linear power per bin, fitted like a single map's.
    pub mean: PowerSpectrum,
    pub slopes: Vec<f64>,
}

impl EnsembleSpectrum {
    /// The binned spectrum as CSV with columns `k,power,power_std,count` (k in pixel⁻¹; the
    /// ensemble's mean power per bin), numbers written to round-trip.
    pub fn csv(&self) -> String {
        let ps = &self.mean;
        let n = crate::io::number::<f64>;
        let mut csv = String::from("k,power,power_std,count\n");
        for i in 0..ps.nbins() {
            csv.push_str(&format!("{},{},{},{}\n", n(ps.freqs[i]), n(ps.power[i]), n(ps.power_std[i]), ps.counts[i]));
        }
        csv
    }

    /// The fit as JSON: slope, its error, the fitted range, bins, intercept, the per-map slopes
    /// and the conventions.
    pub fn summary(&self) -> serde_json::Value {
        let ps = &self.mean;
        serde_json::json!({
            "slope": ps.slope, "slope_err": ps.slope_err, "low_cut": ps.low_cut, "high_cut": ps.high_cut,
            "nbins": ps.nbins(), "intercept": ps.intercept, "maps": self.slopes.len(), "per_map_slopes": self.slopes,
            "conventions": "TurbuStat 1.3 PowerSpectrum: k in pixel^-1, linear bins, HC3 slope error; several maps: \
                mean power per bin",
        })
    }

    /// Spectra of every map (all of one shape).
    pub fn compute(maps: &[ndarray::Array2<f64>], opts: &PowerSpectrumOptions) -> Result<EnsembleSpectrum> {
        let first = maps.first().ok_or_else(|| Error::Invalid("no maps".into()))?;
        if maps.iter().any(|m| m.dim() != first.dim()) {
            return Err(Error::Invalid("ensemble power spectra need maps of one shape".into()));
        }
        // One map per task; collecting keeps the maps' order, so the result does not depend on the threads.
        let spectra: Vec<PowerSpectrum> =
            maps.par_iter().map(|m| PowerSpectrum::compute(m.view(), opts)).collect::<Result<_>>()?;
        let nb = spectra[0].nbins();
        let n = spectra.len() as f64;
        let mut mean_log_power = vec![0.0; nb];
        let mut std_log_power = vec![0.0; nb];
        let mut mean_power = vec![0.0; nb];
        for b in 0..nb {
            let logs: Vec<f64> = spectra.iter().map(|s| s.power[b].log10()).collect();
            let m = logs.iter().sum::<f64>() / n;
            mean_log_power[b] = m;
            std_log_power[b] = (logs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
            mean_power[b] = spectra.iter().map(|s| s.power[b]).sum::<f64>() / n;
        }
        let base = &spectra[0];
        let fit_used: Vec<bool> = base
            .freqs
            .iter()
            .zip(&mean_power)
            .map(|(&f, &p)| f > base.low_cut && f <= base.high_cut && p.is_finite() && p > 0.0)
            .collect();
        let xs: Vec<f64> = base.freqs.iter().zip(&fit_used).filter(|(_, &u)| u).map(|(f, _)| f.log10()).collect();
        let ys: Vec<f64> = mean_power.iter().zip(&fit_used).filter(|(_, &u)| u).map(|(p, _)| p.log10()).collect();
        let (intercept, slope, slope_err) = ols_hc3(&xs, &ys);
        let counts: Vec<usize> = base.counts.iter().map(|c| c * spectra.len()).collect();
        let power_std: Vec<f64> = (0..nb)
            .map(|b| {
                let m = mean_power[b];
                (spectra.iter().map(|s| (s.power[b] - m).powi(2)).sum::<f64>() / n).sqrt()
            })
            .collect();
        let mean = PowerSpectrum {
            freqs: base.freqs.clone(),
            power: mean_power,
            power_std,
            counts,
            edges: base.edges.clone(),
            slope,
            slope_err,
            intercept,
            low_cut: base.low_cut,
            high_cut: base.high_cut,
            fit_used,
        };
        Ok(EnsembleSpectrum {
            freqs: base.freqs.clone(),
            mean_log_power,
            std_log_power,
            mean,
            slopes: spectra.iter().map(|s| s.slope).collect(),
        })
    }
}

/// TurbuStat's power-spectrum distance: the t-statistic |s₁ − s₂| / √(σ₁² + σ₂²) of two slopes.
pub fn slope_distance(a: &PowerSpectrum, b: &PowerSpectrum) -> f64 {
    (a.slope - b.slope).abs() / (a.slope_err.powi(2) + b.slope_err.powi(2)).sqrt()
}

/// The power spectrum as a battery statistic: log10 P(k) per bin of more than one frequency.
pub struct PowerSpectrumCurves {
    options: PowerSpectrumOptions,
}

impl MapStatistic for PowerSpectrumCurves {
    fn prepare(options: &BatteryOptions, _shape: (usize, usize), _real: &[Array2<f64>]) -> Result<Self> {
        Ok(PowerSpectrumCurves { options: options.spectrum })
    }

    fn statistic(&self) -> Statistic {
        Statistic::PowerSpectrum
    }

    fn curves(&self, map: &Array2<f64>) -> Result<(Vec<CurveAxes>, Vec<f64>)> {
        let ps = PowerSpectrum::compute(map.view(), &self.options)?;
        let keep: Vec<usize> = (0..ps.freqs.len()).filter(|&i| ps.counts[i] > 1 && ps.freqs[i] > 0.0).collect();
        let x = keep.iter().map(|&i| ps.freqs[i]).collect();
        let v = keep.iter().map(|&i| ps.power[i].log10()).collect();
        Ok((vec![CurveAxes::new("log10_power", x, "k", "k [pixel⁻¹]", "log10 P(k)", true)], v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_spectra_do_not_depend_on_the_threads() {
        let maps: Vec<ndarray::Array2<f64>> = (0..7)
            .map(|k| {
                ndarray::Array2::from_shape_fn((24, 24), |(i, j)| {
                    ((i * 3 + j * (k + 1)) as f64 * 0.37).sin() + 0.01 * k as f64
                })
            })
            .collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| EnsembleSpectrum::compute(&maps, &PowerSpectrumOptions::default()).unwrap())
        };
        let (one, three) = (run(1), run(3));
        assert_eq!(one.slopes, three.slopes);
        assert_eq!(one.mean.power, three.mean.power);
        assert_eq!(one.mean_log_power, three.mean_log_power);
    }
}
