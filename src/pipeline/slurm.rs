//! `expanse slurm`: a run as five dependent Slurm jobs (see [`super::shard`]): `ingest`, the
//! `invert` array, `fit`, the `decode` array, `validate`. Each job calls the same `expanse` binary
//! by absolute path with `run CONFIG --out DIR --resume --stage ...`; the arrays are requeueable and
//! resume from their own checkpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{check_run_folder, Plan};
use crate::error::{Error, Result};

/// What `expanse slurm` is asked for.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// Tasks of each job array.
    pub shards: usize,
    /// `--time` of every job (Slurm syntax, e.g. `04:00:00`).
    pub time: Option<String>,
    /// `--mem` of every job (e.g. `8G`).
    pub mem: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// GPUs per job (`--gres=gpu:G`).
    pub gpus: Option<usize>,
    /// Cores of every job (`--cpus-per-task=N`), also the runs' worker threads (`--threads N`).
    pub cpus_per_task: Option<usize>,
    /// Further `#SBATCH` arguments for every job, as written on sbatch's command line.
    pub sbatch_args: Vec<String>,
}

/// One job script.
#[derive(Debug, Clone)]
pub struct SlurmJob {
    /// `ingest`, `invert`, `fit`, `decode`, `validate`.
    pub stage: &'static str,
    pub script: PathBuf,
    /// Tasks of the array, for the sharded stages.
    pub array: Option<usize>,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::Invalid(format!("cannot read the current folder: {e}")))?;
    Ok(cwd.join(p))
}

/// Single-quotes a word for bash.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Batches of the sharded stages, planned: inversion over the stacks, decoding over
/// `sampling.count` maps per domain.
fn planned_batches(plan: &Plan) -> (usize, usize) {
    let b = plan.config.model.batch;
    let invert = plan.domains.iter().map(|d| d.images.div_ceil(b)).sum();
    let decode = plan.domains.len() * plan.config.sampling.count.div_ceil(b);
    (invert, decode)
}

/// The stages each of the five jobs finishes, by job.
fn job_finishes(job: &str, stage: &str) -> bool {
    let kind = stage.split('/').next().unwrap_or(stage);
    match job {
        "fit" => kind == "fit" || kind == "sample",
        other => kind == other,
    }
}

/// Checks the run folder and the options, then writes `DIR/slurm/<n>_<stage>.sbatch` for the
/// jobs that have work left (logs go to `DIR/slurm/logs/`): all five for a new folder; for a
/// started one, brought to this config as `--resume` does, the jobs from the first one with a
/// stage not finished. A finished run is refused. `exe` is the `expanse` binary the jobs call.
pub fn write_scripts(
    plan: &Plan,
    config_path: &Path,
    run_dir: &Path,
    exe: &Path,
    opts: &SlurmOptions,
) -> Result<Vec<SlurmJob>> {
    let (invert, decode) = planned_batches(plan);
    if opts.shards == 0 {
        return Err(Error::Invalid("--shards must be at least 1".into()));
    }
    for (stage, batches) in [("invert", invert), ("decode", decode)] {
        if opts.shards > batches {
            return Err(Error::Invalid(format!(
                "--shards {}: stage {stage} has only {batches} batch(es) of {} maps (model.batch): use at most \
                    {batches} shards",
                opts.shards, plan.config.model.batch
            )));
        }
    }
    if opts.cpus_per_task == Some(0) {
        return Err(Error::Invalid("--cpus-per-task must be at least 1".into()));
    }
    check_run_folder(run_dir, true)?;
    let pending = plan.pending_stages(config_path, run_dir)?;
    if pending.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: the run is complete (every stage finished and its outputs hash as recorded): no job to submit",
            run_dir.display()
        )));
    }
    let (config_path, run_dir, exe) = (absolute(config_path)?, absolute(run_dir)?, absolute(exe)?);
    let slurm_dir = run_dir.join("slurm");
    let logs = slurm_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::write(&logs, e))?;
    // Scripts of an earlier `expanse slurm` that this one does not rewrite would look submittable.
    for e in std::fs::read_dir(&slurm_dir).map_err(|e| Error::write(&slurm_dir, e))?.flatten() {
        if e.path().extension().is_some_and(|x| x == "sbatch") {
            std::fs::remove_file(e.path()).map_err(|err| Error::write(e.path(), err))?;
        }
    }
    let name = plan.config.name();
    let n = opts.shards;
    let parts: [(&'static str, Option<usize>, String); 5] = [
        ("ingest", None, "--stage ingest".into()),
        ("invert", Some(n), format!("--stage invert --shard \"$SLURM_ARRAY_TASK_ID/{n}\"")),
        ("fit", None, format!("--stage fit --shards {n}")),
        ("decode", Some(n), format!("--stage decode --shard \"$SLURM_ARRAY_TASK_ID/{n}\"")),
        ("validate", None, format!("--stage validate --shards {n}")),
    ];
    let mut jobs = Vec::new();
    let first = parts.iter().position(|(job, _, _)| pending.iter().any(|s| job_finishes(job, s))).unwrap_or(0);
    let threads = opts.cpus_per_task.map(|n| format!(" --threads {n}")).unwrap_or_default();
    for (i, (stage, array, args)) in parts.into_iter().enumerate().skip(first) {
        let mut text = String::from("#!/bin/bash\n");
        text.push_str(&format!(
            "# expanse run '{name}', stage {stage} (job {} of 5), written by `expanse slurm`.\n",
            i + 1
        ));
        let mut directive = |s: String| text.push_str(&format!("#SBATCH {s}\n"));
        directive(format!("--job-name={}", quote(&format!("expanse-{name}-{stage}"))));
        let log = match array {
            Some(_) => logs.join(format!("{stage}_%A_%a.out")),
            None => logs.join(format!("{stage}_%j.out")),
        };
        directive(format!("--output={}", quote(&log.to_string_lossy())));
        directive("--open-mode=append".into());
        if let Some(k) = array {
            directive(format!("--array=0-{}", k - 1));
            directive("--requeue".into());
        }
        // Every job opens the configured device (the assembling jobs record the model), so every
        // job gets the GPUs.
        if let Some(g) = opts.gpus {
            directive(format!("--gres=gpu:{g}"));
        }
        if let Some(c) = opts.cpus_per_task {
            directive(format!("--cpus-per-task={c}"));
        }
        if let Some(t) = &opts.time {
            directive(format!("--time={}", quote(t)));
        }
        if let Some(m) = &opts.mem {
            directive(format!("--mem={}", quote(m)));
        }
        if let Some(p) = &opts.partition {
            directive(format!("--partition={}", quote(p)));
        }
        if let Some(a) = &opts.account {
            directive(format!("--account={}", quote(a)));
        }
        for a in &opts.sbatch_args {
            directive(a.clone());
        }
        text.push_str("set -euo pipefail\n");
        text.push_str(&format!(
            "exec {} run {} --out {} --resume {args}{threads}\n",
            quote(&exe.to_string_lossy()),
            quote(&config_path.to_string_lossy()),
            quote(&run_dir.to_string_lossy())
        ));
        let script = slurm_dir.join(format!("{}_{stage}.sbatch", i + 1));
        crate::io::write_text(&script, &text)?;
        jobs.push(SlurmJob { stage, script, array });
    }
    Ok(jobs)
}

/// The shell lines that submit `jobs` in order, each after the previous one succeeded.
pub fn submit_commands(jobs: &[SlurmJob]) -> String {
    let mut out = String::new();
    for (i, j) in jobs.iter().enumerate() {
        let dep = if i == 0 { String::new() } else { format!(" --dependency=afterok:$job{i}") };
        out.push_str(&format!("job{}=$(sbatch --parsable{dep} {})\n", i + 1, quote(&j.script.to_string_lossy())));
    }
    out
}

/// Submits `jobs` in order with `sbatch --parsable --dependency=afterok:<previous>`; returns the
/// job ids and writes them to `slurm/jobs.json` in the run folder.
pub fn submit(jobs: &[SlurmJob], run_dir: &Path) -> Result<Vec<(String, String)>> {
    let mut ids: Vec<(String, String)> = Vec::new();
    for j in jobs {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some((_, prev)) = ids.last() {
            cmd.arg(format!("--dependency=afterok:{prev}"));
        }
        cmd.arg(&j.script);
        let out = cmd.output().map_err(|e| {
            Error::Invalid(format!(
                "cannot run sbatch ({e}): is Slurm installed here? Without --submit, `expanse \
                slurm` prints the sbatch lines"
            ))
        })?;
        if !out.status.success() {
            let submitted: Vec<String> = ids.iter().map(|(s, id)| format!("{s} {id}")).collect();
            return Err(Error::Invalid(format!(
                "sbatch refused stage {} ({}): {}{}",
                j.stage,
                j.script.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                if submitted.is_empty() {
                    String::new()
                } else {
                    format!(" (already submitted: {}; scancel them)", submitted.join(", "))
                }
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::Invalid(format!("sbatch printed no job id for stage {}: '{}'", j.stage, text.trim())));
        }
        ids.push((j.stage.to_string(), id));
    }
    let record: serde_json::Map<String, serde_json::Value> =
        ids.iter().map(|(s, id)| (s.clone(), serde_json::Value::from(id.clone()))).collect();
    crate::io::write_text(
        &run_dir.join("slurm").join("jobs.json"),
        &serde_json::to_string_pretty(&record).expect("json"),
    )?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_bash_only_when_needed() {
        assert_eq!(quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(quote("my runs/x"), "'my runs/x'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn submit_lines_chain_the_jobs() {
        let jobs: Vec<SlurmJob> = ["ingest", "invert"]
            .iter()
            .enumerate()
            .map(|(i, s)| SlurmJob {
                stage: s,
                script: PathBuf::from(format!("/r/slurm/{}_{s}.sbatch", i + 1)),
                array: None,
            })
            .collect();
        assert_eq!(
            submit_commands(&jobs),
            "job1=$(sbatch --parsable /r/slurm/1_ingest.sbatch)\njob2=$(sbatch --parsable --dependency=afterok:$job1 \
                /r/slurm/2_invert.sbatch)\n"
        );
    }
}
