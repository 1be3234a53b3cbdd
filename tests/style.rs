//! The code style CI holds every Rust file to besides `cargo fmt --check` (rustfmt.toml): no line
//! over 120 characters (rustfmt leaves long string literals and macro bodies as they are).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "fixtures") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_line_is_over_120_characters() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["src", "tests", "benches", "python/src"] {
        rust_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let mut long = Vec::new();
    for f in &files {
        for (i, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let n = line.chars().count();
            if n > 120 {
                long.push(format!("{}:{}: {n} characters", f.strip_prefix(root).unwrap().display(), i + 1));
            }
        }
    }
    assert!(long.is_empty(), "{} line(s) over 120 characters:\n{}", long.len(), long.join("\n"));
}
