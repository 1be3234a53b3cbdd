//! Validate: compare a domain's synthetic maps with the real ones map by map (spectra, PDFs,
//! memorization, the battery) and write the report.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::pipeline::runner::{Runner, StageOutput};
use crate::validate::ValidationSummary;

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
        let summary = serde_json::to_value(report.summary()).expect("a validation summary serializes");
        counts.insert(ValidationSummary::KEY.into(), summary);
        let v = &report.verdict;
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
