//! Parity on an accelerator: every UNet fixture (diffusers, ADM, original DDPM) and the DDIM
//! reference, run on the device named by EXPANSE_TEST_DEVICE (`cuda`, `cuda:N`, `metal`), against
//! the same float32 references the CPU tests use. Without EXPANSE_TEST_DEVICE the test says so and
//! checks nothing; tools/gpu_check.sh sets it on a GPU machine.
//!
//! Tolerances: float32 1e-4 absolute on the raw outputs (as on the CPU; candle's GEMMs run in
//! full f32 unless told otherwise); float16 and bfloat16 2e-2 and 6e-2 of the output's RMS
//! (their 10- and 7-bit mantissas over a few dozen layers); DDIM latents 1e-3 and reconstructions
//! 5e-3 absolute against the float64 reference (on the CPU: 1e-4 and 5e-3).

mod common;

use common::{fixtures, json, max_abs_diff, npy, npy4, root, usize_of};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use expanse::diffusion::{Ddim, NoiseSchedule};
use expanse::model::{parse_device, Ddpm};
use indicatif::ProgressBar;
use ndarray::{Array1, Array4};

fn rms(a: &Array4<f32>) -> f32 {
    (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt()
}

/// Model folders with a parity input: diffusers fixtures, ADM fixtures, original DDPM fixtures.
fn model_folders() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for family in ["unet", "adm", "ddpm_original"] {
        for e in std::fs::read_dir(fixtures(family)).unwrap() {
            let p = e.unwrap().path();
            if p.join("input.npy").is_file() && p.join("output.npy").is_file() && p.join("timesteps.npy").is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn output(dir: &Path, device: &Device, dtype: DType) -> Array4<f32> {
    let ddpm = Ddpm::load(dir, device, dtype).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let x = npy4(&dir.join("input.npy"));
    let ts: Array1<i64> = npy(dir.join("timesteps.npy"));
    let d = x.dim();
    let xt = Tensor::from_vec(x.iter().copied().collect::<Vec<_>>(), (d.0, d.1, d.2, d.3), device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let t = Tensor::from_vec(ts.iter().map(|&v| v as f32).collect::<Vec<_>>(), ts.len(), device).unwrap();
    let out = ddpm.unet.forward(&xt, &t).unwrap().to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
    let (b, c, h, w) = out.dims4().unwrap();
    Array4::from_shape_vec((b, c, h, w), out.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap()
}

#[test]
#[ignore = "needs a GPU: EXPANSE_TEST_DEVICE=cuda cargo test --features cuda --test device_parity -- --ignored"]
fn every_fixture_model_matches_its_reference_on_the_device() {
    let name = std::env::var("EXPANSE_TEST_DEVICE").expect("EXPANSE_TEST_DEVICE names the device to check (e.g. cuda)");
    let device = parse_device(&name).unwrap_or_else(|e| panic!("EXPANSE_TEST_DEVICE={name}: {e}"));
    let folders = model_folders();
    assert!(folders.len() >= 10, "{} fixture models", folders.len());
    for dir in &folders {
        let want = npy4(&dir.join("output.npy"));
        let label = dir.strip_prefix(root().join("tests/fixtures")).unwrap().display().to_string();
        let got = output(dir, &device, DType::F32);
        let e = max_abs_diff(&got, &want);
        println!("{label} f32: max |device − reference| {e:.2e}");
        assert!(e < 1e-4, "{label} f32: {e}");
        for (dtype, tol) in [(DType::F16, 2e-2), (DType::BF16, 6e-2)] {
            let got = output(dir, &device, dtype);
            let rel = rms(&(&got - &want)) / rms(&want);
            println!("{label} {dtype:?}: relative RMS error {rel:.2e}");
            assert!(rel < tol, "{label} {dtype:?}: {rel}");
        }
    }
    // DDIM on the paper's grid against the float64 references (diffusers and ADM families).
    for (grid_dir, model_root) in [(fixtures("unet/ddim"), fixtures("unet")), (fixtures("adm/ddim"), fixtures("adm"))] {
        let grid = json(grid_dir.join("grid.json"));
        let ddpm = Ddpm::load(&model_root.join(grid["model"].as_str().unwrap()), &device, DType::F32).unwrap();
        let ddim = Ddim::new(
            NoiseSchedule::from_config(&ddpm.scheduler).unwrap(),
            usize_of(&grid["steps"]),
            usize_of(&grid["t0"]),
        )
        .unwrap();
        let pb = ProgressBar::hidden();
        let z = ddim.invert(&ddpm, &npy4(&grid_dir.join("x0.npy")), 2, &pb).unwrap();
        let rec = ddim.generate(&ddpm, &z, 0.0, 0, 2, &pb).unwrap();
        let ez = max_abs_diff(&z, &npy4(&grid_dir.join("latents.npy")));
        let er = max_abs_diff(&rec, &npy4(&grid_dir.join("reconstruction.npy")));
        println!("{}: DDIM latents {ez:.2e}, reconstruction {er:.2e} against float64", grid_dir.display());
        assert!(ez < 1e-3 && er < 5e-3, "{}: {ez} / {er}", grid_dir.display());
    }
}
