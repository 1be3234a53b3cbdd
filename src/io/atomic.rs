//! Atomic output: write to hidden temporary files in the target folder, rename them all at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A set of output files written together: each gets a temporary path beside its final one;
/// `commit` renames them all, and dropping without `commit` removes the temporaries (and any
/// output folder it had to create).
pub struct AtomicFiles {
    targets: Vec<PathBuf>,
    temps: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
    committed: bool,
}

impl AtomicFiles {
    /// Reserves temporary paths for `targets`, creating missing output folders.
    pub fn new(targets: &[PathBuf]) -> Result<Self> {
        let mut temps = Vec::with_capacity(targets.len());
        let mut created_dirs = Vec::new();
        for t in targets {
            let name = t.file_name().ok_or_else(|| Error::write(t, "not a file name"))?.to_string_lossy().to_string();
            let dir = match t.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                let mut missing = Vec::new();
                let mut d = dir.as_path();
                while !d.as_os_str().is_empty() && !d.exists() {
                    missing.push(d.to_path_buf());
                    d = d.parent().unwrap_or(Path::new(""));
                }
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    remove_empty_dirs(&created_dirs);
                    return Err(Error::write(t, format!("cannot create folder {}: {e}", dir.display())).with_source(e));
                }
                // Deepest first, so that removal on failure works bottom-up.
                created_dirs.extend(missing);
            }
            if t.is_dir() {
                return Err(Error::write(t, "is a directory"));
            }
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            // Keep the extension last: some libraries look at it.
            let temp_name = format!(".{}.tmp{}-{}.{}", stem_of(&name), std::process::id(), n, ext_of(&name));
            temps.push(dir.join(temp_name));
        }
        Ok(AtomicFiles { targets: targets.to_vec(), temps, created_dirs, committed: false })
    }

    /// The temporary path standing in for target `i`.
    pub fn temp(&self, i: usize) -> PathBuf {
        self.temps[i].clone()
    }

    /// Renames every temporary onto its target; returns the targets.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        for (tmp, target) in self.temps.iter().zip(&self.targets) {
            std::fs::rename(tmp, target).map_err(|e| Error::write(target, e))?;
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
            remove_empty_dirs(&self.created_dirs);
        }
    }
}

fn remove_empty_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

fn stem_of(name: &str) -> &str {
    name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name)
}

fn ext_of(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, e)| e).unwrap_or("tmp")
}

/// Checks that `path` can be written (its folder exists or can be created) before any work;
/// leaves nothing behind.
pub fn check_output_folder(path: &Path) -> Result<()> {
    AtomicFiles::new(&[path.to_path_buf()]).map(|_| ())
}
