//! Helpers shared by the integration tests (`mod common;` in each): running the `expanse`
//! binary, fixture paths, reading `.npy` and JSON files, reading numbers out of JSON, closeness
//! measures and the cause of an `Error::Invalid`. Not every test uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use ndarray::{Array2, Array4};
use ndarray_npy::ReadNpyExt;
use serde_json::Value;

/// The date FITS files written by the tests' runs carry (`DATE`), so that runs compared byte for
/// byte agree whenever they ran: 2026-12-07T00:00:00Z.
pub const SOURCE_DATE_EPOCH: &str = "1796601600";

/// The crate's root folder (`CARGO_MANIFEST_DIR`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A folder of `tests/fixtures`, e.g. `fixtures("stats/morphology")`.
pub fn fixtures(folder: &str) -> PathBuf {
    root().join("tests/fixtures").join(folder)
}

/// A file of `data/samples`.
pub fn sample(name: &str) -> PathBuf {
    root().join("data/samples").join(name)
}

/// An `.npy` file as any array type `ndarray_npy` reads (the test fails naming the file when it
/// cannot be read).
pub fn npy<T: ReadNpyExt>(path: impl AsRef<Path>) -> T {
    let path = path.as_ref();
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A 2-D float64 `.npy` map.
pub fn npy_map(path: impl AsRef<Path>) -> Array2<f64> {
    npy(path)
}

/// A JSON file (the test fails naming the file when it cannot be read or parsed).
pub fn json(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `manifest.json` of a folder (a run's, or a fixture set's).
pub fn manifest(dir: &Path) -> Value {
    json(dir.join("manifest.json"))
}

/// A JSON number; anything else fails the test.
pub fn num(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("expected a number, got {value}"))
}

/// A JSON number, or NaN for anything else: the fixture writers store NaN as `null`
/// (tests/fixtures/stats/manifest.json says so); a missing key reads as `null` too.
pub fn num_or_nan(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// A JSON array of numbers (each as [`num`]: anything else fails the test).
pub fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(num).collect()
}

/// A JSON array of numbers, with NaN for any other element (as [`num_or_nan`]).
pub fn floats_or_nan(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(num_or_nan).collect()
}

/// A non-negative JSON integer as a `usize`.
pub fn usize_of(value: &Value) -> usize {
    value.as_u64().unwrap() as usize
}

/// |a − b| / max(|b|, floor); `floor = 0.0` gives the plain relative error |a − b| / |b|.
pub fn relative_error(a: f64, b: f64, floor: f64) -> f64 {
    (a - b).abs() / b.abs().max(floor)
}

/// Largest [`relative_error`] over two series of equal length.
pub fn max_relative_error(actual: &[f64], expected: &[f64], floor: f64) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual.iter().zip(expected).map(|(a, b)| relative_error(*a, *b, floor)).fold(0.0, f64::max)
}

/// The cause of a result that must be an `Error::Invalid` (anything else fails the test).
pub fn invalid_cause<T: std::fmt::Debug>(result: expanse::error::Result<T>) -> String {
    match result {
        Err(expanse::error::Error::Invalid(cause)) => cause,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

/// Runs the binary with `args`.
pub fn expanse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_expanse"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .output()
        .expect("run expanse")
}

/// A command line built flag by flag, e.g.
/// `Args::new("invert").flag("--model", model.display()).flag("--steps", 6).ok()`.
#[derive(Debug, Clone)]
pub struct Args(Vec<String>);

impl Args {
    /// `expanse COMMAND`.
    pub fn new(command: &str) -> Args {
        Args(vec![command.to_string()])
    }

    /// A positional argument (a map file, a config).
    pub fn arg(mut self, value: impl std::fmt::Display) -> Args {
        self.0.push(value.to_string());
        self
    }

    /// `NAME VALUE`.
    pub fn flag(mut self, name: &str, value: impl std::fmt::Display) -> Args {
        self.0.extend([name.to_string(), value.to_string()]);
        self
    }

    /// `NAME PATH`.
    pub fn path(self, name: &str, path: impl AsRef<Path>) -> Args {
        let path = path.as_ref().display().to_string();
        self.flag(name, path)
    }

    /// Runs it (see [`expanse`]).
    pub fn run(&self) -> Output {
        expanse(&self.0.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs it and returns stdout (see [`ok`]).
    pub fn ok(&self) -> String {
        ok(&self.0.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// Runs the binary and returns its stdout, failing the test (with stderr) on a non-zero exit.
pub fn ok(args: &[&str]) -> String {
    let out = expanse(args);
    assert!(out.status.success(), "expanse {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A 4-D float32 `.npy` file (the test fails naming the file when it cannot be read).
pub fn npy4(path: &Path) -> Array4<f32> {
    npy(path)
}

/// An array as a CPU tensor of the same shape.
pub fn tensor(a: &Array4<f32>) -> Tensor {
    let d = a.dim();
    Tensor::from_vec(a.iter().copied().collect::<Vec<_>>(), (d.0, d.1, d.2, d.3), &Device::Cpu).unwrap()
}

/// A (B, C, H, W) tensor of any float dtype as a float32 array.
pub fn to_array(t: &Tensor) -> Array4<f32> {
    let (b, c, h, w) = t.dims4().unwrap();
    Array4::from_shape_vec(
        (b, c, h, w),
        t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    )
    .unwrap()
}

/// Largest absolute difference of two arrays of one shape.
pub fn max_abs_diff(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Fails the test unless both arrays have one shape and every |got − want| ≤ abs + rel·|want|.
pub fn assert_close(got: &Array4<f32>, want: &Array4<f32>, abs: f32, rel: f32, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}: {g} vs {w}");
    }
}

/// The error of loading a model folder that must not load.
pub fn load_err(dir: &Path) -> String {
    match expanse::model::Ddpm::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// SplitMix64: the tests' small deterministic generator (seeded per test or case).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
