//! Records the git commit the binary is built from (and whether the sources differ from it), for
//! the provenance of benchmark reports: `EXPANSE_GIT_COMMIT`, e.g. `1f81b90…` or `1f81b90…-dirty`,
//! or `unknown` outside a git checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // Outside a git checkout the paths under .git do not exist, and a missing path would rerun this
    // script (and rebuild the crate) on every build: only existing paths are watched.
    for path in [".git/HEAD", ".git/index", ".git/refs", "src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"])
                    .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=EXPANSE_GIT_COMMIT={commit}");
}
