//! `expanse run`: one config, every stage, one run folder.
//!
//! Stages run in a fixed order: `ingest/<domain>` → `invert/<domain>` → `fit` →
//! `sample/<domain>` → `decode/<domain>` → `validate/<domain>`. Each stage writes its outputs
//! atomically, then records them (with SHA-256 hashes) in `manifest.json`. Inversion and
//! decoding also checkpoint every batch under `<stage folder>/<domain>.partial/`. `--resume`
//! keeps every stage the manifest records whose outputs still hash the same, reuses the
//! checkpoints of the stage that was interrupted, and redoes the rest; every computation is
//! deterministic, so the files are those of an uninterrupted run. A config, input files or model
//! changed since the last invocation redo only the stages that read what changed and those after
//! them ([`dependencies`]): a new `sampling.count` keeps the inversion. The manifest keeps each
//! earlier config (`config_history`).
//!
//! The run folder:
//! ```text
//! config.toml  manifest.json  run.log  summary.md
//! stacks/<domain>.h5               normalized model-space stack (+ mask, normalization)
//! stacks/<domain>.real.<fmt>       real maps after geometry, physical units
//! stacks/<domain>.png/.svg         preview
//! latents/<domain>.h5              inverted latents (grid and model recorded)
//! prior/prior.h5                   Gaussian priors; prior.diagnostics.json/.png/.svg
//! samples/<domain>.latents.npy     accepted latents (+ .json: targets, acceptance, seed)
//! samples/<domain>.<fmt>           synthetic maps, physical units; <domain>.png/.svg
//! report/<domain>/                 report.json, report.md, figures
//! slurm/                           job scripts and logs of `expanse slurm` (see [`slurm`])
//! shards/<stage>_<I>_of_<N>.json   a shard's record until its stage is assembled (see [`shard`])
//! ```
//!
//! Where things are: [`plan`] checks a config and says what a run will do; [`runner`] keeps the
//! manifest, runs or keeps each stage and checkpoints batches; [`dependencies`] says what each
//! stage reads; one file per stage under
//! [`stages`]; [`folder`] guards the run folder (lock, log, same-run checks); [`summary`] writes
//! `summary.md`; [`shard`] and [`slurm`] split a run into cluster jobs.

pub mod config;
pub mod dependencies;
mod folder;
pub mod manifest;
mod plan;
mod runner;
pub mod shard;
pub mod slurm;
pub(crate) mod stages;
mod summary;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use config::RunConfig;
pub use folder::check_run_folder;
pub use manifest::Manifest;
pub use plan::{DomainPlan, DomainTime, MemoryEstimate, Plan, TimeEstimate};
pub use shard::{PartOutcome, RunPart, Shard, ShardedStage};
pub use stages::sample::SampleRecord;
pub use summary::{DomainSummary, RunSummary};

use crate::error::{Error, Result};
use crate::model;
use runner::Runner;

/// How a run behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the run in the folder rather than requiring a new one.
    pub resume: bool,
    /// Print the log lines (and progress bars) to the terminal as well as to `run.log`.
    pub echo: bool,
    /// A folder of inverted latents shared between runs, keyed by the SHA-256 of everything
    /// inversion depends on (the model-space maps and normalization, the grid, the model files,
    /// dtype and device): runs that differ only after inversion (prior, sampling, seeds) invert
    /// each domain once. `expanse fidelity` uses it.
    pub latent_cache: Option<PathBuf>,
}

impl RunOptions {
    /// Refuses a latent cache that names something other than a folder (it would otherwise fail
    /// after the inversion); a run checks it before it writes anything.
    pub fn check(&self) -> Result<()> {
        match self.latent_cache.as_ref().filter(|d| d.exists() && !d.is_dir()) {
            Some(d) => Err(Error::Invalid(format!("latent cache {}: not a folder", d.display()))),
            None => Ok(()),
        }
    }
}

/// The kinds of stage of a run, in order: `fit` runs once, the others once per domain.
pub const STAGE_KINDS: [&str; 6] = ["ingest", "invert", "fit", "sample", "decode", "validate"];

/// The stage names of a run, in order.
pub fn stage_names(domains: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for kind in STAGE_KINDS {
        if kind == "fit" {
            out.push("fit".into());
        } else {
            out.extend(domains.iter().map(|d| format!("{kind}/{d}")));
        }
    }
    out
}

impl Plan {
    /// The stages of the run in `run_dir` not finished yet, in run order: every stage when the
    /// folder holds no run; else the folder is first brought to this plan's config as `--resume`
    /// does (the stages a change makes stale are discarded), then those not recorded or whose
    /// outputs no longer hash the same, with every stage after them.
    pub fn pending_stages(&self, config_path: &Path, run_dir: &Path) -> Result<Vec<String>> {
        let names: Vec<String> = self.domains.iter().map(|d| d.name.clone()).collect();
        if !run_dir.join("manifest.json").is_file() {
            return Ok(stage_names(&names));
        }
        let opts = RunOptions { resume: true, echo: false, latent_cache: None };
        let runner = Runner::open(self, config_path, run_dir, &opts)?;
        let missing = stage_names(&names)
            .into_iter()
            .filter(|n| !runner.manifest.stages.get(n).is_some_and(|r| runner.intact(n, r)))
            .collect();
        Ok(dependencies::with_dependents(&missing, &names))
    }

    /// Runs (or resumes) every stage in `run_dir`.
    pub fn execute(&self, config_path: &Path, run_dir: &Path, opts: &RunOptions) -> Result<RunSummary> {
        opts.check()?;
        model::parse_device(&self.config.model.device)
            .map_err(|e| Error::content(config_path, format!("model.device: {e}")).with_source(e))?;
        // The weights load before the folder is touched: a checkpoint that does not match its
        // config fails with nothing written.
        let model = self.load_model()?;
        let mut runner = Runner::open(self, config_path, run_dir, opts).map_err(|e| Error::Refused(Box::new(e)))?;
        runner.model = Some(model);
        let start = Instant::now();
        runner.stages(&STAGE_KINDS)?;
        runner.finish(start.elapsed().as_secs_f64())
    }

    /// Runs one part of the run in `run_dir` (see [`shard`]), as one Slurm job does. The folder
    /// must have been started by the `ingest` part (any part but a shard resumes it); a shard
    /// writes only its batch checkpoints and its record.
    pub fn execute_part(
        &self,
        config_path: &Path,
        run_dir: &Path,
        part: RunPart,
        opts: &RunOptions,
    ) -> Result<PartOutcome> {
        opts.check()?;
        model::parse_device(&self.config.model.device)
            .map_err(|e| Error::content(config_path, format!("model.device: {e}")).with_source(e))?;
        let start = Instant::now();
        let names: Vec<String> = self.domains.iter().map(|d| d.name.clone()).collect();
        let sharded = match part {
            RunPart::InvertShard(s) => Some((ShardedStage::Invert, s)),
            RunPart::DecodeShard(s) => Some((ShardedStage::Decode, s)),
            _ => None,
        };
        if let Some((stage, s)) = sharded {
            let mut runner =
                Runner::attach(self, config_path, run_dir, opts).map_err(|e| Error::Refused(Box::new(e)))?;
            let record = runner.run_shard(stage, s)?;
            return Ok(PartOutcome {
                ran: vec![],
                kept: vec![],
                shard: Some(record),
                summary: None,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        let mut runner = Runner::open(self, config_path, run_dir, opts).map_err(|e| Error::Refused(Box::new(e)))?;
        match part {
            RunPart::Ingest => runner.stages(&["ingest"])?,
            RunPart::Fit { shards } => {
                for d in &names {
                    runner.require(&format!("ingest/{d}"), "ingest")?;
                }
                runner.check_shards(ShardedStage::Invert, shards)?;
                runner.stages(&["ingest", "invert"])?;
                runner.remove_shard_records(ShardedStage::Invert)?;
                runner.stages(&["fit", "sample"])?;
            }
            RunPart::Validate { shards } => {
                for d in &names {
                    runner.require(&format!("sample/{d}"), "fit")?;
                }
                runner.check_shards(ShardedStage::Decode, shards)?;
                runner.stages(&["ingest", "invert", "fit", "sample", "decode"])?;
                runner.remove_shard_records(ShardedStage::Decode)?;
                runner.stages(&["validate"])?;
                let summary = runner.finish(start.elapsed().as_secs_f64())?;
                let (ran, kept) = (summary.ran.clone(), summary.kept.clone());
                return Ok(PartOutcome {
                    ran,
                    kept,
                    shard: None,
                    summary: Some(summary),
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
            RunPart::InvertShard(_) | RunPart::DecodeShard(_) => unreachable!("handled above"),
        }
        Ok(PartOutcome {
            ran: runner.ran.clone(),
            kept: runner.kept.clone(),
            shard: None,
            summary: None,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
