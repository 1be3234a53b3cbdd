//! Fit: one Gaussian prior per domain on the inverted latents, with diagnostics and separability.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::error::Result;
use crate::pipeline::runner::{Runner, StageOutput};

impl Runner<'_> {
    pub(in crate::pipeline) fn fit(&mut self) -> Result<StageOutput> {
        let domains: Vec<(String, PathBuf)> = self
            .plan
            .domains
            .iter()
            .map(|d| (d.name.clone(), self.path(&["latents", &format!("{}.h5", d.name)])))
            .collect();
        let kind = self.plan.config.prior.kind;
        let fitted = crate::prior::fit::fit_files(&domains, kind, &self.path(&["prior", "prior.h5"]), Some(&self.dir))?;
        let text = crate::prior::diagnostics::table(&fitted.diagnostics, fitted.separability.as_ref());
        for line in text.lines() {
            self.log.line(&format!("fit: {line}"))?;
        }
        let mut counts = BTreeMap::new();
        counts.insert("domains".into(), json!(fitted.priors.len()));
        counts.insert("kind".into(), json!(kind.to_string()));
        if let Some(s) = &fitted.separability {
            counts.insert("loo_nearest_centroid_accuracy".into(), json!(s.loo_nearest_centroid_accuracy));
        }
        Ok((fitted.written, counts))
    }
}
