//! Diagnostics of fitted priors: Gaussianity of the standardized entries (KS against N(0, 1),
//! QQ quantiles), the geometry of each domain's latents, and separability between domains and
//! from the model's own prior N(0, I).

use ndarray::{Array1, Array2};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use super::{row_f64, row_sum, GaussianPrior, PriorKind};
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
    /// The structure a Gaussian prior has to reproduce, measured on the latents.
    pub structure: LatentStructure,
    /// The values behind the summaries (for figures; not serialized).
    #[serde(skip)]
    pub values: DomainValues,
}

/// Second-order structure of a domain's latents about their mean, in the unitary Fourier basis
/// of each channel (see [`super::spectral`]): what a prior must reproduce for decoded maps to
/// keep the real maps' levels, contrast and colour balance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatentStructure {
    /// Per channel: power of the k = 0 mode (the channel's mean level) over the mean power of
    /// the other modes. A white (scalar-prior) draw has 1.
    pub level_power_ratio: Vec<f64>,
    /// Standard deviation of the latents' norms over what a Gaussian with their mean and
    /// (stationary) covariance would give: √(2·tr Σ² + 4·μᵀΣμ) / (2·mean norm).
    pub norm_spread_ratio: f64,
    /// Mean correlation between the residuals of different channels (0 with one channel).
    pub channel_correlation: f64,
    /// Mean residual power per mode in each ring of equal |k| (ring 0 is k = 0), summed over
    /// channels: flat for white residuals.
    pub ring_power: Vec<f64>,
}

impl LatentStructure {
    /// The structure of latents `z` (rows) of shape (C, H, W) about `mean`.
    pub fn measure(z: &Array2<f32>, mean: &Array1<f64>, shape: [usize; 3]) -> LatentStructure {
        let [c, h, w] = shape;
        let s = super::spectral::CrossSpectra::estimate(z, mean.view(), shape);
        let level_power_ratio = (0..c)
            .map(|a| {
                let rest =
                    (s.re.slice(ndarray::s![.., .., a, a]).sum() - s.re[[0, 0, a, a]]) / (h * w - 1).max(1) as f64;
                s.re[[0, 0, a, a]] / rest
            })
            .collect();
        let ring_power = super::spectral::ring_means(&s.traces(), h, w);
        // tr Σ² and μᵀΣμ of the stationary covariance with these cross-spectra.
        let m = super::spectral::modes(mean.view(), shape);
        let (mut tr2, mut quad) = (0.0, 0.0);
        for k in 0..h * w {
            let (y, x) = (k / w, k % w);
            for a in 0..c {
                for b in 0..c {
                    let (re, im) = (s.re[[y, x, a, b]], s.im[[y, x, a, b]]);
                    tr2 += re * re + im * im;
                    let v = m[a][k].conj() * rustfft::num_complex::Complex::new(re, im) * m[b][k];
                    quad += v.re;
                }
            }
        }
        let norms = row_norms(z);
        let mean_norm = norms.iter().sum::<f64>() / norms.len() as f64;
        let sd = (norms.iter().map(|v| (v - mean_norm).powi(2)).sum::<f64>() / (norms.len().max(2) - 1) as f64).sqrt();
        let gaussian_sd = (2.0 * tr2 + 4.0 * quad).max(0.0).sqrt() / (2.0 * mean_norm);
        let mut corr = Vec::new();
        for a in 0..c {
            for b in a + 1..c {
                let (cab, caa, cbb) = (0..h * w).fold((0.0, 0.0, 0.0), |(x, y, q), k| {
                    let (yy, xx) = (k / w, k % w);
                    (x + s.re[[yy, xx, a, b]], y + s.re[[yy, xx, a, a]], q + s.re[[yy, xx, b, b]])
                });
                corr.push(cab / (caa * cbb).sqrt());
            }
        }
        LatentStructure {
            level_power_ratio,
            norm_spread_ratio: sd / gaussian_sd,
            channel_correlation: if corr.is_empty() { 0.0 } else { corr.iter().sum::<f64>() / corr.len() as f64 },
            ring_power,
        }
    }
}

/// Raw values behind the summaries (for figures).
#[derive(Debug, Clone, Default)]
pub struct DomainValues {
    pub norms: Vec<f64>,
    pub distances: Vec<f64>,
    pub origin_angles: Vec<f64>,
    pub pair_angles: Vec<f64>,
}

/// Most pairs (and triples) of latents whose distances and angles the diagnostics summarize.
const MAX_PAIRS: usize = 200_000;

/// Euclidean norm of every row of `z`, in float64.
fn row_norms(z: &Array2<f32>) -> Vec<f64> {
    (0..z.nrows()).map(|i| row_f64(z, i)).map(|r| r.dot(&r).sqrt()).collect()
}

/// Diagnostics of one domain's latents `z` (rows) under its fitted prior.
pub fn domain(prior: &GaussianPrior, z: &Array2<f32>) -> DomainDiagnostics {
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
            (f64::from(v) - prior.mean[j]) / std[j]
        })
        .collect();
    let ks = ks_normal(&standardized);
    let mut sorted = standardized.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let normal = Normal::standard();
    let qq = (1..100)
        .map(|q| (normal.inverse_cdf(q as f64 / 100.0), crate::numerics::percentile_sorted(&sorted, q as f64)))
        .collect();
    let norms = row_norms(z);
    // Pairs (i < j) and triples (i; j, j + 1) in order, every `stride`-th of them when there are
    // more than MAX_PAIRS (deterministic), so that this stays linear in the number of latents
    // beyond about 630 of them; below, every pair counts.
    let pair_stride = (n * n.saturating_sub(1) / 2).div_ceil(MAX_PAIRS).max(1);
    let (mut distances, mut origin_angles) = (Vec::new(), Vec::new());
    let pairs = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j)));
    for (i, j) in pairs.step_by(pair_stride) {
        let (zi, zj) = (row_f64(z, i), row_f64(z, j));
        let diff = &zi - &zj;
        distances.push(diff.dot(&diff).sqrt());
        origin_angles.push(crate::numerics::angle_deg(zi.view(), zj.view()));
    }
    let triple_stride = (n * n).div_ceil(MAX_PAIRS).max(1);
    let triples =
        (0..n).flat_map(|i| (0..n).map(move |j| (i, j, (j + 1) % n))).filter(|&(i, j, k)| j != i && k != i && k != j);
    let mut pair_angles = Vec::new();
    for (i, j, k) in triples.step_by(triple_stride) {
        let zi = row_f64(z, i);
        let a = &row_f64(z, j) - &zi;
        let b = &row_f64(z, k) - &zi;
        pair_angles.push(crate::numerics::angle_deg(a.view(), b.view()));
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
        structure: LatentStructure::measure(z, &prior.mean, prior.shape),
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
pub fn separability(priors: &[GaussianPrior], latents: &[&Array2<f32>]) -> Option<Separability> {
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
    let sums: Vec<Array1<f64>> = latents.iter().map(|z| row_sum(z)).collect();
    let (mut right, mut total) = (0usize, 0usize);
    for (c, z) in latents.iter().enumerate() {
        for row in (0..z.nrows()).map(|i| row_f64(z, i)) {
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
        "{:<16} {:>5} {:>7} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10} {:>11} {:>8}\n",
        "domain", "N", "d", "sigma", "|mu|", "KS D", "origin°", "pair°", "k=0 power", "norm spread", "channel r"
    );
    for d in diags {
        let s = &d.structure;
        let level = s.level_power_ratio.iter().sum::<f64>() / s.level_power_ratio.len().max(1) as f64;
        t.push_str(&format!(
            "{:<16} {:>5} {:>7} {:>9.4} {:>9.3} {:>8.4} {:>10.2} {:>10.2} {:>10.3} {:>11.2} {:>8.2}\n",
            d.name,
            d.n,
            d.d,
            d.sigma,
            d.mean_norm,
            d.ks.statistic,
            d.origin_angle_deg.mean,
            d.pair_angle_deg.mean,
            level,
            s.norm_spread_ratio,
            s.channel_correlation
        ));
    }
    t.push_str(
        "(k=0 power: the channels' level mode over the mean of the other modes, 1 for white latents; norm \
        spread: sd of the norms over a Gaussian's; channel r: residual correlation between channels)\n",
    );
    if let Some(s) = sep {
        for p in &s.pairs {
            t.push_str(&format!(
                "separation {} vs {}: mean distance / radius {:.3}, cosine of mean directions {:.3}\n",
                p.a, p.b, p.mean_distance_over_radius, p.mean_cosine
            ));
        }
        t.push_str(&format!(
            "leave-one-out nearest-centroid accuracy: {:.1} %\n",
            100.0 * s.loo_nearest_centroid_accuracy
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::tests::f32s;
    use crate::prior::PriorKind;
    use ndarray::Axis;
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
    fn many_latents_summarize_a_bounded_subsample_of_their_pairs() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (900, 16);
        let z = f32s(&Array2::from_shape_fn((n, d), |_| rng.sample::<f64, _>(StandardNormal)));
        let prior = GaussianPrior::fit("z", &z, [1, 4, 4], PriorKind::Scalar).unwrap();
        let diag = domain(&prior, &z);
        // 404,550 pairs and 808,200 triples: every 3rd pair and every 5th triple.
        assert_eq!(diag.values.distances.len(), 134_850);
        assert!(diag.values.pair_angles.len() <= MAX_PAIRS, "{}", diag.values.pair_angles.len());
        // White Gaussian latents: distances about √(2d) (1.6 % less in 16 dimensions), right angles
        // at the origin, about 60° between pairs.
        let distance = diag.pairwise_distance.mean / (2.0 * d as f64).sqrt();
        assert!((distance - 0.984).abs() < 0.01, "{:?}", diag.pairwise_distance);
        assert!((diag.origin_angle_deg.mean - 90.0).abs() < 2.0, "{:?}", diag.origin_angle_deg);
        assert!((diag.pair_angle_deg.mean - 60.0).abs() < 3.0, "{:?}", diag.pair_angle_deg);
    }

    #[test]
    fn separated_domains_classify_and_gaussian_latents_pass_ks() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let d = 400;
        let a = Array2::from_shape_fn((30, d), |_| 0.3 + rng.sample::<f64, _>(StandardNormal));
        let b = Array2::from_shape_fn(
            (30, d),
            |(_, j)| if j % 2 == 0 { -0.3 } else { 0.1 } + rng.sample::<f64, _>(StandardNormal),
        );
        let (a, b) = (f32s(&a), f32s(&b));
        let pa = GaussianPrior::fit("a", &a, [1, 20, 20], PriorKind::Scalar).unwrap();
        let pb = GaussianPrior::fit("b", &b, [1, 20, 20], PriorKind::Scalar).unwrap();
        let s = separability(&[pa.clone(), pb], &[&a, &b]).unwrap();
        assert_eq!(s.loo_nearest_centroid_accuracy, 1.0);
        assert!(s.pairs[0].mean_cosine < 0.0);
        let diag = domain(&pa, &a);
        assert!(diag.ks.statistic < 0.02, "{:?}", diag.ks);
        assert!((diag.pair_angle_deg.mean - 60.0).abs() < 3.0, "{:?}", diag.pair_angle_deg);
        assert!((diag.mean_norm_debiased - 0.3 * (d as f64).sqrt()).abs() < 1.0);
        // White Gaussian latents: flat ring power, level mode like the rest, norms spread as a
        // Gaussian's.
        let st = &diag.structure;
        assert!((st.level_power_ratio[0] - 1.0).abs() < 0.8, "{st:?}");
        assert!((st.norm_spread_ratio - 1.0).abs() < 0.5, "{st:?}");
        let rp = &st.ring_power[1..];
        assert!(rp.iter().all(|&p| (p - 1.0).abs() < 0.5), "{rp:?}");
    }

    #[test]
    fn structure_finds_a_suppressed_level_equal_norms_and_coherent_channels() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (n, shape) = (30, [2usize, 8, 8]);
        let d = 128;
        let mut z = Array2::from_shape_fn((n, d), |_| rng.sample::<f64, _>(StandardNormal));
        for mut row in z.rows_mut() {
            // Channel 1 shares most of channel 0; both channels' means removed; unit norm × √d.
            for j in 0..64 {
                row[64 + j] = 0.8 * row[j] + 0.6 * row[64 + j];
            }
            for ch in 0..2 {
                let m = row.slice(ndarray::s![ch * 64..(ch + 1) * 64]).mean().unwrap();
                row.slice_mut(ndarray::s![ch * 64..(ch + 1) * 64]).mapv_inplace(|v| v - m);
            }
            let norm = row.dot(&row).sqrt();
            row.mapv_inplace(|v| v * (d as f64).sqrt() / norm);
        }
        let mean = z.mean_axis(Axis(0)).unwrap();
        let st = LatentStructure::measure(&f32s(&z), &mean, shape);
        assert!(st.level_power_ratio.iter().all(|&r| r < 0.01), "{st:?}");
        assert!(st.norm_spread_ratio < 0.05, "{st:?}");
        assert!((st.channel_correlation - 0.8).abs() < 0.08, "{st:?}");
    }
}
