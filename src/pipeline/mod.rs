//! `expanse run`: one config, every stage, one run folder.
//!
//! Stages run in a fixed order: `ingest/<domain>` → `invert/<domain>` → `fit` →
//! `sample/<domain>` → `decode/<domain>` → `validate/<domain>`. Each stage writes its outputs
//! atomically, then records them (with SHA-256 hashes) in `manifest.json`. Inversion and
//! decoding also checkpoint every batch under `<stage folder>/<domain>.partial/`. `--resume`
//! keeps every stage the manifest records whose outputs still hash the same, reuses the
//! checkpoints of the stage that was interrupted, and redoes the rest; every computation is
//! deterministic, so the files are those of an uninterrupted run.
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

pub mod config;
pub mod manifest;
pub mod shard;
pub mod slurm;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use ndarray::{s, Array4, Axis};
use serde_json::{json, Value};

pub use config::RunConfig;
pub use manifest::Manifest;
pub use shard::{PartOutcome, RunPart, Shard, ShardedStage};

use crate::diffusion::{Ddim, NoiseSchedule};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestOptions};
use crate::latents::{self, ModelInput};
use crate::model::{self, Ddpm, ModelFolder};
use crate::prior::file as prior_file;
use crate::prior::geometry;
use manifest::{derive_seed, utc_now, FileHash, StageRecord};

/// One domain as planned: what is read and the model-space stack it becomes.
#[derive(Debug, Clone)]
pub struct DomainPlan {
    pub name: String,
    /// Maps read from the inputs (before `max_maps`).
    pub maps_read: usize,
    /// Images in the model-space stack.
    pub images: usize,
    /// (C, H, W) of each image.
    pub shape: [usize; 3],
    pub units: Option<String>,
    pub transform: String,
}

/// A checked run: the resolved config, the model folder, the grid and the domains.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: RunConfig,
    pub model: ModelFolder,
    pub grid: Vec<usize>,
    pub domains: Vec<DomainPlan>,
}

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

/// Rough memory need of a run, MiB.
#[derive(Debug, Clone, Copy)]
pub struct MemoryEstimate {
    /// The program itself (libraries, fonts, buffers, rendering a figure), measured.
    pub runtime: f64,
    pub weights: f64,
    pub activations: f64,
    pub stacks: f64,
}

impl MemoryEstimate {
    pub fn total(&self) -> f64 {
        self.runtime + self.weights + self.activations + self.stacks
    }
}

const MIB: f64 = 1024.0 * 1024.0;
/// Peak resident memory of `expanse inspect` on a small file: the program's own footprint.
const PROCESS_MIB: f64 = 15.0;
/// Rendering a figure's PNG from its SVG at twice the size (pixmap, font database, encoder),
/// measured: the quickstart's peak went from 51 to 66 MiB when figures were rendered this way.
const FIGURE_MIB: f64 = 15.0;

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
    /// Checks a config against its model and inputs (reading them) before any work: the model
    /// folder, the grid against the schedule, every input, the normalization, the stack shapes
    /// against the model and the sampling K against the number of maps.
    pub fn new(config: RunConfig, config_path: &Path) -> Result<Plan> {
        let folder = ModelFolder::read(&config.model.path)?;
        let train = NoiseSchedule::from_config(&folder.scheduler)?.len();
        let grid = crate::diffusion::paper_grid(config.inversion.steps, config.inversion.t0, train)
            .map_err(|e| Error::content(config_path, format!("inversion: {e}")))?;
        let mut domains = Vec::new();
        for d in &config.domains {
            let spec = config.prep_spec(d, folder.config.in_channels())?;
            let (mut maps, _) = ingest::read_inputs(&d.inputs, &RunConfig::selection(d)?)?;
            let maps_read = maps.len();
            if let Some(m) = d.max_maps {
                maps.truncate(m);
            }
            let (stack, _) = crate::prep::normalize(maps, &spec).map_err(|e| match e {
                Error::Invalid(m) => Error::content(config_path, format!("domain '{}': {m}", d.name)),
                other => other,
            })?;
            let (n, c, h, w) = stack.data.dim();
            let who = format!("domain '{}'", d.name);
            if c != folder.config.in_channels() {
                return Err(Error::content(
                    config_path,
                    format!("{}: {c} channel(s) but the model takes {}", who, folder.config.in_channels()),
                ));
            }
            let m = folder.config.size_multiple();
            if h % m != 0 || w % m != 0 {
                return Err(Error::content(
                    config_path,
                    format!("{}: maps of {h}x{w} pixels; the model needs sides divisible by {m} (set size or tile)", who),
                ));
            }
            if config.sampling.k + 1 > n {
                return Err(Error::content(
                    config_path,
                    format!("sampling.k = {} needs at least {} maps per domain; {} has {n}", config.sampling.k, config.sampling.k + 1, who),
                ));
            }
            domains.push(DomainPlan {
                name: d.name.clone(),
                maps_read,
                images: n,
                shape: [c, h, w],
                units: stack.normalization.units.clone(),
                transform: stack.normalization.transform.describe(),
            });
        }
        Ok(Plan { config, model: folder, grid, domains })
    }

    /// UNet evaluations of a stage.
    pub fn unet_evaluations(&self, stage: &str) -> usize {
        let n = self.grid.len();
        let (kind, domain) = stage.split_once('/').unwrap_or((stage, ""));
        let Some(d) = self.domains.iter().find(|d| d.name == domain) else { return 0 };
        match kind {
            "invert" => d.images * (n - 1) * (1 + self.config.inversion.fixed_point),
            "decode" => self.config.sampling.count * n,
            _ => 0,
        }
    }

    /// The stage names of this run, in order.
    pub fn stages(&self) -> Vec<String> {
        stage_names(&self.domains.iter().map(|d| d.name.clone()).collect::<Vec<_>>())
    }

    /// Memory estimate: the process itself, the weights, the activations one batch needs in
    /// the UNet, and the stacks held in memory. Activations per map: the skip tensors kept for
    /// the up path, the attention score matrices, and six times the widest convolution input
    /// (candle's im2col buffers); the factor six was calibrated on the base model, whose
    /// measured peak resident memory is 46 MiB at batch 8 and 116 MiB at batch 32, and it gives
    /// 970 MiB for the google/ddpm-*-256 architecture at batch 1 against 964 MiB measured.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let weights = self.model.weights_file.metadata().map(|m| m.len() as f64).unwrap_or(0.0);
        let bytes = match self.config.model.dtype.as_str() {
            "f16" | "bf16" => 2.0,
            _ => 4.0,
        };
        let levels = self.model.config.levels();
        let batch = self.config.model.batch as f64;
        let mut activations: f64 = 0.0;
        let mut stacks: f64 = 0.0;
        for d in &self.domains {
            let [c, h, w] = d.shape;
            let (mut skips, mut widest, mut attention) = (0.0, 0.0f64, 0.0f64);
            for (l, level) in levels.iter().enumerate() {
                let hw = ((h >> l) * (w >> l)) as f64;
                skips += level.channels as f64 * hw * (level.blocks + 1) as f64;
                let below = levels[(l + 1).min(levels.len() - 1)].channels;
                widest = widest.max((level.channels + below) as f64 * hw);
                if let Some(heads) = level.heads {
                    attention = attention.max(heads as f64 * hw * hw);
                }
            }
            activations = activations.max(batch * (skips + attention + 6.0 * widest) * bytes);
            // Model-space stack, latents, and decoded samples, float32; the fit and sample stages
            // hold the latents as float64 rows and their deviations from the mean (which the
            // empirical prior keeps).
            stacks += 4.0 * (c * h * w) as f64 * (2 * d.images + 2 * self.config.sampling.count) as f64;
            stacks += 8.0 * (c * h * w) as f64 * (2 * d.images) as f64;
        }
        MemoryEstimate { runtime: PROCESS_MIB + FIGURE_MIB, weights: weights / MIB, activations: activations / MIB, stacks: stacks / MIB }
    }

    /// What `--dry-run` prints: the domains, the grid, the stages with their UNet evaluations,
    /// and the memory estimate.
    pub fn describe(&self, run_dir: &Path) -> String {
        let c = &self.config;
        let mut t = String::new();
        t.push_str(&format!("run '{}' into {}\n", c.name(), run_dir.display()));
        let size = self.model.config.native_size().map(|[h, w]| format!("{h}x{w}")).unwrap_or_else(|| "any size".into());
        t.push_str(&format!(
            "model {} ({}, {} channel(s), trained at {size}, {} prediction), {} {}, batch {}\n",
            c.model.path.display(),
            self.model.format.as_str(),
            self.model.config.in_channels(),
            self.model.scheduler.prediction_type,
            c.model.device,
            c.model.dtype,
            c.model.batch
        ));
        if let Err(e) = model::parse_device(&c.model.device) {
            t.push_str(&format!("note: {e}\n"));
        }
        t.push_str(&format!(
            "grid {} points up to t0 = {} ({} inversion steps with {} fixed-point iteration(s), {} generation steps)\n",
            self.grid.len(),
            c.inversion.t0,
            self.grid.len() - 1,
            c.inversion.fixed_point,
            self.grid.len()
        ));
        t.push_str(&format!(
            "prior {}; {} synthetic map(s) per domain, candidates {} (norm {}, few-shot correction {}), tests {} (K {}, band {}-{} %), seed {}\n",
            c.prior.kind,
            c.sampling.count,
            c.sampling.candidates,
            c.sampling.norm,
            c.sampling.debias.parse().map(|d| d.to_string()).unwrap_or_default(),
            c.sampling.tests.join(","),
            c.sampling.k,
            c.sampling.band[0],
            c.sampling.band[1],
            c.run.seed
        ));
        for (d, cd) in self.domains.iter().zip(&c.domains) {
            let files: Vec<String> = cd.inputs.iter().map(|p| p.display().to_string()).collect();
            t.push_str(&format!(
                "domain {}: {} map(s) read, {} image(s) of {}x{}x{} ({}, units {}) from {}\n",
                d.name,
                d.maps_read,
                d.images,
                d.shape[0],
                d.shape[1],
                d.shape[2],
                d.transform,
                d.units.as_deref().unwrap_or("-"),
                files.join(", ")
            ));
            if let Some([h, w]) = self.model.config.native_size().filter(|&[h, w]| [h, w] != [d.shape[1], d.shape[2]]) {
                t.push_str(&format!(
                    "warning: domain {}: the model was trained on {h}x{w} images, these are {}x{}; it runs, but a UNet is only known to reconstruct and generate well at its training size (set `size = {h}` to resize, or `crop`/`tile`)\n",
                    d.name, d.shape[1], d.shape[2]
                ));
            }
        }
        t.push_str(&format!("{:<24} {:>16}\n", "stage", "UNet evaluations"));
        let mut total = 0;
        for s in self.stages() {
            let e = self.unet_evaluations(&s);
            total += e;
            t.push_str(&format!("{s:<24} {e:>16}\n"));
        }
        t.push_str(&format!("{:<24} {total:>16}\n", "total"));
        let m = self.memory_estimate();
        t.push_str(&format!(
            "memory estimate ~{:.0} MiB: program {:.0} MiB, weights {:.1} MiB, activations of one batch {:.1} MiB, stacks {:.1} MiB\n",
            m.total(),
            m.runtime,
            m.weights,
            m.activations,
            m.stacks
        ));
        t
    }

    /// Runs (or resumes) every stage in `run_dir`.
    pub fn execute(&self, config_path: &Path, run_dir: &Path, opts: &RunOptions) -> Result<RunSummary> {
        model::parse_device(&self.config.model.device).map_err(|e| Error::content(config_path, format!("model.device: {e}")))?;
        let mut runner = Runner::open(self, config_path, run_dir, opts).map_err(|e| Error::Refused(Box::new(e)))?;
        let start = Instant::now();
        runner.stages(&STAGE_KINDS)?;
        runner.finish(start.elapsed().as_secs_f64())
    }

    /// Runs one part of the run in `run_dir` (see [`shard`]), as one Slurm job does. The folder
    /// must have been started by the `ingest` part (any part but a shard resumes it); a shard
    /// writes only its batch checkpoints and its record.
    pub fn execute_part(&self, config_path: &Path, run_dir: &Path, part: RunPart, opts: &RunOptions) -> Result<PartOutcome> {
        model::parse_device(&self.config.model.device).map_err(|e| Error::content(config_path, format!("model.device: {e}")))?;
        let start = Instant::now();
        let names: Vec<String> = self.domains.iter().map(|d| d.name.clone()).collect();
        let sharded = match part {
            RunPart::InvertShard(s) => Some((ShardedStage::Invert, s)),
            RunPart::DecodeShard(s) => Some((ShardedStage::Decode, s)),
            _ => None,
        };
        if let Some((stage, s)) = sharded {
            let mut runner = Runner::attach(self, config_path, run_dir, opts).map_err(|e| Error::Refused(Box::new(e)))?;
            let record = runner.run_shard(stage, s)?;
            return Ok(PartOutcome { ran: vec![], kept: vec![], shard: Some(record), summary: None, seconds: start.elapsed().as_secs_f64() });
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
                return Ok(PartOutcome { ran, kept, shard: None, summary: Some(summary), seconds: start.elapsed().as_secs_f64() });
            }
            RunPart::InvertShard(_) | RunPart::DecodeShard(_) => unreachable!("handled above"),
        }
        Ok(PartOutcome { ran: runner.ran.clone(), kept: runner.kept.clone(), shard: None, summary: None, seconds: start.elapsed().as_secs_f64() })
    }
}

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

/// Appends timestamped lines to `run.log` (and prints them when echoing).
struct Log {
    path: PathBuf,
    echo: bool,
}

impl Log {
    fn line(&self, msg: &str) -> Result<()> {
        if self.echo {
            println!("{msg}");
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::write(&self.path, e))?;
        writeln!(f, "{}  {msg}", utc_now()).map_err(|e| Error::write(&self.path, e))
    }
}

/// Refuses, before any work, an output folder that a run would overwrite: one that exists and is
/// not empty, unless `resume` and it holds a run (a manifest) or what a run killed before its
/// manifest leaves behind (config.toml, run.log, .lock).
pub fn check_run_folder(dir: &Path, resume: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::write(dir, "exists and is not a folder"));
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let manifest = names.iter().any(|n| n == "manifest.json");
    // `slurm/`: the job scripts `expanse slurm` writes before the first job starts the run.
    let unstarted = names.iter().all(|n| matches!(n.as_str(), "config.toml" | "run.log" | ".lock" | "slurm"));
    if names.is_empty() || (resume && (manifest || unstarted)) {
        return Ok(());
    }
    let hint = if manifest { "pass --resume to continue it, or" } else { "not a run folder:" };
    Err(Error::write(dir, format!("already exists and is not empty; {hint} choose another --out")))
}

/// `.lock` in a run folder: the id of the process working on it, removed when it ends (also on
/// SIGTERM and SIGINT). A lock whose process is gone (`kill -9`) is taken over.
struct RunLock(PathBuf);

impl RunLock {
    fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(".lock");
        if let Some(pid) = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
            if pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists() {
                return Err(Error::write(
                    dir,
                    format!("another expanse process (pid {pid}) is working on this run folder (if it is not, delete {})", path.display()),
                ));
            }
        }
        std::fs::write(&path, std::process::id().to_string()).map_err(|e| Error::write(&path, e))?;
        crate::runtime::remove_on_signal(Some(&path));
        Ok(RunLock(path))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        crate::runtime::remove_on_signal(None);
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Runner<'a> {
    plan: &'a Plan,
    /// None for a shard, which writes only its own files.
    _lock: Option<RunLock>,
    config_path: PathBuf,
    dir: PathBuf,
    manifest: Manifest,
    /// A stage ran in this invocation: every later stage runs too.
    redo: bool,
    model: Option<Ddpm>,
    log: Log,
    echo: bool,
    latent_cache: Option<PathBuf>,
    ran: Vec<String>,
    kept: Vec<String>,
}

/// A count for the log: floats to four significant digits, strings unquoted.
fn short(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k} {}", short(v))).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn hash_files(files: &[PathBuf]) -> Result<Vec<FileHash>> {
    files.iter().map(|p| FileHash::of(p, p)).collect()
}

/// Removes the hidden temporaries a killed process leaves behind (`.<stem>.tmp<pid>-<n>.<ext>`).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            remove_stale_temporaries(&p);
        } else if name.starts_with('.') && name.contains(".tmp") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn progress_bar(total: u64, what: &str, echo: bool) -> ProgressBar {
    if echo {
        crate::runtime::progress_bar(total, what)
    } else {
        ProgressBar::hidden()
    }
}

type StageOutput = (Vec<PathBuf>, BTreeMap<String, Value>);

/// Fails when the run folder `dir` holds a `config.toml` that differs from `config` (naming the
/// keys that differ); a folder without one passes.
pub(crate) fn check_same_config(dir: &Path, config: &RunConfig) -> Result<()> {
    let config_file = dir.join("config.toml");
    if !config_file.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&config_file).map_err(|e| Error::open(&config_file, crate::io::io_cause(&e)))?;
    let stored: RunConfig = toml::from_str(&text).map_err(|e| Error::format(&config_file, config::toml_error(&text, &e)))?;
    let keys = config::differing_keys(&stored, config);
    if keys.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{}: the run folder holds a run of another config (differs at {}); continue it with the same config or choose another --out",
        dir.display(),
        keys.join(", ")
    )))
}

/// Fails unless the run in `dir` (its `config.toml` and `manifest`) was started with `plan`'s
/// config, inputs and model files.
fn check_same_run(plan: &Plan, dir: &Path, manifest: &Manifest) -> Result<()> {
    check_same_config(dir, &plan.config)?;
    let inputs: Vec<PathBuf> = plan.config.domains.iter().flat_map(|d| d.inputs.iter().cloned()).collect();
    for (now, then) in hash_files(&inputs)?.iter().zip(&manifest.inputs).chain(hash_files(&plan.model.files)?.iter().zip(&manifest.model)) {
        if now != then {
            return Err(Error::content(&now.path, format!("changed since the run in {} started (SHA-256 differs); start a new run folder", dir.display())));
        }
    }
    Ok(())
}

/// Makes the checkpoint folder of a stage for input `key`, discarding checkpoints of another input.
fn prepare_partial(partial: &Path, key: &str) -> Result<()> {
    let key_file = partial.join("key.txt");
    // Only a key that differs discards the folder: a folder without one yet is being set up by a
    // shard running beside this one (the key is written, atomically, before any batch).
    if std::fs::read_to_string(&key_file).is_ok_and(|k| k != key) {
        std::fs::remove_dir_all(partial).map_err(|e| Error::write(partial, e))?;
    }
    if !key_file.is_file() {
        crate::io::write_text(&key_file, key)?;
    }
    Ok(())
}

/// The checkpoint of batch `b` in a stage's checkpoint folder.
fn batch_file(partial: &Path, b: usize) -> PathBuf {
    partial.join(format!("batch_{b:05}.npy"))
}

/// What a checkpointed stage took from earlier work instead of computing it.
#[derive(Debug, Clone, Copy, Default)]
struct Reused {
    batches: usize,
    maps: usize,
}

impl Reused {
    /// UNet evaluations this invocation ran, of `planned` for `n` maps (the same number per map).
    fn evaluations_done(&self, planned: usize, n: usize) -> usize {
        planned.checked_div(n).map_or(0, |per_map| per_map * (n - self.maps.min(n)))
    }
}

impl<'a> Runner<'a> {
    fn open(plan: &'a Plan, config_path: &Path, dir: &Path, opts: &RunOptions) -> Result<Runner<'a>> {
        let config_file = dir.join("config.toml");
        let manifest_file = dir.join("manifest.json");
        let exists = dir.is_dir() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        check_run_folder(dir, opts.resume)?;
        let log = Log { path: dir.join("run.log"), echo: opts.echo };
        let inputs: Vec<PathBuf> = plan.config.domains.iter().flat_map(|d| d.inputs.iter().cloned()).collect();
        let (manifest, lock) = if exists && manifest_file.is_file() && opts.resume {
            let lock = RunLock::acquire(dir)?;
            let old = Manifest::read(&manifest_file)?;
            check_same_run(plan, dir, &old)?;
            remove_stale_temporaries(dir);
            log.line(&format!("resuming run '{}' in {} ({} stage(s) recorded)", plan.config.name(), dir.display(), old.stages.len()))?;
            (old, lock)
        } else {
            if exists && opts.resume && !manifest_file.is_file() {
                let _lock = RunLock::acquire(dir)?;
                for f in ["config.toml", "run.log"] {
                    let _ = std::fs::remove_file(dir.join(f));
                }
            }
            std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
            let lock = RunLock::acquire(dir)?;
            crate::io::write_text(&config_file, &plan.config.to_toml())?;
            let mut seeds = BTreeMap::new();
            seeds.insert("run".to_string(), plan.config.run.seed);
            for d in &plan.domains {
                let name = format!("sample/{}", d.name);
                seeds.insert(name.clone(), derive_seed(plan.config.run.seed, &name));
            }
            let m = Manifest {
                tool: crate::io::TOOL.to_string(),
                config_sha256: manifest::sha256_text(&plan.config.to_toml()),
                inputs: hash_files(&inputs)?,
                model_folder: plan.config.model.path.clone(),
                model: hash_files(&plan.model.files)?,
                seeds,
                threads: candle_core::utils::get_num_threads(),
                started: utc_now(),
                stages: BTreeMap::new(),
                complete: false,
                peak_memory_mib: None,
                shards: BTreeMap::new(),
            };
            m.write(&manifest_file)?;
            log.line(&format!("run '{}' from {} into {}", plan.config.name(), config_path.display(), dir.display()))?;
            (m, lock)
        };
        Ok(Runner {
            plan,
            _lock: Some(lock),
            config_path: config_path.to_path_buf(),
            dir: dir.to_path_buf(),
            manifest,
            redo: false,
            model: None,
            log,
            echo: opts.echo,
            latent_cache: opts.latent_cache.clone(),
            ran: Vec::new(),
            kept: Vec::new(),
        })
    }

    /// Opens a started run folder for a shard, without the lock (shards run side by side and write
    /// only their own files) and without writing the manifest: the folder must hold a run of the
    /// same config, inputs and model.
    fn attach(plan: &'a Plan, config_path: &Path, dir: &Path, opts: &RunOptions) -> Result<Runner<'a>> {
        let manifest_file = dir.join("manifest.json");
        if !manifest_file.is_file() {
            return Err(Error::Invalid(format!(
                "{}: no run has started here: run `expanse run {} --out {} --resume --stage ingest` first",
                dir.display(),
                config_path.display(),
                dir.display()
            )));
        }
        let manifest = Manifest::read(&manifest_file)?;
        check_same_run(plan, dir, &manifest)?;
        Ok(Runner {
            plan,
            _lock: None,
            config_path: config_path.to_path_buf(),
            dir: dir.to_path_buf(),
            manifest,
            redo: false,
            model: None,
            log: Log { path: dir.join("run.log"), echo: opts.echo },
            echo: opts.echo,
            latent_cache: None,
            ran: Vec::new(),
            kept: Vec::new(),
        })
    }

    fn save(&mut self) -> Result<()> {
        self.manifest.peak_memory_mib = crate::runtime::peak_memory_mib();
        self.manifest.write(&self.dir.join("manifest.json"))
    }

    fn intact(&self, rec: &StageRecord) -> bool {
        rec.outputs.iter().all(|h| FileHash::of(&self.dir.join(&h.path), &h.path).is_ok_and(|now| &now == h))
    }

    /// Runs stage `name` unless an earlier invocation finished it and its outputs are intact.
    fn stage(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<StageOutput>) -> Result<()> {
        if !self.redo {
            if let Some(rec) = self.manifest.stages.get(name) {
                if self.intact(rec) {
                    self.remove_checkpoints(name)?;
                    self.log.line(&format!("{name}: finished earlier, kept"))?;
                    self.kept.push(name.to_string());
                    return Ok(());
                }
            }
        }
        self.redo = true;
        if self.manifest.stages.remove(name).is_some() || self.manifest.complete {
            self.manifest.complete = false;
            self.save()?;
        }
        let t = Instant::now();
        let (outputs, counts) = f(self).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("stage {name}: {m}")),
            other => other,
        })?;
        let seconds = t.elapsed().as_secs_f64();
        let mut hashes = Vec::new();
        for p in &outputs {
            let rel = p.strip_prefix(&self.dir).unwrap_or(p);
            hashes.push(FileHash::of(p, rel)?);
        }
        let shown: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {}", short(v))).collect();
        self.manifest.stages.insert(name.to_string(), StageRecord { seconds, counts, outputs: hashes, finished: utc_now() });
        self.save()?;
        // Checkpoints go only once the manifest holds the stage, so that no kill loses work.
        self.remove_checkpoints(name)?;
        self.log.line(&format!("{name}: done in {seconds:.1} s ({})", shown.join(", ")))?;
        self.ran.push(name.to_string());
        Ok(())
    }

    /// Runs (or keeps) the stages of each kind in `kinds`, in order: `fit` once, the others once
    /// per domain.
    fn stages(&mut self, kinds: &[&str]) -> Result<()> {
        let names: Vec<String> = self.plan.domains.iter().map(|d| d.name.clone()).collect();
        for &kind in kinds {
            if kind == "fit" {
                self.stage("fit", |r| r.fit())?;
                continue;
            }
            let f: fn(&mut Self, &str) -> Result<StageOutput> = match kind {
                "ingest" => Self::ingest,
                "invert" => Self::invert,
                "sample" => Self::sample,
                "decode" => Self::decode,
                "validate" => Self::validate,
                other => unreachable!("no stage kind '{other}'"),
            };
            for d in &names {
                self.stage(&format!("{kind}/{d}"), |r| f(r, d))?;
            }
        }
        Ok(())
    }

    fn remove_checkpoints(&self, name: &str) -> Result<()> {
        match self.partial_dir(name).filter(|p| p.is_dir()) {
            Some(p) => std::fs::remove_dir_all(&p).map_err(|e| Error::write(&p, e)),
            None => Ok(()),
        }
    }

    /// Where stage `name` keeps its per-batch checkpoints (inversion and decoding only).
    fn partial_dir(&self, name: &str) -> Option<PathBuf> {
        let (kind, d) = name.split_once('/')?;
        let folder = match kind {
            "invert" => "latents",
            "decode" => "samples",
            _ => return None,
        };
        Some(self.path(&[folder, &format!("{d}.partial")]))
    }

    fn domain(&self, name: &str) -> &config::DomainSection {
        self.plan.config.domains.iter().find(|d| d.name == name).expect("planned domain")
    }

    fn path(&self, parts: &[&str]) -> PathBuf {
        parts.iter().fold(self.dir.clone(), |p, s| p.join(s))
    }

    fn model(&mut self) -> Result<&Ddpm> {
        if self.model.is_none() {
            let c = &self.plan.config.model;
            let device = model::parse_device(&c.device)?;
            let dtype = model::parse_dtype(&c.dtype)?;
            self.model = Some(Ddpm::load(&c.path, &device, dtype)?);
        }
        Ok(self.model.as_ref().expect("loaded"))
    }

    fn ddim(&mut self) -> Result<Ddim> {
        let inv = self.plan.config.inversion.clone();
        Ddim::for_model(self.model()?, inv.steps, inv.t0, inv.fixed_point, inv.clip)
    }

    fn real_path(&self, d: &str) -> PathBuf {
        self.path(&["stacks", &format!("{d}.real.{}", self.plan.config.run.formats[0])])
    }

    fn ingest(&mut self, d: &str) -> Result<StageOutput> {
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
        Ok((report.written, counts))
    }

    /// Runs `f` over `x` in batches of the configured size, keeping each batch's result in
    /// `partial/` so that an interrupted stage resumes where it stopped (and so that the shards of
    /// a job array can compute the batches). `key` identifies the input: checkpoints made for
    /// another input are discarded.
    fn checkpointed(
        &mut self,
        partial: &Path,
        key: &str,
        x: &Array4<f32>,
        what: &str,
        steps_per_batch: u64,
        mut f: impl FnMut(&mut Self, &Array4<f32>, &ProgressBar) -> Result<Array4<f32>>,
    ) -> Result<(Array4<f32>, Reused)> {
        prepare_partial(partial, key)?;
        let batch = self.plan.config.model.batch;
        let n = x.len_of(Axis(0));
        let batches = n.div_ceil(batch);
        let pb = progress_bar(steps_per_batch * batches as u64, what, self.echo);
        let mut parts = Vec::with_capacity(batches);
        let mut reused = Reused::default();
        for b in 0..batches {
            let (start, end) = (b * batch, ((b + 1) * batch).min(n));
            let chunk = x.slice(s![start..end, .., .., ..]).to_owned();
            let (out, kept) = self.checkpoint_batch(&batch_file(partial, b), &chunk, |r, c| f(r, c, &pb))?;
            if kept {
                reused.batches += 1;
                reused.maps += end - start;
                pb.inc(steps_per_batch);
            }
            parts.push(out);
        }
        pb.finish_and_clear();
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        Ok((ndarray::concatenate(Axis(0), &views).expect("same shapes"), reused))
    }

    /// One batch: its checkpoint `file` when it holds a result of the right shape, else `f` on
    /// `chunk`, written atomically to `file`. Also says whether the checkpoint was kept.
    fn checkpoint_batch(
        &mut self,
        file: &Path,
        chunk: &Array4<f32>,
        f: impl FnOnce(&mut Self, &Array4<f32>) -> Result<Array4<f32>>,
    ) -> Result<(Array4<f32>, bool)> {
        let kept: Option<Array4<f32>> = ndarray_npy::read_npy(file).ok().filter(|a: &Array4<f32>| a.dim() == chunk.dim());
        if let Some(a) = kept {
            return Ok((a, true));
        }
        let out = f(self, chunk)?;
        let files = crate::io::AtomicFiles::new(&[file.to_path_buf()])?;
        ndarray_npy::write_npy(files.temp(0), &out).map_err(|e| Error::write(file, e))?;
        files.commit()?;
        Ok((out, false))
    }

    /// What inversion of domain `d` reads: the model-space stack, the grid, and the key of its
    /// checkpoints.
    fn invert_setup(&mut self, d: &str) -> Result<(ModelInput, Ddim, String)> {
        let stack_path = self.path(&["stacks", &format!("{d}.h5")]);
        let input = latents::read_model_input(&stack_path)?;
        let ddim = self.ddim()?;
        let key = format!(
            "{}\ngrid {:?} fixed point {} clip {:?}\nbatch {}\n",
            FileHash::of(&stack_path, &stack_path)?.sha256,
            ddim.seq,
            ddim.fixed_point,
            ddim.clip,
            self.plan.config.model.batch
        );
        Ok((input, ddim, key))
    }

    /// What decoding of domain `d` reads: the accepted latents, the grid (with the decoding
    /// clip), and the key of its checkpoints.
    fn decode_setup(&mut self, d: &str) -> Result<(ModelInput, Ddim, String)> {
        let latents_path = self.path(&["samples", &format!("{d}.latents.npy")]);
        let input: ModelInput = latents::read_model_input(&latents_path)?;
        let mut ddim = self.ddim()?;
        if let Some(c) = self.plan.config.inversion.decode_clip {
            ddim.clip = Some(c);
        }
        let key = format!("{}\n{:?} clip {:?}\nbatch {}\n", FileHash::of(&latents_path, &latents_path)?.sha256, ddim.seq, ddim.clip, self.plan.config.model.batch);
        Ok((input, ddim, key))
    }

    fn invert(&mut self, d: &str) -> Result<StageOutput> {
        let (input, ddim, key) = self.invert_setup(d)?;
        let cached = self.latent_cache.as_ref().map(|dir| dir.join(format!("latents-{}.npy", &self.cache_key(&input, &ddim)[..24])));
        let from_cache: Option<Array4<f32>> =
            cached.as_ref().and_then(|f| ndarray_npy::read_npy(f).ok()).filter(|a: &Array4<f32>| a.dim() == input.data.dim());
        let n = input.data.len_of(Axis(0));
        let (z, reused, hit) = match from_cache {
            Some(z) => (z, Reused { batches: 0, maps: n }, true),
            None => {
                let partial = self.partial_dir(&format!("invert/{d}")).expect("inversion checkpoints");
                let steps = (ddim.seq.len() - 1) as u64;
                let (z, reused) = self.checkpointed(&partial, &key, &input.data, &format!("invert {d}"), steps, |r, chunk, pb| {
                    let m = r.model()?;
                    ddim.invert(m, chunk, chunk.len_of(Axis(0)), pb)
                })?;
                if let Some(f) = &cached {
                    std::fs::create_dir_all(f.parent().expect("cache folder")).map_err(|e| Error::write(f, e))?;
                    let files = crate::io::AtomicFiles::new(std::slice::from_ref(f))?;
                    ndarray_npy::write_npy(files.temp(0), &z).map_err(|e| Error::write(f, e))?;
                    files.commit()?;
                }
                (z, reused, false)
            }
        };
        let records = ddim.records(self.model()?)?;
        let written = latents::write_model_output(&self.path(&["latents", &format!("{d}.h5")]), &z, "run: invert", &input, records)?;
        let mut counts = BTreeMap::new();
        counts.insert("latents".into(), json!(z.len_of(Axis(0))));
        counts.insert("unet_evaluations".into(), json!(reused.evaluations_done(self.plan.unet_evaluations(&format!("invert/{d}")), n)));
        counts.insert("batches_from_checkpoints".into(), json!(reused.batches));
        if cached.is_some() {
            counts.insert("from_latent_cache".into(), json!(hit));
        }
        Ok((written, counts))
    }

    /// What inverted latents depend on, hashed: the model-space data and normalization, the
    /// grid and its options, the model files, dtype and device.
    fn cache_key(&self, input: &ModelInput, ddim: &Ddim) -> String {
        let data: Vec<u8> = input.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let c = &self.plan.config.model;
        let text = format!(
            "data {}\nshape {:?}\nnormalization {}\ngrid {:?} fixed point {} clip {:?}\nmodel {:?}\ndtype {} device {}\n",
            manifest::sha256_bytes(&data),
            input.data.dim(),
            serde_json::to_string(&input.normalization).unwrap_or_default(),
            ddim.seq,
            ddim.fixed_point,
            ddim.clip,
            self.manifest.model.iter().map(|h| &h.sha256).collect::<Vec<_>>(),
            c.dtype,
            c.device
        );
        manifest::sha256_text(&text)
    }

    fn fit(&mut self) -> Result<StageOutput> {
        let domains: Vec<(String, PathBuf)> =
            self.plan.domains.iter().map(|d| (d.name.clone(), self.path(&["latents", &format!("{}.h5", d.name)]))).collect();
        let kind = self.plan.config.prior_kind()?;
        let fitted = prior_file::fit_files(&domains, kind, &self.path(&["prior", "prior.h5"]), Some(&self.dir))?;
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

    fn sample(&mut self, d: &str) -> Result<StageOutput> {
        let prior_path = self.path(&["prior", "prior.h5"]);
        let prior = prior_file::read_domain(&prior_path, Some(d))?;
        let input = latents::read_model_input(&self.path(&["latents", &format!("{d}.h5")]))?;
        let z = geometry::flatten(&input.data);
        let c = &self.plan.config;
        let seed = self.manifest.seeds.get(&format!("sample/{d}")).copied().unwrap_or_else(|| derive_seed(c.run.seed, &format!("sample/{d}")));
        let spec = c.sampling_spec(seed)?;
        let outcome = geometry::sample_latents(&prior, &z, &spec)?;
        let accepted = outcome.accepted_array(prior.shape);
        let mut records = vec![("sampling", outcome.record(&prior, &crate::io::shown_path(&prior_path, Some(&self.dir)), &spec))];
        if let Some(g) = input.provenance.as_ref().and_then(|p| p.records.get("ddim")) {
            records.push(("ddim", g.clone()));
        }
        let written = latents::write_model_output(&self.path(&["samples", &format!("{d}.latents.npy")]), &accepted, "run: sample", &input, records)?;
        let (_, all) = outcome.rates();
        let mut counts = BTreeMap::new();
        counts.insert("accepted".into(), json!(outcome.accepted.len()));
        counts.insert("tried".into(), json!(outcome.tried));
        counts.insert("acceptance".into(), json!(all));
        counts.insert("acceptance_per_test".into(), outcome.rates_json());
        counts.insert("seed".into(), json!(spec.seed));
        Ok((written, counts))
    }

    fn decode(&mut self, d: &str) -> Result<StageOutput> {
        let (input, ddim, key) = self.decode_setup(d)?;
        let partial = self.partial_dir(&format!("decode/{d}")).expect("decoding checkpoints");
        let steps = ddim.seq.len() as u64;
        let (images, reused) = self.checkpointed(&partial, &key, &input.data, &format!("decode {d}"), steps, |r, chunk, pb| {
            let m = r.model()?;
            ddim.generate(m, chunk, 0.0, 0, chunk.len_of(Axis(0)), pb)
        })?;
        let sampling = input.provenance.as_ref().and_then(|p| p.records.get("sampling")).cloned().unwrap_or(Value::Null);
        let mut records = ddim.records(self.model()?)?;
        records.extend([("sampling", sampling), ("run", json!({"name": self.plan.config.name(), "seed": self.plan.config.run.seed}))]);
        let paths: Vec<PathBuf> = self.plan.config.run.formats.iter().map(|f| self.path(&["samples", &format!("{d}.{f}")])).collect();
        let title = format!("{} synthetic maps of '{d}'", images.len_of(Axis(0)));
        let (written, physical) = latents::write_maps(&paths, &images, "run: decode", &input, records, &title)?;
        let mut counts = BTreeMap::new();
        counts.insert("maps".into(), json!(images.len_of(Axis(0))));
        counts.insert("physical_units".into(), json!(physical));
        counts.insert("unet_evaluations".into(), json!(reused.evaluations_done(self.plan.unet_evaluations(&format!("decode/{d}")), images.len_of(Axis(0)))));
        counts.insert("batches_from_checkpoints".into(), json!(reused.batches));
        Ok((written, counts))
    }

    fn validate(&mut self, d: &str) -> Result<StageOutput> {
        let synthetic = self.path(&["samples", &format!("{d}.{}", self.plan.config.run.formats[0])]);
        let out_dir = self.path(&["report", d]);
        let opts = self.plan.config.battery_options()?;
        let report = crate::validate::validate(&self.real_path(d), &synthetic, &crate::io::Selection::default(), &out_dir, &opts, Some(&self.dir))?;
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
        }
        Ok((report.written, counts))
    }

    fn count(&self, stage: &str, key: &str) -> f64 {
        self.manifest.stages.get(stage).and_then(|r| r.counts.get(key)).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    fn finish(mut self, seconds: f64) -> Result<RunSummary> {
        let mut domains = Vec::new();
        for d in &self.plan.domains {
            let n = &d.name;
            let synthetic = self.plan.config.run.formats.iter().map(|f| self.path(&["samples", &format!("{n}.{f}")])).collect();
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
            });
        }
        let separability = Some(self.count("fit", "loo_nearest_centroid_accuracy")).filter(|v| v.is_finite());
        let text = summary_text(&self.dir, &self.plan.config, &domains, separability);
        crate::io::write_text(&self.dir.join("summary.md"), &text)?;
        self.manifest.complete = true;
        self.save()?;
        self.log.line(&format!("run complete: {} stage(s) run, {} kept, {seconds:.1} s", self.ran.len(), self.kept.len()))?;
        Ok(RunSummary { dir: self.dir.clone(), domains, separability, ran: self.ran, kept: self.kept, seconds, text })
    }
}

/// The run's `summary.md`: where things are and the key numbers (no timings, so that it is
/// reproducible).
fn summary_text(dir: &Path, c: &RunConfig, domains: &[DomainSummary], separability: Option<f64>) -> String {
    let mut t = format!("# Run '{}'\n\n", c.name());
    t.push_str(&format!(
        "Model `{}`; grid of {} points up to t0 = {}; {} prior; seed {}.\n\n",
        c.model.path.display(),
        c.inversion.steps,
        c.inversion.t0,
        c.prior.kind,
        c.run.seed
    ));
    t.push_str("| domain | real maps | synthetic | accepted / tried | per-map PS slope real | synthetic | Welch t | level spread ratio | PDF Hellinger | memorization ratio | near-copies |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for d in domains {
        let rel: Vec<String> = d.synthetic.iter().map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string()).collect();
        t.push_str(&format!(
            "| {} | {} | {} | {} / {} ({:.1} %) | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.2} | {:.2} | {:.3} ± {:.3} | {:.2} | {} |\n",
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
            d.level_spread_ratio,
            d.hellinger,
            d.hellinger_std,
            d.memorization_ratio,
            d.memorized
        ));
    }
    t.push_str(
        "\nPer map, not pooled: slopes are fitted map by map (Welch's t compares the two means); the level spread ratio is the standard \
         deviation of the synthetic maps' mean levels over the real ones'; the PDF distance uses bins over the real maps' range plus \
         one below and one above it (± from resampling whole maps); memorization ratio = closest synthetic–real over closest \
         real–real distance. Details in `report/<domain>/report.md`.\n",
    );
    if let Some(first) = domains.iter().find(|d| !d.battery.is_empty()) {
        t.push_str("\nBattery of statistics, χ²/dof of synthetic against real means (about 1 when both sample one distribution; \
                    bands, distances and figures in `report/<domain>/`):\n\n| domain |");
        for (st, _) in &first.battery {
            t.push_str(&format!(" {} |", st.title()));
        }
        t.push_str(" overall |\n|---|");
        t.push_str(&"---|".repeat(first.battery.len() + 1));
        t.push('\n');
        for d in domains {
            t.push_str(&format!("| {} |", d.name));
            for (_, c) in &d.battery {
                t.push_str(&format!(" {c:.2} |"));
            }
            t.push_str(&format!(" {:.2} |\n", d.battery_chi2));
        }
    }
    if let Some(s) = separability {
        t.push_str(&format!(
            "\nSeparability of the domains in latent space: leave-one-out nearest-centroid accuracy {:.1} % (chance: {:.1} %).\n",
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
