//! What a finished run reports: per-domain numbers from the manifest and `summary.md`.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde_json::Value;

use super::runner::Runner;
use super::{RunConfig, SampleRecord};
use crate::error::{Error, Result};
use crate::validate::{Spread, ValidationSummary};

/// Per-domain results of a finished run: the records its sample and validate stages stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainSummary {
    pub name: String,
    pub maps: usize,
    pub synthetic: Vec<PathBuf>,
    pub sampling: SampleRecord,
    pub validation: ValidationSummary,
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub domains: Vec<DomainSummary>,
    /// Leave-one-out nearest-centroid accuracy between domains (two or more domains).
    pub separability: Option<f64>,
    /// Stages run in this invocation and kept from earlier ones.
    pub ran: Vec<String>,
    pub kept: Vec<String>,
    pub seconds: f64,
    pub text: String,
}

impl Runner<'_> {
    /// The counts stage `stage` recorded (an error names the manifest and the stage).
    fn counts(&self, stage: &str) -> Result<&BTreeMap<String, Value>> {
        self.manifest.stages.get(stage).map(|r| &r.counts).ok_or_else(|| self.record_error(stage, "not recorded"))
    }

    fn record_error(&self, stage: &str, cause: &str) -> Error {
        Error::Invalid(format!("{}: stage {stage}: {cause}", self.dir.join("manifest.json").display()))
    }

    pub(super) fn finish(mut self, seconds: f64) -> Result<RunSummary> {
        let mut domains = Vec::new();
        for d in &self.plan.domains {
            let n = &d.name;
            let synthetic =
                self.plan.config.run.formats.iter().map(|f| self.path(&["samples", &format!("{n}.{f}")])).collect();
            let sample = format!("sample/{n}");
            let sampling = SampleRecord::from_counts(self.counts(&sample)?)
                .map_err(|e| self.record_error(&sample, &e.to_string()))?;
            let validate = format!("validate/{n}");
            let validation = ValidationSummary::from_counts(self.counts(&validate)?)
                .map_err(|e| self.record_error(&validate, &e.to_string()))?;
            domains.push(DomainSummary { name: n.clone(), maps: d.images, synthetic, sampling, validation });
        }
        let separability = self.counts("fit")?.get("loo_nearest_centroid_accuracy").and_then(Value::as_f64);
        let text = summary_text(&self.dir, &self.plan.config, &domains, separability);
        crate::io::write_text(&self.dir.join("summary.md"), &text)?;
        self.manifest.complete = true;
        self.save()?;
        self.log.line(&format!(
            "run complete: {} stage(s) run, {} kept, {seconds:.1} s",
            self.ran.len(),
            self.kept.len()
        ))?;
        Ok(RunSummary { dir: self.dir.clone(), domains, separability, ran: self.ran, kept: self.kept, seconds, text })
    }
}

/// The run's `summary.md`: where things are and the key numbers (no timings, so that it is
/// reproducible).
fn summary_text(dir: &Path, c: &RunConfig, domains: &[DomainSummary], separability: Option<f64>) -> String {
    let mut t = format!("# Run '{}'\n\n", c.name());
    t.push_str("## Verdict\n\n");
    for d in domains {
        let v = &d.validation;
        t.push_str(&format!(
            "**{}**: {} of {} targets met (FIDELITY.md's).\n\n",
            d.name, v.targets_met, v.targets_judged
        ));
        for line in &v.verdict {
            t.push_str(&format!("- {line}\n"));
        }
        for w in &v.warnings {
            t.push_str(&format!("- warning: {w}\n"));
        }
        t.push('\n');
    }
    t.push_str(&format!(
        "Model `{}`; grid of {} points up to t0 = {}; {} prior; seed {}.\n\n",
        c.model.path.display(),
        c.inversion.steps,
        c.inversion.t0,
        c.prior.kind,
        c.run.seed
    ));
    t.push_str(
        "| domain | real maps | synthetic | accepted / tried | per-map PS slope real | synthetic | Welch t | \
        level spread ratio | PDF Hellinger | memorization ratio | near-copies |\n",
    );
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for d in domains {
        let v = &d.validation;
        let rel: Vec<String> =
            d.synthetic.iter().map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string()).collect();
        t.push_str(&format!(
            "| {} | {} | {} | {} / {} ({:.1} %) | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.2} | {} | {:.3} ± {:.3} | \
                {:.2} | {} |\n",
            d.name,
            d.maps,
            rel.join(", "),
            d.sampling.accepted,
            d.sampling.tried,
            100.0 * d.sampling.accepted as f64 / d.sampling.tried.max(1) as f64,
            v.slope_real.mean,
            v.slope_real.std,
            v.slope_synthetic.mean,
            v.slope_synthetic.std,
            v.slope_welch_t,
            if v.level_spread_per_contrast {
                format!("{:.2} of the maps' std (real levels all equal)", v.level_spread_ratio)
            } else {
                format!("{:.2}", v.level_spread_ratio)
            },
            v.hellinger.mean,
            v.hellinger.std,
            v.memorization_ratio,
            v.memorized
        ));
    }
    for (d, cd) in domains.iter().zip(&c.domains) {
        let what = match (&cd.tile, &cd.crop, cd.size) {
            (Some(tile), _, _) => Some(format!("tiles ({tile}) cut from the inputs")),
            (None, Some(crop), _) => Some(format!("crops ({crop}) of the inputs")),
            (None, None, Some(size)) => Some(format!("the inputs resampled to {size}x{size}")),
            _ => None,
        };
        if let Some(what) = what {
            t.push_str(&format!(
                "\nThe real maps of '{}' are {what}, so its synthetic maps are maps of that size too, not of the \
                    inputs' full size.\n",
                d.name
            ));
        }
    }
    t.push_str(
        "\nPer map, not pooled: slopes are fitted map by map (Welch's t compares the two means); the level spread \
            ratio is the standard \
         deviation of the synthetic maps' mean levels over the real ones'; the PDF distance uses bins over the real \
            maps' range plus \
         one below and one above it (± from resampling whole maps); memorization ratio = closest synthetic–real over \
            closest \
         real–real distance. Details in `report/<domain>/report.md`.\n",
    );
    if let Some(first) = domains.iter().find_map(|d| d.validation.battery.as_ref()) {
        t.push_str(
            "\nBattery of statistics, χ²/dof of synthetic against real means (about 1 when both sample one \
            distribution; \
                    bands, distances and figures in `report/<domain>/`):\n\n| domain |",
        );
        for c in &first.statistics {
            t.push_str(&format!(" {} |", c.statistic.title()));
        }
        t.push_str(" overall | C2ST accuracy | C2ST, real halves |\n|---|");
        t.push_str(&"---|".repeat(first.statistics.len() + 3));
        t.push('\n');
        let accuracy = |a: Option<Spread>| match a {
            Some(a) if a.mean.is_finite() => format!("{:.2} ± {:.2}", a.mean, a.std),
            _ => "n/a".into(),
        };
        let number = |x: Option<f64>| x.filter(|x| x.is_finite()).map_or("n/a".into(), |x| format!("{x:.2}"));
        for d in domains {
            let b = d.validation.battery.as_ref();
            t.push_str(&format!("| {} |", d.name));
            for c in &first.statistics {
                t.push_str(&format!(" {} |", number(b.and_then(|b| b.chi2_of(c.statistic)))));
            }
            t.push_str(&format!(
                " {} | {} | {} |\n",
                number(b.map(|b| b.chi2)),
                accuracy(b.and_then(|b| b.c2st)),
                accuracy(b.and_then(|b| b.c2st_real_halves))
            ));
        }
        t.push_str(
            "\nC2ST: a logistic regression on the battery's per-map curves tells real from synthetic maps this \
                often in cross-validation (0.5: it cannot tell; ± over repeats); the real halves are what it reaches \
                between two halves of the real maps.\n",
        );
    }
    if let Some(s) = separability {
        t.push_str(&format!(
            "\nSeparability of the domains in latent space: leave-one-out nearest-centroid accuracy {:.1} % (chance: \
                {:.1} %).\n",
            100.0 * s,
            100.0 / domains.len() as f64
        ));
    }
    t.push_str(
        "\nFiles: `stacks/` normalized inputs and the real maps after geometry; `latents/` inverted latents; \
         `prior/` priors and diagnostics; `samples/` synthetic maps (physical units) and their latents; \
         `report/<domain>/` validation report and figures; `manifest.json` hashes, seeds, timings; `run.log`.\n",
    );
    t
}
