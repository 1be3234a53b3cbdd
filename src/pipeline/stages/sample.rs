//! Sample: draw latents from a domain's prior and keep those that sit like real members.

use std::collections::BTreeMap;

use serde_json::json;

use crate::error::Result;
use crate::latents;
use crate::pipeline::manifest::derive_seed;
use crate::pipeline::runner::{Runner, StageOutput};
use crate::prior::file as prior_file;

impl Runner<'_> {
    pub(in crate::pipeline) fn sample(&mut self, d: &str) -> Result<StageOutput> {
        let prior_path = self.path(&["prior", "prior.h5"]);
        let prior = prior_file::read_domain(&prior_path, Some(d))?;
        let input = latents::read_model_input(&self.path(&["latents", &format!("{d}.h5")]))?;
        let c = &self.plan.config;
        let seed = self
            .manifest
            .seeds
            .get(&format!("sample/{d}"))
            .copied()
            .unwrap_or_else(|| derive_seed(c.run.seed, &format!("sample/{d}")));
        let spec = c.sampling_spec(seed)?;
        let out = self.path(&["samples", &format!("{d}.latents.npy")]);
        let shown = crate::io::shown_path(&prior_path, Some(&self.dir));
        let (outcome, written) = crate::synthesis::sample(&prior, &shown, &input, &spec, &out, "run: sample")?;
        let (_, all) = outcome.rates();
        let mut counts = BTreeMap::new();
        counts.insert("accepted".into(), json!(outcome.accepted.len()));
        counts.insert("tried".into(), json!(outcome.tried));
        counts.insert("acceptance".into(), json!(all));
        counts.insert("acceptance_per_test".into(), outcome.rates_json());
        counts.insert("seed".into(), json!(spec.seed));
        Ok((written, counts))
    }
}
