//! What the running process shows and measures: progress bars and peak memory.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar of `total` steps labelled `what`, with rate, elapsed time and ETA (drawn
/// only on a terminal).
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:32}] {pos}/{len} steps {per_sec} elapsed {elapsed} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Peak resident memory of this process in MiB (Linux; None elsewhere).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
