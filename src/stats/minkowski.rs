//! Minkowski functionals V0, V1, V2 of the excursion sets of a 2-D map.
//!
//! The map is standardized first (mean 0, standard deviation 1 over its finite pixels, population std), and
//! for each threshold ν the excursion set is the set of pixels with standardized value ≥ ν:
//!
//! * `v0` — fraction of the finite pixels with value ≥ ν;
//! * `v1` — boundary length of the excursion set divided by 4 × area (pixel units, so pixel⁻¹);
//! * `v2` — Euler characteristic of the excursion set per unit area (pixel⁻²).
//!
//! # Estimator
//! V1 and V2 come from the histogram of the 16 binary configurations of the 2×2 windows of pixels (the
//! "pixel-grid morphology" estimator of Ohser & Mücklich, as in quantimpy). A window is the unit cell
//! between four pixel centres; the area `A` of the domain is the number of windows counted, and
//! * the boundary length is the Crofton estimate over four directions: in each window the pairs
//!   (top-left, bottom-left), (top-left, top-right), (top-left, bottom-right) and (bottom-left, top-right)
//!   are test segments, and a pair whose two pixels lie on different sides of ν is a crossing; the length is
//!   π / (4 (1 + √2)) × crossings (the quantimpy weighting for unit pixels: each direction weighted ¼, the
//!   test-line length of a window being (1 + 1 + √2 + √2) / 4);
//! * the Euler characteristic is V − E + F of the excursion set seen as a 4-connected pixel graph (its
//!   complement 8-connected): each window adds ¼ per pixel in the set, −½ per horizontal or vertical pair
//!   in the set and 1 when all four pixels are in it, so a sum over windows counts every vertex, edge and
//!   face of the interior exactly once.
//!
//! This estimator was chosen over lenstools' gradient ("δ-function") estimator because it is evaluated at
//! each threshold (lenstools bins ν and reports bin midpoints), needs no finite-difference derivatives (which
//! lenstools takes with periodic wrap-around and on square maps only), and handles masks and map edges
//! without any wrap: it only ever looks at windows whose four pixels exist.
//!
//! # Masks and edges
//! Non-finite pixels (NaN, ±∞) are masked. V0 counts every finite pixel. V1 and V2 use only the 2×2 windows
//! whose four pixels are finite, so masked pixels and the windows touching them are excluded, and the edge
//! of the map (or of a mask) is not a boundary of the excursion set: nothing wraps around. Mean and standard
//! deviation are taken over the finite pixels.
//!
//! # Parity
//! `tests/battery_morphology.rs` compares with quantimpy 0.2.6 (`quantimpy.minkowski.functionals` on the
//! binary excursion set; its length is C / 2π and its Euler characteristic χ / π, both summed over 2-row
//! strips of valid windows for masked maps), fixtures written by `tools/make_morphology_fixtures.py`, to a
//! relative 1e-12; and with Gaussian-random-field theory on a smooth 1024² field generated in the test.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::battery::{BatteryOptions, CurveAxes, MapStatistic, Statistic};

/// Crofton factor turning the number of boundary crossings of the four window pairs into a length (pixels).
const LENGTH_PER_CROSSING: f64 = std::f64::consts::PI / (4.0 * (1.0 + std::f64::consts::SQRT_2));

/// Thresholds −3…3 in 25 steps (the default).
pub fn default_thresholds() -> Vec<f64> {
    (0..25).map(|i| -3.0 + 0.25 * i as f64).collect()
}

/// Minkowski functionals at the thresholds `nu` (in units of the map's standard deviation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinkowskiFunctionals {
    /// Thresholds, as given.
    pub nu: Vec<f64>,
    /// Area fraction of the excursion set.
    pub v0: Vec<f64>,
    /// Boundary length / (4 × area), pixel⁻¹.
    pub v1: Vec<f64>,
    /// Euler characteristic / area, pixel⁻².
    pub v2: Vec<f64>,
}

impl MinkowskiFunctionals {
    /// `map` may hold NaN pixels (masked). ν in units of the map's std about its own mean (finite pixels).
    pub fn compute(map: ArrayView2<f64>, nu: &[f64]) -> Result<MinkowskiFunctionals> {
        if nu.is_empty() {
            return Err(Error::Invalid("no threshold given for the Minkowski functionals".into()));
        }
        if let Some((index, value)) = nu.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Invalid(format!("threshold {index} is {value}; thresholds must be finite")));
        }
        let field = standardize(map, "Minkowski functionals")?;
        let windows = valid_windows(&field);
        if windows.is_empty() {
            return Err(Error::Invalid("map has no 2×2 block of finite pixels".into()));
        }
        let mut sorted: Vec<f64> = field.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let area = windows.len() as f64;
        let (crossings, euler) = configuration_weights();
        let mut v0 = Vec::with_capacity(nu.len());
        let mut v1 = Vec::with_capacity(nu.len());
        let mut v2 = Vec::with_capacity(nu.len());
        for &threshold in nu {
            let below = sorted.partition_point(|&v| v < threshold);
            v0.push((sorted.len() - below) as f64 / sorted.len() as f64);
            let mut histogram = [0u64; 16];
            for window in &windows {
                let config =
                    window.iter().enumerate().fold(0usize, |acc, (bit, &v)| acc | (usize::from(v >= threshold) << bit));
                histogram[config] += 1;
            }
            let crossing_total: u64 = histogram.iter().zip(crossings).map(|(&h, c)| h * c).sum();
            let quarter_euler: i64 = histogram.iter().zip(euler).map(|(&h, e)| h as i64 * e).sum();
            v1.push(LENGTH_PER_CROSSING * crossing_total as f64 / (4.0 * area));
            v2.push(quarter_euler as f64 / 4.0 / area);
        }
        Ok(MinkowskiFunctionals { nu: nu.to_vec(), v0, v1, v2 })
    }
}

/// Standardized copy of `map` (finite pixels: mean 0, population std 1; non-finite pixels become NaN).
/// Errors on maps smaller than 3×3, without finite pixels or constant; `what` names the statistic.
pub(crate) fn standardize(map: ArrayView2<f64>, what: &str) -> Result<Array2<f64>> {
    let (ny, nx) = map.dim();
    if ny < 3 || nx < 3 {
        return Err(Error::Invalid(format!("map is {ny}×{nx} pixels; {what} need at least 3×3")));
    }
    let finite: Vec<f64> = map.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err(Error::Invalid("map has no finite pixel".into()));
    }
    let count = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / count;
    let std = (finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count).sqrt();
    if !mean.is_finite() || !std.is_finite() {
        return Err(Error::Invalid("map values are too large for a finite mean and standard deviation".into()));
    }
    if std == 0.0 {
        return Err(Error::Invalid("map is constant (standard deviation 0)".into()));
    }
    Ok(map.mapv(|v| if v.is_finite() { (v - mean) / std } else { f64::NAN }))
}

/// The four values of every 2×2 window whose pixels are all finite, ordered (i, j), (i+1, j), (i, j+1),
/// (i+1, j+1): bit k of a window's configuration is set when value k is in the excursion set.
fn valid_windows(field: &Array2<f64>) -> Vec<[f64; 4]> {
    let (ny, nx) = field.dim();
    let mut windows = Vec::with_capacity((ny - 1) * (nx - 1));
    for i in 0..ny - 1 {
        for j in 0..nx - 1 {
            let window = [field[[i, j]], field[[i + 1, j]], field[[i, j + 1]], field[[i + 1, j + 1]]];
            if window.iter().all(|v| v.is_finite()) {
                windows.push(window);
            }
        }
    }
    windows
}

/// Per configuration: the number of Crofton crossings, and 4 × its Euler contribution (V − 2E + 4F).
fn configuration_weights() -> ([u64; 16], [i64; 16]) {
    const CROFTON_PAIRS: [(usize, usize); 4] = [(0, 1), (0, 2), (0, 3), (1, 2)];
    const EDGES: [(usize, usize); 4] = [(0, 1), (0, 2), (1, 3), (2, 3)];
    let mut crossings = [0u64; 16];
    let mut euler = [0i64; 16];
    for config in 0..16usize {
        let set = |bit: usize| config >> bit & 1 == 1;
        crossings[config] = CROFTON_PAIRS.iter().filter(|&&(a, b)| set(a) != set(b)).count() as u64;
        let vertices = config.count_ones() as i64;
        let edges = EDGES.iter().filter(|&&(a, b)| set(a) && set(b)).count() as i64;
        let face = i64::from(config == 15);
        euler[config] = vertices - 2 * edges + 4 * face;
    }
    (crossings, euler)
}

/// The Minkowski functionals as a battery statistic: V0, V1 and V2 over the battery's thresholds.
pub struct MinkowskiCurves {
    thresholds: Vec<f64>,
}

impl MapStatistic for MinkowskiCurves {
    fn prepare(options: &BatteryOptions, _shape: (usize, usize), _real: &[Array2<f64>]) -> Result<Self> {
        Ok(MinkowskiCurves { thresholds: options.thresholds.clone() })
    }

    fn statistic(&self) -> Statistic {
        Statistic::Minkowski
    }

    fn curves(&self, map: &Array2<f64>) -> Result<(Vec<CurveAxes>, Vec<f64>)> {
        let mf = MinkowskiFunctionals::compute(map.view(), &self.thresholds)?;
        let x = mf.nu.clone();
        let a = vec![
            CurveAxes::new("v0", x.clone(), "nu", "ν [σ]", "V0", false),
            CurveAxes::new("v1", x.clone(), "nu", "ν [σ]", "V1 [pixel⁻¹]", false),
            CurveAxes::new("v2", x, "nu", "ν [σ]", "V2 [pixel⁻²]", false),
        ];
        Ok((a, [mf.v0, mf.v1, mf.v2].concat()))
    }
}
