//! One-point statistics: histograms on common bins (TurbuStat's `PDF_Distance` binning), the
//! two-sample KS test, Hellinger distance, Wasserstein-1 and moments; the PDF as a battery statistic.

use ndarray::Array2;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::stats::battery::{centres, BatteryOptions, CurveAxes, MapStatistic, Statistic};

/// Mean, variance, skewness and excess kurtosis (population moments).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Moments {
    pub mean: f64,
    pub variance: f64,
    pub skewness: f64,
    pub kurtosis: f64,
}

impl Moments {
    pub fn of(v: &[f64]) -> Moments {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let m = |k: i32| v.iter().map(|x| (x - mean).powi(k)).sum::<f64>() / n;
        let variance = m(2);
        Moments { mean, variance, skewness: m(3) / variance.powf(1.5), kurtosis: m(4) / (variance * variance) - 3.0 }
    }
}

/// Welch's t of the difference of two means (a − b) and its Welch–Satterthwaite degrees of
/// freedom; (NaN, NaN) with fewer than two values in a sample.
pub fn welch_t(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.len() < 2 || b.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (n, m, v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0))
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(a), stats(b));
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    if se2 == 0.0 {
        return (if ma == mb { 0.0 } else { f64::INFINITY.copysign(ma - mb) }, f64::NAN);
    }
    ((ma - mb) / se2.sqrt(), se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0)))
}

/// Hellinger distance (1/√2)·√Σ(√p − √q)² of two histograms on the same bins, each normalized to
/// unit sum (counts, densities on equal bins or fractions alike).
pub fn hellinger(a: &[f64], b: &[f64]) -> f64 {
    let (sa, sb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
    (a.iter().zip(b).map(|(p, q)| ((p / sa).sqrt() - (q / sb).sqrt()).powi(2)).sum::<f64>() / 2.0).sqrt()
}

/// Two samples compared on common bins.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PdfComparison {
    /// Common bin edges: ⌊√((n_a + n_b)/2)⌋ points from the joint minimum to the joint maximum
    /// (TurbuStat's `common_histogram_bins`).
    pub edges: Vec<f64>,
    /// Densities of each sample in those bins.
    pub density_a: Vec<f64>,
    pub density_b: Vec<f64>,
    /// The largest gap between the two empirical CDFs. (No p-value: pixels of a map are
    /// correlated, so the pooled pixels are not independent samples.)
    pub ks_statistic: f64,
    /// (1/√2)·√Σ(√p − √q)² of the bin fractions, as TurbuStat computes it.
    pub hellinger: f64,
    pub wasserstein1: f64,
    pub moments_a: Moments,
    pub moments_b: Moments,
}

fn histogram(v: &[f64], edges: &[f64]) -> Vec<f64> {
    let nb = edges.len() - 1;
    let (lo, hi) = (edges[0], edges[nb]);
    let mut c = vec![0.0; nb];
    for &x in v {
        if x < lo || x > hi {
            continue;
        }
        let b = if x == hi { nb - 1 } else { (edges.partition_point(|&e| e <= x) - 1).min(nb - 1) };
        c[b] += 1.0;
    }
    let total: f64 = c.iter().sum();
    c.iter().zip(edges.windows(2)).map(|(k, w)| k / (total * (w[1] - w[0]))).collect()
}

/// Asymptotic p-value of a Kolmogorov–Smirnov statistic `d` for an effective sample size `n`:
/// the Kolmogorov distribution's survival function Q(λ) = 2 Σ (−1)^(k−1) exp(−2k²λ²) at Stephens'
/// λ = (√n + 0.12 + 0.11/√n)·d (Numerical Recipes' `probks`; SciPy < 1.5's `ks_2samp` p-value,
/// = `scipy.special.kolmogorov(λ)` to 1e-11). 1 for d = 0. Not SciPy ≥ 1.5's `method='asymp'`,
/// which evaluates the finite-n one-sample distribution `kstwo.sf(d, round(n))`: see
/// tests/stats_claims.rs for how far apart they are.
pub fn kolmogorov_p_value(d: f64, n: f64) -> f64 {
    if d <= 0.0 {
        return 1.0;
    }
    let lambda = (n.sqrt() + 0.12 + 0.11 / n.sqrt()) * d;
    let mut p = 0.0;
    for k in 1..=100 {
        let term = 2.0 * (-1f64).powi(k - 1) * (-2.0 * (k as f64).powi(2) * lambda * lambda).exp();
        p += term;
        if term.abs() < 1e-12 {
            return p.clamp(0.0, 1.0);
        }
    }
    // The series has not converged: λ < 0.038, where Q(λ) = 1 − O(exp(−π²/(8λ²))) is 1 in double
    // precision (the truncated sum would be anything between 0 and 1).
    1.0
}

/// Sorts finite values in increasing order, in place and on every thread, without the scratch
/// half-copy a stable sort takes (values that compare equal are equal numbers: their order changes
/// no statistic computed from the sorted sample, and the sorted values are the same whatever the
/// threads).
fn sort(v: &mut [f64]) {
    use rayon::slice::ParallelSliceMut;
    v.par_sort_unstable_by(|x, y| x.partial_cmp(y).expect("finite"));
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    sort(&mut v);
    v
}

/// Walks the distinct values x of two sorted samples in increasing order, calling `f(x, F_a(x),
/// F_b(x))` with the empirical CDFs just after x.
fn ecdf_walk_sorted(a: &[f64], b: &[f64], mut f: impl FnMut(f64, f64, f64)) {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        f(x, i as f64 / na, j as f64 / nb);
    }
}

/// Two-sample Kolmogorov–Smirnov statistic and asymptotic p-value ([`kolmogorov_p_value`] with
/// n = n_a·n_b/(n_a + n_b)); D is `scipy.stats.ks_2samp`'s. (statrs 0.19's
/// `ks_twosample` loops forever when the statistic is 0, i.e. for identical samples.)
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> (f64, f64) {
    ks_two_sample_sorted(&sorted(a), &sorted(b))
}

fn ks_two_sample_sorted(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut d = 0.0f64;
    ecdf_walk_sorted(a, b, |_, fa, fb| d = d.max((fa - fb).abs()));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    (d, kolmogorov_p_value(d, na * nb / (na + nb)))
}

/// 1-Wasserstein distance of two empirical distributions: ∫|F_a − F_b| dx.
pub fn wasserstein1(a: &[f64], b: &[f64]) -> f64 {
    wasserstein1_sorted(&sorted(a), &sorted(b))
}

fn wasserstein1_sorted(a: &[f64], b: &[f64]) -> f64 {
    // Between consecutive distinct values the CDFs are constant at their values after the first.
    let (mut total, mut prev) = (0.0, None::<(f64, f64)>);
    ecdf_walk_sorted(a, b, |x, fa, fb| {
        if let Some((x0, gap)) = prev {
            total += gap * (x - x0);
        }
        prev = Some((x, (fa - fb).abs()));
    });
    total
}

/// Compares two samples (finite values only). `nbins` counts bins (TurbuStat's `nbins` counts
/// edges); the default is TurbuStat's (`PDF_Distance`, checked in tests/stats_claims.rs).
pub fn compare(a: &[f64], b: &[f64], nbins: Option<usize>) -> Result<PdfComparison> {
    compare_owned(a.to_vec(), b.to_vec(), nbins)
}

/// [`compare`] working in the samples given, without copies of them: the same result.
pub fn compare_owned(mut a: Vec<f64>, mut b: Vec<f64>, nbins: Option<usize>) -> Result<PdfComparison> {
    a.retain(|v| v.is_finite());
    b.retain(|v| v.is_finite());
    if a.len() < 2 || b.len() < 2 {
        return Err(Error::Invalid("one-point statistics need at least 2 finite values in each sample".into()));
    }
    let lo = a.iter().chain(&b).cloned().fold(f64::INFINITY, f64::min);
    let hi = a.iter().chain(&b).cloned().fold(f64::NEG_INFINITY, f64::max);
    let points =
        nbins.map(|n| n + 1).unwrap_or_else(|| (((a.len() + b.len()) as f64 / 2.0).sqrt().floor() as usize).max(3));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let edges: Vec<f64> = (0..points).map(|i| lo + (hi - lo) * i as f64 / (points - 1) as f64).collect();
    let density_a = histogram(&a, &edges);
    let density_b = histogram(&b, &edges);
    let hellinger = hellinger(&density_a, &density_b);
    let (moments_a, moments_b) = (Moments::of(&a), Moments::of(&b));
    sort(&mut a);
    sort(&mut b);
    let (ks_statistic, _) = ks_two_sample_sorted(&a, &b);
    Ok(PdfComparison {
        edges,
        density_a,
        density_b,
        ks_statistic,
        hellinger,
        wasserstein1: wasserstein1_sorted(&a, &b),
        moments_a,
        moments_b,
    })
}

/// The PDF's bin edges: `bins` equal bins over the finite range of `maps`.
pub fn pdf_edges(maps: &[Array2<f64>], bins: usize) -> Result<Vec<f64>> {
    let values = maps.iter().flat_map(|m| m.iter().copied()).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(Error::Invalid("the real maps hold no finite values".into()));
    }
    let hi = if hi > lo { hi } else { lo + 1.0 };
    Ok((0..=bins).map(|i| lo + (hi - lo) * i as f64 / bins as f64).collect())
}

/// Counts of the finite pixels of `map` per bin: [below, bins…, above] (the last bin closed).
pub fn pdf_counts(map: &Array2<f64>, edges: &[f64]) -> Vec<f64> {
    let nb = edges.len() - 1;
    let (lo, hi) = (edges[0], edges[nb]);
    let mut c = vec![0.0; nb + 2];
    for &x in map.iter().filter(|v| v.is_finite()) {
        let b = if x < lo {
            0
        } else if x > hi {
            nb + 1
        } else if x == hi {
            nb
        } else {
            edges.partition_point(|&e| e <= x).clamp(1, nb)
        };
        c[b] += 1.0;
    }
    c
}

/// [`pdf_counts`] as fractions of the map's finite pixels.
pub fn pdf_fractions(map: &Array2<f64>, edges: &[f64]) -> Vec<f64> {
    let c = pdf_counts(map, edges);
    let total: f64 = c.iter().sum::<f64>().max(1.0);
    c.iter().map(|v| v / total).collect()
}

/// The one-point PDF as a battery statistic: fractions of pixels per bin of the real maps' range,
/// plus a bin below and one above it.
pub struct PdfCurves {
    edges: Vec<f64>,
}

impl MapStatistic for PdfCurves {
    fn prepare(options: &BatteryOptions, _shape: (usize, usize), real: &[Array2<f64>]) -> Result<Self> {
        Ok(PdfCurves { edges: pdf_edges(real, options.pdf_bins)? })
    }

    fn statistic(&self) -> Statistic {
        Statistic::Pdf
    }

    fn curves(&self, map: &Array2<f64>) -> Result<(Vec<CurveAxes>, Vec<f64>)> {
        let e = &self.edges;
        let w = e[1] - e[0];
        let mut x = vec![e[0] - 0.5 * w];
        x.extend(centres(e));
        x.push(e[e.len() - 1] + 0.5 * w);
        let axes = CurveAxes::new(
            "fraction",
            x,
            "value",
            "value (bins below and above the real range at the ends)",
            "fraction of pixels",
            false,
        );
        Ok((vec![axes], pdf_fractions(map, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    #[test]
    fn identical_samples_are_at_distance_zero_and_shifted_ones_are_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a: Vec<f64> = (0..4000).map(|_| rng.sample(StandardNormal)).collect();
        let same = compare(&a, &a, None).unwrap();
        assert_eq!(same.ks_statistic, 0.0);
        assert!(same.hellinger.abs() < 1e-12 && same.wasserstein1.abs() < 1e-12);
        let b: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
        let shifted = compare(&a, &b, None).unwrap();
        assert!((shifted.wasserstein1 - 0.5).abs() < 1e-9, "W1 of a shift is the shift");
        assert!(shifted.ks_statistic > 0.15 && shifted.hellinger > 0.1);
        // Welch's t: scipy.stats.ttest_ind(equal_var=False) gives t = −1.13389, dof = 3.23472.
        let (t, dof) = welch_t(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0]);
        assert!((t + 1.1338934190276817).abs() < 1e-12, "{t}");
        assert!((dof - 3.234718826405868).abs() < 1e-9, "{dof}");
        let m = Moments::of(&a);
        assert!(
            m.mean.abs() < 0.05 && (m.variance - 1.0).abs() < 0.05 && m.skewness.abs() < 0.1 && m.kurtosis.abs() < 0.2
        );
    }
}
