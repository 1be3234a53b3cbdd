//! Atomic output: write to hidden temporary files in the target folder, rename them all at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A set of output files written together: each gets a temporary path beside its final one;
/// `commit` renames them all, and dropping without `commit` removes the temporaries.
pub struct AtomicFiles {
    targets: Vec<PathBuf>,
    temps: Vec<PathBuf>,
    committed: bool,
}

impl AtomicFiles {
    /// Reserves temporary paths for `targets`; fails early when a target folder does not exist.
    pub fn new(targets: &[PathBuf]) -> Result<Self> {
        let mut temps = Vec::with_capacity(targets.len());
        for t in targets {
            let name = t
                .file_name()
                .ok_or_else(|| Error::write(t, "not a file name"))?
                .to_string_lossy()
                .to_string();
            let dir = match t.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(Error::write(t, format!("folder {} does not exist", dir.display())));
            }
            if t.is_dir() {
                return Err(Error::write(t, "is a directory"));
            }
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            // Keep the extension last: some libraries look at it.
            let temp_name = format!(".{}.tmp{}-{}.{}", stem_of(&name), std::process::id(), n, ext_of(&name));
            temps.push(dir.join(temp_name));
        }
        Ok(AtomicFiles { targets: targets.to_vec(), temps, committed: false })
    }

    /// The temporary path standing in for target `i`.
    pub fn temp(&self, i: usize) -> PathBuf {
        self.temps[i].clone()
    }

    /// Renames every temporary onto its target; returns the targets.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        for (tmp, target) in self.temps.iter().zip(&self.targets) {
            std::fs::rename(tmp, target).map_err(|e| Error::write(target, e.to_string()))?;
        }
        self.committed = true;
        Ok(self.targets.clone())
    }
}

impl Drop for AtomicFiles {
    fn drop(&mut self) {
        if !self.committed {
            for tmp in &self.temps {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

fn stem_of(name: &str) -> &str {
    name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name)
}

fn ext_of(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, e)| e).unwrap_or("tmp")
}

/// Checks that `path`'s folder exists (for early, clear errors before any work).
pub fn check_output_folder(path: &Path) -> Result<()> {
    AtomicFiles::new(&[path.to_path_buf()]).map(|_| ())
}
