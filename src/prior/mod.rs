//! Per-domain Gaussian priors on inverted latents, and geometric sampling of new latents.
//!
//! A domain's N latents (each flattened to d = C·H·W numbers) are modelled as N(μ, Σ) with Σ
//! scalar (σ² I, the paper's choice), diagonal, low rank plus isotropic (probabilistic PCA),
//! stationary (diagonal in the Fourier basis, one channel cross-spectrum per mode: see
//! [`spectral`]) or empirical (the sample covariance of the N latents, so that draws are Gaussian
//! combinations of the real latents' deviations from their mean).
//! New latents are drawn from the prior (or slerped between a real latent and a draw) and kept
//! only when they sit among the real latents like a real latent does: see [`geometry`].

pub mod diagnostics;
pub mod file;
pub mod fit;
pub mod geometry;
pub(crate) mod linalg;
pub mod spectral;

use std::sync::Arc;

use ndarray::{Array1, Array2, ArrayView1, Axis, Zip};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Covariance model of a prior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PriorKind {
    /// σ² I (the paper's).
    Scalar,
    /// Per-dimension variances, shrunk toward the scalar variance.
    Diagonal,
    /// K principal directions plus an isotropic residual (probabilistic PCA).
    LowRank { k: usize },
    /// Stationary: per-mode channel cross-spectra, shrunk toward their ring averages.
    Stationary,
    /// The sample covariance (rank N − 1).
    Empirical,
}

impl PriorKind {
    /// The default: the empirical prior, the most faithful in the fidelity benchmark
    /// (FIDELITY.md).
    pub const DEFAULT: PriorKind = PriorKind::Empirical;
}

impl std::str::FromStr for PriorKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "scalar" => Ok(PriorKind::Scalar),
            "diagonal" => Ok(PriorKind::Diagonal),
            "stationary" => Ok(PriorKind::Stationary),
            "empirical" => Ok(PriorKind::Empirical),
            _ => match s.strip_prefix("lowrank:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(PriorKind::LowRank { k }),
                _ => Err(Error::Invalid(format!(
                    "unknown prior kind '{s}' (scalar, diagonal, lowrank:K, stationary or empirical)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for PriorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriorKind::Scalar => f.write_str("scalar"),
            PriorKind::Diagonal => f.write_str("diagonal"),
            PriorKind::LowRank { k } => write!(f, "lowrank:{k}"),
            PriorKind::Stationary => f.write_str("stationary"),
            PriorKind::Empirical => f.write_str("empirical"),
        }
    }
}

/// The fitted covariance.
#[derive(Debug, Clone, PartialEq)]
pub enum Covariance {
    Scalar {
        variance: f64,
    },
    Diagonal {
        variances: Array1<f64>,
        shrinkage: f64,
    },
    /// Σ = Σ_k (λ_k − σ²) w_k w_kᵀ + σ² I with orthonormal rows `directions` (K × d).
    LowRank {
        directions: Array2<f64>,
        eigenvalues: Array1<f64>,
        residual: f64,
    },
    /// Per-mode cross-spectra (already blended with their ring averages with weight
    /// `shrinkage`).
    Stationary {
        spectra: spectral::CrossSpectra,
        shrinkage: f64,
    },
    /// The N latents' deviations from the mean (N × d): Σ = RᵀR / (N − 1).
    Empirical {
        deviations: Deviations,
    },
}

/// The deviations R = Z − μ of an empirical prior (N × d).
#[derive(Debug, Clone, PartialEq)]
pub enum Deviations {
    /// Kept as the fitted latents (float32, as inverted), each row's deviation computed in float64
    /// when it is used: the values of the float64 matrix at a quarter of the memory it and the
    /// latents took together.
    Latents(Arc<Array2<f32>>),
    /// The deviations themselves, as prior files written before the latents were kept store them.
    Residuals(Array2<f64>),
}

impl Deviations {
    /// N.
    pub fn nrows(&self) -> usize {
        match self {
            Deviations::Latents(z) => z.nrows(),
            Deviations::Residuals(r) => r.nrows(),
        }
    }

    /// d.
    pub fn ncols(&self) -> usize {
        match self {
            Deviations::Latents(z) => z.ncols(),
            Deviations::Residuals(r) => r.ncols(),
        }
    }

    /// Calls `f` with every row's deviation from `mean` (the fitted mean), in order.
    pub fn for_each_row(&self, mean: &Array1<f64>, mut f: impl FnMut(ArrayView1<f64>)) {
        match self {
            Deviations::Latents(z) => {
                let mut r = Array1::<f64>::zeros(z.ncols());
                for row in z.rows() {
                    Zip::from(&mut r).and(&row).and(mean).for_each(|r, &v, &m| *r = f64::from(v) - m);
                    f(r.view());
                }
            }
            Deviations::Residuals(r) => r.rows().into_iter().for_each(f),
        }
    }

    /// `start + Σ_i w_i r_i` for each weight vector `w` of `weights` (N weights each): what
    /// adding the weighted rows one after another to `start` gives (`scaled_add`, row 0 first),
    /// bit for bit, for every vector in one pass over the deviations. The columns are cut into
    /// bands worked on in parallel; each band keeps every vector's sums while the rows go by.
    pub fn combinations(&self, mean: &Array1<f64>, start: ArrayView1<f64>, weights: &[Vec<f64>]) -> Vec<Array1<f64>> {
        use rayon::prelude::*;
        const BAND: usize = 256;
        const ROWS: usize = 4;
        let (n, d, b) = (self.nrows(), self.ncols(), weights.len());
        if b == 0 {
            return Vec::new();
        }
        assert!(weights.iter().all(|w| w.len() == n) && start.len() == d && mean.len() == d);
        // Row i's weights of every vector side by side, so that one deviation updates b sums.
        let by_row: Vec<f64> = (0..n).flat_map(|i| weights.iter().map(move |w| w[i])).collect();
        // sums[j·b + k]: vector k at column j.
        let mut sums: Vec<f64> = start.iter().flat_map(|&s| std::iter::repeat_n(s, b)).collect();
        sums.par_chunks_mut(BAND * b).enumerate().for_each(|(band, sums)| {
            let columns = band * BAND..band * BAND + sums.len() / b;
            let band_mean = mean.slice(ndarray::s![columns.clone()]);
            // ROWS rows at a time: each sum is loaded once, takes the rows in order, and is stored.
            let mut deviations = Array2::<f64>::zeros((ROWS, columns.len()));
            for first in (0..n).step_by(ROWS) {
                let rows = ROWS.min(n - first);
                for (k, mut deviation) in deviations.rows_mut().into_iter().take(rows).enumerate() {
                    match self {
                        Deviations::Latents(z) => Zip::from(&mut deviation)
                            .and(z.slice(ndarray::s![first + k, columns.clone()]))
                            .and(band_mean)
                            .for_each(|r, &v, &m| *r = f64::from(v) - m),
                        Deviations::Residuals(r) => deviation.assign(&r.slice(ndarray::s![first + k, columns.clone()])),
                    }
                }
                let w = &by_row[first * b..(first + rows) * b];
                let dev = deviations.as_slice().expect("a standard-layout block");
                let width = columns.len();
                for (j, column) in sums.chunks_exact_mut(b).enumerate() {
                    if rows == ROWS {
                        let r = [dev[j], dev[width + j], dev[2 * width + j], dev[3 * width + j]];
                        let (w0, rest) = w.split_at(b);
                        let (w1, rest) = rest.split_at(b);
                        let (w2, w3) = rest.split_at(b);
                        for ((((sum, a), b1), c), e) in column.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                            *sum = (((*sum + a * r[0]) + b1 * r[1]) + c * r[2]) + e * r[3];
                        }
                    } else {
                        for row in 0..rows {
                            let r = dev[row * width + j];
                            for (sum, &wk) in column.iter_mut().zip(&w[row * b..(row + 1) * b]) {
                                *sum += wk * r;
                            }
                        }
                    }
                }
            }
        });
        (0..b).map(|k| (0..d).map(|j| sums[j * b + k]).collect()).collect()
    }

    /// The deviations as one float64 matrix (N × d).
    pub fn to_matrix(&self, mean: &Array1<f64>) -> Array2<f64> {
        match self {
            Deviations::Latents(z) => z.mapv(f64::from) - mean,
            Deviations::Residuals(r) => r.clone(),
        }
    }

    /// Σ_i r_ij² for each column j, rows added one after another: the sums and their order of
    /// `R.mapv(|v| v * v).sum_axis(Axis(0))` on the float64 matrix R.
    fn sum_of_squares_per_dimension(&self, mean: &Array1<f64>) -> Array1<f64> {
        if self.ncols() < 2 {
            // ndarray sums a column that is the contiguous axis in another order.
            return self.to_matrix(mean).mapv(|v| v * v).sum_axis(Axis(0));
        }
        let mut acc = Array1::<f64>::zeros(self.ncols());
        self.for_each_row(mean, |r| Zip::from(&mut acc).and(&r).for_each(|a, &v| *a += v * v));
        acc
    }

    /// Σ r_ij² over every entry: the sum and its order of `R.mapv(|v| v * v).sum()` on the
    /// float64 matrix R (ndarray's eightfold unrolled sum over the entries in memory order, the
    /// last N·d mod 8 of them added one by one at the end).
    fn sum_of_squares(&self, mean: &Array1<f64>) -> f64 {
        let unrolled = self.nrows() * self.ncols() / 8 * 8;
        let (mut p, mut tail, mut at) = ([0.0f64; 8], Vec::new(), 0usize);
        self.for_each_row(mean, |r| {
            for &v in r {
                if at < unrolled {
                    p[at % 8] += v * v;
                } else {
                    tail.push(v);
                }
                at += 1;
            }
        });
        let mut total = 0.0;
        for k in 0..4 {
            total += p[k] + p[k + 4];
        }
        for v in tail {
            total += v * v;
        }
        total
    }
}

/// A Gaussian prior over one domain's latents.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianPrior {
    /// Domain name (e.g. the latents' file stem).
    pub name: String,
    pub kind: PriorKind,
    pub mean: Array1<f64>,
    pub covariance: Covariance,
    /// Number of latents fitted.
    pub n: usize,
    /// Latent shape (C, H, W); d = C·H·W.
    pub shape: [usize; 3],
    /// Where the latents came from (model, grid, normalization), as recorded in their provenance.
    pub provenance: serde_json::Value,
}

/// Checks a latent matrix (N × d): N ≥ 3, all finite.
pub fn check_latents(z: &Array2<f32>, what: &str) -> Result<()> {
    let n = z.nrows();
    if n < 3 {
        return Err(Error::Invalid(format!("{what}: {n} latent(s); a prior needs at least 3")));
    }
    if let Some((i, _)) = z.axis_iter(Axis(0)).enumerate().find(|(_, r)| r.iter().any(|v| !v.is_finite())) {
        return Err(Error::Invalid(format!("{what}: latent {i} holds NaN or infinite values")));
    }
    Ok(())
}

/// Row `i` of float32 latents `z` as float64 (exactly).
pub fn row_f64(z: &Array2<f32>, i: usize) -> Array1<f64> {
    z.row(i).mapv(f64::from)
}

/// The sum of the rows of `z` in float64: the sums and their order of ndarray's `sum_axis(Axis(0))`
/// on the float64 matrix (rows added one after another).
pub(crate) fn row_sum(z: &Array2<f32>) -> Array1<f64> {
    if z.ncols() < 2 {
        // ndarray sums a column that is the contiguous axis in another order.
        return z.mapv(f64::from).sum_axis(Axis(0));
    }
    let mut sum = Array1::<f64>::zeros(z.ncols());
    for row in z.rows() {
        Zip::from(&mut sum).and(&row).for_each(|s, &v| *s += f64::from(v));
    }
    sum
}

/// The mean of the rows of `z` in float64: that of ndarray's `mean_axis(Axis(0))` on the float64
/// matrix, bit for bit.
fn row_mean(z: &Array2<f32>) -> Array1<f64> {
    row_sum(z) / z.nrows() as f64
}

impl GaussianPrior {
    /// Fits a prior to N latents (rows of `z`, float32 as inverted; computed in float64). An
    /// empirical prior keeps `z` (shared, not copied).
    pub fn fit(name: &str, z: &Arc<Array2<f32>>, shape: [usize; 3], kind: PriorKind) -> Result<GaussianPrior> {
        check_latents(z, name)?;
        let (n, d) = z.dim();
        if shape.iter().product::<usize>() != d {
            return Err(Error::Invalid(format!("{name}: latent shape {shape:?} does not match d = {d}")));
        }
        let mean = row_mean(z);
        let deviations = Deviations::Latents(Arc::clone(z));
        // Unbiased residual variance around the per-dimension mean (not the global scalar mean).
        let dim_var: Array1<f64> = deviations.sum_of_squares_per_dimension(&mean) / (n - 1) as f64;
        let scalar = dim_var.mean().expect("d >= 1");
        if !(scalar > 0.0) {
            return Err(Error::Invalid(format!("{name}: the latents are identical (zero variance)")));
        }
        let covariance = match kind {
            PriorKind::Scalar => Covariance::Scalar { variance: scalar },
            PriorKind::Diagonal => {
                // Empirical-Bayes shrinkage toward the scalar variance: the weight is the share of
                // the spread of per-dimension variances that sampling noise alone explains
                // (a Gaussian sample variance has variance 2σ⁴/(N−1)).
                let spread = dim_var.mapv(|v| (v - scalar).powi(2)).mean().expect("d >= 1");
                let noise = 2.0 * scalar * scalar / (n - 1) as f64;
                let shrinkage = if spread > 0.0 { (noise / spread).min(1.0) } else { 1.0 };
                let variances = dim_var.mapv(|v| shrinkage * scalar + (1.0 - shrinkage) * v);
                Covariance::Diagonal { variances, shrinkage }
            }
            PriorKind::LowRank { k } => {
                if k >= n - 1 || k >= d {
                    return Err(Error::Invalid(format!(
                        "{name}: lowrank:{k} needs K < N − 1 = {} (and K < d = {d})",
                        n - 1
                    )));
                }
                // Eigen-decomposition through the N × N Gram matrix (N ≪ d).
                let centred = deviations.to_matrix(&mean);
                let gram = centred.dot(&centred.t()) / (n - 1) as f64;
                let (values, vectors) = linalg::symmetric_eigen(&gram);
                let total = dim_var.sum();
                let top: f64 = values.iter().take(k).sum();
                let residual = ((total - top) / (d - k) as f64).max(f64::MIN_POSITIVE);
                let mut directions = Array2::<f64>::zeros((k, d));
                for j in 0..k {
                    let u = vectors.column(j);
                    let w = centred.t().dot(&u);
                    let norm = w.dot(&w).sqrt();
                    directions.row_mut(j).assign(&(w / norm));
                }
                let eigenvalues = Array1::from_iter(values.iter().take(k).map(|&l| l.max(residual)));
                Covariance::LowRank { directions, eigenvalues, residual }
            }
            PriorKind::Stationary => {
                let per_mode = spectral::CrossSpectra::estimate(z, mean.view(), shape);
                let rings = per_mode.ring_average();
                let shrinkage = per_mode.ring_shrinkage(&rings, n - 1);
                Covariance::Stationary { spectra: per_mode.blend(&rings, shrinkage), shrinkage }
            }
            PriorKind::Empirical => Covariance::Empirical { deviations },
        };
        Ok(GaussianPrior { name: name.into(), kind, mean, covariance, n, shape, provenance: serde_json::Value::Null })
    }

    /// The latents an empirical prior keeps (None for the other kinds, and for an empirical prior
    /// read from a file that stores its deviations instead).
    pub fn kept_latents(&self) -> Option<&Arc<Array2<f32>>> {
        match &self.covariance {
            Covariance::Empirical { deviations: Deviations::Latents(z) } => Some(z),
            _ => None,
        }
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Mean per-dimension variance (trace(Σ) / d).
    pub fn mean_variance(&self) -> f64 {
        match &self.covariance {
            Covariance::Scalar { variance } => *variance,
            Covariance::Diagonal { variances, .. } => variances.mean().expect("d >= 1"),
            Covariance::LowRank { eigenvalues, residual, .. } => {
                let d = self.dim() as f64;
                (eigenvalues.iter().map(|l| l - residual).sum::<f64>() + residual * d) / d
            }
            Covariance::Stationary { spectra, .. } => spectra.mean_variance(),
            Covariance::Empirical { deviations } => {
                deviations.sum_of_squares(&self.mean) / ((self.n - 1) as f64 * self.dim() as f64)
            }
        }
    }

    /// Per-dimension standard deviation (for standardizing latents).
    pub fn std_devs(&self) -> Array1<f64> {
        match &self.covariance {
            Covariance::Scalar { variance } => Array1::from_elem(self.dim(), variance.sqrt()),
            Covariance::Diagonal { variances, .. } => variances.mapv(f64::sqrt),
            Covariance::LowRank { directions, eigenvalues, residual } => {
                let mut v = Array1::from_elem(self.dim(), *residual);
                for (w, l) in directions.axis_iter(Axis(0)).zip(eigenvalues) {
                    v = v + w.mapv(|x| x * x) * (l - residual);
                }
                v.mapv(f64::sqrt)
            }
            Covariance::Stationary { spectra, .. } => {
                let [_, h, w] = self.shape;
                Array1::from_iter(
                    spectra.channel_variances().into_iter().flat_map(|v| std::iter::repeat_n(v.sqrt(), h * w)),
                )
            }
            Covariance::Empirical { deviations } => {
                (deviations.sum_of_squares_per_dimension(&self.mean) / (self.n - 1) as f64).mapv(f64::sqrt)
            }
        }
    }

    /// One draw from N(`centre`, Σ).
    pub fn draw_around<R: Rng>(&self, centre: ArrayView1<f64>, rng: &mut R) -> Array1<f64> {
        if let Covariance::Empirical { deviations } = &self.covariance {
            let w = self.empirical_weights(rng).expect("an empirical prior");
            return deviations.combinations(&self.mean, centre, &[w]).pop().expect("one draw");
        }
        let d = self.dim();
        let white: Array1<f64> = (0..d).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        match &self.covariance {
            Covariance::Scalar { variance } => &centre + &(white * variance.sqrt()),
            Covariance::Diagonal { variances, .. } => &centre + &(white * variances.mapv(f64::sqrt)),
            Covariance::LowRank { directions, eigenvalues, residual } => {
                let mut x = &centre + &(white * residual.sqrt());
                for (w, l) in directions.axis_iter(Axis(0)).zip(eigenvalues) {
                    let a: f64 = rng.sample(StandardNormal);
                    x = x + &w * (a * (l - residual).max(0.0).sqrt());
                }
                x
            }
            Covariance::Stationary { spectra, .. } => &centre + &Array1::from(spectra.draw(rng)),
            Covariance::Empirical { .. } => unreachable!("drawn above"),
        }
    }

    /// The weights of one draw of an empirical prior, as [`Self::draw_around`] takes them from
    /// `rng`: the draw is `centre + Σ_i w_i r_i` ([`Deviations::combinations`], one pass over
    /// the deviations for many draws). First d standard normals are taken and left unused, as
    /// every kind's draw has always begun with d of them (so a seed gives the draws it gave),
    /// then the N weights. `None` for the other kinds (nothing is taken).
    pub fn empirical_weights<R: Rng>(&self, rng: &mut R) -> Option<Vec<f64>> {
        let Covariance::Empirical { deviations } = &self.covariance else { return None };
        for _ in 0..self.dim() {
            let _: f64 = rng.sample(StandardNormal);
        }
        let scale = 1.0 / ((self.n - 1) as f64).sqrt();
        Some((0..deviations.nrows()).map(|_| scale * rng.sample::<f64, _>(StandardNormal)).collect())
    }

    /// One draw from the prior N(μ, Σ).
    pub fn draw<R: Rng>(&self, rng: &mut R) -> Array1<f64> {
        self.draw_around(self.mean.view(), rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn float32_latents_give_the_bits_of_the_float64_matrix() {
        for (n, d) in [(3, 1), (9, 1), (3, 7), (5, 8), (17, 123), (64, 3072)] {
            let z = cloud32(n, d, 1.0, 0.3, 9);
            let z64 = z.mapv(f64::from);
            let mean = z64.mean_axis(Axis(0)).unwrap();
            assert!(row_mean(&z).iter().zip(&mean).all(|(a, b)| a.to_bits() == b.to_bits()), "{n} x {d}");
            let sum = z64.sum_axis(Axis(0));
            assert!(row_sum(&z).iter().zip(&sum).all(|(a, b)| a.to_bits() == b.to_bits()), "{n} x {d}");
            let centred = &z64 - &mean;
            let kept = Deviations::Latents(z.clone());
            assert_eq!(kept.to_matrix(&mean), centred);
            for dev in [kept, Deviations::Residuals(centred.clone())] {
                let sum = dev.sum_of_squares(&mean);
                assert_eq!(sum.to_bits(), centred.mapv(|v| v * v).sum().to_bits(), "{n} x {d}");
                let (a, b) = (dev.sum_of_squares_per_dimension(&mean), centred.mapv(|v| v * v).sum_axis(Axis(0)));
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{n} x {d}");
            }
            if n >= 5 {
                // Draws from the kept latents are those from the float64 deviations.
                let p = GaussianPrior::fit("c", &z, [1, 1, d], PriorKind::Empirical).unwrap();
                let mut q = p.clone();
                q.covariance = Covariance::Empirical { deviations: Deviations::Residuals(centred) };
                let (mut r1, mut r2) = (ChaCha8Rng::seed_from_u64(3), ChaCha8Rng::seed_from_u64(3));
                assert_eq!(p.draw(&mut r1), q.draw(&mut r2));
                assert_eq!(p.std_devs(), q.std_devs());
                assert_eq!(p.mean_variance().to_bits(), q.mean_variance().to_bits());
            }
        }
    }

    #[test]
    fn combinations_are_the_rows_added_one_by_one() {
        let z = cloud32(7, 600, 1.0, 0.3, 4);
        let p = GaussianPrior::fit("c", &z, [6, 10, 10], PriorKind::Empirical).unwrap();
        let Covariance::Empirical { deviations } = &p.covariance else { unreachable!() };
        let residuals = Deviations::Residuals(deviations.to_matrix(&p.mean));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let start: Array1<f64> = (0..600).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        let weights: Vec<Vec<f64>> =
            (0..5).map(|_| (0..7).map(|_| rng.sample::<f64, _>(StandardNormal)).collect()).collect();
        for kept in [deviations, &residuals] {
            let got = kept.combinations(&p.mean, start.view(), &weights);
            for (w, got) in weights.iter().zip(&got) {
                let mut x = start.clone();
                let mut w = w.iter();
                kept.for_each_row(&p.mean, |row| x.scaled_add(*w.next().unwrap(), &row));
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
        // A draw takes d standard normals it does not use, then the N weights: the stream every
        // seed has always given (runs made before keep their latents).
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for _ in 0..600 {
            let _: f64 = rng.sample(StandardNormal);
        }
        let scale = 1.0 / 6f64.sqrt();
        let mut w = (0..7).map(|_| scale * rng.sample::<f64, _>(StandardNormal));
        let mut x = p.mean.clone();
        deviations.for_each_row(&p.mean, |row| x.scaled_add(w.next().unwrap(), &row));
        assert_eq!(p.draw(&mut ChaCha8Rng::seed_from_u64(6)), x);
    }

    /// Milliseconds per draw of an empirical prior of N latents of d values (N = 4096, d = 3072 by
    /// default, the cost curve's largest run; N and D in the environment): one draw at a time
    /// (rows added one by one, what `draw_around` did before the draws were made together) and
    /// 32 draws in one pass over the latents (`combinations`, as sampling makes them), with the
    /// threads of RAYON_NUM_THREADS: `cargo test --release --lib empirical_draw_speed -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn empirical_draw_speed() {
        let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let (n, d) = (var("N", 4096), var("D", 3072));
        let z = cloud32(n, d, 1.0, 0.3, 5);
        let p = GaussianPrior::fit("c", &z, [d, 1, 1], PriorKind::Empirical).unwrap();
        let Covariance::Empirical { deviations } = &p.covariance else { unreachable!() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let weights: Vec<Vec<f64>> =
            (0..32).map(|_| (0..n).map(|_| rng.sample::<f64, _>(StandardNormal)).collect()).collect();
        let t = std::time::Instant::now();
        let one_by_one: Vec<Array1<f64>> = weights[..4]
            .iter()
            .map(|w| {
                let mut x = p.mean.clone();
                let mut w = w.iter();
                deviations.for_each_row(&p.mean, |row| x.scaled_add(*w.next().unwrap(), &row));
                x
            })
            .collect();
        let single = t.elapsed().as_secs_f64() * 1e3 / 4.0;
        let t = std::time::Instant::now();
        let together = deviations.combinations(&p.mean, p.mean.view(), &weights);
        let batched = t.elapsed().as_secs_f64() * 1e3 / 32.0;
        println!(
            "empirical draw, N = {n}, d = {d}, {} threads: one at a time {single:.2} ms, \
             32 in one pass {batched:.2} ms per draw",
            rayon::current_num_threads()
        );
        assert_eq!(one_by_one[..], together[..4]);
    }

    /// N draws of N(μ, s² I) in d dimensions with ‖μ‖ = m·√d·s.
    pub(crate) fn cloud(n: usize, d: usize, s: f64, m: f64, seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mu = Array1::from_iter((0..d).map(|j| if j % 2 == 0 { m * s } else { -m * s }));
        let z = Array2::from_shape_fn((n, d), |(_, j)| mu[j] + s * rng.sample::<f64, _>(StandardNormal));
        (z, mu)
    }

    /// [`cloud`]'s latents as float32, as inverted latents are.
    pub(crate) fn cloud32(n: usize, d: usize, s: f64, m: f64, seed: u64) -> Arc<Array2<f32>> {
        f32s(&cloud(n, d, s, m, seed).0)
    }

    /// Latents `z` as float32, as inverted latents are.
    pub(crate) fn f32s(z: &Array2<f64>) -> Arc<Array2<f32>> {
        Arc::new(z.mapv(|v| v as f32))
    }

    #[test]
    fn fit_recovers_mean_and_variance() {
        let (z, mu) = cloud(80, 500, 0.8, 0.3, 1);
        for kind in [PriorKind::Scalar, PriorKind::Diagonal, PriorKind::LowRank { k: 5 }] {
            let p = GaussianPrior::fit("c", &f32s(&z), [1, 20, 25], kind).unwrap();
            let err = (&p.mean - &mu).mapv(|v| v * v).mean().unwrap().sqrt();
            assert!(err < 0.8 / (80f64).sqrt() * 1.2, "{kind}: mean error {err}");
            assert!((p.mean_variance() - 0.64).abs() < 0.02, "{kind}: variance {}", p.mean_variance());
        }
    }

    #[test]
    fn diagonal_prior_finds_unequal_variances_and_lowrank_finds_a_direction() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (n, d) = (300, 200);
        let z = Array2::from_shape_fn((n, d), |(_, j)| {
            let s = if j < 100 { 0.5 } else { 1.5 };
            s * rng.sample::<f64, _>(StandardNormal)
        });
        let p = GaussianPrior::fit("d", &f32s(&z), [1, 10, 20], PriorKind::Diagonal).unwrap();
        let Covariance::Diagonal { variances, shrinkage } = &p.covariance else { panic!() };
        assert!(*shrinkage < 0.1, "shrinkage {shrinkage}");
        assert!((variances.slice(ndarray::s![..100]).mean().unwrap() - 0.25).abs() < 0.05);
        assert!((variances.slice(ndarray::s![100..]).mean().unwrap() - 2.25).abs() < 0.2);
        // One strong direction: z = a·u + noise.
        let u: Array1<f64> = Array1::from_iter((0..d).map(|j| if j % 3 == 0 { 1.0 } else { 0.0 }));
        let u = &u / u.dot(&u).sqrt();
        let n = 60;
        let z = Array2::from_shape_fn((n, d), |(i, j)| {
            3.0 * ((i as f64 * 0.7).sin()) * u[j] + 0.1 * rng.sample::<f64, _>(StandardNormal)
        });
        let p = GaussianPrior::fit("l", &f32s(&z), [1, 10, 20], PriorKind::LowRank { k: 1 }).unwrap();
        let Covariance::LowRank { directions, residual, .. } = &p.covariance else { panic!() };
        assert!(directions.row(0).dot(&u).abs() > 0.99);
        assert!((residual - 0.01).abs() < 0.002, "residual {residual}");
    }

    #[test]
    fn a_stationary_prior_keeps_the_level_spectrum_and_channel_coherence_of_its_latents() {
        use spectral::{modes, rings};
        // Latents like inverted ones: two coherent channels (correlation 0.6), a red spectrum,
        // the k = 0 mode 50× below the rest.
        let shape = [2usize, 16, 16];
        let (h, w) = (16, 16);
        let (ring, _) = rings(h, w);
        let mut truth = spectral::CrossSpectra {
            shape,
            re: ndarray::Array4::zeros((h, w, 2, 2)),
            im: ndarray::Array4::zeros((h, w, 2, 2)),
        };
        for k in 0..h * w {
            let p = if k == 0 { 0.02 } else { 1.5 / (ring[k] as f64).sqrt() };
            let (y, x) = (k / w, k % w);
            for (a, b, v) in [(0, 0, p), (1, 1, p), (0, 1, 0.6 * p), (1, 0, 0.6 * p)] {
                truth.re[[y, x, a, b]] = v;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let n = 24;
        let mut z = Array2::<f64>::zeros((n, 512));
        for i in 0..n {
            z.row_mut(i).assign(&(Array1::from(truth.draw(&mut rng)) + 0.3));
        }
        let prior = GaussianPrior::fit("s", &f32s(&z), shape, PriorKind::Stationary).unwrap();
        let Covariance::Stationary { shrinkage, .. } = &prior.covariance else { panic!() };
        assert!(*shrinkage > 0.5, "isotropic latents: mostly the ring average ({shrinkage})");
        let m = 400;
        let (mut k0, mut high, mut cross, mut p0, mut p1) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for _ in 0..m {
            let x = prior.draw(&mut rng) - &prior.mean;
            let f = modes(x.view(), shape);
            k0 += f[0][0].norm_sqr() / m as f64;
            for k in 1..h * w {
                if ring[k] >= 6 {
                    high += f[0][k].norm_sqr();
                }
                cross += (f[0][k] * f[1][k].conj()).re;
                p0 += f[0][k].norm_sqr();
                p1 += f[1][k].norm_sqr();
            }
        }
        let high_modes = ring.iter().filter(|&&r| r >= 6).count() as f64;
        let want_high = ring.iter().filter(|&&r| r >= 6).map(|&r| 1.5 / (r as f64).sqrt()).sum::<f64>() / high_modes;
        assert!((k0 - 0.02).abs() < 0.012, "k = 0 power {k0} (white would be ~1)");
        assert!((high / (m as f64 * high_modes) / want_high - 1.0).abs() < 0.15, "high-k power");
        assert!((cross / (p0 * p1).sqrt() - 0.6).abs() < 0.08, "channel coherence {}", cross / (p0 * p1).sqrt());
        // The scalar prior of the same latents draws the level white: ~50× too much.
        let scalar = GaussianPrior::fit("s", &f32s(&z), shape, PriorKind::Scalar).unwrap();
        let k0_scalar: f64 =
            (0..m).map(|_| modes((scalar.draw(&mut rng) - &scalar.mean).view(), shape)[0][0].norm_sqr()).sum::<f64>()
                / m as f64;
        assert!(k0_scalar > 10.0 * k0, "scalar k = 0 power {k0_scalar}");
    }

    #[test]
    fn bad_latents_are_errors() {
        let (z, _) = cloud(2, 10, 1.0, 0.0, 3);
        assert!(GaussianPrior::fit("x", &f32s(&z), [1, 2, 5], PriorKind::Scalar)
            .unwrap_err()
            .to_string()
            .contains("at least 3"));
        let (mut z, _) = cloud(5, 10, 1.0, 0.0, 3);
        z[[2, 4]] = f64::NAN;
        assert!(GaussianPrior::fit("x", &f32s(&z), [1, 2, 5], PriorKind::Scalar)
            .unwrap_err()
            .to_string()
            .contains("latent 2"));
        let (z, _) = cloud(5, 10, 1.0, 0.0, 3);
        assert!(GaussianPrior::fit("x", &f32s(&z), [1, 2, 5], PriorKind::LowRank { k: 4 }).is_err());
        assert!("lowrank:0".parse::<PriorKind>().is_err());
        assert_eq!("lowrank:3".parse::<PriorKind>().unwrap(), PriorKind::LowRank { k: 3 });
    }
}
