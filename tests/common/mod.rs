//! Helpers shared by the integration tests that run the `expanse` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use ndarray::Array4;

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

/// A 4-D float32 `.npy` file (the test fails naming the file when it cannot be read).
pub fn npy4(path: &Path) -> Array4<f32> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An array as a CPU tensor of the same shape.
pub fn tensor(a: &Array4<f32>) -> Tensor {
    let d = a.dim();
    Tensor::from_vec(a.iter().copied().collect::<Vec<_>>(), (d.0, d.1, d.2, d.3), &Device::Cpu).unwrap()
}

/// A (B, C, H, W) tensor of any float dtype as a float32 array.
pub fn to_array(t: &Tensor) -> Array4<f32> {
    let (b, c, h, w) = t.dims4().unwrap();
    Array4::from_shape_vec((b, c, h, w), t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap()
}

/// Largest absolute difference of two arrays of one shape.
pub fn max_abs_diff(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The error of loading a model folder that must not load.
pub fn load_err(dir: &Path) -> String {
    match expanse::model::Ddpm::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}
