//! `expanse fidelity`: the fidelity benchmark. One TOML file holds a base run config (model,
//! grid, sampling, validation and several `[[domain]]`s), the seeds and a list of
//! `[[variant]]`s, each overriding a few keys (prior kind, grid, few-shot correction, norm,
//! tests, clipping). Every (variant, seed) is a complete `expanse run` in its own folder
//! (`<out>/runs/<variant>/seed<k>/`), so each row of the benchmark can be opened, resumed and
//! rerun like any run; inverted latents are shared between runs through a latent cache, and the
//! reconstruction error of each grid is measured once per domain. The rows, the per-domain
//! tables and the targets met go to `<out>/fidelity.json`, `fidelity.csv` and `fidelity.md`.
//!
//! Rerunning into the same folder keeps every finished run (a killed benchmark resumes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diffusion::reconstruction_errors;
use crate::error::{Error, Result};
use crate::latents;
use crate::model::Ddpm;
use crate::pipeline::config::{
    DomainSection, InversionSection, ModelSection, PriorSection, RefinementSection, RunSection, SamplingSection,
    ValidationSection,
};
use crate::pipeline::manifest;
use crate::pipeline::{Manifest, Plan, RunConfig, RunOptions, SampleRecord};
use crate::stats::battery::Statistic;
pub use crate::validate::StatisticChi2;
use crate::validate::{Spread, ValidationSummary};

/// The targets a variant should meet on every domain.
pub const TARGET_WELCH_T: f64 = 2.0;
pub const TARGET_HELLINGER: f64 = 0.1;
pub const TARGET_LEVEL_RATIO: f64 = 2.0;
pub const TARGET_MEMORIZATION: f64 = 0.5;
pub const TARGET_RECONSTRUCTION_DB: f64 = 35.0;
/// The real-field targets: C2ST accuracy at most this, and every battery statistic's χ²/dof at most
/// this many times max(1, its real-halves floor).
pub const TARGET_C2ST: f64 = 0.65;
pub const TARGET_CHI2_FACTOR: f64 = 3.0;

/// `[benchmark]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkSection {
    /// Run seeds; every variant runs once per seed.
    pub seeds: Vec<u64>,
}

/// `[[variant]]`: a name and the keys it changes in the base config, written as a run config
/// writes them (`prior.kind = "scalar"`, `inversion.t0 = 900`, `refinement.iterations = 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    /// One line saying what the variant tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// This variant's seeds, when not the benchmark's (e.g. one seed for a costly reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// The sections it changes, merged key by key onto the base config, which checks them as it
    /// checks its own (an unknown key is an error naming it).
    #[serde(flatten)]
    pub changes: toml::Table,
}

/// `over` merged onto `base`: tables key by key, any other value replaced.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Every leaf of `table` with its dotted key, each as a table of that one key.
fn leaves(table: &toml::Table, prefix: &str) -> Vec<(String, toml::Table)> {
    let mut out = Vec::new();
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let wrap = |t: toml::Table| toml::Table::from_iter([(k.clone(), toml::Value::Table(t))]);
        match v {
            toml::Value::Table(inner) => out.extend(leaves(inner, &key).into_iter().map(|(key, t)| (key, wrap(t)))),
            _ => out.push((key, toml::Table::from_iter([(k.clone(), v.clone())]))),
        }
    }
    out
}

impl Variant {
    /// The base config with this variant's keys, the run's seed and name, and FITS output only.
    pub fn apply(&self, base: &RunConfig, seed: u64) -> Result<RunConfig> {
        if self.changes.contains_key("domain") {
            return Err(Error::setting("domain", "a variant changes sections of the run, not its domains"));
        }
        let table = toml::Table::try_from(base).map_err(|e| Error::Invalid(format!("the base config: {e}")))?;
        let config_with = |changes: &toml::Table| {
            let mut t = table.clone();
            merge(&mut t, changes);
            toml::Value::Table(t).try_into::<RunConfig>()
        };
        let mut c = config_with(&self.changes).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            // A merged table has no line to point at: the first key that fails alone names it.
            match leaves(&self.changes, "").into_iter().find(|(_, one)| config_with(one).is_err()) {
                Some((key, _)) => Error::setting(key, message),
                None => Error::Invalid(message),
            }
        })?;
        c.run.name = Some(format!("{}-seed{seed}", self.name));
        c.run.seed = seed;
        c.run.formats = vec!["fits".into()];
        Ok(c)
    }

    /// A model folder the variant names, relative to the benchmark file's folder `dir`, made
    /// absolute as the base config's paths are.
    fn resolve(&mut self, dir: &Path) {
        let model = self.changes.get_mut("model").and_then(toml::Value::as_table_mut);
        if let Some(toml::Value::String(p)) = model.and_then(|m| m.get_mut("path")) {
            *p = dir.join(&*p).to_string_lossy().into_owned();
        }
    }
}

/// The benchmark file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FidelityFile {
    benchmark: BenchmarkSection,
    #[serde(rename = "variant")]
    variants: Vec<Variant>,
    #[serde(default)]
    run: RunSection,
    model: ModelSection,
    #[serde(default)]
    inversion: InversionSection,
    #[serde(default)]
    prior: PriorSection,
    #[serde(default)]
    sampling: SamplingSection,
    #[serde(default)]
    refinement: RefinementSection,
    #[serde(default)]
    validation: ValidationSection,
    #[serde(rename = "domain", default)]
    domains: Vec<DomainSection>,
}

/// A checked benchmark: the base config, seeds and variants (each variant's config checked).
#[derive(Debug, Clone)]
pub struct FidelityConfig {
    pub path: PathBuf,
    pub base: RunConfig,
    pub seeds: Vec<u64>,
    pub variants: Vec<Variant>,
}

impl FidelityConfig {
    pub fn read(path: &Path) -> Result<FidelityConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::open(path, crate::io::io_cause(e)))?;
        let f: FidelityFile = toml::from_str(&text)
            .map_err(|e| Error::format(path, crate::pipeline::config::toml_error(&text, &e)).with_source(e))?;
        let mut base = RunConfig {
            run: f.run,
            model: f.model,
            inversion: f.inversion,
            prior: f.prior,
            sampling: f.sampling,
            refinement: f.refinement,
            validation: f.validation,
            domains: f.domains,
        };
        let dir = std::path::absolute(path)
            .map_err(|e| Error::open(path, e))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        base.resolve(path, &dir)?;
        base.check(path)?;
        if f.benchmark.seeds.is_empty() {
            return Err(Error::content(path, "benchmark.seeds: name at least one seed"));
        }
        if f.variants.is_empty() {
            return Err(Error::content(path, "no [[variant]] table: name at least one variant"));
        }
        let mut variants = f.variants;
        for v in &mut variants {
            v.resolve(&dir);
        }
        for (i, v) in variants.iter().enumerate() {
            if v.name.is_empty() || !v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(Error::content(
                    path,
                    format!("variant[{i}].name: '{}' must be letters, digits, '_' or '-'", v.name),
                ));
            }
            if v.seeds.as_ref().is_some_and(|s| s.is_empty()) {
                return Err(Error::content(path, format!("variant '{}': seeds: name at least one seed", v.name)));
            }
            if variants[..i].iter().any(|o| o.name == v.name) {
                return Err(Error::content(path, format!("variant[{i}].name: two variants are named '{}'", v.name)));
            }
            let name = &v.name;
            v.apply(&base, 0)
                .map_err(|e| Error::content(path, format!("variant '{name}': {e}")))?
                .check(path)
                .map_err(|e| match e {
                    Error::Content { path, cause } => Error::Content {
                        path,
                        cause: crate::error::Cause::described(format!("variant '{name}': {cause}"), cause),
                    },
                    other => other,
                })?;
        }
        Ok(FidelityConfig { path: path.to_path_buf(), base, seeds: f.benchmark.seeds, variants })
    }

    /// Keeps only these of the benchmark's seeds (each variant's own seeds too; a variant left
    /// with none is dropped): a shorter run of the same benchmark, whose report says which seeds
    /// it holds. A seed the benchmark does not name is an error.
    pub fn only_seeds(&mut self, seeds: &[u64]) -> Result<()> {
        for s in seeds {
            let named =
                self.seeds.contains(s) || self.variants.iter().any(|v| v.seeds.as_ref().is_some_and(|v| v.contains(s)));
            if !named {
                return Err(Error::Invalid(format!(
                    "no seed {s} in {} (seeds: {:?})",
                    self.path.display(),
                    self.seeds
                )));
            }
        }
        self.seeds.retain(|s| seeds.contains(s));
        for v in &mut self.variants {
            if let Some(own) = &mut v.seeds {
                own.retain(|s| seeds.contains(s));
            }
        }
        let base_seeds = !self.seeds.is_empty();
        self.variants.retain(|v| v.seeds.as_ref().map_or(base_seeds, |own| !own.is_empty()));
        Ok(())
    }
}

/// One (variant, seed, domain) of the benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FidelityRow {
    pub variant: String,
    pub seed: u64,
    pub domain: String,
    /// The run folder.
    pub run: PathBuf,
    /// Why the run failed (then there is no validation and every number is NaN).
    pub error: Option<String>,
    pub accepted: usize,
    pub tried: usize,
    /// Mean and worst reconstruction PSNR (dB, model space) of the real maps on this grid.
    pub reconstruction_db: (f64, f64),
    /// Seconds of sampling and decoding (refinement included) for this domain.
    pub seconds: f64,
    /// Synthetic maps written.
    pub maps: usize,
    /// The run's validation record of this domain, as its manifest stores it.
    pub validation: Option<ValidationSummary>,
}

impl FidelityRow {
    fn number(&self, f: impl Fn(&ValidationSummary) -> f64) -> f64 {
        self.validation.as_ref().map_or(f64::NAN, f)
    }

    pub fn slope_real(&self) -> (f64, f64) {
        (self.number(|v| v.slope_real.mean), self.number(|v| v.slope_real.std))
    }

    pub fn slope_synthetic(&self) -> (f64, f64) {
        (self.number(|v| v.slope_synthetic.mean), self.number(|v| v.slope_synthetic.std))
    }

    pub fn welch_t(&self) -> f64 {
        self.number(|v| v.slope_welch_t)
    }

    pub fn level_ratio(&self) -> f64 {
        self.number(|v| v.level_spread_ratio)
    }

    pub fn hellinger(&self) -> (f64, f64) {
        (self.number(|v| v.hellinger.mean), self.number(|v| v.hellinger.std))
    }

    pub fn hellinger_real_halves(&self) -> f64 {
        self.number(|v| v.hellinger_real_halves)
    }

    pub fn outside_real_range(&self) -> f64 {
        self.number(|v| v.outside_real_range)
    }

    pub fn memorization_ratio(&self) -> f64 {
        self.number(|v| v.memorization_ratio)
    }

    /// The C2ST accuracy and its real-halves floor (NaN when not available).
    pub fn c2st(&self) -> (Spread, Spread) {
        self.validation.as_ref().map_or((Spread::UNKNOWN, Spread::UNKNOWN), ValidationSummary::c2st)
    }

    /// χ²/dof of every battery statistic and the same between the real halves.
    pub fn chi2(&self) -> &[StatisticChi2] {
        self.validation.as_ref().and_then(|v| v.battery.as_ref()).map_or(&[], |b| &b.statistics)
    }

    /// Which real-field targets the row meets: C2ST accuracy ≤ 0.65, every χ²/dof within 3 ×
    /// max(1, its real-halves floor), memorization ratio > 0.5.
    pub fn real_field_targets(&self) -> [bool; 3] {
        real_field_targets_of(self.c2st().0.mean, self.chi2(), self.memorization_ratio())
    }

    /// Which targets the row meets: Welch t, Hellinger, level spread, memorization,
    /// reconstruction.
    pub fn targets(&self) -> [bool; 5] {
        targets_of(
            self.welch_t(),
            self.hellinger().0,
            self.level_ratio(),
            self.memorization_ratio(),
            self.reconstruction_db.0,
        )
    }
}

/// Which real-field targets these numbers meet (see [`FidelityRow::real_field_targets`]).
fn real_field_targets_of(c2st: f64, chi2: &[StatisticChi2], memorization: f64) -> [bool; 3] {
    let chi2_ok = !chi2.is_empty() && chi2.iter().all(|c| c.chi2 <= TARGET_CHI2_FACTOR * c.real_halves.max(1.0));
    [c2st <= TARGET_C2ST, chi2_ok, memorization > TARGET_MEMORIZATION]
}

/// Which of the five targets these numbers meet (see [`FidelityRow::targets`]).
fn targets_of(welch_t: f64, hellinger: f64, level_ratio: f64, memorization: f64, reconstruction_db: f64) -> [bool; 5] {
    [
        welch_t.abs() < TARGET_WELCH_T,
        hellinger < TARGET_HELLINGER,
        (1.0 / TARGET_LEVEL_RATIO..=TARGET_LEVEL_RATIO).contains(&level_ratio),
        memorization > TARGET_MEMORIZATION,
        reconstruction_db >= TARGET_RECONSTRUCTION_DB,
    ]
}

/// What `expanse fidelity` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FidelityReport {
    pub config: PathBuf,
    pub seeds: Vec<u64>,
    pub variants: Vec<Variant>,
    pub domains: Vec<String>,
    pub rows: Vec<FidelityRow>,
    pub threads: usize,
    /// The expanse version and the git commit it was built from, and the CPU it ran on.
    pub tool: String,
    pub commit: String,
    pub cpu: String,
    pub written: Vec<PathBuf>,
}

/// Reconstruction PSNR (mean, worst) of a run's real latents on its grid, once per (domain,
/// grid), kept in `cache`.
fn reconstruction(
    run: &Path,
    manifest: &Manifest,
    domain: &str,
    config: &RunConfig,
    model: &mut Option<Ddpm>,
    cache: &mut BTreeMap<String, (f64, f64)>,
) -> Result<(f64, f64)> {
    let inv = &config.inversion;
    let (stack, inverted) = (format!("stacks/{domain}.h5"), format!("latents/{domain}.h5"));
    // The stack's and latents' hashes stand for the data, the model and the grid they were made
    // with, the model files' for the decoder: all as the run's manifest recorded them.
    let recorded = |rel: &str| {
        let mut outputs = manifest.stages.values().flat_map(|r| &r.outputs);
        outputs.find(|h| h.path == Path::new(rel)).map(|h| h.sha256.clone()).ok_or_else(|| {
            Error::Invalid(format!("{}: no hash of {rel} recorded", run.join("manifest.json").display()))
        })
    };
    let mut hashes = vec![recorded(&stack)?, recorded(&inverted)?];
    hashes.extend(manifest.model.iter().map(|h| h.sha256.clone()));
    let key = format!(
        "{domain} steps {} t0 {} fixed point {} clip {:?} files {}",
        inv.steps,
        inv.t0,
        inv.fixed_point,
        inv.clip,
        manifest::sha256_text(&hashes.join(" "))
    );
    if let Some(v) = cache.get(&key) {
        return Ok(*v);
    }
    if model.is_none() {
        *model = Some(config.model.load()?);
    }
    let m = model.as_ref().expect("loaded");
    let real = latents::read_model_input(&run.join(&stack))?;
    let z = latents::read_model_input(&run.join(&inverted))?;
    let ddim = inv.ddim(m)?;
    let back = ddim.generate(m, &z.data, 0.0, 0, config.model.batch, &indicatif::ProgressBar::hidden())?;
    let psnr: Vec<f64> = reconstruction_errors(&real.data, &back).iter().map(|e| e.psnr_db).collect();
    let v = (psnr.iter().sum::<f64>() / psnr.len() as f64, psnr.iter().cloned().fold(f64::INFINITY, f64::min));
    cache.insert(key, v);
    Ok(v)
}

/// Runs (or resumes) every variant × seed of the benchmark into `out`, calling `on_row` as each
/// domain's row is ready. `only` restricts the variants run.
pub fn run(
    config: &FidelityConfig,
    out: &Path,
    only: Option<&[String]>,
    mut on_row: impl FnMut(&FidelityRow),
) -> Result<FidelityReport> {
    if let Some(names) = only {
        for n in names {
            if !config.variants.iter().any(|v| &v.name == n) {
                let all: Vec<&str> = config.variants.iter().map(|v| v.name.as_str()).collect();
                return Err(Error::Invalid(format!(
                    "no variant '{n}' in {} (variants: {})",
                    config.path.display(),
                    all.join(", ")
                )));
            }
        }
    }
    let variants: Vec<&Variant> = config.variants.iter().filter(|v| only.is_none_or(|n| n.contains(&v.name))).collect();
    std::fs::create_dir_all(out).map_err(|e| Error::write(out, e))?;
    let cache_dir = out.join("cache");
    let recon_file = cache_dir.join("reconstruction.json");
    let mut recon: BTreeMap<String, (f64, f64)> =
        std::fs::read_to_string(&recon_file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let mut model: Option<Ddpm> = None;
    let mut rows = Vec::new();
    for v in &variants {
        for &seed in v.seeds.as_ref().unwrap_or(&config.seeds) {
            let cfg = v.apply(&config.base, seed)?;
            let dir = out.join("runs").join(&v.name).join(format!("seed{seed}"));
            let opts = RunOptions { resume: true, echo: false, latent_cache: Some(cache_dir.clone()) };
            let outcome = Plan::new(cfg.clone(), &config.path).and_then(|plan| plan.execute(&config.path, &dir, &opts));
            let manifest = Manifest::read(&dir.join("manifest.json")).ok();
            for d in &cfg.domains {
                let mut row = FidelityRow {
                    variant: v.name.clone(),
                    seed,
                    domain: d.name.clone(),
                    run: dir.clone(),
                    error: outcome.as_ref().err().map(|e| e.to_string()),
                    accepted: 0,
                    tried: 0,
                    reconstruction_db: (f64::NAN, f64::NAN),
                    seconds: f64::NAN,
                    maps: 0,
                    validation: None,
                };
                if let Some(m) = &manifest {
                    let stage = |s: &str| m.stages.get(&format!("{s}/{}", d.name));
                    if let Some(record) = stage("sample").and_then(|s| SampleRecord::from_counts(&s.counts).ok()) {
                        row.accepted = record.accepted;
                        row.tried = record.tried;
                    }
                    if let (Some(a), Some(b)) = (stage("sample"), stage("decode")) {
                        row.seconds = a.seconds + b.seconds;
                        row.maps = b.counts.get("maps").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
                    }
                    if row.error.is_none() {
                        let manifest_file = dir.join("manifest.json");
                        let stage_name = format!("validate/{}", d.name);
                        let rec = m.stages.get(&stage_name).ok_or_else(|| {
                            Error::Invalid(format!("{}: stage {stage_name}: not recorded", manifest_file.display()))
                        })?;
                        let summary = ValidationSummary::from_counts(&rec.counts).map_err(|e| {
                            Error::Invalid(format!("{}: stage {stage_name}: {e}", manifest_file.display()))
                        })?;
                        row.validation = Some(summary);
                    }
                }
                if row.error.is_none() {
                    let Some(m) = manifest.as_ref().filter(|_| row.validation.is_some()) else {
                        let file = dir.join("manifest.json");
                        return Err(Error::Invalid(format!(
                            "{}: the run finished but its manifest cannot be read",
                            file.display()
                        )));
                    };
                    row.reconstruction_db = reconstruction(&dir, m, &d.name, &cfg, &mut model, &mut recon)?;
                    crate::io::write_text(&recon_file, &serde_json::to_string_pretty(&recon).expect("serializes"))?;
                }
                on_row(&row);
                rows.push(row);
            }
        }
    }
    let mut report = FidelityReport {
        config: config.path.clone(),
        seeds: config.seeds.clone(),
        variants: variants.into_iter().cloned().collect(),
        domains: config.base.domains.iter().map(|d| d.name.clone()).collect(),
        rows,
        threads: candle_core::utils::get_num_threads(),
        tool: crate::io::TOOL.to_string(),
        commit: crate::io::COMMIT.to_string(),
        cpu: crate::runtime::cpu_description(),
        written: Vec::new(),
    };
    let json_path = out.join("fidelity.json");
    let md_path = out.join("fidelity.md");
    let csv_path = out.join("fidelity.csv");
    report.written = vec![json_path.clone(), md_path.clone(), csv_path.clone()];
    let files = crate::io::AtomicFiles::new(&report.written)?;
    std::fs::write(files.temp(0), serde_json::to_string_pretty(&report).expect("serializes"))
        .map_err(|e| Error::write(&json_path, e))?;
    std::fs::write(files.temp(1), markdown(&report)).map_err(|e| Error::write(&md_path, e))?;
    std::fs::write(files.temp(2), csv(&report)).map_err(|e| Error::write(&csv_path, e))?;
    files.commit()?;
    Ok(report)
}

/// Mean and standard deviation of the finite values (NaN when there are none).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let p = crate::validate::PerMap::of(v);
    // One seed has no spread between seeds: the tables print it as ± 0.00, as they always have.
    (p.mean, if p.values.len() == 1 { 0.0 } else { p.std })
}

/// Seed-averaged numbers of one (variant, domain).
struct Cell {
    acceptance: f64,
    slope_real: (f64, f64),
    slope_synthetic: (f64, f64),
    welch_t: (f64, f64),
    level: (f64, f64),
    hellinger: (f64, f64),
    halves: f64,
    outside: f64,
    memorization: f64,
    reconstruction: (f64, f64),
    seconds: f64,
    /// Targets met by the seed-averaged numbers.
    met: [bool; 5],
    failed: usize,
    runs: usize,
}

fn cell(rows: &[&FidelityRow]) -> Cell {
    let col = |g: fn(&FidelityRow) -> f64| mean_std(&rows.iter().map(|r| g(r)).collect::<Vec<_>>());
    let accepted: usize = rows.iter().map(|r| r.accepted).sum();
    let tried: usize = rows.iter().map(|r| r.tried).sum();
    let reconstruction = (col(|r| r.reconstruction_db.0).0, col(|r| r.reconstruction_db.1).0);
    let (welch_t, hellinger, level) = (col(|r| r.welch_t()), col(|r| r.hellinger().0), col(|r| r.level_ratio()));
    let memorization = col(|r| r.memorization_ratio()).0;
    Cell {
        acceptance: accepted as f64 / tried.max(1) as f64,
        slope_real: (col(|r| r.slope_real().0).0, col(|r| r.slope_real().1).0),
        slope_synthetic: (col(|r| r.slope_synthetic().0).0, col(|r| r.slope_synthetic().1).0),
        welch_t,
        level,
        hellinger,
        halves: col(|r| r.hellinger_real_halves()).0,
        outside: col(|r| r.outside_real_range()).0,
        memorization,
        reconstruction,
        seconds: col(|r| r.seconds).0,
        met: targets_of(welch_t.0, hellinger.0, level.0, memorization, reconstruction.0),
        failed: rows.iter().filter(|r| r.error.is_some()).count(),
        runs: rows.len(),
    }
}

/// The benchmark as Markdown: one table per domain (a row per variant, numbers averaged over
/// the seeds, ± the spread between seeds), then the targets met.
pub fn markdown(r: &FidelityReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Benchmark `{}`: {} variant(s) × {} domain(s) × {} seed(s) ({:?}), {} thread(s). Each cell averages the \
            seeds; ± is the standard deviation between seeds \
         (slopes: the mean over seeds of each run's per-map mean ± per-map standard deviation).\n\n\
         Made by {} (commit {}) on {}.\n\n",
        r.config.display(),
        r.variants.len(),
        r.domains.len(),
        r.seeds.len(),
        r.seeds,
        r.threads,
        r.tool,
        r.commit,
        r.cpu
    ));
    s.push_str(&format!(
        "Targets: |Welch t| of per-map slopes < {TARGET_WELCH_T}; PDF Hellinger < {TARGET_HELLINGER}; level spread \
            ratio within {TARGET_LEVEL_RATIO}× of 1; \
         memorization ratio > {TARGET_MEMORIZATION}; reconstruction ≥ {TARGET_RECONSTRUCTION_DB} dB. ✓ marks a target \
            met by the seed-averaged value.\n\n"
    ));
    let tick = |b: bool| if b { "✓" } else { "✗" };
    for d in &r.domains {
        s.push_str(&format!("### {d}\n\n"));
        s.push_str(
            "| variant | acceptance | per-map slope (real) | per-map slope (synthetic) | Welch t | level \
            spread ratio | PDF Hellinger (real halves) | outside real range | memorization ratio | reconstruction dB \
            (worst) | s per set | targets |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for v in &r.variants {
            let rows: Vec<&FidelityRow> = r.rows.iter().filter(|x| &x.domain == d && x.variant == v.name).collect();
            if rows.is_empty() {
                continue;
            }
            let c = cell(&rows);
            if c.failed == c.runs {
                let e = rows[0].error.clone().unwrap_or_default();
                s.push_str(&format!(
                    "| {} | failed in every seed: {} | | | | | | | | | | |\n",
                    v.name,
                    e.replace('|', "/")
                ));
                continue;
            }
            s.push_str(&format!(
                "| {} | {:.1} % | {:.2} ± {:.2} | {:.2} ± {:.2} | {} {:.2} ± {:.2} | {} {:.2} ± {:.2} | {} {:.3} ± \
                    {:.3} ({:.3}) | {:.2} % | {} {:.2} | {} {:.1} ({:.1}) | {:.1} | {}/5{} |\n",
                v.name,
                100.0 * c.acceptance,
                c.slope_real.0,
                c.slope_real.1,
                c.slope_synthetic.0,
                c.slope_synthetic.1,
                tick(c.met[0]),
                c.welch_t.0,
                c.welch_t.1,
                tick(c.met[2]),
                c.level.0,
                c.level.1,
                tick(c.met[1]),
                c.hellinger.0,
                c.hellinger.1,
                c.halves,
                100.0 * c.outside,
                tick(c.met[3]),
                c.memorization,
                tick(c.met[4]),
                c.reconstruction.0,
                c.reconstruction.1,
                c.seconds,
                c.met.iter().filter(|&&b| b).count(),
                if c.failed > 0 { format!(" ({} of {} seeds failed)", c.failed, c.runs) } else { String::new() }
            ));
        }
        s.push('\n');
    }
    s.push_str("### Summary: targets met per variant (of 5 per domain)\n\n| variant | description |");
    for d in &r.domains {
        s.push_str(&format!(" {d} |"));
    }
    s.push_str(" all |\n|---|---|");
    s.push_str(&"---|".repeat(r.domains.len() + 1));
    s.push('\n');
    for v in &r.variants {
        s.push_str(&format!("| {} | {} |", v.name, v.description.clone().unwrap_or_default()));
        let mut total = 0;
        for d in &r.domains {
            let rows: Vec<&FidelityRow> = r.rows.iter().filter(|x| &x.domain == d && x.variant == v.name).collect();
            if rows.is_empty() {
                s.push_str(" – |");
                continue;
            }
            let c = cell(&rows);
            let met = if c.failed == c.runs { 0 } else { c.met.iter().filter(|&&b| b).count() };
            total += met;
            s.push_str(&format!(" {met} |"));
        }
        s.push_str(&format!(" {total}/{} |\n", 5 * r.domains.len()));
    }
    if r.rows.iter().any(|x| x.c2st().0.mean.is_finite()) {
        s.push('\n');
        s.push_str(&real_field_markdown(r));
    }
    s
}

/// The C2ST, the battery's χ²/dof and the cost, per domain (a row per variant, averaged over the
/// seeds, ± the spread between seeds), against the real-field targets.
fn real_field_markdown(r: &FidelityReport) -> String {
    let statistics: Vec<Statistic> = {
        let mut v: Vec<Statistic> = r.rows.iter().flat_map(|x| x.chi2().iter().map(|c| c.statistic)).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut s = format!(
        "### Classifier two-sample test and battery\n\n\
         C2ST: accuracy of a logistic regression telling real from synthetic maps by the battery's per-map curves \
            (0.5: cannot tell), in brackets the same between two halves of the real maps. χ²/dof of each statistic, in \
            brackets between the real halves. s per map: sampling, decoding and refinement over the maps written \
            (the real maps' inversion is shared and not counted). Targets: C2ST ≤ {TARGET_C2ST}; every χ²/dof ≤ \
            {TARGET_CHI2_FACTOR} × max(1, its real-halves value); memorization ratio > {TARGET_MEMORIZATION}. \
            ✓ marks a target met by the seed-averaged values; ± is the spread between seeds.\n\n"
    );
    let tick = |b: bool| if b { "✓" } else { "✗" };
    for d in &r.domains {
        s.push_str(&format!("#### {d}\n\n| variant | C2ST (real halves) |"));
        for st in &statistics {
            s.push_str(&format!(" χ²/dof {} |", st.title()));
        }
        s.push_str(" memorization ratio | s per map | targets |\n|---|---|");
        s.push_str(&"---|".repeat(statistics.len() + 3));
        s.push('\n');
        for v in &r.variants {
            let rows: Vec<&FidelityRow> =
                r.rows.iter().filter(|x| &x.domain == d && x.variant == v.name && x.error.is_none()).collect();
            if rows.is_empty() {
                continue;
            }
            let col = |g: &dyn Fn(&FidelityRow) -> f64| mean_std(&rows.iter().map(|x| g(x)).collect::<Vec<_>>());
            let c2st = col(&|x| x.c2st().0.mean);
            let floor = col(&|x| x.c2st().1.mean).0;
            let memorization = col(&|x| x.memorization_ratio()).0;
            let mut chi2 = Vec::new();
            let name = if rows.len() == r.seeds.len() {
                v.name.clone()
            } else {
                format!("{} ({} seed{})", v.name, rows.len(), if rows.len() == 1 { "" } else { "s" })
            };
            s.push_str(&format!(
                "| {} | {} {:.2} ± {:.2} ({:.2}) |",
                name,
                tick(c2st.0 <= TARGET_C2ST),
                c2st.0,
                c2st.1,
                floor
            ));
            for st in &statistics {
                let value = |x: &FidelityRow| x.chi2().iter().find(|c| c.statistic == *st).map_or(f64::NAN, |c| c.chi2);
                let halves =
                    |x: &FidelityRow| x.chi2().iter().find(|c| c.statistic == *st).map_or(f64::NAN, |c| c.real_halves);
                let (c, sd) = col(&value);
                let h = col(&halves).0;
                chi2.push(StatisticChi2 { statistic: *st, chi2: c, real_halves: h });
                let ok = c <= TARGET_CHI2_FACTOR * h.max(1.0);
                s.push_str(&format!(" {} {c:.2} ± {sd:.2} ({h:.2}) |", tick(ok)));
            }
            let per_map = col(&|x| x.seconds / x.maps.max(1) as f64).0;
            let met = real_field_targets_of(c2st.0, &chi2, memorization);
            s.push_str(&format!(
                " {} {:.2} | {:.2} | {}/3 |\n",
                tick(met[2]),
                memorization,
                per_map,
                met.iter().filter(|&&b| b).count()
            ));
        }
        s.push('\n');
    }
    s
}

fn csv(r: &FidelityReport) -> String {
    let mut s = String::from(
        "variant,seed,domain,accepted,tried,slope_real_mean,slope_real_std,slope_synthetic_mean,slope_synthetic_std,\
         welch_t,level_ratio,hellinger,hellinger_std,hellinger_real_halves,outside_real_range,memorization_ratio,\
         reconstruction_db_mean,reconstruction_db_worst,seconds,error\n",
    );
    for x in &r.rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"\n",
            x.variant,
            x.seed,
            x.domain,
            x.accepted,
            x.tried,
            x.slope_real().0,
            x.slope_real().1,
            x.slope_synthetic().0,
            x.slope_synthetic().1,
            x.welch_t(),
            x.level_ratio(),
            x.hellinger().0,
            x.hellinger().1,
            x.hellinger_real_halves(),
            x.outside_real_range(),
            x.memorization_ratio(),
            x.reconstruction_db.0,
            x.reconstruction_db.1,
            x.seconds,
            x.error.clone().unwrap_or_default().replace('"', "'")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_seeds_keeps_those_seeds_and_drops_variants_left_without_any() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/fidelity_real_64.toml");
        let names = |c: &FidelityConfig| c.variants.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        let mut c = FidelityConfig::read(&path).unwrap();
        assert!(names(&c).contains(&"paper".to_string()));
        c.only_seeds(&[1]).unwrap();
        assert_eq!(c.seeds, vec![1]);
        assert!(!names(&c).contains(&"paper".to_string()), "paper runs seed 0 only: {:?}", names(&c));
        assert!(names(&c).contains(&"diffusion-refined".to_string()));
        let mut c = FidelityConfig::read(&path).unwrap();
        c.only_seeds(&[0]).unwrap();
        assert_eq!((c.seeds.clone(), c.variants.len()), (vec![0], FidelityConfig::read(&path).unwrap().variants.len()));
        let e = FidelityConfig::read(&path).unwrap().only_seeds(&[7]).unwrap_err().to_string();
        assert!(e.contains("no seed 7") && e.contains("fidelity_real_64.toml"), "{e}");
    }

    #[test]
    fn a_variant_changes_only_its_keys() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/quickstart.toml")).unwrap();
        let base: RunConfig = toml::from_str(&text).unwrap();
        let v: Variant = toml::from_str(
            "name = \"x\"\nprior.kind = \"stationary\"\ninversion.t0 = 300\nsampling.norm = \"match\"\n\
             sampling.debias = \"rings\"",
        )
        .unwrap();
        let c = v.apply(&base, 7).unwrap();
        assert_eq!(
            (c.prior.kind.to_string(), c.inversion.t0, c.sampling.norm.to_string(), c.run.seed),
            ("stationary".to_string(), 300, "match".to_string(), 7)
        );
        assert_eq!(c.sampling.debias, crate::prior::geometry::Debias::Rings);
        assert_eq!(c.inversion.steps, base.inversion.steps);
        assert_eq!(c.sampling.tests, base.sampling.tests);
        assert_eq!(c.run.name.as_deref(), Some("x-seed7"));
        for (text, says) in [
            ("name = \"x\"\npriors.kind = \"scalar\"", "priors"),
            ("name = \"x\"\nprior.knd = \"scalar\"", "knd"),
            ("name = \"x\"\ninversion.t0 = \"high\"", "high"),
            ("name = \"x\"\ndomain = []", "not its domains"),
        ] {
            let e = toml::from_str::<Variant>(text).unwrap().apply(&base, 0).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn targets_are_checked_as_documented() {
        let spread = |mean: f64| Spread { mean, std: 0.0 };
        let row = |t: f64, h: f64, l: f64, m: f64, r: f64| FidelityRow {
            variant: "v".into(),
            seed: 0,
            domain: "d".into(),
            run: PathBuf::new(),
            error: None,
            accepted: 1,
            tried: 1,
            reconstruction_db: (r, r),
            seconds: 0.0,
            maps: 16,
            validation: Some(ValidationSummary {
                slope_real: spread(0.0),
                slope_synthetic: spread(0.0),
                slope_welch_t: t,
                ensemble_spectrum_distance: 0.0,
                level_spread_ratio: l,
                level_spread_per_contrast: false,
                hellinger: spread(h),
                hellinger_real_halves: 0.0,
                outside_real_range: 0.0,
                memorization_ratio: m,
                memorized: 0,
                battery: Some(crate::validate::BatterySummary {
                    chi2: 3.5,
                    distance: 1.0,
                    statistics: vec![StatisticChi2 { statistic: Statistic::Pdf, chi2: 3.5, real_halves: 1.2 }],
                    c2st: Some(Spread { mean: 0.6, std: 0.01 }),
                    c2st_real_halves: Some(Spread { mean: 0.5, std: 0.05 }),
                }),
                targets_met: 0,
                targets_judged: 0,
                verdict: Vec::new(),
                warnings: Vec::new(),
            }),
        };
        assert_eq!(row(-1.9, 0.09, 1.9, 0.6, 35.0).targets(), [true; 5]);
        assert_eq!(row(2.1, 0.11, 0.4, 0.5, 34.9).targets(), [false; 5]);
        assert_eq!(row(f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN).targets(), [false; 5]);
        // χ²/dof 3.5 is within 3 × 1.2 of its floor; C2ST 0.6 ≤ 0.65.
        assert_eq!(row(0.0, 0.0, 1.0, 0.6, 40.0).real_field_targets(), [true; 3]);
        let mut r = row(0.0, 0.0, 1.0, 0.4, 40.0);
        let b = r.validation.as_mut().and_then(|v| v.battery.as_mut()).unwrap();
        b.c2st = Some(spread(0.66));
        b.statistics[0].chi2 = 3.7;
        assert_eq!(r.real_field_targets(), [false; 3]);
        r.validation.as_mut().unwrap().battery = None;
        assert!(!r.real_field_targets()[1], "no battery, no χ² target met");
        r.validation = None;
        assert_eq!(r.targets()[..4], [false; 4], "without a validation no validation target is met");
    }
}
