//! Sample: draw latents from a domain's prior and keep those that sit like real members.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::latents;
use crate::pipeline::manifest::derive_seed;
use crate::pipeline::runner::{Runner, StageOutput};
use crate::prior::file as prior_file;

/// What the sample stage records in the manifest (its counts, key by key): the run summary and
/// the fidelity benchmark read it back through this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Candidates accepted and tried, and the acceptance rate.
    pub accepted: usize,
    pub tried: usize,
    pub acceptance: f64,
    /// The acceptance rate of each geometric test on its own.
    pub acceptance_per_test: serde_json::Value,
    /// The seed of the sampling stream.
    pub seed: u64,
}

impl SampleRecord {
    /// The record of one sampling (`seed`: its stream's seed).
    pub fn of(outcome: &crate::prior::geometry::SamplingOutcome, seed: u64) -> SampleRecord {
        SampleRecord {
            accepted: outcome.accepted.nrows(),
            tried: outcome.tried,
            acceptance: outcome.rates().1,
            acceptance_per_test: outcome.rates_json(),
            seed,
        }
    }

    /// Reads the record from a sample stage's manifest counts.
    pub fn from_counts(counts: &BTreeMap<String, serde_json::Value>) -> Result<SampleRecord> {
        let object = serde_json::Value::Object(counts.clone().into_iter().collect());
        serde_json::from_value(object).map_err(|e| Error::Invalid(format!("its sampling record: {e}")))
    }

    fn counts(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self).expect("a sampling record serializes") {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => unreachable!("a struct serializes to an object"),
        }
    }
}

impl Runner<'_> {
    pub(in crate::pipeline) fn sample(&mut self, d: &str) -> Result<StageOutput> {
        let prior_path = self.path(&["prior", "prior.h5"]);
        let prior = prior_file::read_domain(&prior_path, Some(d))?;
        let input = latents::StackFile::open(&self.path(&["latents", &format!("{d}.h5")]))?;
        let c = &self.plan.config;
        let seed = self
            .manifest
            .seeds
            .get(&format!("sample/{d}"))
            .copied()
            .unwrap_or_else(|| derive_seed(c.run.seed, &format!("sample/{d}")));
        let spec = c.sampling.spec(seed)?;
        let out = self.path(&["samples", &format!("{d}.latents.npy")]);
        let shown = crate::io::shown_path(&prior_path, Some(&self.dir));
        let (outcome, written) = crate::synthesis::sample(&prior, &shown, &input, &spec, &out, "run: sample")?;
        Ok((written, SampleRecord::of(&outcome, spec.seed).counts()))
    }
}
