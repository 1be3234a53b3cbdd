//! Validate: compare a domain's synthetic maps with the real ones map by map (spectra, PDFs,
//! memorization, the battery) and write the report.

use std::collections::BTreeMap;

use serde_json::json;

use crate::error::Result;
use crate::pipeline::runner::{Runner, StageOutput};

impl Runner<'_> {
    pub(in crate::pipeline) fn validate(&mut self, d: &str) -> Result<StageOutput> {
        let synthetic = self.path(&["samples", &format!("{d}.{}", self.plan.config.run.formats[0])]);
        let out_dir = self.path(&["report", d]);
        let opts = self.plan.config.battery_options()?;
        let report = crate::validate::validate(
            &self.real_path(d),
            &synthetic,
            &crate::io::Selection::default(),
            &out_dir,
            &opts,
            Some(&self.dir),
        )?;
        let mut counts = BTreeMap::new();
        counts.insert("slope_real".into(), json!(report.slopes.real.mean));
        counts.insert("slope_real_std".into(), json!(report.slopes.real.std));
        counts.insert("slope_synthetic".into(), json!(report.slopes.synthetic.mean));
        counts.insert("slope_synthetic_std".into(), json!(report.slopes.synthetic.std));
        counts.insert("slope_welch_t".into(), json!(report.slopes.welch_t));
        counts.insert("ensemble_spectrum_distance".into(), json!(report.spectrum_distance));
        counts.insert("level_spread_ratio".into(), json!(report.level.ratio));
        counts.insert("hellinger".into(), json!(report.pdf.hellinger));
        counts.insert("hellinger_std".into(), json!(report.pdf.hellinger_std));
        counts.insert("outside_real_range".into(), json!(report.pdf.synthetic_outside));
        counts.insert("memorization_ratio".into(), json!(report.memorization.ratio));
        counts.insert("memorized".into(), json!(report.memorization.flagged.len()));
        if let Some(b) = &report.battery {
            counts.insert("battery_chi2".into(), json!(b.chi2.value));
            counts.insert("battery_distance".into(), json!(b.distance.value));
            for st in &b.statistics {
                counts.insert(format!("chi2_{}", st.statistic), json!(st.chi2.value));
            }
            if let Some(c) = &b.c2st {
                if let Some(a) = &c.accuracy {
                    counts.insert("c2st_accuracy".into(), json!(a.mean));
                    counts.insert("c2st_accuracy_std".into(), json!(a.std));
                }
                if let Some(a) = &c.real_halves {
                    counts.insert("c2st_real_halves".into(), json!(a.mean));
                    counts.insert("c2st_real_halves_std".into(), json!(a.std));
                }
            }
        }
        counts.insert("level_spread_per_contrast".into(), json!(report.level.per_contrast));
        let v = &report.verdict;
        let (met, judged) = v.met_and_judged();
        counts.insert("targets_met".into(), json!(met));
        counts.insert("targets_judged".into(), json!(judged));
        counts.insert("verdict".into(), json!(v.lines()));
        counts.insert("warnings".into(), json!(v.warnings));
        self.log.line(&format!("validate/{d}: {}", v.headline()))?;
        for line in v.lines() {
            self.log.line(&format!("validate/{d}:   {line}"))?;
        }
        for w in &v.warnings {
            self.log.line(&format!("validate/{d}: warning: {w}"))?;
        }
        Ok((report.written, counts))
    }
}
