//! A run in parts, as Slurm job arrays run it: `ingest` → `invert` (one job per shard) → `fit`
//! (checks the inversion shards, assembles the latents, fits, samples) → `decode` (one job per
//! shard) → `validate` (checks the decoding shards, assembles the maps, validates, summary).
//!
//! A shard computes a fixed, contiguous share of the stage's batches (over every domain, in
//! order) into the same per-batch checkpoints a single-machine run writes, with the same batch
//! boundaries, so the assembled files equal those of `expanse run` value for value. A shard takes
//! no lock and writes only its own batch files and its record `shards/<stage>_<I>_of_<N>.json`;
//! a requeued shard reuses the batches it finished. The assembling job refuses to start while a
//! shard's record is missing or one of its batch files no longer hashes as recorded, then moves
//! the records (with their job ids) into `manifest.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Axis;

use super::manifest::{utc_now, FileHash, ShardRecord};
use super::runner::Runner;
use super::RunSummary;
use crate::error::{Error, Result};

/// A stage that runs as a job array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardedStage {
    Invert,
    Decode,
}

impl ShardedStage {
    /// `invert` or `decode`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShardedStage::Invert => "invert",
            ShardedStage::Decode => "decode",
        }
    }
}

/// Shard `index` of `count` (0-based, as `SLURM_ARRAY_TASK_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    /// `I/N` with 0 ≤ I < N.
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || Error::Invalid(format!("--shard '{s}': expected I/N with 0 <= I < N (e.g. 0/4)"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) =
            (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One part of a run (`expanse run --stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPart {
    /// `ingest/<domain>` for every domain.
    Ingest,
    /// One shard of the inversion batches.
    InvertShard(Shard),
    /// Checks the given number of inversion shards, then `invert/*` (assembled), `fit`, `sample/*`.
    Fit { shards: usize },
    /// One shard of the decoding batches.
    DecodeShard(Shard),
    /// Checks the given number of decoding shards, then `decode/*` (assembled), `validate/*` and
    /// the summary.
    Validate { shards: usize },
}

/// The stage names `--stage` takes, in run order.
pub const PARTS: [&str; 5] = ["ingest", "invert", "fit", "decode", "validate"];

impl RunPart {
    /// `--stage NAME` with `--shard I/N` (sharded stages) or `--shards N` (the assembling ones).
    pub fn new(stage: &str, shard: Option<Shard>, shards: Option<usize>) -> Result<RunPart> {
        let need_shard = || {
            Error::Invalid(format!(
                "--stage {stage} runs one shard: give --shard I/N (or run it as a Slurm array task)"
            ))
        };
        let need_shards = || {
            Error::Invalid(format!(
                "--stage {stage} assembles a sharded stage: give --shards N, the number of its shards"
            ))
        };
        match stage {
            "ingest" => Ok(RunPart::Ingest),
            "invert" => shard.map(RunPart::InvertShard).ok_or_else(need_shard),
            "decode" => shard.map(RunPart::DecodeShard).ok_or_else(need_shard),
            "fit" => shards.filter(|&n| n > 0).map(|shards| RunPart::Fit { shards }).ok_or_else(need_shards),
            "validate" => shards.filter(|&n| n > 0).map(|shards| RunPart::Validate { shards }).ok_or_else(need_shards),
            other => Err(Error::Invalid(format!("unknown --stage '{other}' ({})", PARTS.join(", ")))),
        }
    }
}

/// One batch of a sharded stage: maps `start..end` of `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub domain: String,
    pub batch: usize,
    pub start: usize,
    pub end: usize,
}

/// The batches of a stage over domains with `maps` maps each, in run order.
pub fn units(maps: &[(String, usize)], batch: usize) -> Vec<Unit> {
    let mut out = Vec::new();
    for (domain, n) in maps {
        for b in 0..n.div_ceil(batch) {
            out.push(Unit { domain: domain.clone(), batch: b, start: b * batch, end: ((b + 1) * batch).min(*n) });
        }
    }
    out
}

/// The contiguous share of `total` batches that shard `s` computes.
pub fn share(total: usize, s: Shard) -> std::ops::Range<usize> {
    s.index * total / s.count..(s.index + 1) * total / s.count
}

/// `shards/<stage>_<I>_of_<N>.json` in a run folder.
pub fn record_path(dir: &Path, stage: ShardedStage, s: Shard) -> PathBuf {
    dir.join("shards").join(format!("{}_{}_of_{}.json", stage.as_str(), s.index, s.count))
}

/// The Slurm variables worth recording for a job.
fn slurm_job() -> BTreeMap<String, String> {
    [
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_JOB_NODELIST",
        "SLURM_RESTART_COUNT",
        "SLURM_JOB_PARTITION",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect()
}

impl Runner<'_> {
    /// The stages a sharded stage needs finished, as `(stage, the --stage that makes it)`.
    fn prerequisites(&self, stage: ShardedStage) -> Vec<(String, &'static str)> {
        let names: Vec<&str> = self.plan.domains.iter().map(|d| d.name.as_str()).collect();
        match stage {
            ShardedStage::Invert => names.iter().map(|d| (format!("ingest/{d}"), "ingest")).collect(),
            ShardedStage::Decode => names.iter().map(|d| (format!("sample/{d}"), "fit")).collect(),
        }
    }

    /// Fails unless stage `name` is recorded as finished with intact outputs.
    pub(super) fn require(&self, name: &str, part: &str) -> Result<()> {
        match self.manifest.stages.get(name) {
            Some(rec) if self.intact(name, rec) => Ok(()),
            _ => Err(Error::Invalid(format!(
                "stage {name} has not finished in {}: run `expanse run {} --out {} --resume --stage {part}` first",
                self.dir.display(),
                self.config_path.display(),
                self.dir.display()
            ))),
        }
    }

    /// The batches of a sharded stage: over the planned stacks (inversion; the plan counts their
    /// images) or the accepted latents (decoding).
    fn stage_units(&self, stage: ShardedStage) -> Result<Vec<Unit>> {
        let mut maps = Vec::new();
        for d in &self.plan.domains {
            let n = match stage {
                ShardedStage::Invert => d.images,
                ShardedStage::Decode => {
                    crate::latents::StackFile::open(&self.path(&["samples", &format!("{}.latents.npy", d.name)]))?.dim.0
                }
            };
            maps.push((d.name.clone(), n));
        }
        Ok(units(&maps, self.plan.config.model.batch))
    }

    /// Computes shard `s` of `stage`: its batches into the stage's checkpoints, then its record.
    pub(super) fn run_shard(&mut self, stage: ShardedStage, s: Shard) -> Result<ShardRecord> {
        let t = Instant::now();
        for (name, part) in self.prerequisites(stage) {
            self.require(&name, part)?;
        }
        let all = self.stage_units(stage)?;
        if s.count > all.len() {
            return Err(Error::Invalid(format!(
                "stage {}: {} shards for {} batches (of {} maps each): use at most {} shards",
                stage.as_str(),
                s.count,
                all.len(),
                self.plan.config.model.batch,
                all.len()
            )));
        }
        let mine = &all[share(all.len(), s)];
        self.log.line(&format!("{} shard {s}: {} batch(es) of {}", stage.as_str(), mine.len(), all.len()))?;
        let mut batches = Vec::new();
        let mut domain = None;
        let mut setup = None;
        for u in mine {
            if domain.as_deref() != Some(u.domain.as_str()) {
                domain = Some(u.domain.clone());
                setup = Some(match stage {
                    ShardedStage::Invert => self.invert_setup(&u.domain)?,
                    ShardedStage::Decode => self.decode_setup(&u.domain)?,
                });
            }
            let (input, ddim, key) = setup.as_ref().expect("set for the domain");
            let partial =
                self.partial_dir(&format!("{}/{}", stage.as_str(), u.domain)).expect("a sharded stage checkpoints");
            super::folder::prepare_partial(&partial, key)?;
            let file = super::folder::batch_file(&partial, u.batch);
            let what = format!("{} {} batch {}", stage.as_str(), u.domain, u.batch);
            let steps = match stage {
                ShardedStage::Invert => ddim.seq.len() - 1,
                ShardedStage::Decode => ddim.seq.len(),
            } as u64;
            let pb = super::runner::progress_bar(steps, &what, self.echo);
            let ddim = ddim.clone();
            self.checkpoint_batch(&file, input, u.start..u.end, |r, c| {
                let m = r.model()?;
                match stage {
                    ShardedStage::Invert => ddim.invert(m, c, c.len_of(Axis(0)), &pb),
                    ShardedStage::Decode => ddim.generate(m, c, 0.0, 0, c.len_of(Axis(0)), &pb),
                }
            })?;
            pb.finish_and_clear();
            batches.push(FileHash::of(&file, file.strip_prefix(&self.dir).unwrap_or(&file))?);
        }
        let record = ShardRecord {
            stage: stage.as_str().into(),
            index: s.index,
            count: s.count,
            batches,
            job: slurm_job(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            threads: crate::runtime::threads(),
            seconds: t.elapsed().as_secs_f64(),
            finished: utc_now(),
        };
        let path = record_path(&self.dir, stage, s);
        crate::io::write_text(&path, &serde_json::to_string_pretty(&record).expect("record serializes"))?;
        self.log.line(&format!(
            "{} shard {s}: done in {:.1} s, recorded in {}",
            stage.as_str(),
            record.seconds,
            path.display()
        ))?;
        Ok(record)
    }

    /// Before assembling `stage` from `count` shards: every shard has its record, every batch of
    /// the stage is in exactly the record of the shard that owns it, and every batch file hashes
    /// as recorded. The records go into the manifest. Nothing to check when the stage is already
    /// assembled.
    pub(super) fn check_shards(&mut self, stage: ShardedStage, count: usize) -> Result<()> {
        let names: Vec<String> = self.plan.domains.iter().map(|d| format!("{}/{}", stage.as_str(), d.name)).collect();
        if names.iter().all(|n| self.manifest.stages.get(n).is_some_and(|r| self.intact(n, r))) {
            return Ok(());
        }
        let all = self.stage_units(stage)?;
        let mut records = Vec::with_capacity(count);
        for index in 0..count {
            let s = Shard { index, count };
            let path = record_path(&self.dir, stage, s);
            let name = stage.as_str();
            let text = std::fs::read_to_string(&path).map_err(|_| {
                Error::Invalid(format!(
                    "stage {name}: shard {s} has not finished (no {}): rerun or requeue it (`expanse run {} --out {} \
                        --resume --stage {name} --shard {s}`)",
                    path.display(),
                    self.config_path.display(),
                    self.dir.display()
                ))
            })?;
            let record: ShardRecord = serde_json::from_str(&text)
                .map_err(|e| Error::format(&path, format!("not a shard record: {e}")).with_source(e))?;
            let want: Vec<PathBuf> = all[share(all.len(), s)]
                .iter()
                .map(|u| {
                    let f = super::folder::batch_file(
                        &self.partial_dir(&format!("{name}/{}", u.domain)).expect("checkpoints"),
                        u.batch,
                    );
                    f.strip_prefix(&self.dir).unwrap_or(&f).to_path_buf()
                })
                .collect();
            let got: Vec<PathBuf> = record.batches.iter().map(|h| h.path.clone()).collect();
            if (record.stage.as_str(), record.index, record.count) != (name, index, count) || got != want {
                return Err(Error::content(
                    &path,
                    format!(
                        "stage {name}: shard {s}'s record does not list the batches \
                    of shard {s} of {count} (was it made with another --shards?)"
                    ),
                ));
            }
            for h in &record.batches {
                if !FileHash::of(&self.dir.join(&h.path), &h.path).is_ok_and(|now| &now == h) {
                    return Err(Error::content(
                        self.dir.join(&h.path),
                        format!(
                            "stage {name}: shard {s}'s batch is missing or changed since the shard recorded it: \
                            rerun shard {s}"
                        ),
                    ));
                }
            }
            records.push(record);
        }
        self.manifest.shards.insert(stage.as_str().into(), records);
        Ok(())
    }

    /// Removes the shard records once the manifest holds them.
    pub(super) fn remove_shard_records(&self, stage: ShardedStage) -> Result<()> {
        let Some(records) = self.manifest.shards.get(stage.as_str()) else { return Ok(()) };
        for r in records {
            let p = record_path(&self.dir, stage, Shard { index: r.index, count: r.count });
            if p.is_file() {
                std::fs::remove_file(&p).map_err(|e| Error::write(&p, e))?;
            }
        }
        let dir = self.dir.join("shards");
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }
}

/// What one part of a run did.
#[derive(Debug)]
pub struct PartOutcome {
    /// Stages run and kept by this invocation.
    pub ran: Vec<String>,
    pub kept: Vec<String>,
    /// The shard record, for a shard.
    pub shard: Option<ShardRecord>,
    /// The run's summary, when this part finished the run.
    pub summary: Option<RunSummary>,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_batches_contiguously() {
        assert_eq!("1/4".parse::<Shard>().unwrap(), Shard { index: 1, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let u = units(&[("a".into(), 17), ("b".into(), 8)], 8);
        assert_eq!(u.len(), 4);
        assert_eq!((u[2].domain.as_str(), u[2].batch, u[2].start, u[2].end), ("a", 2, 16, 17));
        assert_eq!((u[3].domain.as_str(), u[3].batch), ("b", 0));
        // Every batch in exactly one shard, in order.
        for n in 1..=4 {
            let covered: Vec<usize> = (0..n).flat_map(|i| share(4, Shard { index: i, count: n })).collect();
            assert_eq!(covered, vec![0, 1, 2, 3], "{n} shards");
        }
    }

    #[test]
    fn parts_need_their_shard_arguments() {
        assert_eq!(RunPart::new("ingest", None, None).unwrap(), RunPart::Ingest);
        assert!(RunPart::new("invert", None, None).unwrap_err().to_string().contains("--shard I/N"));
        assert!(RunPart::new("fit", None, None).unwrap_err().to_string().contains("--shards N"));
        assert_eq!(RunPart::new("validate", None, Some(3)).unwrap(), RunPart::Validate { shards: 3 });
        assert!(RunPart::new("sample", None, None)
            .unwrap_err()
            .to_string()
            .contains("ingest, invert, fit, decode, validate"));
    }
}
