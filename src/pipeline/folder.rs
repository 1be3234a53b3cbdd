//! The run folder: refusing one a run would overwrite, the lock, the log, leftovers of killed
//! processes, the checks that a folder holds the same run, and the batch checkpoint folders.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::config;
use super::manifest::{utc_now, FileHash, Manifest};
use super::{Plan, RunConfig};
use crate::error::{Error, Result};

/// Appends timestamped lines to `run.log` (and prints them when echoing).
pub(super) struct Log {
    pub(super) path: PathBuf,
    pub(super) echo: bool,
}

impl Log {
    pub(super) fn line(&self, msg: &str) -> Result<()> {
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
pub(super) struct RunLock(PathBuf);

impl RunLock {
    pub(super) fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(".lock");
        if let Some(pid) = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
            if pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists() {
                return Err(Error::write(
                    dir,
                    format!(
                        "another expanse process (pid {pid}) is working on this run folder (if it is not, delete {})",
                        path.display()
                    ),
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

pub(super) fn hash_files(files: &[PathBuf]) -> Result<Vec<FileHash>> {
    files.iter().map(|p| FileHash::of(p, p)).collect()
}

/// Removes the hidden temporaries a killed process leaves behind (`.<stem>.tmp<pid>-<n>.<ext>`).
pub(super) fn remove_stale_temporaries(dir: &Path) {
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

/// Fails when the run folder `dir` holds a `config.toml` that differs from `config` (naming the
/// keys that differ) or when the inputs or model files changed since the run started: shards work
/// only on a folder the `ingest` part (or a plain `--resume`) has brought to their config.
pub(super) fn check_same_run(plan: &Plan, config_path: &Path, dir: &Path, manifest: &Manifest) -> Result<()> {
    let bring = format!(
        "bring the folder to this config first with `expanse run {} --out {} --resume --stage ingest`",
        config_path.display(),
        dir.display()
    );
    let Some((stored, text)) = read_stored_config(&dir.join("config.toml"))? else {
        return Ok(());
    };
    // The same comparison `--resume` makes (config keys, input and model files), on a copy.
    let mut copy = manifest.clone();
    let found = super::dependencies::reconcile(&stored, &text, &plan.config, &plan.model.files, &mut copy)?;
    if found.changes.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{}: the run folder holds a run of another config, inputs or model (differs at {}); {bring}",
        dir.display(),
        found.changes.join(", ")
    )))
}

/// The config a run folder holds (its `config.toml`) and its text; None when it has none.
pub(super) fn read_stored_config(path: &Path) -> Result<Option<(RunConfig, String)>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::open(path, crate::io::io_cause(e)))?;
    let stored = toml::from_str(&text).map_err(|e| Error::format(path, config::toml_error(&text, &e)))?;
    Ok(Some((stored, text)))
}

/// Makes the checkpoint folder of a stage for input `key`, discarding checkpoints of another input.
pub(super) fn prepare_partial(partial: &Path, key: &str) -> Result<()> {
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
pub(super) fn batch_file(partial: &Path, b: usize) -> PathBuf {
    partial.join(format!("batch_{b:05}.npy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_folder_is_cleared_only_for_another_input() {
        let tmp = tempfile::tempdir().unwrap();
        let partial = tmp.path().join("d.partial");
        prepare_partial(&partial, "key A").unwrap();
        assert_eq!(std::fs::read_to_string(partial.join("key.txt")).unwrap(), "key A");
        std::fs::write(batch_file(&partial, 0), b"batch 0").unwrap();
        // The same input keeps the batches.
        prepare_partial(&partial, "key A").unwrap();
        assert!(batch_file(&partial, 0).is_file());
        // A folder without a key yet is being set up by a shard beside this one: keep what it holds.
        std::fs::remove_file(partial.join("key.txt")).unwrap();
        prepare_partial(&partial, "key A").unwrap();
        assert!(batch_file(&partial, 0).is_file());
        assert_eq!(std::fs::read_to_string(partial.join("key.txt")).unwrap(), "key A");
        // Another input discards them.
        prepare_partial(&partial, "key B").unwrap();
        assert!(!batch_file(&partial, 0).exists());
        assert_eq!(std::fs::read_to_string(partial.join("key.txt")).unwrap(), "key B");
    }

    #[test]
    fn shards_preparing_one_folder_at_once_never_fail() {
        let tmp = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let partial = tmp.path().join(format!("r{round}.partial"));
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..4).map(|_| s.spawn(|| prepare_partial(&partial, "key"))).collect();
                for h in handles {
                    h.join().unwrap().unwrap();
                }
            });
            assert_eq!(std::fs::read_to_string(partial.join("key.txt")).unwrap(), "key");
        }
    }
}
