//! Diagnostics of fitted priors: Gaussianity of the standardized entries (KS against N(0, 1),
//! QQ quantiles), the geometry of each domain's latents, and separability between domains and
//! from the model's own prior N(0, I).

use ndarray::{Array1, Array2, Axis};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use super::{GaussianPrior, PriorKind};
use crate::plot::{HistogramPanel, Panel, PanelFigure, QqPanel};

/// Mean, standard deviation and range of a set of values.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(v: &[f64]) -> Summary {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Summary { mean, std, min, max }
    }
}

/// One-sample Kolmogorov–Smirnov test against N(0, 1).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct KsTest {
    pub statistic: f64,
    pub p_value: f64,
    pub n: usize,
}

/// KS statistic of `values` against N(0, 1) and its asymptotic p-value (Kolmogorov distribution
/// with Stephens' small-sample correction).
pub fn ks_normal(values: &[f64]) -> KsTest {
    let normal = Normal::standard();
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len() as f64;
    let d = v.iter().enumerate().fold(0.0f64, |acc, (i, &x)| {
        let f = normal.cdf(x);
        acc.max((f - i as f64 / n).abs()).max(((i + 1) as f64 / n - f).abs())
    });
    KsTest { statistic: d, p_value: crate::stats::onepoint::kolmogorov_p_value(d, n), n: v.len() }
}

/// What `fit` reports about one domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainDiagnostics {
    pub name: String,
    pub n: usize,
    pub d: usize,
    pub kind: String,
    /// ‖μ̂‖ and its few-shot-corrected estimate √max(0, ‖μ̂‖² − d·σ²/N).
    pub mean_norm: f64,
    pub mean_norm_debiased: f64,
    /// √(trace Σ / d).
    pub sigma: f64,
    /// ‖μ̂‖ / (σ √d): how far the cloud sits from the origin in units of its radius.
    pub offset_over_radius: f64,
    pub ks: KsTest,
    /// (theoretical N(0,1) quantile, sample quantile) at 1 %, 2 %, …, 99 %.
    pub qq: Vec<(f64, f64)>,
    pub norms: Summary,
    pub pairwise_distance: Summary,
    pub origin_angle_deg: Summary,
    pub pair_angle_deg: Summary,
    /// The values behind the summaries (for figures; not serialized).
    #[serde(skip)]
    pub values: DomainValues,
}

/// Raw values behind the summaries (for figures).
#[derive(Debug, Clone, Default)]
pub struct DomainValues {
    pub norms: Vec<f64>,
    pub distances: Vec<f64>,
    pub origin_angles: Vec<f64>,
    pub pair_angles: Vec<f64>,
}

fn angle(u: ndarray::ArrayView1<f64>, v: ndarray::ArrayView1<f64>) -> f64 {
    (u.dot(&v) / (u.dot(&u).sqrt() * v.dot(&v).sqrt())).clamp(-1.0, 1.0).acos().to_degrees()
}

/// Diagnostics of one domain's latents `z` (rows) under its fitted prior.
pub fn domain(prior: &GaussianPrior, z: &Array2<f64>) -> DomainDiagnostics {
    let (n, d) = z.dim();
    let std = prior.std_devs();
    // Standardized entries, at most 200 000 of them (evenly strided, deterministic).
    let total = n * d;
    let stride = total.div_ceil(200_000).max(1);
    let standardized: Vec<f64> = z
        .iter()
        .enumerate()
        .step_by(stride)
        .map(|(idx, &v)| {
            let j = idx % d;
            (v - prior.mean[j]) / std[j]
        })
        .collect();
    let ks = ks_normal(&standardized);
    let mut sorted = standardized.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let normal = Normal::standard();
    let qq = (1..100)
        .map(|q| (normal.inverse_cdf(q as f64 / 100.0), crate::prep::transform::percentile_sorted(&sorted, q as f64)))
        .collect();
    let norms: Vec<f64> = z.axis_iter(Axis(0)).map(|r| r.dot(&r).sqrt()).collect();
    let mut distances = Vec::new();
    let mut origin_angles = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            let diff = &z.row(i) - &z.row(j);
            distances.push(diff.dot(&diff).sqrt());
            origin_angles.push(angle(z.row(i), z.row(j)));
        }
    }
    let mut pair_angles = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let k = (j + 1) % n;
            if j == i || k == i || k == j {
                continue;
            }
            let a = &z.row(j) - &z.row(i);
            let b = &z.row(k) - &z.row(i);
            pair_angles.push(angle(a.view(), b.view()));
        }
    }
    let sigma = prior.mean_variance().sqrt();
    let mu2 = prior.mean.dot(&prior.mean);
    let debiased = (mu2 - d as f64 * sigma * sigma / n as f64).max(0.0).sqrt();
    DomainDiagnostics {
        name: prior.name.clone(),
        n,
        d,
        kind: prior.kind.to_string(),
        mean_norm: mu2.sqrt(),
        mean_norm_debiased: debiased,
        sigma,
        offset_over_radius: mu2.sqrt() / (sigma * (d as f64).sqrt()),
        ks,
        qq,
        norms: Summary::of(&norms),
        pairwise_distance: Summary::of(&distances),
        origin_angle_deg: Summary::of(&origin_angles),
        pair_angle_deg: Summary::of(&pair_angles),
        values: DomainValues { norms, distances, origin_angles, pair_angles },
    }
}

/// How two domains differ.
#[derive(Debug, Clone, Serialize)]
pub struct PairSeparability {
    pub a: String,
    pub b: String,
    /// ‖μ_a − μ_b‖ / √((σ_a² + σ_b²)/2 · d): the distance between the means in units of the
    /// clouds' radius.
    pub mean_distance_over_radius: f64,
    /// cos of the angle between the mean directions.
    pub mean_cosine: f64,
}

/// Separability report for two or more domains.
#[derive(Debug, Clone, Serialize)]
pub struct Separability {
    pub pairs: Vec<PairSeparability>,
    /// Leave-one-out nearest-centroid classification accuracy over all latents.
    pub loo_nearest_centroid_accuracy: f64,
}

/// Separability of several domains (priors and their latents, in the same order).
pub fn separability(priors: &[GaussianPrior], latents: &[Array2<f64>]) -> Option<Separability> {
    if priors.len() < 2 {
        return None;
    }
    let mut pairs = Vec::new();
    for i in 0..priors.len() {
        for j in i + 1..priors.len() {
            let (a, b) = (&priors[i], &priors[j]);
            let diff = &a.mean - &b.mean;
            let spread = ((a.mean_variance() + b.mean_variance()) / 2.0 * a.dim() as f64).sqrt();
            let cos = a.mean.dot(&b.mean) / (a.mean.dot(&a.mean).sqrt() * b.mean.dot(&b.mean).sqrt());
            pairs.push(PairSeparability {
                a: a.name.clone(),
                b: b.name.clone(),
                mean_distance_over_radius: diff.dot(&diff).sqrt() / spread,
                mean_cosine: cos,
            });
        }
    }
    let sums: Vec<Array1<f64>> = latents.iter().map(|z| z.sum_axis(Axis(0))).collect();
    let (mut right, mut total) = (0usize, 0usize);
    for (c, z) in latents.iter().enumerate() {
        for row in z.axis_iter(Axis(0)) {
            let best = (0..latents.len())
                .map(|k| {
                    let centroid = if k == c {
                        (&sums[k] - &row) / (latents[k].nrows() - 1) as f64
                    } else {
                        &sums[k] / latents[k].nrows() as f64
                    };
                    let diff = &row - &centroid;
                    (k, diff.dot(&diff))
                })
                .min_by(|a, b| a.1.partial_cmp(&b.1).expect("finite"))
                .expect("domains")
                .0;
            right += usize::from(best == c);
            total += 1;
        }
    }
    Some(Separability { pairs, loo_nearest_centroid_accuracy: right as f64 / total as f64 })
}

/// The diagnostics figure of `fit`: QQ of the standardized entries and histograms of
/// distances, angles and norms, one series per domain.
pub fn figure(diags: &[DomainDiagnostics], kind: PriorKind) -> PanelFigure {
    let series = |f: fn(&DomainValues) -> &Vec<f64>| -> Vec<(String, Vec<f64>)> {
        diags.iter().map(|d| (d.name.clone(), f(&d.values).clone())).collect()
    };
    let histogram = |title: &str, x_label: &str, f: fn(&DomainValues) -> &Vec<f64>| {
        Panel::Histogram(HistogramPanel { title: title.into(), x_label: x_label.into(), series: series(f) })
    };
    PanelFigure {
        title: format!("Latent diagnostics ({kind} prior)"),
        columns: 2,
        panels: vec![
            Panel::Qq(QqPanel {
                title: "Gaussianity of standardized entries".into(),
                series: diags.iter().map(|d| (d.name.clone(), d.qq.clone())).collect(),
            }),
            histogram("Pairwise distances", "distance ‖z_i − z_j‖", |v| &v.distances),
            histogram("Angles at the origin", "angle (z_i, z_j) [deg]", |v| &v.origin_angles),
            histogram("Pair angles at a latent", "angle (z_j − z_i, z_k − z_i) [deg]", |v| &v.pair_angles),
            histogram("Latent norms", "‖z‖", |v| &v.norms),
        ],
    }
}

/// The text table `fit` prints: one line per domain, then the separations.
pub fn table(diags: &[DomainDiagnostics], sep: Option<&Separability>) -> String {
    let mut t = format!(
        "{:<16} {:>5} {:>7} {:>9} {:>9} {:>8} {:>9} {:>10} {:>10}\n",
        "domain", "N", "d", "sigma", "|mu|", "KS D", "KS p", "origin°", "pair°"
    );
    for d in diags {
        t.push_str(&format!(
            "{:<16} {:>5} {:>7} {:>9.4} {:>9.3} {:>8.4} {:>9.2e} {:>10.2} {:>10.2}\n",
            d.name, d.n, d.d, d.sigma, d.mean_norm, d.ks.statistic, d.ks.p_value, d.origin_angle_deg.mean, d.pair_angle_deg.mean
        ));
    }
    if let Some(s) = sep {
        for p in &s.pairs {
            t.push_str(&format!(
                "separation {} vs {}: mean distance / radius {:.3}, cosine of mean directions {:.3}\n",
                p.a, p.b, p.mean_distance_over_radius, p.mean_cosine
            ));
        }
        t.push_str(&format!("leave-one-out nearest-centroid accuracy: {:.1} %\n", 100.0 * s.loo_nearest_centroid_accuracy));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::PriorKind;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    #[test]
    fn ks_accepts_normal_samples_and_rejects_uniform_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let g: Vec<f64> = (0..5000).map(|_| rng.sample(StandardNormal)).collect();
        let t = ks_normal(&g);
        assert!(t.p_value > 0.01 && t.statistic < 0.03, "{t:?}");
        let u: Vec<f64> = (0..5000).map(|_| rng.random_range(-1.7..1.7)).collect();
        assert!(ks_normal(&u).p_value < 1e-6);
    }

    #[test]
    fn separated_domains_classify_and_gaussian_latents_pass_ks() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let d = 400;
        let a = Array2::from_shape_fn((30, d), |_| 0.3 + rng.sample::<f64, _>(StandardNormal));
        let b = Array2::from_shape_fn((30, d), |(_, j)| if j % 2 == 0 { -0.3 } else { 0.1 } + rng.sample::<f64, _>(StandardNormal));
        let pa = GaussianPrior::fit("a", &a, [1, 20, 20], PriorKind::Scalar).unwrap();
        let pb = GaussianPrior::fit("b", &b, [1, 20, 20], PriorKind::Scalar).unwrap();
        let s = separability(&[pa.clone(), pb], &[a.clone(), b]).unwrap();
        assert_eq!(s.loo_nearest_centroid_accuracy, 1.0);
        assert!(s.pairs[0].mean_cosine < 0.0);
        let diag = domain(&pa, &a);
        assert!(diag.ks.statistic < 0.02, "{:?}", diag.ks);
        assert!((diag.pair_angle_deg.mean - 60.0).abs() < 3.0, "{:?}", diag.pair_angle_deg);
        assert!((diag.mean_norm_debiased - 0.3 * (d as f64).sqrt()).abs() < 1.0);
    }
}
