//! The machinery every stage shares: opening or attaching to a run folder, running or keeping a
//! stage (manifest, hashes, log), the model and grid, and per-batch checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use ndarray::Array4;
use serde_json::Value;

use super::config;
use super::dependencies;
use super::folder::{
    batch_file, check_run_folder, check_same_run, hash_files, prepare_partial, read_stored_config,
    remove_stale_temporaries, Log, RunLock,
};
use super::manifest::{self, utc_now, FileHash, Manifest, StageRecord};
use super::{Plan, RunOptions};
use crate::diffusion::Ddim;
use crate::error::{Error, Result};
use crate::latents::StackFile;
use crate::model::Ddpm;
use crate::pipeline::SampleRecord;
use crate::validate::ValidationSummary;

pub(super) struct Runner<'a> {
    pub(super) plan: &'a Plan,
    /// None for a shard, which writes only its own files.
    pub(super) _lock: Option<RunLock>,
    pub(super) config_path: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) manifest: Manifest,
    pub(super) model: Option<Ddpm>,
    pub(super) log: Log,
    pub(super) echo: bool,
    pub(super) latent_cache: Option<PathBuf>,
    /// Stages run in this invocation (every stage that reads their outputs runs too) and kept.
    pub(super) ran: Vec<String>,
    pub(super) kept: Vec<String>,
    /// UNet evaluations run in this invocation and the seconds they took: the rate that
    /// estimates the rest of the run.
    pub(super) unet_done: (usize, f64),
}

/// A count for the log: floats to four significant digits, strings unquoted.
fn short(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        // Lists (the verdict's lines) are logged on lines of their own.
        Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_array())
            .map(|(k, v)| format!("{k} {}", short(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

pub(super) fn progress_bar(total: u64, what: &str, echo: bool) -> ProgressBar {
    if echo {
        crate::runtime::progress_bar(total, what)
    } else {
        ProgressBar::hidden()
    }
}

pub(super) type StageOutput = (Vec<PathBuf>, BTreeMap<String, Value>);

/// What a checkpointed stage took from earlier work instead of computing it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reused {
    pub(super) batches: usize,
    pub(super) maps: usize,
}

impl Reused {
    /// UNet evaluations this invocation ran, of `planned` for `n` maps (the same number per map).
    pub(super) fn evaluations_done(&self, planned: usize, n: usize) -> usize {
        planned.checked_div(n).map_or(0, |per_map| per_map * (n - self.maps.min(n)))
    }
}

impl<'a> Runner<'a> {
    pub(super) fn open(plan: &'a Plan, config_path: &Path, dir: &Path, opts: &RunOptions) -> Result<Runner<'a>> {
        let config_file = dir.join("config.toml");
        let manifest_file = dir.join("manifest.json");
        let exists = dir.is_dir() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        check_run_folder(dir, opts.resume)?;
        crate::runtime::say_on_signal(
            &dir.join("run.log"),
            &format!(
                "the run stopped; finished stages and saved batches are kept: continue with `expanse run {} --out {} \
                    --resume`",
                config_path.display(),
                dir.display()
            ),
        );
        let log = Log { path: dir.join("run.log"), echo: opts.echo };
        let inputs: Vec<PathBuf> = plan.config.domains.iter().flat_map(|d| d.inputs.iter().cloned()).collect();
        let (manifest, lock) = if exists && manifest_file.is_file() && opts.resume {
            let lock = RunLock::acquire(dir)?;
            let mut old = Manifest::read(&manifest_file)?;
            let (stored, text) =
                read_stored_config(&config_file)?.unwrap_or_else(|| (plan.config.clone(), String::new()));
            let change = dependencies::reconcile(&stored, &text, &plan.config, &plan.model.files, &mut old)?;
            remove_stale_temporaries(dir);
            log.line(&format!(
                "resuming run '{}' in {} ({} stage(s) recorded)",
                plan.config.name(),
                dir.display(),
                old.stages.len()
            ))?;
            if !change.changes.is_empty() {
                crate::io::write_text(&config_file, &plan.config.to_toml())?;
                old.write(&manifest_file)?;
                log.line(&format!("changed since the last invocation: {}", change.changes.join(", ")))?;
                let kept: Vec<&String> = old.stages.keys().collect();
                log.line(&format!(
                    "redoing {} stage(s) ({}); keeping {} finished: {}; the earlier config is in manifest.json \
                        (config_history)",
                    change.redo.len(),
                    change.redo.join(", "),
                    kept.len(),
                    if kept.is_empty() {
                        "none".to_string()
                    } else {
                        kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    }
                ))?;
            }
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
            let seeds = dependencies::run_seeds(&plan.config);
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
                config_history: Vec::new(),
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
            model: None,
            log,
            echo: opts.echo,
            latent_cache: opts.latent_cache.clone(),
            ran: Vec::new(),
            kept: Vec::new(),
            unet_done: (0, 0.0),
        })
    }

    /// Opens a started run folder for a shard, without the lock (shards run side by side and write
    /// only their own files) and without writing the manifest: the folder must hold a run of the
    /// same config, inputs and model.
    pub(super) fn attach(plan: &'a Plan, config_path: &Path, dir: &Path, opts: &RunOptions) -> Result<Runner<'a>> {
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
        check_same_run(plan, config_path, dir, &manifest)?;
        Ok(Runner {
            plan,
            _lock: None,
            config_path: config_path.to_path_buf(),
            dir: dir.to_path_buf(),
            manifest,
            model: None,
            log: Log { path: dir.join("run.log"), echo: opts.echo },
            echo: opts.echo,
            latent_cache: None,
            ran: Vec::new(),
            kept: Vec::new(),
            unet_done: (0, 0.0),
        })
    }

    pub(super) fn save(&mut self) -> Result<()> {
        self.manifest.peak_memory_mib = crate::runtime::peak_memory_mib();
        self.manifest.write(&self.dir.join("manifest.json"))
    }

    /// Whether stage `name`'s record can be kept: its outputs are as recorded, and its typed
    /// counts read back (a record written by an older expanse in another layout is redone).
    pub(super) fn intact(&self, name: &str, rec: &StageRecord) -> bool {
        let readable = match name.split_once('/').map(|(kind, _)| kind) {
            Some("validate") => ValidationSummary::from_counts(&rec.counts).is_ok(),
            Some("sample") => SampleRecord::from_counts(&rec.counts).is_ok(),
            _ => true,
        };
        readable
            && rec.outputs.iter().all(|h| FileHash::of(&self.dir.join(&h.path), &h.path).is_ok_and(|now| &now == h))
    }

    /// Runs stage `name` unless an earlier invocation finished it, its outputs are intact and no
    /// stage it reads from ran in this invocation.
    pub(super) fn stage(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<StageOutput>) -> Result<()> {
        let domains: Vec<String> = self.plan.domains.iter().map(|d| d.name.clone()).collect();
        let inputs_redone = dependencies::prerequisites(name, &domains).iter().any(|p| self.ran.contains(p));
        if !inputs_redone {
            if let Some(rec) = self.manifest.stages.get(name) {
                if self.intact(name, rec) {
                    self.remove_checkpoints(name)?;
                    self.log.line(&format!("{name}: finished earlier, kept"))?;
                    self.kept.push(name.to_string());
                    return Ok(());
                }
            }
        }
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
        // Lists (the verdict's lines) get lines of their own.
        let shown: Vec<String> =
            counts.iter().filter(|(_, v)| !v.is_array()).map(|(k, v)| format!("{k} {}", short(v))).collect();
        self.manifest
            .stages
            .insert(name.to_string(), StageRecord { seconds, counts, outputs: hashes, finished: utc_now() });
        self.save()?;
        // Checkpoints go only once the manifest holds the stage, so that no kill loses work.
        self.remove_checkpoints(name)?;
        self.log.line(&format!("{name}: done in {seconds:.1} s ({})", shown.join(", ")))?;
        self.ran.push(name.to_string());
        self.log_time_left(name, seconds)?;
        Ok(())
    }

    /// After stage `name` took `seconds`: when it ran the UNet, the time the run's remaining UNet
    /// evaluations will take at the rate of this invocation so far.
    fn log_time_left(&mut self, name: &str, seconds: f64) -> Result<()> {
        let counts = &self.manifest.stages[name].counts;
        let n = counts.get("unet_evaluations").and_then(Value::as_u64).unwrap_or(0) as usize;
        if n == 0 {
            return Ok(());
        }
        let other = counts.get("refinement_seconds").and_then(Value::as_f64).unwrap_or(0.0);
        self.unet_done.0 += n;
        self.unet_done.1 += (seconds - other).max(0.0);
        let left: usize = self
            .plan
            .stages()
            .iter()
            .filter(|s| !self.manifest.stages.contains_key(*s))
            .map(|s| self.plan.unet_evaluations(s))
            .sum();
        if left > 0 && self.unet_done.1 > 0.0 {
            let rate = self.unet_done.0 as f64 / self.unet_done.1;
            self.log.line(&format!(
                "run: {left} UNet evaluations left, about {} at {rate:.1} per second so far",
                crate::runtime::duration(left as f64 / rate)
            ))?;
        }
        Ok(())
    }

    /// Runs (or keeps) the stages of each kind in `kinds`, in order: `fit` once, the others once
    /// per domain.
    pub(super) fn stages(&mut self, kinds: &[&str]) -> Result<()> {
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

    pub(super) fn remove_checkpoints(&self, name: &str) -> Result<()> {
        match self.partial_dir(name).filter(|p| p.is_dir()) {
            Some(p) => std::fs::remove_dir_all(&p).map_err(|e| Error::write(&p, e)),
            None => Ok(()),
        }
    }

    /// Where stage `name` keeps its per-batch checkpoints (inversion and decoding only).
    pub(super) fn partial_dir(&self, name: &str) -> Option<PathBuf> {
        let (kind, d) = name.split_once('/')?;
        let folder = match kind {
            "invert" => "latents",
            "decode" => "samples",
            _ => return None,
        };
        Some(self.path(&[folder, &format!("{d}.partial")]))
    }

    pub(super) fn domain(&self, name: &str) -> &config::DomainSection {
        self.plan.config.domains.iter().find(|d| d.name == name).expect("planned domain")
    }

    pub(super) fn path(&self, parts: &[&str]) -> PathBuf {
        parts.iter().fold(self.dir.clone(), |p, s| p.join(s))
    }

    pub(super) fn model(&mut self) -> Result<&Ddpm> {
        if self.model.is_none() {
            self.model = Some(self.plan.load_model()?);
        }
        Ok(self.model.as_ref().expect("loaded"))
    }

    pub(super) fn ddim(&mut self) -> Result<Ddim> {
        let inv = self.plan.config.inversion.clone();
        inv.ddim(self.model()?)
    }

    pub(super) fn real_path(&self, d: &str) -> PathBuf {
        self.path(&["stacks", &format!("{d}.real.{}", self.plan.config.run.formats[0])])
    }

    /// Runs `f` over the maps of `x` in batches of the configured size, keeping each batch's
    /// result in `partial/` so that an interrupted stage resumes where it stopped (and so that the
    /// shards of a job array can compute the batches), and hands each result in order to `sink`
    /// with the index of its first map: no more than a batch is held here. `key` identifies the
    /// input: checkpoints made for another input are discarded.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn checkpointed(
        &mut self,
        partial: &Path,
        key: &str,
        x: &StackFile,
        what: &str,
        steps_per_batch: u64,
        mut f: impl FnMut(&mut Self, &Array4<f32>, &ProgressBar) -> Result<Array4<f32>>,
        mut sink: impl FnMut(usize, Array4<f32>) -> Result<()>,
    ) -> Result<Reused> {
        prepare_partial(partial, key)?;
        let batch = self.plan.config.model.batch;
        let n = x.dim.0;
        let batches = n.div_ceil(batch);
        let pb = progress_bar(steps_per_batch * batches as u64, what, self.echo);
        let mut reused = Reused::default();
        for b in 0..batches {
            let (start, end) = (b * batch, ((b + 1) * batch).min(n));
            let (out, kept) = self.checkpoint_batch(&batch_file(partial, b), x, start..end, |r, c| f(r, c, &pb))?;
            if kept {
                reused.batches += 1;
                reused.maps += end - start;
                pb.inc(steps_per_batch);
            }
            sink(start, out)?;
        }
        pb.finish_and_clear();
        Ok(reused)
    }

    /// One batch, maps `range` of `x`: its checkpoint `file` when it holds a result of the right
    /// shape, else `f` on those maps (read only then), written atomically to `file`. Also says
    /// whether the checkpoint was kept.
    pub(super) fn checkpoint_batch(
        &mut self,
        file: &Path,
        x: &StackFile,
        range: std::ops::Range<usize>,
        f: impl FnOnce(&mut Self, &Array4<f32>) -> Result<Array4<f32>>,
    ) -> Result<(Array4<f32>, bool)> {
        let (_, c, h, w) = x.dim;
        let kept = crate::io::npy::read_own_array4(file, (range.len(), c, h, w));
        if let Some(a) = kept {
            return Ok((a, true));
        }
        let chunk = x.rows(range)?;
        let out = f(self, &chunk)?;
        let files = crate::io::AtomicFiles::new(&[file.to_path_buf()])?;
        ndarray_npy::write_npy(files.temp(0), &out).map_err(|e| Error::write(file, e))?;
        files.commit()?;
        Ok((out, false))
    }
}
