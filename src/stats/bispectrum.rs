//! The bispectrum and bicoherence of a 2-D map over (k1, k2) magnitudes, with the conventions of
//! TurbuStat 1.3 `Bispectrum.compute_bispectrum` (Burkhart et al. 2010), random sampling included.
//!
//! Conventions (all as TurbuStat, `use_pyfftw=False`):
//!
//! * NaN pixels are set to 0 (TurbuStat's `__init__`); with `mean_subtract` the mean of that filled
//!   map is then subtracted. F = unnormalized, unshifted 2-D FFT (numpy `fft2`), axis 0 = rows (y).
//! * The grid is integer wavenumber magnitudes (FFT index units, not pixel⁻¹): k1 = 0..⌊ny/2⌋ − 1
//!   (rows of the outputs) and k2 = 0..⌊nx/2⌋ − 1 (columns).
//! * For each (k1, k2), row-major, `nsamples` angles φ1 are drawn, then `nsamples` angles φ2, uniform
//!   in [0, 2π) from numpy's legacy global RNG after `np.random.seed(seed)` (MT19937, 53-bit doubles).
//!   The three wave vectors are truncated toward zero (Python `int`, written trunc):
//!   q1 = (trunc(k1 cos φ1), trunc(k1 sin φ1)), q2 likewise with k2 and φ2, and
//!   q3 = (trunc(k1 cos φ1 + k2 cos φ2), trunc(k1 sin φ1 + k2 sin φ2)); the first component indexes
//!   rows, the second columns, negative indices wrap (numpy indexing).
//! * B(k1, k2) = Σ F(q1) F(q2) F*(q3); bicoherence = |B| / Σ |F(q1) F(q2) F*(q3)|;
//!   TurbuStat's `bispectrum_logamp` is log10 |B|.
//!
//! Differences from TurbuStat: indices beyond the map wrap periodically where numpy raises
//! `IndexError` (maps whose sides differ by more than about 3 pixels, e.g. 24×40); wherever TurbuStat
//! runs, the two agree. Bad input that TurbuStat would turn into NaN surfaces is refused. Zero-filling
//! NaN pixels (kept for parity) puts edges into maps far from zero; callers that prefer another fill
//! should fill before calling.
//!
//! What it measures: truncating the wave vectors toward zero makes q3 differ from q1 + q2 for most
//! samples (and turns k = 1 vectors into (0, 0) for most angles), so the sum mixes closed and open
//! triangles. In the battery's test (src/stats/battery.rs) it does not tell 32² Gaussian fields from
//! the same fields transformed to v·|v| (χ²/dof 1.4 against 1.7 between twin Gaussian sets), where
//! Minkowski functionals, the PDF and scattering coefficients give χ²/dof of 30–220. It is here because
//! papers quote TurbuStat's numbers; the battery runs it only on request.
//!
//! Parity (tests/battery_bispectrum.rs, fixtures from tools/make_bispectrum_fixtures.py): the MT19937
//! port reproduces numpy's `uniform(0, 2π)` stream bit for bit, so every sampled index matches (sin and
//! cos come from the same libm as numpy's; a differing libm could move an index only where k cos φ is
//! within an ulp of an integer). B, log10 |B| and the bicoherence then agree with TurbuStat to FFT
//! rounding: measured ≤ 3e-15 of Σ |samples|, tested at 1e-13. Where F(0, 0) is rounding noise (mean
//! subtracted, or a zero-mean map), B in the k1 ≤ 1 rows and k2 ≤ 1 columns is proportional to it in
//! both codes and not comparable; the bicoherence there does not depend on it and still agrees.

use ndarray::{Array2, ArrayView2};
use rustfft::{num_complex::Complex, FftPlanner};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::battery::{filled, BatteryOptions, CurveAxes, MapStatistic, Statistic};

/// Options of [`Bispectrum::compute`] (TurbuStat's `compute_bispectrum` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BispectrumOptions {
    /// Random angle pairs per (k1, k2) cell (TurbuStat default 100).
    pub nsamples: usize,
    /// Seed of numpy's legacy MT19937 (`np.random.seed`), 0..=2³²−1 (TurbuStat default 1000).
    pub seed: u64,
    /// Subtract the map mean before the FFT (TurbuStat default false).
    pub mean_subtract: bool,
}

impl Default for BispectrumOptions {
    /// TurbuStat's defaults: 100 samples, seed 1000, no mean subtraction.
    fn default() -> Self {
        BispectrumOptions { nsamples: 100, seed: 1000, mean_subtract: false }
    }
}

/// Bispectrum surfaces over the (k1, k2) grid; arrays have shape [⌊ny/2⌋, ⌊nx/2⌋].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bispectrum {
    /// Wavenumber magnitudes k1 along axis 0 of the surfaces: integers 0..⌊ny/2⌋ − 1 (FFT index units,
    /// as TurbuStat; not pixel⁻¹). Equal to `k2` for square maps.
    pub k: Vec<f64>,
    /// Wavenumber magnitudes k2 along axis 1 of the surfaces: integers 0..⌊nx/2⌋ − 1.
    pub k2: Vec<f64>,
    /// |B(k1, k2)|, the modulus of TurbuStat's complex `bispectrum`.
    #[serde(with = "array2_serde")]
    pub amplitude: Array2<f64>,
    /// log10 |B(k1, k2)|: TurbuStat's `bispectrum_logamp`.
    #[serde(with = "array2_serde")]
    pub log_amplitude: Array2<f64>,
    /// arg B(k1, k2) in radians (−π, π], the biphase.
    #[serde(with = "array2_serde")]
    pub biphase: Array2<f64>,
    /// |B| / Σ |F(q1) F(q2) F*(q3)| in [0, 1]: TurbuStat's `bicoherence`.
    #[serde(with = "array2_serde")]
    pub bicoherence: Array2<f64>,
}

impl Bispectrum {
    /// The bispectrum of `map` ([ny, nx], row-major, NaN pixels allowed and set to 0 as TurbuStat).
    ///
    /// Errors: a side < 4 pixels, `nsamples` = 0, a seed above 2³²−1, infinite pixels, no finite pixel,
    /// or finite pixels that are all equal.
    pub fn compute(map: ArrayView2<f64>, opts: &BispectrumOptions) -> Result<Bispectrum> {
        let (ny, nx) = map.dim();
        if ny < 4 || nx < 4 {
            return Err(Error::Invalid(format!("map is {ny}×{nx}; the bispectrum needs at least 4×4 pixels")));
        }
        if opts.nsamples == 0 {
            return Err(Error::Invalid("bispectrum nsamples must be at least 1".into()));
        }
        let seed = u32::try_from(opts.seed)
            .map_err(|_| Error::Invalid(format!("bispectrum seed {} exceeds 2^32 - 1 (numpy's limit)", opts.seed)))?;
        let filled = filled_map(map)?;
        let spectrum = fft2_real(&filled, opts.mean_subtract, ny, nx);
        Ok(sample_bispectrum(&spectrum, ny, nx, opts.nsamples, seed))
    }

    /// Mean bicoherence in unit-width radial bins of r = √(k1² + k2²): bin b (centre b = 1, 2, …,
    /// round(r_max)) holds the cells with round(r) = b, i.e. b − ½ ≤ r < b + ½ (ties round up).
    /// The k1 = 0 row and k2 = 0 column are left out (one wave vector is zero there, so the
    /// bicoherence is 1 by construction); NaN cells are skipped and a bin with no finite cell is NaN.
    /// Bins depend only on the map shape, so maps of one shape give comparable curves.
    pub fn bicoherence_profile(&self) -> (Vec<f64>, Vec<f64>) {
        let (rows, cols) = self.bicoherence.dim();
        if rows < 2 || cols < 2 {
            return (Vec::new(), Vec::new());
        }
        let radius = |i: usize, j: usize| ((i * i + j * j) as f64).sqrt();
        let nbins = (radius(rows - 1, cols - 1) + 0.5).floor() as usize;
        let mut sums = vec![0.0; nbins];
        let mut counts = vec![0usize; nbins];
        for ((i, j), &value) in self.bicoherence.indexed_iter() {
            if i == 0 || j == 0 || !value.is_finite() {
                continue;
            }
            let bin = (radius(i, j) + 0.5).floor() as usize;
            sums[bin - 1] += value;
            counts[bin - 1] += 1;
        }
        let centres = (1..=nbins).map(|b| b as f64).collect();
        let means = sums.iter().zip(&counts).map(|(&s, &n)| if n > 0 { s / n as f64 } else { f64::NAN }).collect();
        (centres, means)
    }
}

/// The map as a row-major vector with NaN set to 0, after the input checks.
fn filled_map(map: ArrayView2<f64>) -> Result<Vec<f64>> {
    let mut finite_min = f64::INFINITY;
    let mut finite_max = f64::NEG_INFINITY;
    for &value in map.iter() {
        if value.is_infinite() {
            return Err(Error::Invalid("map holds infinite values".into()));
        }
        if value.is_finite() {
            finite_min = finite_min.min(value);
            finite_max = finite_max.max(value);
        }
    }
    if finite_min > finite_max {
        return Err(Error::Invalid("map holds no finite values".into()));
    }
    if finite_min == finite_max {
        return Err(Error::Invalid("map is constant (standard deviation 0)".into()));
    }
    Ok(map.iter().map(|&v| if v.is_nan() { 0.0 } else { v }).collect())
}

/// Unnormalized forward 2-D FFT of a real row-major map, optionally of the map minus its mean.
fn fft2_real(data: &[f64], mean_subtract: bool, ny: usize, nx: usize) -> Vec<Complex<f64>> {
    let offset = if mean_subtract { data.iter().sum::<f64>() / data.len() as f64 } else { 0.0 };
    let mut buf: Vec<Complex<f64>> = data.iter().map(|&v| Complex::new(v - offset, 0.0)).collect();
    let mut planner = FftPlanner::new();
    let row_fft = planner.plan_fft_forward(nx);
    let col_fft = planner.plan_fft_forward(ny);
    for row in buf.chunks_mut(nx) {
        row_fft.process(row);
    }
    let mut column = vec![Complex::new(0.0, 0.0); ny];
    for c in 0..nx {
        for (r, slot) in column.iter_mut().enumerate() {
            *slot = buf[r * nx + c];
        }
        col_fft.process(&mut column);
        for (r, value) in column.iter().enumerate() {
            buf[r * nx + c] = *value;
        }
    }
    buf
}

/// Monte-Carlo sums over random directions for every (k1, k2) cell, in TurbuStat's draw order.
fn sample_bispectrum(spectrum: &[Complex<f64>], ny: usize, nx: usize, nsamples: usize, seed: u32) -> Bispectrum {
    let (rows, cols) = (ny / 2, nx / 2);
    let mut rng = LegacyMt19937::new(seed);
    let mut phi1 = vec![(0.0, 0.0); nsamples];
    let mut phi2 = vec![(0.0, 0.0); nsamples];
    let mut amplitude = Array2::zeros((rows, cols));
    let mut biphase = Array2::zeros((rows, cols));
    let mut bicoherence = Array2::zeros((rows, cols));
    let at = |qy: i64, qx: i64| spectrum[wrap_index(qy, ny) * nx + wrap_index(qx, nx)];
    for k1 in 0..rows {
        for k2 in 0..cols {
            // (sin φ, cos φ) of uniform(0, 2π) draws: all φ1 first, then all φ2.
            for angles in [&mut phi1, &mut phi2] {
                for slot in angles.iter_mut() {
                    *slot = (std::f64::consts::TAU * rng.next_f64()).sin_cos();
                }
            }
            let (k1f, k2f) = (k1 as f64, k2 as f64);
            let mut sum = Complex::new(0.0, 0.0);
            let mut norm = 0.0;
            for (&(sin1, cos1), &(sin2, cos2)) in phi1.iter().zip(&phi2) {
                let (y1, x1) = (k1f * cos1, k1f * sin1);
                let (y2, x2) = (k2f * cos2, k2f * sin2);
                // `as i64` truncates toward zero, like Python's int().
                let f1 = at(y1 as i64, x1 as i64);
                let f2 = at(y2 as i64, x2 as i64);
                let f3 = at((y1 + y2) as i64, (x1 + x2) as i64);
                let sample = f1 * f2 * f3.conj();
                sum += sample;
                norm += sample.norm();
            }
            let modulus = sum.norm();
            amplitude[[k1, k2]] = modulus;
            biphase[[k1, k2]] = sum.arg();
            bicoherence[[k1, k2]] = modulus / norm;
        }
    }
    Bispectrum {
        k: (0..rows).map(|k| k as f64).collect(),
        k2: (0..cols).map(|k| k as f64).collect(),
        log_amplitude: amplitude.mapv(f64::log10),
        amplitude,
        biphase,
        bicoherence,
    }
}

/// `q` modulo `n` in 0..n (numpy's negative indexing, extended periodically beyond ±n).
#[inline]
fn wrap_index(q: i64, n: usize) -> usize {
    let n = n as i64;
    let wrapped = if (0..n).contains(&q) {
        q
    } else if (-n..0).contains(&q) {
        q + n
    } else {
        q.rem_euclid(n)
    };
    wrapped as usize
}

/// numpy's legacy `RandomState` stream: MT19937 seeded by `np.random.seed(int)` (Matsumoto–Nishimura
/// `init_genrand`), doubles from `random_sample` (53 bits: (a >> 5) · 2²⁶ + (b >> 6), over 2⁵³).
#[derive(Debug, Clone)]
pub struct LegacyMt19937 {
    state: [u32; 624],
    pos: usize,
}

impl LegacyMt19937 {
    /// The generator after `np.random.seed(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        LegacyMt19937 { state, pos: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.pos = 0;
    }

    /// The next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == 624 {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A double in [0, 1) as numpy's `random_sample` (`genrand_res53`).
    pub fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

/// Serde for `Array2<f64>` without ndarray's `serde` feature: `{ "shape": [r, c], "data": [...] }`,
/// row-major, non-finite values as `null` (read back as NaN).
mod array2_serde {
    use ndarray::Array2;
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Flat {
        shape: [usize; 2],
        data: Vec<Option<f64>>,
    }

    pub fn serialize<S: Serializer>(array: &Array2<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        let (rows, cols) = array.dim();
        let data = array.iter().map(|&v| v.is_finite().then_some(v)).collect();
        Flat { shape: [rows, cols], data }.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Array2<f64>, D::Error> {
        let flat = Flat::deserialize(deserializer)?;
        let data = flat.data.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        Array2::from_shape_vec((flat.shape[0], flat.shape[1]), data).map_err(D::Error::custom)
    }
}

/// The bicoherence as a battery statistic: its mean in radial bins of √(k1² + k2²).
pub struct BicoherenceCurves {
    options: BispectrumOptions,
}

impl MapStatistic for BicoherenceCurves {
    fn prepare(options: &BatteryOptions, _shape: (usize, usize), _real: &[Array2<f64>]) -> Result<Self> {
        Ok(BicoherenceCurves { options: options.bispectrum })
    }

    fn statistic(&self) -> Statistic {
        Statistic::Bispectrum
    }

    fn curves(&self, map: &Array2<f64>) -> Result<(Vec<CurveAxes>, Vec<f64>)> {
        let b = Bispectrum::compute(filled(map)?.view(), &self.options)?;
        let (x, v) = b.bicoherence_profile();
        Ok((vec![CurveAxes::new("bicoherence", x, "k", "√(k1² + k2²)", "mean bicoherence", false)], v))
    }
}
