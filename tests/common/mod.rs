//! Helpers shared by the integration tests that run the `expanse` binary.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the binary with `args`.
pub fn expanse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_expanse")).args(args).output().expect("run expanse")
}

/// Runs the binary and returns its stdout, failing the test (with stderr) on a non-zero exit.
pub fn ok(args: &[&str]) -> String {
    let out = expanse(args);
    assert!(out.status.success(), "expanse {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
