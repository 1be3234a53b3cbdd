//! Peak counts: histograms of the heights of the local maxima and of the local minima of a 2-D map.
//!
//! The map is standardized first (mean 0, population standard deviation 1 over its finite pixels), so
//! heights are in units of σ. A pixel is a local maximum (minimum) when its value is strictly greater
//! (smaller) than each of its 8 neighbours. Pixels on the edge of the map and pixels with a non-finite
//! neighbour (NaN, ±∞ — masked) cannot be peaks; nothing wraps around. `pixels` counts the pixels that
//! can be peaks (finite, not on the edge, 8 finite neighbours), and the histograms are densities: peaks
//! per bin divided by `pixels`. A minimum is binned at its own height ν (so minima sit at negative ν), on
//! the same edges as the maxima.
//!
//! Binning follows `numpy.histogram`: bin k is [e_k, e_{k+1}) except the last, which is closed
//! [e_{n−1}, e_n]; heights outside the edges are not counted.
//!
//! # Parity
//! `tests/battery_morphology.rs` compares the peak counts (as integers, so exactly) with lenstools 1.2
//! (`_topology.peakCount`, the routine behind `ConvergenceMap.peakCount`, run on the map inside a NaN frame
//! with the finite pixels as mask so that its periodic neighbours are never used) and, in the fixture
//! script, with scipy 1.13.1 `ndimage.maximum_filter` / `minimum_filter` (3×3 footprint) + `numpy.histogram`;
//! fixtures written by `tools/make_morphology_fixtures.py`. The test also checks the density of maxima and
//! minima of a smooth Gaussian random field against theory (σ₂² / (8√3 π σ₁²)).

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::battery::{centres, BatteryOptions, CurveAxes, MapStatistic, Statistic};
use crate::stats::minkowski::standardize;

/// Bin edges −5…5 σ in 41 steps (40 bins of 0.25 σ).
///
/// Symmetric because minima share the edges with the maxima: maxima of Gaussian fields lie almost all in
/// −2…5 σ and minima in −5…2 σ; 0.25 σ bins keep a few tens of peaks per bin on a 256² map.
pub fn default_edges() -> Vec<f64> {
    (0..41).map(|i| -5.0 + 0.25 * i as f64).collect()
}

/// Histograms of peak heights per pixel that can hold a peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakCounts {
    /// Bin edges (σ), as given.
    pub edges: Vec<f64>,
    /// Local maxima per bin divided by `pixels`.
    pub maxima: Vec<f64>,
    /// Local minima per bin (binned at their own height) divided by `pixels`.
    pub minima: Vec<f64>,
    /// Number of pixels where a peak can be found (finite, not on the edge, 8 finite neighbours).
    pub pixels: usize,
}

impl PeakCounts {
    /// Histograms of the heights (in σ of the standardized map) of local maxima and of local minima,
    /// as densities: peaks per bin divided by `pixels` (the number of valid pixels where a peak can be found).
    pub fn compute(map: ArrayView2<f64>, edges: &[f64]) -> Result<PeakCounts> {
        check_edges(edges)?;
        let field = standardize(map, "peak counts")?;
        let (ny, nx) = field.dim();
        let bins = edges.len() - 1;
        let mut maxima = vec![0usize; bins];
        let mut minima = vec![0usize; bins];
        let mut pixels = 0usize;
        for i in 1..ny - 1 {
            for j in 1..nx - 1 {
                let centre = field[[i, j]];
                if !centre.is_finite() {
                    continue;
                }
                let mut finite = true;
                let mut is_maximum = true;
                let mut is_minimum = true;
                for (di, dj) in NEIGHBOURS {
                    let neighbour = field[[(i as isize + di) as usize, (j as isize + dj) as usize]];
                    finite &= neighbour.is_finite();
                    is_maximum &= centre > neighbour;
                    is_minimum &= centre < neighbour;
                }
                if !finite {
                    continue;
                }
                pixels += 1;
                let bin = if is_maximum || is_minimum { histogram_bin(edges, centre) } else { None };
                match bin {
                    Some(b) if is_maximum => maxima[b] += 1,
                    Some(b) => minima[b] += 1,
                    None => {}
                }
            }
        }
        if pixels == 0 {
            return Err(Error::Invalid("map has no pixel with 8 finite neighbours".into()));
        }
        let density = |counts: Vec<usize>| counts.into_iter().map(|c| c as f64 / pixels as f64).collect();
        Ok(PeakCounts { edges: edges.to_vec(), maxima: density(maxima), minima: density(minima), pixels })
    }
}

/// Offsets of the 8 neighbours.
const NEIGHBOURS: [(isize, isize); 8] = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)];

fn check_edges(edges: &[f64]) -> Result<()> {
    if edges.len() < 2 {
        return Err(Error::Invalid(format!("peak counts need at least 2 bin edges, got {}", edges.len())));
    }
    if let Some((index, value)) = edges.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::Invalid(format!("bin edge {index} is {value}; edges must be finite")));
    }
    if let Some(index) = edges.windows(2).position(|pair| pair[1] <= pair[0]) {
        return Err(Error::Invalid(format!(
            "bin edges must increase strictly; edge {} ({}) is not above edge {index} ({})",
            index + 1,
            edges[index + 1],
            edges[index]
        )));
    }
    Ok(())
}

/// numpy.histogram's bin of `value`: [e_k, e_{k+1}), the last bin closed; `None` outside the edges.
fn histogram_bin(edges: &[f64], value: f64) -> Option<usize> {
    let last = edges.len() - 1;
    if value < edges[0] || value > edges[last] {
        return None;
    }
    if value == edges[last] {
        return Some(last - 1);
    }
    Some(edges.partition_point(|&e| e <= value) - 1)
}

/// Peak counts as a battery statistic: maxima and minima per pixel per bin of height.
pub struct PeakCurves {
    edges: Vec<f64>,
}

impl MapStatistic for PeakCurves {
    fn prepare(options: &BatteryOptions, _shape: (usize, usize), _real: &[Array2<f64>]) -> Result<Self> {
        Ok(PeakCurves { edges: options.peak_edges.clone() })
    }

    fn statistic(&self) -> Statistic {
        Statistic::Peaks
    }

    fn curves(&self, map: &Array2<f64>) -> Result<(Vec<CurveAxes>, Vec<f64>)> {
        let p = PeakCounts::compute(map.view(), &self.edges)?;
        let x = centres(&p.edges);
        let a = vec![
            CurveAxes::new("maxima", x.clone(), "nu", "peak height ν [σ]", "maxima per pixel per bin", false),
            CurveAxes::new("minima", x, "nu", "peak height ν [σ]", "minima per pixel per bin", false),
        ];
        Ok((a, [p.maxima, p.minima].concat()))
    }
}
