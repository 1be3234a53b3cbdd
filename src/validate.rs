//! `expanse validate`: real against synthetic maps with the statistics of [`crate::stats`],
//! written as `report.json`, `report.md` and figures.
//!
//! Every comparison is made per map or over maps, so that a few very bright maps cannot decide
//! it: per-map power-spectrum slopes (mean ± standard deviation of each set and Welch's t between
//! the means), the spread of per-map levels, the one-point PDF on bins fixed by the real maps'
//! range (with bins for values outside it), the battery of [`crate::stats::battery`] (Minkowski
//! functionals, peaks, scattering, … with bands and distances) and a memorization ratio. Uncertainties come from
//! resampling whole maps (bootstrap), never from treating correlated pixels as independent.
//! One-point statistics, levels and distances use the domain's model space (the normalization
//! the maps were fitted with, read from the synthetic file's provenance) when it is known, else
//! log10 of positive maps, else the values themselves.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{self, AtomicFiles, Selection};
use crate::numerics;
use crate::plot::{BatteryFigure, HistogramPanel, MapGrid, Panel, PanelFigure, SpectrumComparison};
use crate::prep::Normalization;
use crate::stats::battery::{self, Battery, BatteryOptions, PerMapValues, Statistic};
use crate::stats::c2st::{C2stAccuracy, ClassifierTest};
use crate::stats::maps::{memorization, Memorization};
use crate::stats::onepoint::{compare_owned, hellinger, welch_t, PdfComparison};
use crate::stats::power_spectrum::{slope_distance, EnsembleSpectrum};

/// A map-to-map transform (model space, or the identity) for figures.
type MapTransform = Box<dyn Fn(&mut Array2<f64>)>;

/// Summary of one ensemble's power spectrum.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumSummary {
    pub slope: f64,
    pub slope_err: f64,
    pub per_map_slope_mean: f64,
    pub per_map_slope_std: f64,
}

/// Per-map values of one set: mean, sample standard deviation, the values.
#[derive(Debug, Clone, Serialize)]
pub struct PerMap {
    pub mean: f64,
    pub std: f64,
    pub values: Vec<f64>,
}

impl PerMap {
    /// Mean and sample standard deviation (NaN for one map: its spread is unknown).
    pub fn of(values: Vec<f64>) -> PerMap {
        PerMap { mean: numerics::mean(&values), std: numerics::sample_std(&values), values }
    }
}

/// Per-map power-spectrum slopes of both sets and Welch's t (synthetic − real) of their means.
#[derive(Debug, Clone, Serialize)]
pub struct SlopeComparison {
    pub real: PerMap,
    pub synthetic: PerMap,
    pub welch_t: f64,
    pub welch_dof: f64,
}

impl SlopeComparison {
    fn of(real: &EnsembleSpectrum, synthetic: &EnsembleSpectrum) -> SlopeComparison {
        let (welch_t, welch_dof) = welch_t(&synthetic.slopes, &real.slopes);
        SlopeComparison {
            real: PerMap::of(real.slopes.clone()),
            synthetic: PerMap::of(synthetic.slopes.clone()),
            welch_t,
            welch_dof,
        }
    }
}

/// Ensemble spectra in model space, beside the physical ones.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpaceSpectra {
    pub real: SpectrumSummary,
    pub synthetic: SpectrumSummary,
    pub distance: f64,
    pub slopes: SlopeComparison,
}

/// How much the maps' overall levels (per-map means, in the analysis scale) vary.
#[derive(Debug, Clone, Serialize)]
pub struct LevelSpread {
    pub real: PerMap,
    pub synthetic: PerMap,
    /// Standard deviation of the synthetic levels over that of the real ones; when the real maps
    /// all have the same level (their spread below numerical noise, see `per_contrast`), over the
    /// real maps' mean within-map standard deviation instead.
    pub ratio: f64,
    /// Whether `ratio` is in units of the maps' within-map standard deviation (the real levels do
    /// not vary: a ratio to their spread would divide by rounding noise).
    pub per_contrast: bool,
    /// 16th and 84th percentiles of the ratio over bootstrap resamples of the maps.
    pub ratio_interval: (f64, f64),
    /// Mean within-map standard deviation of the real maps (the scale the levels compare with).
    pub real_contrast: f64,
}

/// The one-point PDF on bins fixed by the real maps: equal bins over the real range,
/// plus one bin for values below it and one above.
#[derive(Debug, Clone, Serialize)]
pub struct BinnedPdf {
    pub edges: Vec<f64>,
    /// Fractions of pixels per bin: [below, bins…, above].
    pub real: Vec<f64>,
    pub synthetic: Vec<f64>,
    /// Share of synthetic pixels outside the real maps' range.
    pub synthetic_outside: f64,
    /// Hellinger distance of the two fractions: (1/√2)·√Σ(√p − √q)².
    pub hellinger: f64,
    /// Its standard deviation over bootstrap resamples of both sets of maps.
    pub hellinger_std: f64,
    /// The same distance between two halves of the real maps (even and odd indices): what two
    /// samples of the real domain of half the size already differ by.
    pub hellinger_real_halves: f64,
}

/// Everything `validate` measures.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub real: PathBuf,
    pub synthetic: PathBuf,
    pub n_real: usize,
    pub n_synthetic: usize,
    pub shape: [usize; 2],
    pub units: Option<String>,
    /// The scale of one-point statistics, levels and distances: `model space (<transform>)`,
    /// `log10` or `linear`.
    pub scale: String,
    /// Ensemble spectra in physical units (mean power of each set; a few bright maps dominate).
    pub spectrum_real: SpectrumSummary,
    pub spectrum_synthetic: SpectrumSummary,
    /// TurbuStat's power-spectrum distance (t-statistic of the two ensemble slopes).
    pub spectrum_distance: f64,
    /// synthetic / real mean power per bin (frequency, ratio), physical units.
    pub spectrum_ratio: Vec<(f64, f64)>,
    /// Per-map slopes in physical units and Welch's t.
    pub slopes: SlopeComparison,
    /// Ensemble spectra and per-map slopes in model space (when the normalization is known).
    pub spectrum_model: Option<ModelSpaceSpectra>,
    pub level: LevelSpread,
    pub pdf: BinnedPdf,
    /// Pooled-pixel comparison on TurbuStat's common bins (moments, KS D, W1; for the figure).
    pub pooled: PdfComparison,
    pub memorization: Memorization,
    /// The battery of statistics (power spectrum, PDF, Minkowski functionals, peaks, bispectrum,
    /// scattering, as chosen) with bands and distances, in the analysis scale.
    pub battery: Option<Battery>,
    pub bootstrap: serde_json::Value,
    /// Each target of FIDELITY.md, met or not, and plain-words warnings.
    pub verdict: Verdict,
    pub written: Vec<PathBuf>,
}

/// One target a comparison is held to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub target: String,
    /// The measured value, as shown.
    pub value: String,
    /// None when it could not be measured (`value` says why).
    pub met: Option<bool>,
}

/// Whether the synthetic maps pass for the real ones: FIDELITY.md's targets, each met or not,
/// and warnings in plain words about what differs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub checks: Vec<TargetCheck>,
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Targets met, and targets that could be judged.
    pub fn met_and_judged(&self) -> (usize, usize) {
        let met = self.checks.iter().filter(|c| c.met == Some(true)).count();
        (met, self.checks.iter().filter(|c| c.met.is_some()).count())
    }

    /// `3 of 8 targets met` (with those that could not be judged).
    pub fn headline(&self) -> String {
        let (met, judged) = self.met_and_judged();
        let mut s = format!("{met} of {judged} targets met");
        if judged < self.checks.len() {
            s.push_str(&format!(" ({} not available)", self.checks.len() - judged));
        }
        s
    }

    /// One line per target: `met` / `NOT met` / `n/a`, the target and the value.
    pub fn lines(&self) -> Vec<String> {
        self.checks
            .iter()
            .map(|c| {
                let mark = match c.met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "n/a",
                };
                format!("{mark}: {} ({})", c.target, c.value)
            })
            .collect()
    }
}

/// A number with its spread (NaN, stored as null, when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub mean: f64,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub std: f64,
}

impl Spread {
    /// Not measured (NaN, stored as null).
    pub const UNKNOWN: Spread = Spread { mean: f64::NAN, std: f64::NAN };
}

impl From<&PerMap> for Spread {
    fn from(p: &PerMap) -> Spread {
        Spread { mean: p.mean, std: p.std }
    }
}

impl From<&C2stAccuracy> for Spread {
    fn from(a: &C2stAccuracy) -> Spread {
        Spread { mean: a.mean, std: a.std }
    }
}

/// One battery statistic's χ²/dof, and the same between two halves of the real maps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatisticChi2 {
    pub statistic: Statistic,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub chi2: f64,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub real_halves: f64,
}

/// The key numbers of one validation: what the validate stage stores in the manifest, and what
/// the run summary, the fidelity benchmark and the tests read back. One record, so that a renamed
/// field is a compile error or a clear read error, never a silent NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSummary {
    /// Per-map power-spectrum slopes of each set, and Welch's t between their means.
    pub slope_real: Spread,
    pub slope_synthetic: Spread,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub slope_welch_t: f64,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub ensemble_spectrum_distance: f64,
    /// Spread of per-map levels, synthetic over real (in units of the maps' standard deviation
    /// when every real map has the same level: `level_spread_per_contrast`).
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub level_spread_ratio: f64,
    pub level_spread_per_contrast: bool,
    /// One-point PDF: Hellinger distance (± over resamples), the same between the real halves,
    /// and the fraction of synthetic pixels outside the real range.
    pub hellinger: Spread,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub hellinger_real_halves: f64,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub outside_real_range: f64,
    /// Closest synthetic–real over closest real–real distance, and near-copies flagged.
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub memorization_ratio: f64,
    pub memorized: usize,
    /// The battery's mean χ²/dof and RMS distance, and each statistic's χ²/dof (None without a
    /// battery).
    pub battery: Option<BatterySummary>,
    /// FIDELITY.md's targets met, of those that could be judged; one line per target, and
    /// warnings in plain words.
    pub targets_met: usize,
    pub targets_judged: usize,
    pub verdict: Vec<String>,
    pub warnings: Vec<String>,
}

/// The battery's part of a [`ValidationSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatterySummary {
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub chi2: f64,
    #[serde(deserialize_with = "numerics::f64_or_nan")]
    pub distance: f64,
    pub statistics: Vec<StatisticChi2>,
    /// The classifier two-sample test's accuracy and its floor between two halves of the real
    /// maps (None when not available).
    pub c2st: Option<Spread>,
    pub c2st_real_halves: Option<Spread>,
}

impl BatterySummary {
    /// χ²/dof of `statistic` (None when the battery did not compute it).
    pub fn chi2_of(&self, statistic: Statistic) -> Option<f64> {
        self.statistics.iter().find(|c| c.statistic == statistic).map(|c| c.chi2)
    }
}

impl ValidationReport {
    /// The report's key numbers as one record.
    pub fn summary(&self) -> ValidationSummary {
        let battery = self.battery.as_ref().map(|b| {
            let c2st = b.c2st.as_ref();
            BatterySummary {
                chi2: b.chi2.value,
                distance: b.distance.value,
                statistics: b
                    .statistics
                    .iter()
                    .map(|s| StatisticChi2 {
                        statistic: s.statistic,
                        chi2: s.chi2.value,
                        real_halves: s.chi2_real_halves,
                    })
                    .collect(),
                c2st: c2st.and_then(|c| c.accuracy.as_ref()).map(Spread::from),
                c2st_real_halves: c2st.and_then(|c| c.real_halves.as_ref()).map(Spread::from),
            }
        });
        let (targets_met, targets_judged) = self.verdict.met_and_judged();
        ValidationSummary {
            slope_real: Spread::from(&self.slopes.real),
            slope_synthetic: Spread::from(&self.slopes.synthetic),
            slope_welch_t: self.slopes.welch_t,
            ensemble_spectrum_distance: self.spectrum_distance,
            level_spread_ratio: self.level.ratio,
            level_spread_per_contrast: self.level.per_contrast,
            hellinger: Spread { mean: self.pdf.hellinger, std: self.pdf.hellinger_std },
            hellinger_real_halves: self.pdf.hellinger_real_halves,
            outside_real_range: self.pdf.synthetic_outside,
            memorization_ratio: self.memorization.ratio,
            memorized: self.memorization.flagged.len(),
            battery,
            targets_met,
            targets_judged,
            verdict: self.verdict.lines(),
            warnings: self.verdict.warnings.clone(),
        }
    }
}

impl ValidationSummary {
    /// The key under which the validate stage stores the record in the manifest's counts.
    pub const KEY: &'static str = "validation";

    /// Reads the record a validate stage stored in its manifest counts.
    pub fn from_counts(counts: &std::collections::BTreeMap<String, serde_json::Value>) -> Result<ValidationSummary> {
        let v = counts
            .get(Self::KEY)
            .ok_or_else(|| Error::Invalid(format!("no '{}' record (written by an older expanse?)", Self::KEY)))?;
        serde_json::from_value(v.clone()).map_err(|e| Error::Invalid(format!("its '{}' record: {e}", Self::KEY)))
    }

    /// The C2ST accuracy and its floor, NaN when not available.
    pub fn c2st(&self) -> (Spread, Spread) {
        let b = self.battery.as_ref();
        (
            b.and_then(|b| b.c2st).unwrap_or(Spread::UNKNOWN),
            b.and_then(|b| b.c2st_real_halves).unwrap_or(Spread::UNKNOWN),
        )
    }
}

/// The targets of FIDELITY.md for one comparison (C2ST accuracy, each battery statistic's χ²/dof
/// against its real-halves floor, memorization) and warnings about the PDF, the range, the
/// levels, the slopes and near-copies.
pub fn verdict(r: &ValidationReport) -> Verdict {
    use crate::fidelity::{TARGET_C2ST, TARGET_CHI2_FACTOR, TARGET_HELLINGER, TARGET_LEVEL_RATIO, TARGET_MEMORIZATION};
    let mut v = Verdict::default();
    if let Some(b) = &r.battery {
        let c2st = b.c2st.as_ref();
        match c2st.and_then(|c| c.accuracy.as_ref()) {
            Some(a) => {
                let floor = c2st
                    .and_then(|c| c.real_halves.as_ref())
                    .map(|h| format!(", real halves {:.2}", h.mean))
                    .unwrap_or_default();
                v.checks.push(TargetCheck {
                    target: format!("classifier two-sample test accuracy <= {TARGET_C2ST}"),
                    value: format!("{:.2} ± {:.2}{floor}", a.mean, a.std),
                    met: Some(a.mean <= TARGET_C2ST),
                });
            }
            None => v.checks.push(TargetCheck {
                target: format!("classifier two-sample test accuracy <= {TARGET_C2ST}"),
                value: c2st
                    .map(|c| c.not_available.join("; "))
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "not available".into()),
                met: None,
            }),
        }
        for st in &b.statistics {
            let floor = if st.chi2_real_halves.is_finite() { st.chi2_real_halves.max(1.0) } else { 1.0 };
            let limit = TARGET_CHI2_FACTOR * floor;
            let x = st.chi2.value;
            v.checks.push(TargetCheck {
                target: format!("{} χ²/dof <= {TARGET_CHI2_FACTOR} × max(1, real halves)", st.statistic.title()),
                value: format!("{x:.2}, limit {limit:.2}"),
                met: x.is_finite().then_some(x <= limit),
            });
        }
    }
    let m = r.memorization.ratio;
    v.checks.push(TargetCheck {
        target: format!("memorization ratio > {TARGET_MEMORIZATION}"),
        value: format!("{m:.2}"),
        met: m.is_finite().then_some(m > TARGET_MEMORIZATION),
    });
    let p = &r.pdf;
    let n = p.synthetic.len();
    let (below, above) = (p.synthetic[0], p.synthetic[n - 1]);
    for (f, side) in [(below, "below the real minimum"), (above, "above the real maximum")] {
        if f > 0.01 {
            v.warnings.push(format!("{:.1} % of synthetic pixels lie {side}", 100.0 * f));
        }
    }
    let pdf_floor = if p.hellinger_real_halves.is_finite() { p.hellinger_real_halves } else { 0.0 };
    if p.hellinger > TARGET_HELLINGER.max(2.0 * pdf_floor) {
        v.warnings.push(format!(
            "PDF Hellinger distance {:.2} (two halves of the real maps: {pdf_floor:.2}): the synthetic one-point PDF \
                differs \
                from the real one",
            p.hellinger
        ));
    }
    let l = &r.level;
    if l.per_contrast {
        if l.ratio > 1.0 / TARGET_LEVEL_RATIO {
            v.warnings.push(format!(
                "the real maps all have the same mean level, the synthetic ones spread {:.2} of the maps' standard \
                    deviation",
                l.ratio
            ));
        }
    } else if l.ratio > TARGET_LEVEL_RATIO || l.ratio < 1.0 / TARGET_LEVEL_RATIO {
        v.warnings.push(format!("the synthetic maps' mean levels spread {:.2}× as much as the real ones'", l.ratio));
    }
    let t = r.slopes.welch_t;
    if t.abs() > 3.0 {
        v.warnings.push(format!(
            "the per-map power-spectrum slopes differ: {:.2} ± {:.2} synthetic against {:.2} ± {:.2} real (Welch t = \
                {t:.1})",
            r.slopes.synthetic.mean, r.slopes.synthetic.std, r.slopes.real.mean, r.slopes.real.std
        ));
    }
    if !r.memorization.flagged.is_empty() {
        v.warnings.push(format!(
            "{} synthetic map(s) are near-copies of real maps (closer than half the closest real pair)",
            r.memorization.flagged.len()
        ));
    }
    v
}

fn read_stack(path: &Path, selection: &Selection) -> Result<(Vec<Array2<f64>>, Option<String>)> {
    let maps = io::read_maps(path, selection)?;
    let units = io::common_units(&maps);
    io::check_one_shape(&maps)?;
    // Each map is dropped once converted: the file is never held twice.
    let out = maps.into_iter().map(|m| m.data.mapv(|v| v as f64)).collect();
    crate::runtime::return_freed_memory();
    Ok((out, units))
}

/// Every finite value of `maps`, in order; each map is dropped once its values are in, and their
/// memory given back every 64 MiB, so that the pool grows into it.
fn pool_owned(maps: Vec<Array2<f64>>) -> Vec<f64> {
    const RETURN_EVERY: usize = 8 << 20; // values: 64 MiB of float64
    let mut out = Vec::with_capacity(maps.iter().map(|m| m.len()).sum());
    let mut freed = 0;
    for m in maps {
        out.extend(m.iter().copied().filter(|x| x.is_finite()));
        freed += m.len();
        drop(m);
        if freed >= RETURN_EVERY {
            crate::runtime::return_freed_memory();
            freed = 0;
        }
    }
    crate::runtime::return_freed_memory();
    out
}

/// The histograms draw every pixel up to FIGURE_PIXELS per set, beyond that every k-th (in order):
/// the same picture without holding every pixel of both sets four more times.
fn drawn(maps: &[Array2<f64>], f: &dyn Fn(f64) -> f64) -> Vec<f64> {
    let total: usize = maps.iter().map(|m| m.len()).sum();
    let stride = total.div_ceil(FIGURE_PIXELS).max(1);
    maps.iter().flat_map(|m| m.iter()).step_by(stride).map(|&v| f(v)).filter(|x| x.is_finite()).collect()
}

fn summary(e: &EnsembleSpectrum) -> SpectrumSummary {
    let s = PerMap::of(e.slopes.clone());
    SpectrumSummary {
        slope: e.mean.slope,
        slope_err: e.mean.slope_err,
        per_map_slope_mean: s.mean,
        per_map_slope_std: s.std,
    }
}

/// The domain's normalization, from the provenance of the synthetic (else the real) file.
fn normalization(files: &[&Path]) -> Option<Normalization> {
    files.iter().find_map(|f| {
        let p = io::read_provenance(f).ok()??;
        serde_json::from_value(p.records.get("normalization")?.clone()).ok()
    })
}

fn sum_counts<'a>(rows: impl Iterator<Item = &'a Vec<f64>>, len: usize) -> Vec<f64> {
    let mut out = vec![0.0; len];
    for r in rows {
        for (o, v) in out.iter_mut().zip(r) {
            *o += v;
        }
    }
    out
}

fn finite_mean(m: &Array2<f64>) -> f64 {
    let v: Vec<f64> = m.iter().copied().filter(|x| x.is_finite()).collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn finite_std(m: &Array2<f64>) -> f64 {
    let v: Vec<f64> = m.iter().copied().filter(|x| x.is_finite()).collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Whether the spread of the real maps' levels `levels` is rounding noise: below 10⁻⁵ of the
/// levels' size plus the maps' within-map standard deviation `contrast` (float32 maps carry about
/// 7 significant digits), as when every real map was normalized to one mean.
fn level_spread_is_noise(levels: &[f64], contrast: f64) -> bool {
    let (mean, std) = (numerics::mean(levels), numerics::sample_std(levels));
    !(std > 1e-5 * (mean.abs() + contrast))
}

/// The PDF on the real maps' bins and the level spread, with bootstrap uncertainties.
fn pdf_and_levels(
    real: &[Array2<f64>],
    synthetic: &[Array2<f64>],
    opts: &BatteryOptions,
) -> Result<(BinnedPdf, LevelSpread)> {
    let edges = battery::pdf_edges(real, opts.pdf_bins)?;
    let cr: Vec<Vec<f64>> = real.iter().map(|m| battery::pdf_counts(m, &edges)).collect();
    let cs: Vec<Vec<f64>> = synthetic.iter().map(|m| battery::pdf_counts(m, &edges)).collect();
    let len = opts.pdf_bins + 2;
    let (tr, ts) = (sum_counts(cr.iter(), len), sum_counts(cs.iter(), len));
    let h = hellinger(&tr, &ts);
    let even = sum_counts(cr.iter().step_by(2), len);
    let odd = sum_counts(cr.iter().skip(1).step_by(2), len);
    let lr: Vec<f64> = real.iter().map(finite_mean).collect();
    let ls: Vec<f64> = synthetic.iter().map(finite_mean).collect();
    let contrast = real.iter().map(finite_std).sum::<f64>() / real.len() as f64;
    let per_contrast = level_spread_is_noise(&lr, contrast);
    let ratio = |a: &[f64], b: &[f64]| {
        if per_contrast {
            numerics::sample_std(b) / contrast
        } else {
            numerics::sample_std(b) / numerics::sample_std(a)
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (mut hs, mut rs) = (Vec::new(), Vec::new());
    for _ in 0..opts.resamples {
        let ir: Vec<usize> = (0..real.len()).map(|_| rng.random_range(0..real.len())).collect();
        let is: Vec<usize> = (0..synthetic.len()).map(|_| rng.random_range(0..synthetic.len())).collect();
        hs.push(hellinger(&sum_counts(ir.iter().map(|&i| &cr[i]), len), &sum_counts(is.iter().map(|&i| &cs[i]), len)));
        let r = ratio(&ir.iter().map(|&i| lr[i]).collect::<Vec<_>>(), &is.iter().map(|&i| ls[i]).collect::<Vec<_>>());
        if r.is_finite() {
            rs.push(r);
        }
    }
    let frac = |c: &[f64]| -> Vec<f64> {
        let s: f64 = c.iter().sum::<f64>().max(1.0);
        c.iter().map(|v| v / s).collect()
    };
    let (fr, fs) = (frac(&tr), frac(&ts));
    let pdf = BinnedPdf {
        synthetic_outside: fs[0] + fs[len - 1],
        real: fr,
        synthetic: fs,
        edges,
        hellinger: h,
        hellinger_std: numerics::sample_std(&hs),
        hellinger_real_halves: if real.len() >= 2 { hellinger(&even, &odd) } else { f64::NAN },
    };
    let level = LevelSpread {
        ratio: ratio(&lr, &ls),
        per_contrast,
        ratio_interval: battery::percentiles(rs),
        real_contrast: contrast,
        real: PerMap::of(lr),
        synthetic: PerMap::of(ls),
    };
    Ok((pdf, level))
}

/// One statistic of every map of `files` (each a map or a stack; `selection` picks the HDU or
/// dataset), in the values as read. Files with maps of another shape are fine where the statistic's
/// curves do not depend on it (Minkowski, peaks); otherwise the error names the file.
pub fn statistic_of_files(
    statistic: Statistic,
    opts: &BatteryOptions,
    files: &[PathBuf],
    selection: &Selection,
) -> Result<PerMapValues> {
    let mut all: Option<PerMapValues> = None;
    for file in files {
        let maps: Vec<Array2<f64>> =
            io::read_maps(file, selection)?.iter().map(|m| m.data.mapv(|v| v as f64)).collect();
        let v = battery::per_map_of_file(statistic, opts, &maps, file)?;
        match &mut all {
            None => all = Some(v),
            Some(a) if a.curves == v.curves => a.values.extend(v.values),
            Some(_) => {
                return Err(Error::content(
                    file,
                    format!(
                        "its maps give {statistic} curves of another shape than {}'s: give maps of one size",
                        files[0].display()
                    ),
                ))
            }
        }
    }
    all.ok_or_else(|| Error::Invalid("no input files given".into()))
}

/// Pixels of a set the PDF figure draws, at most (every k-th beyond).
pub(crate) const FIGURE_PIXELS: usize = 4_000_000;

/// Compares real and synthetic maps (FITS/HDF5/NPY stacks of one map size; `selection` picks the
/// HDU or dataset in both) and writes the report and figures into `out_dir`. `opts` holds the
/// power-spectrum options, the battery's statistics and the bootstrap's resamples and seed.
///
/// Paths inside `relative_to` (a run folder) are recorded relative to it.
pub fn validate(
    real: &Path,
    synthetic: &Path,
    selection: &Selection,
    out_dir: &Path,
    opts: &BatteryOptions,
    relative_to: Option<&Path>,
) -> Result<ValidationReport> {
    let ps = &opts.spectrum;
    let (mut r, units) = read_stack(real, selection)?;
    let (mut s, _) = read_stack(synthetic, selection)?;
    if r[0].dim() != s[0].dim() {
        return Err(Error::Invalid(format!(
            "{} holds {}x{} maps but {} holds {}x{}: compare maps of one size",
            real.display(),
            r[0].nrows(),
            r[0].ncols(),
            synthetic.display(),
            s[0].nrows(),
            s[0].ncols()
        )));
    }
    if r.len() < 2 {
        return Err(Error::content(real, "validation needs at least 2 real maps"));
    }
    let er = EnsembleSpectrum::compute(&r, ps)?;
    let es = EnsembleSpectrum::compute(&s, ps)?;
    let norm = normalization(&[synthetic, real]);
    let positive = r.iter().chain(&s).flat_map(|m| m.iter()).filter(|v| v.is_finite()).all(|&v| v > 0.0);
    let (scale, tr): (String, MapTransform) = match &norm {
        Some(n) => {
            let t = n.transform;
            (
                format!("model space ({})", t.describe()),
                Box::new(move |m: &mut Array2<f64>| m.mapv_inplace(|v| t.forward(v))),
            )
        }
        None if positive => ("log10".into(), Box::new(|m: &mut Array2<f64>| m.mapv_inplace(f64::log10))),
        None => ("linear".into(), Box::new(|_: &mut Array2<f64>| {})),
    };
    // What the figures show in physical units, taken before the maps are transformed in place.
    let (n_real, n_synthetic, shape) = (r.len(), s.len(), [r[0].nrows(), r[0].ncols()]);
    let shown: Vec<Array2<f32>> = r.iter().take(6).chain(s.iter().take(6)).map(|m| m.mapv(|v| v as f32)).collect();
    let physical: fn(f64) -> f64 = if positive { f64::log10 } else { |v| v };
    let drawn_physical = norm.is_some().then(|| (drawn(&r, &physical), drawn(&s, &physical)));
    r.iter_mut().chain(s.iter_mut()).for_each(&tr);
    let (rt, st) = (r, s);
    let spectrum_model = match &norm {
        Some(_) => {
            let (mr, ms) = (EnsembleSpectrum::compute(&rt, ps)?, EnsembleSpectrum::compute(&st, ps)?);
            Some((mr, ms))
        }
        None => None,
    };
    let (pdf, level) = pdf_and_levels(&rt, &st, opts)?;
    let battery = if opts.statistics.is_empty() { None } else { Some(battery::run(&rt, &st, opts, real, synthetic)?) };
    let mem = memorization(&rt, &st);
    let drawn_model = (drawn(&rt, &|v| v), drawn(&st, &|v| v));
    // Last, as it takes the maps: the pooled one-point comparison sorts every finite value of both sets.
    let pooled = compare_owned(pool_owned(rt), pool_owned(st), None)?;
    let ratio = er.freqs.iter().zip(er.mean.power.iter().zip(&es.mean.power)).map(|(f, (a, b))| (*f, b / a)).collect();
    let mut report = ValidationReport {
        real: real.to_path_buf(),
        synthetic: synthetic.to_path_buf(),
        n_real,
        n_synthetic,
        shape,
        units: units.clone(),
        scale: scale.clone(),
        spectrum_real: summary(&er),
        spectrum_synthetic: summary(&es),
        spectrum_distance: slope_distance(&er.mean, &es.mean),
        spectrum_ratio: ratio,
        slopes: SlopeComparison::of(&er, &es),
        spectrum_model: spectrum_model.as_ref().map(|(mr, ms)| ModelSpaceSpectra {
            real: summary(mr),
            synthetic: summary(ms),
            distance: slope_distance(&mr.mean, &ms.mean),
            slopes: SlopeComparison::of(mr, ms),
        }),
        level,
        pdf,
        pooled,
        memorization: mem,
        battery,
        bootstrap: serde_json::json!({"resamples": opts.resamples, "seed": opts.seed, "unit": "whole maps, both sets"}),
        verdict: Verdict::default(),
        written: Vec::new(),
    };
    report.verdict = verdict(&report);
    let mut written = Vec::new();
    let series = |name: &str, e: &EnsembleSpectrum| {
        (
            name.to_string(),
            e.freqs.clone(),
            e.mean_log_power.clone(),
            e.std_log_power.clone(),
            e.mean.slope,
            e.mean.slope_err,
        )
    };
    let spec = SpectrumComparison {
        title: "Power spectra: real vs synthetic (mean ± 1σ of log P)".into(),
        series: vec![series("real", &er), series("synthetic", &es)],
        units: units.clone(),
    };
    written.extend(spec.save(&out_dir.join("power_spectra"))?);
    if let Some((mr, ms)) = &spectrum_model {
        let spec = SpectrumComparison {
            title: "Power spectra in model space (mean ± 1σ of log P)".into(),
            series: vec![series("real", mr), series("synthetic", ms)],
            units: Some("model space".into()),
        };
        written.extend(spec.save(&out_dir.join("power_spectra_model"))?);
    }
    let x_label = match (&norm, &units, positive) {
        (Some(_), _, _) => "model-space value".to_string(),
        (None, Some(u), true) => format!("log10 value [{u}]"),
        (None, Some(u), false) => format!("value [{u}]"),
        (None, None, true) => "log10 value".into(),
        (None, None, false) => "value".into(),
    };
    let mut panels = vec![Panel::Histogram(HistogramPanel {
        title: "in model space".into(),
        x_label,
        series: vec![("real".into(), drawn_model.0), ("synthetic".into(), drawn_model.1)],
    })];
    // With a normalization, the same pixels in physical units too (log10 of positive maps).
    if let Some((real_drawn, synthetic_drawn)) = drawn_physical {
        let u = units.as_deref().map(|u| format!(" [{u}]")).unwrap_or_default();
        let label = if positive { format!("log10 value{u}") } else { format!("value{u}") };
        panels.push(Panel::Histogram(HistogramPanel {
            title: "in physical units".into(),
            x_label: label,
            series: vec![("real".into(), real_drawn), ("synthetic".into(), synthetic_drawn)],
        }));
    }
    let pdfs = PanelFigure {
        title: format!(
            "One-point PDF (Hellinger = {:.3} ± {:.3}; real halves {:.3})",
            report.pdf.hellinger, report.pdf.hellinger_std, report.pdf.hellinger_real_halves
        ),
        columns: panels.len(),
        panels,
    };
    written.extend(pdfs.save(&out_dir.join("pdfs"))?);
    let labels: Vec<String> = (0..n_real.min(6))
        .map(|i| format!("real {i}"))
        .chain((0..n_synthetic.min(6)).map(|i| format!("synthetic {i}")))
        .collect();
    let mut grid = MapGrid::with_reference(
        "Real (first) and synthetic maps, one colour scale: the real range",
        shown,
        labels,
        units.clone(),
        n_real.min(6),
    );
    if let Some(n) = &norm {
        grid = grid.in_transform(n.transform);
    }
    written.extend(grid.save(&out_dir.join("maps"))?);
    if let Some(b) = &report.battery {
        written.extend(battery_figures(b, &report.scale, out_dir)?);
    }
    let json_path = out_dir.join("report.json");
    let md_path = out_dir.join("report.md");
    report.written = written.clone();
    report.written.extend([json_path.clone(), md_path.clone()]);
    let mut shown = report.clone();
    shown.real = io::shown_path(real, relative_to);
    shown.synthetic = io::shown_path(synthetic, relative_to);
    shown.written = report.written.iter().map(|p| io::shown_path(p, relative_to)).collect();
    let files = AtomicFiles::new(&[json_path, md_path])?;
    std::fs::write(files.temp(0), serde_json::to_string_pretty(&shown).expect("report serializes"))
        .map_err(|e| Error::write(out_dir, e))?;
    std::fs::write(files.temp(1), markdown(&shown)).map_err(|e| Error::write(out_dir, e))?;
    files.commit()?;
    Ok(report)
}

fn markdown(r: &ValidationReport) -> String {
    let mut s = String::new();
    s.push_str(&format!("# Validation: {} vs {}\n\n", r.synthetic.display(), r.real.display()));
    s.push_str(&format!(
        "{} real and {} synthetic maps of {}x{} pixels{}. One-point statistics, levels and distances use {}; \
         uncertainties come from {} bootstrap resamples of whole maps (seed {}).\n\n",
        r.n_real,
        r.n_synthetic,
        r.shape[0],
        r.shape[1],
        r.units.as_ref().map(|u| format!(" in {u}")).unwrap_or_default(),
        r.scale,
        r.bootstrap["resamples"],
        r.bootstrap["seed"]
    ));
    s.push_str(&format!("## Verdict: {}\n\n", r.verdict.headline()));
    for line in r.verdict.lines() {
        s.push_str(&format!("- {line}\n"));
    }
    for w in &r.verdict.warnings {
        s.push_str(&format!("- warning: {w}\n"));
    }
    s.push_str("\nTargets as in FIDELITY.md (the C2ST and χ² targets need the battery).\n\n");
    s.push_str("| statistic | real | synthetic | comparison |\n| --- | --- | --- | --- |\n");
    let sl = &r.slopes;
    s.push_str(&format!(
        "| per-map power-spectrum slope | {:.3} ± {:.3} | {:.3} ± {:.3} | Welch t = {:.2} |\n",
        sl.real.mean, sl.real.std, sl.synthetic.mean, sl.synthetic.std, sl.welch_t
    ));
    if let Some(m) = &r.spectrum_model {
        s.push_str(&format!(
            "| per-map slope, model space | {:.3} ± {:.3} | {:.3} ± {:.3} | Welch t = {:.2} |\n",
            m.slopes.real.mean, m.slopes.real.std, m.slopes.synthetic.mean, m.slopes.synthetic.std, m.slopes.welch_t
        ));
    }
    s.push_str(&format!(
        "| ensemble slope (mean power, physical units) | {:.3} ± {:.3} | {:.3} ± {:.3} | t = {:.2} |\n",
        r.spectrum_real.slope,
        r.spectrum_real.slope_err,
        r.spectrum_synthetic.slope,
        r.spectrum_synthetic.slope_err,
        r.spectrum_distance
    ));
    if let Some(m) = &r.spectrum_model {
        s.push_str(&format!(
            "| ensemble slope, model space | {:.3} ± {:.3} | {:.3} ± {:.3} | t = {:.2} |\n",
            m.real.slope, m.real.slope_err, m.synthetic.slope, m.synthetic.slope_err, m.distance
        ));
    }
    let l = &r.level;
    let what = if l.per_contrast { "spread / maps' std" } else { "spread ratio" };
    s.push_str(&format!(
        "| per-map level (mean ± spread) | {:.4} ± {:.4} | {:.4} ± {:.4} | {what} {:.2} (68 %: {:.2}–{:.2}) |\n",
        l.real.mean, l.real.std, l.synthetic.mean, l.synthetic.std, l.ratio, l.ratio_interval.0, l.ratio_interval.1
    ));
    s.push_str(&format!(
        "| one-point PDF ({} bins over the real range) | | {:.2} % outside the real range | Hellinger = {:.4} ± {:.4} \
            (real halves: {:.4}) |\n",
        r.pdf.edges.len() - 1,
        100.0 * r.pdf.synthetic_outside,
        r.pdf.hellinger,
        r.pdf.hellinger_std,
        r.pdf.hellinger_real_halves
    ));
    let (a, b) = (&r.pooled.moments_a, &r.pooled.moments_b);
    s.push_str(&format!(
        "| mean | {:.4} | {:.4} | |\n| variance | {:.4} | {:.4} | |\n",
        a.mean, b.mean, a.variance, b.variance
    ));
    s.push_str(&format!(
        "| skewness | {:.3} | {:.3} | |\n| excess kurtosis | {:.3} | {:.3} | |\n",
        a.skewness, b.skewness, a.kurtosis, b.kurtosis
    ));
    s.push_str(&format!(
        "| pooled pixels | | | KS D = {:.4}, W1 = {:.4} (no p-value: pixels are correlated) |\n\n",
        r.pooled.ks_statistic, r.pooled.wasserstein1
    ));
    let m = &r.memorization;
    let real_min = m.real_nn.iter().cloned().fold(f64::INFINITY, f64::min);
    let syn_min = m.synthetic_nn.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    s.push_str(&format!(
        "Memorization: the closest two real maps are {real_min:.4} apart (RMS per pixel), the closest synthetic–real \
            pair {syn_min:.4}: ratio {:.3} \
         (below 1, a synthetic map lies nearer a real one than any two real maps do). {} synthetic map(s) lie closer \
            than half the real–real minimum ({:.4}) and are flagged as near-copies{}.\n\n",
        m.ratio,
        m.flagged.len(),
        m.threshold,
        if m.flagged.is_empty() { String::new() } else { format!(": {:?}", m.flagged) }
    ));
    if let Some(b) = &r.battery {
        s.push_str(&battery_markdown(b, &r.scale));
    }
    s.push_str("Figures: `power_spectra.png`");
    if r.spectrum_model.is_some() {
        s.push_str(", `power_spectra_model.png`");
    }
    s.push_str(", `pdfs.png`, `maps.png`");
    if let Some(b) = &r.battery {
        s.push_str(", `battery.png`");
        for st in &b.statistics {
            s.push_str(&format!(", `battery_{}.png`", st.statistic));
        }
    }
    s.push_str(" (and `.svg`).\n");
    s
}

/// The battery's table: one row per statistic and the overall score.
fn battery_markdown(b: &Battery, scale: &str) -> String {
    let mut s = format!(
        "## Battery of statistics ({scale})\n\n\
         Distance D: root-mean-square over a statistic's entries of (synthetic mean − real mean) in units of the real \
            maps' \
         per-map standard deviation. χ²/dof: the same differences over their standard errors (σ²_real/n_real + \
            σ²_syn/n_syn); \
         about 1 when both sets sample one distribution, whatever their sizes, and about 1 between the two halves of \
            the \
         real maps (last column). Uncertainties: standard deviations over {} bootstrap resamples of whole maps.\n\n\
         | statistic | entries | D | χ²/dof | χ²/dof, real halves |\n| --- | --- | --- | --- | --- |\n",
        b.options.resamples
    );
    let fmt = |i: &battery::Estimate, d: usize| format!("{:.d$} ± {:.d$}", i.value, i.std);
    for st in &b.statistics {
        let entries = if st.excluded > 0 {
            format!("{} (+{} without real scatter)", st.entries, st.excluded)
        } else {
            st.entries.to_string()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} |\n",
            st.statistic.title(),
            entries,
            fmt(&st.distance, 3),
            fmt(&st.chi2, 2),
            st.chi2_real_halves
        ));
    }
    s.push_str(&format!("| **overall** (mean χ², RMS D) | | {} | {} | |\n\n", fmt(&b.distance, 3), fmt(&b.chi2, 2)));
    if let Some(c) = &b.c2st {
        s.push_str(&c2st_markdown(c));
    }
    s
}

/// An accuracy as `0.62 ± 0.04`, or the reason it is missing.
fn accuracy_text(a: &Option<C2stAccuracy>, reason: Option<&str>) -> String {
    match a {
        Some(a) => format!("{:.3} ± {:.3}", a.mean, a.std),
        None => reason.unwrap_or("not available").to_string(),
    }
}

/// The classifier two-sample test's section of report.md.
fn c2st_markdown(c: &ClassifierTest) -> String {
    let o = &c.options;
    let per_class = c.accuracy.as_ref().map_or("–".to_string(), |a| a.per_class.to_string());
    let mut s = format!(
        "## Classifier two-sample test\n\n\
         Can a classifier tell the maps apart by these statistics? An L2-penalized logistic regression (C = {}) on \
            the standardized per-map curves of the battery ({} features{}), {} maps per class, stratified {}-fold \
            cross-validation repeated {} times (seed {}). Accuracy 0.5: it cannot tell; 1: every map gives itself \
            away. ± is the spread over the repeats. The real halves are the same test between two random halves of \
            the real maps: what samples of one domain of half the size reach.\n\n\
         | features | accuracy |\n| --- | --- |\n",
        o.c,
        c.features,
        if c.features_left_out > 0 {
            format!(", {} left out as not finite in some map", c.features_left_out)
        } else {
            String::new()
        },
        per_class,
        o.folds,
        o.repeats,
        o.seed
    );
    let reason = |what: &str| c.not_available.iter().find(|n| n.starts_with(what)).map(String::as_str);
    s.push_str(&format!("| **all statistics** | **{}** |\n", accuracy_text(&c.accuracy, reason("accuracy"))));
    for st in &c.per_statistic {
        s.push_str(&format!(
            "| {} alone ({}) | {} |\n",
            st.statistic.title(),
            st.features,
            accuracy_text(&st.accuracy, st.not_available.as_deref())
        ));
    }
    s.push_str(&format!(
        "| all statistics, two halves of the real maps | {} |\n\n",
        accuracy_text(&c.real_halves, reason("real-halves floor"))
    ));
    s
}

/// One figure per statistic (curves with bands above, residuals below) and a summary of all curves.
/// Titles name the scale without its parameters (`model space`, `log10`, `linear`): report.md
/// states them in full.
fn battery_figures(b: &Battery, scale: &str, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let scale = scale.split(" (").next().unwrap_or(scale);
    let mut written = Vec::new();
    let mut all = Vec::new();
    for st in &b.statistics {
        let panels: Vec<_> = st
            .curves
            .iter()
            .map(|c| {
                let part = if c.axes.name.len() == 2 { c.axes.name.to_uppercase() } else { c.axes.name.clone() };
                let name = if st.curves.len() > 1 {
                    format!("{} ({part})", st.statistic.title())
                } else {
                    st.statistic.title().to_string()
                };
                (format!("{name}: χ²/dof {:.2}, D {:.2}", st.chi2.value, st.distance.value), c.clone())
            })
            .collect();
        all.extend(panels.iter().cloned());
        let fig = BatteryFigure {
            title: format!("{} ({scale}): real vs synthetic, 68 % bootstrap bands", st.statistic.title()),
            columns: panels.len(),
            panels,
        };
        written.extend(fig.save(&out_dir.join(format!("battery_{}", st.statistic)))?);
    }
    let c2st = match b.c2st.as_ref().and_then(|c| c.accuracy.as_ref()) {
        Some(a) => format!("; C2ST accuracy {:.2} ± {:.2}", a.mean, a.std),
        None => String::new(),
    };
    let fig = BatteryFigure {
        title: format!(
            "Battery ({scale}): overall χ²/dof {:.2} ± {:.2}, D {:.2} ± {:.2}{c2st}",
            b.chi2.value, b.chi2.std, b.distance.value, b.distance.std
        ),
        columns: 3,
        panels: all,
    };
    written.extend(fig.save(&out_dir.join("battery"))?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(seed: u64, level: f64, amp: f64) -> Array2<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let g = crate::simulate::gaussian_field(32, 3.0, &mut rng);
        let own: f64 = 0.2 * rng.sample::<f64, _>(rand_distr::StandardNormal);
        g.mapv(|v| level + own + amp * v)
    }

    #[test]
    fn levels_pdf_and_bootstrap_see_what_pooled_pixels_hide() {
        let real: Vec<Array2<f64>> = (0..16).map(|i| field(i, 0.0, 1.0)).collect();
        let twin: Vec<Array2<f64>> = (100..116).map(|i| field(i, 0.0, 1.0)).collect();
        let opts = BatteryOptions::default();
        let (pdf, level) = pdf_and_levels(&real, &twin, &opts).unwrap();
        assert!(pdf.hellinger < 0.1 && pdf.hellinger_std > 0.0, "{pdf:?}");
        assert!(level.ratio_interval.0 <= level.ratio && level.ratio <= level.ratio_interval.1);
        // Maps with random overall levels: pooled pixels still overlap the real range, but the
        // level spread is many times the real one.
        let shifted: Vec<Array2<f64>> =
            (100..116).map(|i| field(i, if i % 2 == 0 { 3.0 } else { -3.0 }, 1.0)).collect();
        let (pdf2, level2) = pdf_and_levels(&real, &shifted, &opts).unwrap();
        assert!(level2.ratio > 5.0 * level.ratio, "{} vs {}", level2.ratio, level.ratio);
        assert!(pdf2.hellinger > pdf.hellinger + 3.0 * pdf.hellinger_std);
        assert!(pdf2.synthetic_outside > 0.05);
        // The fractions cover every pixel, the outside bins included.
        assert!((pdf2.synthetic.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(!level.per_contrast && !level2.per_contrast);
    }

    #[test]
    fn equal_real_levels_give_the_spread_in_units_of_the_maps_contrast() {
        // Real maps normalized to one mean (in float32, as read from a file): their level spread is
        // rounding noise, and a ratio to it would be enormous.
        let centred = |m: Array2<f64>| {
            let mean = m.mean().unwrap();
            m.mapv(|v| ((v - mean + 20.0) as f32) as f64)
        };
        let real: Vec<Array2<f64>> = (0..16).map(|i| centred(field(i, 0.0, 1.0))).collect();
        let synthetic: Vec<Array2<f64>> = (100..116).map(|i| field(i, 20.0, 1.0)).collect();
        let (_, level) = pdf_and_levels(&real, &synthetic, &BatteryOptions::default()).unwrap();
        assert!(level.per_contrast, "{level:?}");
        // The synthetic levels spread by about 0.2 (the fields' own offsets) over maps of std ~1.
        let expected = PerMap::of(synthetic.iter().map(finite_mean).collect()).std / level.real_contrast;
        assert!((level.ratio - expected).abs() < 1e-12 && level.ratio < 1.0, "{level:?}");
        assert!(level.ratio_interval.0 <= level.ratio && level.ratio <= level.ratio_interval.1, "{level:?}");
    }
}
