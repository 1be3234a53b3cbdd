//! What a finished run reports: per-domain numbers from the manifest and `summary.md`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::runner::Runner;
use super::RunConfig;
use crate::error::Result;

/// Per-domain results of a finished run.
#[derive(Debug, Clone)]
pub struct DomainSummary {
    pub name: String,
    pub maps: usize,
    pub synthetic: Vec<PathBuf>,
    pub accepted: usize,
    pub tried: usize,
    /// Per-map power-spectrum slopes: mean and standard deviation of each set.
    pub slope_real: (f64, f64),
    pub slope_synthetic: (f64, f64),
    /// Welch's t of the per-map slopes (synthetic − real).
    pub slope_welch_t: f64,
    /// Spread of per-map levels, synthetic over real.
    pub level_spread_ratio: f64,
    /// One-point PDF on the real maps' bins.
    pub hellinger: f64,
    pub hellinger_std: f64,
    /// Closest synthetic–real over closest real–real distance.
    pub memorization_ratio: f64,
    pub memorized: usize,
    /// The battery's χ²/dof per statistic (in report order) and overall (NaN without a battery).
    pub battery: Vec<(crate::stats::battery::Statistic, f64)>,
    pub battery_chi2: f64,
    /// The classifier two-sample test's accuracy and its floor between two halves of the real
    /// maps, each with its spread over repeats (NaN when not available).
    pub c2st: (f64, f64),
    pub c2st_real_halves: (f64, f64),
    /// FIDELITY.md's targets met, of those that could be judged; one line per target, and
    /// warnings in plain words.
    pub targets: (usize, usize),
    pub verdict: Vec<String>,
    pub warnings: Vec<String>,
    /// The level spread is in units of the maps' standard deviation (the real levels are equal).
    pub level_per_contrast: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
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
    /// Count `key` of stage `stage`, as the manifest records it.
    fn value(&self, stage: &str, key: &str) -> Option<&Value> {
        self.manifest.stages.get(stage).and_then(|r| r.counts.get(key))
    }

    fn count(&self, stage: &str, key: &str) -> f64 {
        self.value(stage, key).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    fn strings(&self, stage: &str, key: &str) -> Vec<String> {
        let list = self.value(stage, key).and_then(Value::as_array);
        list.map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
    }

    pub(super) fn finish(mut self, seconds: f64) -> Result<RunSummary> {
        let mut domains = Vec::new();
        for d in &self.plan.domains {
            let n = &d.name;
            let synthetic =
                self.plan.config.run.formats.iter().map(|f| self.path(&["samples", &format!("{n}.{f}")])).collect();
            let v = format!("validate/{n}");
            domains.push(DomainSummary {
                name: n.clone(),
                maps: d.images,
                synthetic,
                accepted: self.count(&format!("sample/{n}"), "accepted") as usize,
                tried: self.count(&format!("sample/{n}"), "tried") as usize,
                slope_real: (self.count(&v, "slope_real"), self.count(&v, "slope_real_std")),
                slope_synthetic: (self.count(&v, "slope_synthetic"), self.count(&v, "slope_synthetic_std")),
                slope_welch_t: self.count(&v, "slope_welch_t"),
                level_spread_ratio: self.count(&v, "level_spread_ratio"),
                hellinger: self.count(&v, "hellinger"),
                hellinger_std: self.count(&v, "hellinger_std"),
                memorization_ratio: self.count(&v, "memorization_ratio"),
                memorized: self.count(&v, "memorized") as usize,
                battery: crate::stats::battery::Statistic::ALL
                    .into_iter()
                    .map(|st| (st, self.count(&v, &format!("chi2_{st}"))))
                    .filter(|(_, c)| c.is_finite())
                    .collect(),
                battery_chi2: self.count(&v, "battery_chi2"),
                c2st: (self.count(&v, "c2st_accuracy"), self.count(&v, "c2st_accuracy_std")),
                c2st_real_halves: (self.count(&v, "c2st_real_halves"), self.count(&v, "c2st_real_halves_std")),
                targets: (self.count(&v, "targets_met") as usize, self.count(&v, "targets_judged") as usize),
                verdict: self.strings(&v, "verdict"),
                warnings: self.strings(&v, "warnings"),
                level_per_contrast: self
                    .value(&v, "level_spread_per_contrast")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
        let separability = Some(self.count("fit", "loo_nearest_centroid_accuracy")).filter(|v| v.is_finite());
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
        t.push_str(&format!("**{}**: {} of {} targets met (FIDELITY.md's).\n\n", d.name, d.targets.0, d.targets.1));
        for line in &d.verdict {
            t.push_str(&format!("- {line}\n"));
        }
        for w in &d.warnings {
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
        let rel: Vec<String> =
            d.synthetic.iter().map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string()).collect();
        t.push_str(&format!(
            "| {} | {} | {} | {} / {} ({:.1} %) | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.2} | {} | {:.3} ± {:.3} | \
                {:.2} | {} |\n",
            d.name,
            d.maps,
            rel.join(", "),
            d.accepted,
            d.tried,
            100.0 * d.accepted as f64 / d.tried.max(1) as f64,
            d.slope_real.0,
            d.slope_real.1,
            d.slope_synthetic.0,
            d.slope_synthetic.1,
            d.slope_welch_t,
            if d.level_per_contrast {
                format!("{:.2} of the maps' std (real levels all equal)", d.level_spread_ratio)
            } else {
                format!("{:.2}", d.level_spread_ratio)
            },
            d.hellinger,
            d.hellinger_std,
            d.memorization_ratio,
            d.memorized
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
    if let Some(first) = domains.iter().find(|d| !d.battery.is_empty()) {
        t.push_str(
            "\nBattery of statistics, χ²/dof of synthetic against real means (about 1 when both sample one \
            distribution; \
                    bands, distances and figures in `report/<domain>/`):\n\n| domain |",
        );
        for (st, _) in &first.battery {
            t.push_str(&format!(" {} |", st.title()));
        }
        t.push_str(" overall | C2ST accuracy | C2ST, real halves |\n|---|");
        t.push_str(&"---|".repeat(first.battery.len() + 3));
        t.push('\n');
        let accuracy = |(m, s): (f64, f64)| if m.is_finite() { format!("{m:.2} ± {s:.2}") } else { "n/a".into() };
        for d in domains {
            t.push_str(&format!("| {} |", d.name));
            for (_, c) in &d.battery {
                t.push_str(&format!(" {c:.2} |"));
            }
            t.push_str(&format!(
                " {:.2} | {} | {} |\n",
                d.battery_chi2,
                accuracy(d.c2st),
                accuracy(d.c2st_real_halves)
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
