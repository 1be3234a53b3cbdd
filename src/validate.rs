//! `expanse validate`: real against synthetic maps with the statistics of [`crate::stats`],
//! written as `report.json`, `report.md` and figures.

use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{self, AtomicFiles, Selection};
use crate::plot::{HistogramPanel, MapGrid, Panel, PanelFigure, SpectrumComparison};
use crate::stats::maps::{memorization, Memorization};
use crate::stats::onepoint::{compare, PdfComparison};
use crate::stats::power_spectrum::{slope_distance, EnsembleSpectrum, PowerSpectrumOptions};

/// Summary of one ensemble's power spectrum.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumSummary {
    pub slope: f64,
    pub slope_err: f64,
    pub per_map_slope_mean: f64,
    pub per_map_slope_std: f64,
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
    /// `log10` when every value is positive (one-point statistics and distances use log10 of
    /// the maps), else `linear`.
    pub scale: String,
    pub spectrum_real: SpectrumSummary,
    pub spectrum_synthetic: SpectrumSummary,
    /// TurbuStat's power-spectrum distance (t-statistic of the two ensemble slopes).
    pub spectrum_distance: f64,
    /// synthetic / real mean power per bin (frequency, ratio).
    pub spectrum_ratio: Vec<(f64, f64)>,
    pub pdf: PdfComparison,
    pub memorization: Memorization,
    pub written: Vec<PathBuf>,
}

fn read_stack(path: &Path) -> Result<(Vec<Array2<f64>>, Option<String>)> {
    let maps = io::read_maps(path, &Selection::default())?;
    let units = io::common_units(&maps);
    let stack = io::stack(&maps)?;
    Ok((stack.axis_iter(Axis(0)).map(|m| m.mapv(|v| v as f64)).collect(), units))
}

fn summary(e: &EnsembleSpectrum) -> SpectrumSummary {
    let n = e.slopes.len() as f64;
    let m = e.slopes.iter().sum::<f64>() / n;
    SpectrumSummary {
        slope: e.mean.slope,
        slope_err: e.mean.slope_err,
        per_map_slope_mean: m,
        per_map_slope_std: (e.slopes.iter().map(|s| (s - m).powi(2)).sum::<f64>() / n).sqrt(),
    }
}

/// Compares real and synthetic maps (FITS/HDF5/NPY stacks of one map size) and writes the
/// report and figures into `out_dir`.
pub fn validate(real: &Path, synthetic: &Path, out_dir: &Path, ps: &PowerSpectrumOptions) -> Result<ValidationReport> {
    let (r, units) = read_stack(real)?;
    let (s, _) = read_stack(synthetic)?;
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
    let positive = r.iter().chain(&s).flat_map(|m| m.iter()).filter(|v| v.is_finite()).all(|&v| v > 0.0);
    let tr = |m: &Array2<f64>| if positive { m.mapv(f64::log10) } else { m.clone() };
    let (rt, st): (Vec<_>, Vec<_>) = (r.iter().map(tr).collect(), s.iter().map(tr).collect());
    let pool = |v: &[Array2<f64>]| -> Vec<f64> { v.iter().flat_map(|m| m.iter().copied()).filter(|x| x.is_finite()).collect() };
    let pdf = compare(&pool(&rt), &pool(&st), None)?;
    let mem = memorization(&rt, &st);
    let ratio = er.freqs.iter().zip(er.mean.power.iter().zip(&es.mean.power)).map(|(f, (a, b))| (*f, b / a)).collect();
    let scale = if positive { "log10" } else { "linear" }.to_string();
    let mut report = ValidationReport {
        real: real.to_path_buf(),
        synthetic: synthetic.to_path_buf(),
        n_real: r.len(),
        n_synthetic: s.len(),
        shape: [r[0].nrows(), r[0].ncols()],
        units: units.clone(),
        scale: scale.clone(),
        spectrum_real: summary(&er),
        spectrum_synthetic: summary(&es),
        spectrum_distance: slope_distance(&er.mean, &es.mean),
        spectrum_ratio: ratio,
        pdf,
        memorization: mem,
        written: Vec::new(),
    };
    let mut written = Vec::new();
    let spec = SpectrumComparison {
        title: "Power spectra: real vs synthetic (mean ± 1σ)".into(),
        series: vec![
            ("real".into(), er.freqs.clone(), er.mean_log_power.clone(), er.std_log_power.clone(), er.mean.slope, er.mean.slope_err),
            ("synthetic".into(), es.freqs.clone(), es.mean_log_power.clone(), es.std_log_power.clone(), es.mean.slope, es.mean.slope_err),
        ],
        units: units.clone(),
    };
    written.extend(spec.save(&out_dir.join("power_spectra"))?);
    let x_label = match (&units, positive) {
        (Some(u), true) => format!("log10 value [{u}]"),
        (Some(u), false) => format!("value [{u}]"),
        (None, true) => "log10 value".into(),
        (None, false) => "value".into(),
    };
    let pdfs = PanelFigure {
        title: format!("One-point statistics (KS D = {:.3}, Hellinger = {:.3})", report.pdf.ks_statistic, report.pdf.hellinger),
        columns: 1,
        panels: vec![Panel::Histogram(HistogramPanel {
            title: "PDF of pixel values".into(),
            x_label,
            series: vec![("real".into(), pool(&rt)), ("synthetic".into(), pool(&st))],
        })],
    };
    written.extend(pdfs.save(&out_dir.join("pdfs"))?);
    let shown: Vec<Array2<f32>> = r.iter().take(6).chain(s.iter().take(6)).map(|m| m.mapv(|v| v as f32)).collect();
    let labels: Vec<String> = (0..r.len().min(6)).map(|i| format!("real {i}")).chain((0..s.len().min(6)).map(|i| format!("synthetic {i}"))).collect();
    written.extend(MapGrid::new("Real (first) and synthetic maps, one colour scale", shown, labels, units.clone()).save(&out_dir.join("maps"))?);
    let md = markdown(&report);
    let json_path = out_dir.join("report.json");
    let md_path = out_dir.join("report.md");
    report.written = written.clone();
    report.written.extend([json_path.clone(), md_path.clone()]);
    let files = AtomicFiles::new(&[json_path, md_path])?;
    std::fs::write(files.temp(0), serde_json::to_string_pretty(&report).expect("report serializes")).map_err(|e| Error::write(out_dir, e))?;
    std::fs::write(files.temp(1), md).map_err(|e| Error::write(out_dir, e))?;
    files.commit()?;
    Ok(report)
}

fn markdown(r: &ValidationReport) -> String {
    let mut s = String::new();
    s.push_str(&format!("# Validation: {} vs {}\n\n", r.synthetic.display(), r.real.display()));
    s.push_str(&format!(
        "{} real and {} synthetic maps of {}x{} pixels{}. One-point statistics and distances use {} values.\n\n",
        r.n_real,
        r.n_synthetic,
        r.shape[0],
        r.shape[1],
        r.units.as_ref().map(|u| format!(" in {u}")).unwrap_or_default(),
        r.scale
    ));
    s.push_str("| statistic | real | synthetic | distance |\n| --- | --- | --- | --- |\n");
    s.push_str(&format!(
        "| power-spectrum slope (ensemble) | {:.3} ± {:.3} | {:.3} ± {:.3} | t = {:.2} |\n",
        r.spectrum_real.slope, r.spectrum_real.slope_err, r.spectrum_synthetic.slope, r.spectrum_synthetic.slope_err, r.spectrum_distance
    ));
    s.push_str(&format!(
        "| per-map slopes (mean ± std) | {:.3} ± {:.3} | {:.3} ± {:.3} | |\n",
        r.spectrum_real.per_map_slope_mean, r.spectrum_real.per_map_slope_std, r.spectrum_synthetic.per_map_slope_mean, r.spectrum_synthetic.per_map_slope_std
    ));
    let (a, b) = (&r.pdf.moments_a, &r.pdf.moments_b);
    s.push_str(&format!("| mean | {:.4} | {:.4} | |\n| variance | {:.4} | {:.4} | |\n", a.mean, b.mean, a.variance, b.variance));
    s.push_str(&format!("| skewness | {:.3} | {:.3} | |\n| excess kurtosis | {:.3} | {:.3} | |\n", a.skewness, b.skewness, a.kurtosis, b.kurtosis));
    s.push_str(&format!(
        "| PDF | | | KS D = {:.4} (p = {:.2e}), Hellinger = {:.4}, W1 = {:.4} |\n\n",
        r.pdf.ks_statistic, r.pdf.ks_p_value, r.pdf.hellinger, r.pdf.wasserstein1
    ));
    let m = &r.memorization;
    let real_min = m.real_nn.iter().cloned().fold(f64::INFINITY, f64::min);
    let syn_min = m.synthetic_nn.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    s.push_str(&format!(
        "Memorization: the smallest real–real nearest-neighbour distance (RMS per pixel) is {real_min:.4}; the smallest synthetic–real one is {syn_min:.4}. {} synthetic map(s) lie closer than half the real–real minimum ({:.4}) and are flagged as near-copies{}.\n\n",
        m.flagged.len(),
        m.threshold,
        if m.flagged.is_empty() { String::new() } else { format!(": {:?}", m.flagged) }
    ));
    s.push_str("Figures: `power_spectra.png`, `pdfs.png`, `maps.png` (and `.svg`).\n");
    s
}
