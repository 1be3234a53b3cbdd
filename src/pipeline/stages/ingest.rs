//! Ingest: read a domain's maps, normalize them into the model's space, write the stack, the real
//! maps after geometry and a preview.

use std::collections::BTreeMap;

use serde_json::json;

use crate::error::Result;
use crate::ingest::{self, IngestOptions};
use crate::pipeline::runner::{Runner, StageOutput};
use crate::pipeline::RunConfig;

impl Runner<'_> {
    pub(in crate::pipeline) fn ingest(&mut self, d: &str) -> Result<StageOutput> {
        let dom = self.domain(d).clone();
        let opts = IngestOptions {
            selection: RunConfig::selection(&dom)?,
            raw: false,
            prep: self.plan.config.prep_spec(&dom, self.plan.model.config.in_channels())?,
            preview: Some(self.path(&["stacks", d])),
            max_maps: dom.max_maps,
            real: Some(self.real_path(d)),
        };
        let report = ingest::ingest(&dom.inputs, &opts, &self.path(&["stacks", &format!("{d}.h5")]))?;
        let mut counts = BTreeMap::new();
        counts.insert("images".into(), json!(report.shape[0]));
        counts.insert("shape".into(), json!(report.shape));
        counts.insert("blank_pixels".into(), json!(report.blank_pixels));
        counts.insert("dropped_blank".into(), json!(report.dropped_blank));
        for w in &report.warnings {
            self.log.line(&format!("ingest/{d}: warning: {w}"))?;
        }
        Ok((report.written, counts))
    }
}
