//! 2-D wavelet scattering transform with kymatio's conventions (kymatio 0.3.0, `Scattering2D` with
//! `max_order = 2`), and its isotropic reduction.
//!
//! Conventions, all as in kymatio's `scattering2d/filter_bank.py`, `backend/numpy_backend.py` and
//! `core/scattering2d.py`:
//!
//! * Padded shape `P = (⌊(n + 2^J) / 2^J⌋ + 1)·2^J` per axis; the map is padded by reflection without
//!   repeating the edge (NumPy `mode='reflect'`), `⌊(P − n)/2⌋` before and the rest after.
//! * Filters are built in space on the padded grid as a sum of 5×5 periodic copies (offsets −2..2 times
//!   the grid size) of a Gabor function `exp(−uᵀCu + i ξ(u₀ cos θ + u₁ sin θ)) / (2·3.1415·σ²/s)` with
//!   `C = R(θ) diag(1, s²) R(θ)ᵀ / (2σ²)` (u₀ the row index; 3.1415 is kymatio's constant), then
//!   Fourier-transformed; only the real part of the transform is kept.
//!   Wavelet (j, t): Morlet `gabor(ξ) − K·gabor(0)` with `K = Σ gabor(ξ) / Σ gabor(0)`, σ = 0.8·2^j,
//!   θ = (⌊L − L/2 − 1⌋ − t)·π/L, ξ = (3π/4)/2^j, slant s = 4/L.
//!   Low-pass φ: Gabor with σ = 0.8·2^(J−1), θ = 0, ξ = 0, s = 1.
//!   At resolution r a Fourier filter is cropped to `P/2^r` by keeping its `P/2^(r+1)` lowest positive and
//!   negative frequencies per axis (kymatio's masked periodization, which leaves exactly one term).
//! * Subsampling by k in space is done in Fourier by averaging the k×k aliases; inverse FFTs are
//!   normalised by 1/size. The modulus is |z|.
//! * Paths and output order: S0 = x⋆φ; then for every wavelet n1 = j1·L + t1 (j1 major),
//!   S1 = |x⋆ψ_n1|⋆φ; all first-order channels come before all second-order ones, which are ordered by
//!   n1 and then n2 with j2 > j1: S2 = ||x⋆ψ_n1|⋆ψ_n2|⋆φ. Every channel is subsampled by 2^J and loses
//!   one row/column on each side (kymatio's `unpad`), so the output is `⌊ny/2^J⌋ × ⌊nx/2^J⌋`.
//! * Everything is computed in f64. Stock kymatio builds its spatial filters in complex64/float32 (its
//!   FFTs follow the input's dtype), so it agrees with this port to ~1e-6 of each channel's maximum;
//!   kymatio's code run with the filter dtypes promoted to float64 agrees to ~1e-14.
//!
//! Isotropic coefficients ([`ScatteringCoefficients`]): spatial means of each channel, averaged over
//! the angle(s): `s0`, `s1(j1)`, `s2(j1, j2)`. The reduced vector is `log2 s1(j)` for j = 0..J, then
//! `log2(s2(j1, j2) / s1(j1))`, which removes the amplitude of the first-order field from the
//! second order (the usual "reduced scattering" normalisation, Allys et al. 2019).
//!
//! Input rules: the map must be complete (NaN or infinite pixels are refused; fill or crop them first)
//! and `2^J ≤ min(ny, nx)` (kymatio's rule). A constant map has a valid transform (all first and
//! second order channels are zero up to rounding), but `coefficients` refuses it because the reduced
//! logarithms are undefined.
//!
//! Parity: tests/battery_scattering.rs compares `transform` element by element, and the isotropic
//! reductions, with fixtures written by tools/make_scattering_fixtures.py from kymatio 0.3.0.

use std::f64::consts::PI;

use ndarray::{Array2, Array3, ArrayView2};
use rustfft::{num_complex::Complex, FftPlanner};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::battery::{default_scattering_j, filled, BatteryOptions, CurveAxes, MapStatistic, Statistic};
use crate::stats::fft::Fft2d;

/// Contributions exp(−q) of the Gaussian envelope with q above this are skipped (e^−60 ≈ 1e−26,
/// far below f64 resolution of the filter's Fourier transform).
const GAUSSIAN_CUTOFF: f64 = 60.0;

/// kymatio's Gabor normalisation writes π as 3.1415 (`2 * 3.1415 * sigma * sigma / slant`); kept for
/// parity (every filter is π/3.1415 ≈ 1 + 2.9e-5 times its exact-π value).
#[allow(clippy::approx_constant)]
const KYMATIO_PI: f64 = 3.1415;

/// One scattering channel: the wavelet scales and angle indices along its path (empty for S0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScatteringPath {
    pub scales: Vec<usize>,
    pub angles: Vec<usize>,
}

/// A filter bank for one map shape, built once and reused for every map of that shape.
pub struct Scattering2d {
    j: usize,
    l: usize,
    ny: usize,
    nx: usize,
    padded_ny: usize,
    padded_nx: usize,
    pad_top: usize,
    pad_left: usize,
    /// `wavelets[j·L + t][r]`: real Fourier filter of wavelet (j, t) at resolution r, for the
    /// resolutions the transform uses (r = 0 and r < j).
    wavelets: Vec<Vec<Vec<f64>>>,
    /// `lowpass[r]`: real Fourier low-pass filter at resolution r = 0..J.
    lowpass: Vec<Vec<f64>>,
    /// `ffts[r]`: 2-D FFT on the padded grid subsampled by 2^r, r = 0..=J.
    ffts: Vec<Fft2d>,
}

impl std::fmt::Debug for Scattering2d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scattering2d")
            .field("j", &self.j)
            .field("l", &self.l)
            .field("shape", &(self.ny, self.nx))
            .field("padded_shape", &(self.padded_ny, self.padded_nx))
            .finish()
    }
}

impl Scattering2d {
    /// Builds the filters for `ny × nx` maps with J scales and L angles. Refuses J = 0, L = 0 and maps
    /// with `2^J > min(ny, nx)` (kymatio's rule).
    pub fn new(ny: usize, nx: usize, j: usize, l: usize) -> Result<Scattering2d> {
        if j == 0 {
            return Err(Error::Invalid("scattering needs J ≥ 1 scales (got J = 0)".into()));
        }
        if l == 0 {
            return Err(Error::Invalid("scattering needs L ≥ 1 angles (got L = 0)".into()));
        }
        let smallest = ny.min(nx);
        let scale = u32::try_from(j).ok().and_then(|shift| 1usize.checked_shl(shift));
        if scale.is_none_or(|s| s > smallest) {
            let largest_j = if smallest == 0 { 0 } else { smallest.ilog2() };
            return Err(Error::Invalid(format!(
                "map of {ny}×{nx} pixels is too small for J = {j}: the scattering needs 2^J ≤ min(ny, nx) \
                 (kymatio's rule); use J ≤ {largest_j}"
            )));
        }
        let scale = 1usize << j;
        let padded = |n: usize| ((n + scale) / scale + 1) * scale;
        let (padded_ny, padded_nx) = (padded(ny), padded(nx));
        let mut planner = FftPlanner::new();
        let ffts: Vec<Fft2d> = (0..=j).map(|r| Fft2d::new(&mut planner, padded_ny >> r, padded_nx >> r)).collect();

        let slant = 4.0 / l as f64;
        let first_angle = (l as f64 - l as f64 / 2.0 - 1.0).trunc();
        let mut wavelets = Vec::with_capacity(j * l);
        for scale_index in 0..j {
            let sigma = 0.8 * 2f64.powi(scale_index as i32);
            let xi = 3.0 / 4.0 * PI / 2f64.powi(scale_index as i32);
            for angle_index in 0..l {
                let theta = (first_angle - angle_index as f64) * PI / l as f64;
                let spatial = morlet(padded_ny, padded_nx, sigma, theta, xi, slant);
                let fourier = real_fourier(&ffts[0], spatial);
                let levels = (0..scale_index.max(1)).map(|r| crop_fourier(&fourier, padded_nx, padded_ny, r)).collect();
                wavelets.push(levels);
            }
        }
        let sigma_phi = 0.8 * 2f64.powi(j as i32 - 1);
        let phi_spatial = gabor(padded_ny, padded_nx, sigma_phi, 0.0, 0.0, 1.0).0;
        let phi = real_fourier(&ffts[0], phi_spatial);
        let lowpass = (0..j).map(|r| crop_fourier(&phi, padded_nx, padded_ny, r)).collect();

        Ok(Scattering2d {
            j,
            l,
            ny,
            nx,
            padded_ny,
            padded_nx,
            pad_top: (padded_ny - ny) / 2,
            pad_left: (padded_nx - nx) / 2,
            wavelets,
            lowpass,
            ffts,
        })
    }

    /// Number of scales J.
    pub fn j(&self) -> usize {
        self.j
    }

    /// Number of angles L.
    pub fn l(&self) -> usize {
        self.l
    }

    /// Map shape (ny, nx) this bank was built for.
    pub fn shape(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    /// Padded shape on which the convolutions are done.
    pub fn padded_shape(&self) -> (usize, usize) {
        (self.padded_ny, self.padded_nx)
    }

    /// Shape of `transform`'s output: (1 + J·L + L²·J(J−1)/2, ⌊ny/2^J⌋, ⌊nx/2^J⌋).
    pub fn output_shape(&self) -> (usize, usize, usize) {
        let (j, l) = (self.j, self.l);
        (1 + j * l + l * l * j * (j - 1) / 2, self.ny >> j, self.nx >> j)
    }

    /// The path (scales, angle indices) of every output channel, in output order.
    pub fn paths(&self) -> Vec<ScatteringPath> {
        let mut paths = vec![ScatteringPath { scales: vec![], angles: vec![] }];
        for j1 in 0..self.j {
            for t1 in 0..self.l {
                paths.push(ScatteringPath { scales: vec![j1], angles: vec![t1] });
            }
        }
        for j1 in 0..self.j {
            for t1 in 0..self.l {
                for j2 in j1 + 1..self.j {
                    for t2 in 0..self.l {
                        paths.push(ScatteringPath { scales: vec![j1, j2], angles: vec![t1, t2] });
                    }
                }
            }
        }
        paths
    }

    /// kymatio's full output for one map: shape (1 + J·L + L²·J(J−1)/2, ny/2^J, nx/2^J), in kymatio's
    /// order (see the module doc).
    pub fn transform(&self, map: ArrayView2<f64>) -> Result<Array3<f64>> {
        self.check_map(map)?;
        let (channels, out_ny, out_nx) = self.output_shape();
        let mut output = Array3::<f64>::zeros((channels, out_ny, out_nx));
        let (j_max, l) = (self.j, self.l);
        let mut work = Workspace::new(&self.ffts);

        let mut padded = self.pad(map);
        let mut spectrum = vec![Complex::new(0.0, 0.0); padded.len()];
        self.ffts[0].forward(&mut padded, &mut spectrum, &mut work.scratch);
        self.lowpass_output(&spectrum, 0, &mut output, 0, &mut work);

        let mut second_order_channel = 1 + j_max * l;
        for j1 in 0..j_max {
            let mut first = std::mem::take(&mut work.spectra[j1]);
            for t1 in 0..l {
                let n1 = j1 * l + t1;
                multiply_fold(&self.ffts[0], &spectrum, &self.wavelets[n1][0], 1 << j1, &mut first);
                self.modulus_in_fourier(&mut first, j1, &mut work);
                self.lowpass_output(&first, j1, &mut output, 1 + n1, &mut work);
                for j2 in j1 + 1..j_max {
                    let mut second = std::mem::take(&mut work.spectra[j2]);
                    for t2 in 0..l {
                        let filter = &self.wavelets[j2 * l + t2][j1];
                        multiply_fold(&self.ffts[j1], &first, filter, 1 << (j2 - j1), &mut second);
                        self.modulus_in_fourier(&mut second, j2, &mut work);
                        self.lowpass_output(&second, j2, &mut output, second_order_channel, &mut work);
                        second_order_channel += 1;
                    }
                    work.spectra[j2] = second;
                }
            }
            work.spectra[j1] = first;
        }
        Ok(output)
    }

    /// Isotropic coefficients: spatial mean of each channel, averaged over angles. Refuses constant
    /// maps (their reduced logarithms are undefined) and maps whose coefficients are not all positive.
    pub fn coefficients(&self, map: ArrayView2<f64>) -> Result<ScatteringCoefficients> {
        self.check_map(map)?;
        let first = map[[0, 0]];
        if map.iter().all(|&v| v == first) {
            return Err(Error::Invalid(
                "map is constant (standard deviation 0): its first- and second-order scattering coefficients \
                 vanish, so the reduced coefficients log2 s1 and log2 s2/s1 are undefined"
                    .into(),
            ));
        }
        let output = self.transform(map)?;
        let means: Vec<f64> = output.outer_iter().map(|c| c.mean().unwrap_or(f64::NAN)).collect();
        let (j_max, l) = (self.j, self.l);
        let s0 = means[0];
        let s1: Vec<f64> =
            (0..j_max).map(|j1| means[1 + j1 * l..1 + (j1 + 1) * l].iter().sum::<f64>() / l as f64).collect();
        let pair_index = |j1: usize, j2: usize| j1 * (2 * j_max - j1 - 1) / 2 + (j2 - j1 - 1);
        let mut s2: Vec<(usize, usize, f64)> =
            (0..j_max).flat_map(|j1| (j1 + 1..j_max).map(move |j2| (j1, j2, 0.0))).collect();
        for (mean, path) in means.iter().zip(self.paths()) {
            if let [j1, j2] = path.scales[..] {
                s2[pair_index(j1, j2)].2 += mean / (l * l) as f64;
            }
        }
        let bad_s1 = s1.iter().enumerate().find(|(_, &v)| !(v > 0.0 && v.is_finite()));
        if let Some((j1, v)) = bad_s1 {
            return Err(Error::Invalid(format!(
                "first-order scattering coefficient s1(j={j1}) = {v} is not positive; the map's fluctuations \
                 are too small to be resolved"
            )));
        }
        if let Some((j1, j2, v)) = s2.iter().find(|(_, _, v)| !(*v > 0.0 && v.is_finite())) {
            return Err(Error::Invalid(format!(
                "second-order scattering coefficient s2(j={j1}→{j2}) = {v} is not positive; the map's \
                 fluctuations are too small to be resolved"
            )));
        }
        Ok(ScatteringCoefficients { j: j_max, l, s0, s1, s2 })
    }

    fn check_map(&self, map: ArrayView2<f64>) -> Result<()> {
        if map.dim() != (self.ny, self.nx) {
            let (ny, nx) = map.dim();
            return Err(Error::Invalid(format!(
                "map of {ny}×{nx} pixels does not match the scattering filter bank built for {}×{}",
                self.ny, self.nx
            )));
        }
        let bad = map.iter().filter(|v| !v.is_finite()).count();
        if bad == map.len() {
            return Err(Error::Invalid("map is entirely NaN or infinite".into()));
        }
        if bad > 0 {
            return Err(Error::Invalid(format!(
                "map has {bad} NaN or infinite pixels of {}; the scattering transform needs a complete map \
                 (fill or crop them first)",
                map.len()
            )));
        }
        Ok(())
    }

    /// Reflect-pads the map (NumPy `mode='reflect'`) into a complex buffer of the padded shape.
    fn pad(&self, map: ArrayView2<f64>) -> Vec<Complex<f64>> {
        let rows: Vec<usize> =
            (0..self.padded_ny).map(|i| reflect(i as isize - self.pad_top as isize, self.ny)).collect();
        let cols: Vec<usize> =
            (0..self.padded_nx).map(|i| reflect(i as isize - self.pad_left as isize, self.nx)).collect();
        let mut buffer = Vec::with_capacity(self.padded_ny * self.padded_nx);
        for &r in &rows {
            buffer.extend(cols.iter().map(|&c| Complex::new(map[[r, c]], 0.0)));
        }
        buffer
    }

    /// In place: Fourier signal at resolution r → Fourier transform of the modulus of its inverse.
    fn modulus_in_fourier(&self, signal: &mut [Complex<f64>], resolution: usize, work: &mut Workspace) {
        let fft = &self.ffts[resolution];
        let space = &mut work.spaces[resolution];
        fft.inverse(signal, space, &mut work.scratch);
        let norm = 1.0 / (fft.ny * fft.nx) as f64;
        for z in space.iter_mut() {
            *z = Complex::new(modulus(z.re * norm, z.im * norm), 0.0);
        }
        fft.forward(space, signal, &mut work.scratch);
    }

    /// Low-pass filters a Fourier signal at resolution r, subsamples to resolution J, and writes the
    /// real, unpadded result into `output[channel]`.
    fn lowpass_output(
        &self,
        signal: &[Complex<f64>],
        resolution: usize,
        output: &mut Array3<f64>,
        channel: usize,
        work: &mut Workspace,
    ) {
        let coarsest = self.j;
        let low = &mut work.spectra[coarsest];
        multiply_fold(&self.ffts[resolution], signal, &self.lowpass[resolution], 1 << (coarsest - resolution), low);
        let fft = &self.ffts[coarsest];
        let space = &mut work.spaces[coarsest];
        fft.inverse(low, space, &mut work.scratch);
        let norm = 1.0 / (fft.ny * fft.nx) as f64;
        let mut target = output.index_axis_mut(ndarray::Axis(0), channel);
        for ((y, x), value) in target.indexed_iter_mut() {
            *value = space[(y + 1) * fft.nx + x + 1].re * norm;
        }
    }
}

/// |re + i·im| as NumPy's `abs` (hypot), with the fast square root where no overflow or underflow
/// can occur (equal to hypot within one ulp).
fn modulus(re: f64, im: f64) -> f64 {
    let square = re * re + im * im;
    if square.is_finite() && square > f64::MIN_POSITIVE {
        square.sqrt()
    } else {
        re.hypot(im)
    }
}

/// Reusable buffers for one transform: per resolution r a Fourier-layout and a spatial buffer.
struct Workspace {
    spectra: Vec<Vec<Complex<f64>>>,
    spaces: Vec<Vec<Complex<f64>>>,
    scratch: Vec<Complex<f64>>,
}

impl Workspace {
    fn new(ffts: &[Fft2d]) -> Workspace {
        let zeros = |n: usize| vec![Complex::new(0.0, 0.0); n];
        Workspace {
            spectra: ffts.iter().map(|f| zeros(f.ny * f.nx)).collect(),
            spaces: ffts.iter().map(|f| zeros(f.ny * f.nx)).collect(),
            scratch: zeros(ffts.iter().map(Fft2d::scratch_len).max().unwrap_or(0)),
        }
    }
}

/// Isotropic scattering coefficients of one map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScatteringCoefficients {
    pub j: usize,
    pub l: usize,
    /// Spatial mean of S0 (the low-passed map).
    pub s0: f64,
    /// s1[j1]: mean over angles (and positions) of first-order coefficients, j1 = 0..J.
    pub s1: Vec<f64>,
    /// s2 pairs (j1, j2, value) with j1 < j2, averaged over both angles, in kymatio's pair order
    /// (j1 major, then j2).
    pub s2: Vec<(usize, usize, f64)>,
}

impl ScatteringCoefficients {
    /// One vector for plotting/distances: `log2 s1(j)` for j = 0..J, then the reduced, amplitude-free
    /// second order `log2(s2(j1, j2) / s1(j1))` in `s2`'s order. Entries are −∞ or NaN only for zero
    /// coefficients, which [`Scattering2d::coefficients`] never returns.
    pub fn reduced(&self) -> Vec<f64> {
        let first = self.s1.iter().map(|v| v.log2());
        let second = self.s2.iter().map(|&(j1, _, v)| (v / self.s1[j1]).log2());
        first.chain(second).collect()
    }

    /// Names of the `reduced` entries: "s1 j=0", …, "s2 j=0→1", ….
    pub fn labels(&self) -> Vec<String> {
        let first = (0..self.s1.len()).map(|j| format!("s1 j={j}"));
        let second = self.s2.iter().map(|(j1, j2, _)| format!("s2 j={j1}→{j2}"));
        first.chain(second).collect()
    }
}

/// Index into 0..n of position i under whole-sample symmetric extension (NumPy `mode='reflect'`), n ≥ 2.
fn reflect(i: isize, n: usize) -> usize {
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    if m < n as isize {
        m as usize
    } else {
        (period - m) as usize
    }
}

/// Gabor function on an ny × nx grid as kymatio builds it (5×5 periodic copies, divided by
/// 2·3.1415·σ²/slant). Returns the complex filter and its envelope (the same with ξ = 0).
fn gabor(ny: usize, nx: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> (Vec<Complex<f64>>, Vec<f64>) {
    let (sin, cos) = theta.sin_cos();
    let two_sigma2 = 2.0 * sigma * sigma;
    let slant2 = slant * slant;
    let c00 = (cos * cos + sin * sin * slant2) / two_sigma2;
    let c01 = (cos * sin - sin * cos * slant2) / two_sigma2;
    let c11 = (sin * sin + cos * cos * slant2) / two_sigma2;
    let smallest_eigenvalue = slant2.min(1.0) / two_sigma2;
    let mut wave = vec![Complex::new(0.0, 0.0); ny * nx];
    let mut envelope = vec![0.0; ny * nx];
    let (nyi, nxi) = (ny as i64, nx as i64);
    let nearest_square = |start: i64, len: i64| -> f64 {
        let nearest = if start > 0 {
            start
        } else if start + len - 1 < 0 {
            start + len - 1
        } else {
            0
        };
        (nearest * nearest) as f64
    };
    for copy_y in -2..=2i64 {
        let y0 = copy_y * nyi;
        for copy_x in -2..=2i64 {
            let x0 = copy_x * nxi;
            if smallest_eigenvalue * (nearest_square(y0, nyi) + nearest_square(x0, nxi)) > GAUSSIAN_CUTOFF {
                continue;
            }
            for row in 0..ny {
                let u = (y0 + row as i64) as f64;
                for col in 0..nx {
                    let v = (x0 + col as i64) as f64;
                    let q = c00 * (u * u) + (c01 + c01) * (u * v) + c11 * (v * v);
                    if q > GAUSSIAN_CUTOFF {
                        continue;
                    }
                    let amplitude = (-q).exp();
                    let index = row * nx + col;
                    envelope[index] += amplitude;
                    if xi != 0.0 {
                        let phase = u * xi * cos + v * xi * sin;
                        wave[index] += Complex::from_polar(amplitude, phase);
                    }
                }
            }
        }
    }
    let norm = 2.0 * KYMATIO_PI * sigma * sigma / slant;
    for (w, e) in wave.iter_mut().zip(envelope.iter_mut()) {
        *e /= norm;
        *w /= norm;
    }
    if xi == 0.0 {
        wave = envelope.iter().map(|&e| Complex::new(e, 0.0)).collect();
    }
    (wave, envelope)
}

/// kymatio's Morlet wavelet: Gabor minus K times its envelope, K making the spatial sum zero.
fn morlet(ny: usize, nx: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<Complex<f64>> {
    let (wave, envelope) = gabor(ny, nx, sigma, theta, xi, slant);
    let k = wave.iter().sum::<Complex<f64>>() / envelope.iter().sum::<f64>();
    wave.iter().zip(&envelope).map(|(&w, &e)| w - k * e).collect()
}

/// Real part of the 2-D FFT of a spatial filter on the full padded grid, in the Fourier layout.
fn real_fourier(fft: &Fft2d, mut spatial: Vec<Complex<f64>>) -> Vec<f64> {
    let mut fourier = vec![Complex::new(0.0, 0.0); spatial.len()];
    let mut scratch = vec![Complex::new(0.0, 0.0); fft.scratch_len()];
    fft.forward(&mut spatial, &mut fourier, &mut scratch);
    fourier.iter().map(|z| z.re).collect()
}

/// kymatio's filter periodization at resolution r: keeps the size/2^(r+1) lowest positive and negative
/// frequencies along each axis of a `rows × cols` Fourier array, giving (rows/2^r) × (cols/2^r).
fn crop_fourier(filter: &[f64], rows: usize, cols: usize, resolution: usize) -> Vec<f64> {
    let (cropped_rows, cropped_cols) = (rows >> resolution, cols >> resolution);
    let source = |k: usize, size: usize, cropped: usize| {
        if k < cropped / 2 || cropped == size {
            k
        } else {
            k + size - cropped
        }
    };
    let mut out = Vec::with_capacity(cropped_rows * cropped_cols);
    for k in 0..cropped_rows {
        let row = source(k, rows, cropped_rows) * cols;
        out.extend((0..cropped_cols).map(|m| filter[row + source(m, cols, cropped_cols)]));
    }
    out
}

/// Multiplies a Fourier-layout signal on this grid by a real filter and subsamples by `factor` in
/// space, i.e. averages the factor² Fourier aliases (kymatio's `subsample_fourier`), into `out`.
fn multiply_fold(fft: &Fft2d, signal: &[Complex<f64>], filter: &[f64], factor: usize, out: &mut [Complex<f64>]) {
    let (rows, cols) = (fft.nx, fft.ny);
    if factor == 1 {
        for (o, (&z, &f)) in out.iter_mut().zip(signal.iter().zip(filter)) {
            *o = z * f;
        }
        return;
    }
    let (out_rows, out_cols) = (rows / factor, cols / factor);
    out.fill(Complex::new(0.0, 0.0));
    for block_row in 0..factor {
        for row in 0..out_rows {
            let source_row = (block_row * out_rows + row) * cols;
            let target = &mut out[row * out_cols..(row + 1) * out_cols];
            for block_col in 0..factor {
                let start = source_row + block_col * out_cols;
                let values = signal[start..start + out_cols].iter().zip(&filter[start..start + out_cols]);
                for (t, (&z, &f)) in target.iter_mut().zip(values) {
                    *t += z * f;
                }
            }
        }
    }
    let norm = 1.0 / (factor * factor) as f64;
    out.iter_mut().for_each(|z| *z *= norm);
}

/// The isotropic scattering coefficients as a battery statistic: log2 s1(j), then log2 s2/s1, with
/// the filter bank built once for the maps' shape.
pub struct ScatteringCurves {
    transform: Scattering2d,
}

impl MapStatistic for ScatteringCurves {
    fn prepare(options: &BatteryOptions, shape: (usize, usize), _real: &[Array2<f64>]) -> Result<Self> {
        let j = options.scattering_j.unwrap_or_else(|| default_scattering_j(shape.0, shape.1));
        Ok(ScatteringCurves { transform: Scattering2d::new(shape.0, shape.1, j, options.scattering_l)? })
    }

    fn statistic(&self) -> Statistic {
        Statistic::Scattering
    }

    fn curves(&self, map: &Array2<f64>) -> Result<(Vec<CurveAxes>, Vec<f64>)> {
        let c = self.transform.coefficients(filled(map)?.view())?;
        let v = c.reduced();
        let mut a = CurveAxes::new(
            "log2_coefficient",
            (0..v.len()).map(|i| i as f64).collect(),
            "coefficient",
            "coefficient",
            "log2 s1, log2 s2/s1",
            false,
        );
        a.x_names = Some(c.labels());
        Ok((vec![a], v))
    }
}
